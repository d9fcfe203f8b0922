package policy

import (
	"testing"
	"time"
)

var t0 = time.Date(2026, 11, 22, 12, 0, 0, 0, time.UTC)

func TestCheckToken(t *testing.T) {
	alice := Credential{Scheme: SchemeBasic, User: "alice", Secret: "x"}
	found := TokenFacts{Found: true, Owner: "Alice", ExpiresAt: t0.Add(time.Hour)}
	tests := []struct {
		name  string
		facts TokenFacts
		cred  Credential
		want  Reason
	}{
		{"valid basic, user case differs", found, alice, ReasonOK},
		{"valid bearer", found, Credential{Scheme: SchemeBearer, Secret: "x"}, ReasonOK},
		{"valid header", found, Credential{Scheme: SchemeHeader, Secret: "x"}, ReasonOK},
		{"never expires", TokenFacts{Found: true, Owner: "alice"}, alice, ReasonOK},
		{"unknown", TokenFacts{}, alice, ReasonUnknownToken},
		{"revoked", TokenFacts{Found: true, Owner: "alice", Revoked: true}, alice, ReasonRevoked},
		{"revoked beats wrong user", TokenFacts{Found: true, Owner: "bob", Revoked: true}, alice, ReasonRevoked},
		{"expired exactly now", TokenFacts{Found: true, Owner: "alice", ExpiresAt: t0}, alice, ReasonExpired},
		{"expired", TokenFacts{Found: true, Owner: "alice", ExpiresAt: t0.Add(-time.Second)}, alice, ReasonExpired},
		{"one nanosecond left", TokenFacts{Found: true, Owner: "alice", ExpiresAt: t0.Add(time.Nanosecond)}, alice, ReasonOK},
		{"wrong user", TokenFacts{Found: true, Owner: "bob"}, alice, ReasonWrongUser},
		{"empty user", TokenFacts{Found: true, Owner: "bob"}, Credential{Scheme: SchemeBasic, Secret: "x"}, ReasonWrongUser},
		{"token as the user-id", found, Credential{Scheme: SchemeBasic, UserToken: true}, ReasonOK},
		{"token as the user-id, expired", TokenFacts{Found: true, Owner: "bob", ExpiresAt: t0}, Credential{Scheme: SchemeBasic, UserToken: true}, ReasonExpired},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := CheckToken(t0, tt.facts, tt.cred); got != tt.want {
				t.Errorf("CheckToken = %q, want %q", got, tt.want)
			}
		})
	}
}

func TestResolveExpiry(t *testing.T) {
	day := 24 * time.Hour
	rules := Validity{Default: 90 * day, Max: 365 * day}
	unlimited := Validity{Default: 90 * day, Max: -1}
	tests := []struct {
		name   string
		req    ExpiryRequest
		rules  Validity
		want   time.Time
		reason Reason
	}{
		{"default", ExpiryRequest{}, rules, t0.Add(90 * day), ReasonOK},
		{"relative", ExpiryRequest{In: 30 * day}, rules, t0.Add(30 * day), ReasonOK},
		{"relative at max", ExpiryRequest{In: 365 * day}, rules, t0.Add(365 * day), ReasonOK},
		{"relative beyond max", ExpiryRequest{In: 365*day + time.Second}, rules, time.Time{}, ReasonExpiryTooLong},
		{"relative negative", ExpiryRequest{In: -time.Hour}, rules, time.Time{}, ReasonExpiryInPast},
		{"absolute", ExpiryRequest{At: t0.Add(day)}, rules, t0.Add(day), ReasonOK},
		{"absolute now", ExpiryRequest{At: t0}, rules, time.Time{}, ReasonExpiryInPast},
		{"absolute past", ExpiryRequest{At: t0.Add(-day)}, rules, time.Time{}, ReasonExpiryInPast},
		{"absolute beyond max", ExpiryRequest{At: t0.Add(400 * day)}, rules, time.Time{}, ReasonExpiryTooLong},
		{"never, limited", ExpiryRequest{Never: true}, rules, time.Time{}, ReasonNoExpiryNotAllowed},
		{"never, unlimited", ExpiryRequest{Never: true}, unlimited, time.Time{}, ReasonOK},
		{"long, unlimited", ExpiryRequest{In: 3650 * day}, unlimited, t0.Add(3650 * day), ReasonOK},
		{"both", ExpiryRequest{In: day, At: t0.Add(day)}, rules, time.Time{}, ReasonExpiryConflict},
		{"in and never", ExpiryRequest{In: day, Never: true}, unlimited, time.Time{}, ReasonExpiryConflict},
		{"default beyond max", ExpiryRequest{}, Validity{Default: 10 * day, Max: day}, time.Time{}, ReasonExpiryTooLong},
		{"no default, limited", ExpiryRequest{}, Validity{Max: day}, time.Time{}, ReasonNoExpiryNotAllowed},
		{"no default, unlimited", ExpiryRequest{}, Validity{Max: -1}, time.Time{}, ReasonOK},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, reason := ResolveExpiry(t0, tt.req, tt.rules)
			if reason != tt.reason || !got.Equal(tt.want) {
				t.Errorf("ResolveExpiry = %v, %q; want %v, %q", got, reason, tt.want, tt.reason)
			}
		})
	}
}

func TestExpiryRequestIsZero(t *testing.T) {
	if !(ExpiryRequest{}).IsZero() {
		t.Error("empty request is not zero")
	}
	for _, r := range []ExpiryRequest{{In: 1}, {At: t0}, {Never: true}} {
		if r.IsZero() {
			t.Errorf("%+v reported zero", r)
		}
	}
}

func TestCheckTokenAllocs(t *testing.T) {
	facts := TokenFacts{Found: true, Owner: "alice", ExpiresAt: t0.Add(time.Hour)}
	cred := Credential{Scheme: SchemeBasic, User: "ALICE", Secret: "x"}
	if n := testing.AllocsPerRun(100, func() { CheckToken(t0, facts, cred) }); n != 0 {
		t.Errorf("CheckToken allocates %v times, want 0", n)
	}
}
