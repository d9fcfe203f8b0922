//go:build cgo

package tokenstore

import (
	"fmt"
	"net/netip"
	"reflect"
	"testing"
	"time"

	"github.com/apitoken/caddy-apitoken/policy"
	"github.com/apitoken/caddy-apitoken/storage"
	"github.com/apitoken/caddy-apitoken/tokenindex"
)

// checkInterned checks the index's reference counts (see
// tokenindex.Index.Check).
func checkInterned(t *testing.T, ix *tokenindex.Index) (nShared, nRules int) {
	t.Helper()
	nShared, nRules, err := ix.Check()
	if err != nil {
		t.Error(err)
	}
	return nShared, nRules
}

func TestInterning(t *testing.T) {
	s, _, path := newTestStore(t)
	ctx := t.Context()
	rules := storage.NewToken{
		AllowedIPs: []string{"198.51.100.0/24", "2001:db8::/32"},
		Scope:      policy.Scope{Methods: []string{"GET"}, Paths: []string{"/api/*"}},
		RateLimit:  "600/1m",
	}
	var ids, secrets []string
	for i := range 6 {
		nt := rules
		nt.User, nt.Name = fmt.Sprintf("user%d", i%2), fmt.Sprintf("t%d", i)
		tok, secret := mustCreate(t, s, nt)
		ids, secrets = append(ids, tok.ID), append(secrets, secret)
	}
	plain, plainSecret := mustCreate(t, s, storage.NewToken{User: "user0", Name: "plain"})
	lookup := func(secret string) storage.Entry {
		t.Helper()
		e, ok := s.Lookup(secret)
		if !ok {
			t.Fatal("Lookup failed")
		}
		return e
	}

	t.Run("same rules, one compiled set", func(t *testing.T) {
		first := lookup(secrets[0])
		for i, secret := range secrets[1:] {
			e := lookup(secret)
			if e.Scope != first.Scope || &e.AllowedIPs[0] != &first.AllowedIPs[0] {
				t.Errorf("token %d: rules not shared with token 0", i+1)
			}
			if e.ID != ids[i+1] || e.Name != fmt.Sprintf("t%d", i+1) {
				t.Errorf("token %d: ID %q, Name %q", i+1, e.ID, e.Name)
			}
		}
		if n, r := checkInterned(t, &s.index); n != 3 || r != 2 {
			t.Errorf("%d shared values and %d rule sets, want 3 (2 users with rules, 1 without) and 2", n, r)
		}
	})
	t.Run("a change takes one token out", func(t *testing.T) {
		if _, err := s.Update(ctx, ids[0], storage.Patch{RateLimit: ptr("1/1s")}, nil); err != nil {
			t.Fatal(err)
		}
		e, other := lookup(secrets[0]), lookup(secrets[2])
		if e.RateLimit != (policy.Rate{Events: 1, Per: time.Second}) || other.RateLimit != (policy.Rate{Events: 600, Per: time.Minute}) {
			t.Errorf("rates %v and %v after changing the first token's", e.RateLimit, other.RateLimit)
		}
		if e.Scope == other.Scope {
			t.Error("changed token still shares its rule set")
		}
		if n, r := checkInterned(t, &s.index); n != 4 || r != 3 {
			t.Errorf("%d shared values and %d rule sets, want 4 and 3", n, r)
		}
		if _, err := s.Update(ctx, ids[0], storage.Patch{RateLimit: ptr("600/1m")}, nil); err != nil {
			t.Fatal(err)
		}
		if e := lookup(secrets[0]); e.Scope != other.Scope {
			t.Error("token changed back does not share its rule set again")
		}
		if n, r := checkInterned(t, &s.index); n != 3 || r != 2 {
			t.Errorf("%d shared values and %d rule sets, want 3 and 2: an unused one was kept", n, r)
		}
	})
	t.Run("revocation", func(t *testing.T) {
		if _, _, err := s.Revoke(ctx, ids[1], nil); err != nil {
			t.Fatal(err)
		}
		if e := lookup(secrets[1]); !e.Revoked || lookup(secrets[3]).Revoked {
			t.Error("revocation reached the wrong tokens")
		}
		checkInterned(t, &s.index)
	})
	t.Run("many changes leave nothing behind", func(t *testing.T) {
		for i := range 50 {
			if _, err := s.Update(ctx, plain.ID, storage.Patch{RateLimit: ptr(fmt.Sprintf("%d/1m", i+1))}, nil); err != nil {
				t.Fatal(err)
			}
		}
		if e := lookup(plainSecret); e.RateLimit != (policy.Rate{Events: 50, Per: time.Minute}) {
			t.Errorf("RateLimit = %v", e.RateLimit)
		}
		// user0 and user1 with the rules, user1 revoked with them, user0
		// with a rate alone; the rate-free rule set went with the last
		// token that had it.
		if n, r := checkInterned(t, &s.index); n != 4 || r != 2 {
			t.Errorf("%d shared values and %d rule sets, want 4 and 2", n, r)
		}
	})
	t.Run("another store reads the same", func(t *testing.T) {
		s2 := openStore(t, path, Options{PollInterval: -1})
		for i, secret := range secrets {
			want, got := lookup(secret), func() storage.Entry { e, _ := s2.Lookup(secret); return e }()
			want.Scope, got.Scope = nil, nil // compiled anew, equal (TestLookup)
			if !reflect.DeepEqual(got, want) {
				t.Errorf("token %d: %+v, want %+v", i, got, want)
			}
		}
		checkInterned(t, &s2.index)
	})
}

// TestPollerInterning: rows re-read by the poller, whole or changed, share
// what they did and leave nothing unused behind.
func TestPollerInterning(t *testing.T) {
	path := testDBPath(t)
	writer := openStore(t, path, Options{PollInterval: -1})
	reader := openStore(t, path, Options{PollInterval: time.Millisecond})
	ctx := t.Context()
	var ids []string
	for i := range 20 {
		tok, _ := mustCreate(t, writer, storage.NewToken{User: fmt.Sprintf("user%d", i%3), Name: fmt.Sprintf("t%d", i), AllowedIPs: []string{"10.0.0.0/8"}})
		ids = append(ids, tok.ID)
	}
	for i, id := range ids[:10] {
		if _, err := writer.Update(ctx, id, storage.Patch{AllowedIPs: &[]string{fmt.Sprintf("10.%d.0.0/16", i%2)}}, nil); err != nil {
			t.Fatal(err)
		}
	}
	if _, _, err := writer.Revoke(ctx, ids[19], nil); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "the reader to see the revocation", func() bool {
		e, ok := indexEntry(&reader.index, ids[19])
		return ok && e.Revoked
	})
	// user0..2 × 10.0/16, 10.1/16, 10/8 (t10..t18, user1 alone revoked on t19).
	wantShared, wantRules := checkInterned(t, &writer.index)
	if n, r := checkInterned(t, &reader.index); n != wantShared || r != wantRules {
		t.Errorf("reader: %d shared values and %d rule sets, writer %d and %d", n, r, wantShared, wantRules)
	}
	if wantRules != 3 {
		t.Errorf("%d rule sets, want 3", wantRules)
	}
}

// TestRulesKey: rules that compile alike share a key, others don't.
func TestRulesKey(t *testing.T) {
	key := func(ips []string, sc policy.Scope, rate string) string {
		t.Helper()
		r, err := parseRules(ips, sc, rate)
		if err != nil {
			t.Fatal(err)
		}
		var rec record
		rec.setRules(r)
		c := rec.change()
		return tokenindex.RulesKey(&c)
	}
	// Scopes too odd for parseRules, to check that an item can't move
	// from one list to the next.
	rawScope := func(sc policy.Scope) string {
		c := record{Token: storage.Token{Scope: sc}, rules: compiled{scope: new(policy.CompiledScope)}}.change()
		return tokenindex.RulesKey(&c)
	}
	rawPrefix := func(p string) string {
		c := record{rules: compiled{prefixes: []netip.Prefix{netip.MustParsePrefix(p)}}}.change()
		return tokenindex.RulesKey(&c)
	}
	get := policy.Scope{Methods: []string{"GET"}}
	base := key([]string{"10.0.0.0/8"}, get, "5/1s")
	same := []struct {
		name string
		key  string
	}{
		{"bare address masked", key([]string{"10.1.2.3/8"}, get, "5/1s")},
		{"method case", key([]string{"10.0.0.0/8"}, policy.Scope{Methods: []string{"get"}}, "5/1s")},
		{"rate spelling", key([]string{"10.0.0.0/8"}, get, "5/1000ms")},
	}
	for _, tt := range same {
		if tt.key != base {
			t.Errorf("%s: a different key for the same rules", tt.name)
		}
	}
	different := []struct {
		name string
		key  string
	}{
		{"no rules", key(nil, policy.Scope{}, "")},
		{"no prefixes", key(nil, get, "5/1s")},
		{"other prefix", key([]string{"11.0.0.0/8"}, get, "5/1s")},
		{"other length", key([]string{"10.0.0.0/9"}, get, "5/1s")},
		{"raw IPv4", rawPrefix("10.0.0.0/8")},
		{"raw mapped IPv6", rawPrefix("::ffff:10.0.0.0/8")},
		{"two prefixes", key([]string{"10.0.0.0/8", "10.0.0.0/8"}, get, "5/1s")},
		{"no scope", key([]string{"10.0.0.0/8"}, policy.Scope{}, "5/1s")},
		{"read-only", key([]string{"10.0.0.0/8"}, policy.Scope{ReadOnly: true, Methods: []string{"GET"}}, "5/1s")},
		{"raw method", rawScope(policy.Scope{Methods: []string{"x"}})},
		{"raw path", rawScope(policy.Scope{Paths: []string{"x"}})},
		{"raw host", rawScope(policy.Scope{Hosts: []string{"x"}})},
		{"raw joined", rawScope(policy.Scope{Methods: []string{"xx"}})},
		{"raw split", rawScope(policy.Scope{Methods: []string{"x", "x"}})},
		{"two methods", key([]string{"10.0.0.0/8"}, policy.Scope{Methods: []string{"GET", "PUT"}}, "5/1s")},
		{"other rate", key([]string{"10.0.0.0/8"}, get, "5/2s")},
		{"no rate", key([]string{"10.0.0.0/8"}, get, "")},
	}
	seen := map[string]string{base: "base"}
	for _, tt := range different {
		if other, ok := seen[tt.key]; ok {
			t.Errorf("%s: the same key as %s", tt.name, other)
		}
		seen[tt.key] = tt.name
	}
}

// TestExpiresInMillis: ExpiresAt survives the index's milliseconds,
// the zero time included.
func TestExpiresInMillis(t *testing.T) {
	for _, at := range []time.Time{
		{},
		millis(time.Date(2030, 1, 2, 3, 4, 5, 6_000_000, time.UTC)),
		millis(time.Date(1969, 12, 31, 23, 59, 59, 999_000_000, time.UTC)),
		millis(time.Date(9999, 12, 31, 0, 0, 0, 0, time.UTC)),
	} {
		if got := fromMillis(at.UnixMilli()); got != at {
			t.Errorf("%v comes back as %v", at, got)
		}
	}
	var ix tokenindex.Index
	exp := millis(time.Date(2030, 1, 2, 3, 4, 5, 6_000_000, time.UTC))
	ix.Apply(record{Token: storage.Token{ID: "abcdefgh2345", Name: "n", ExpiresAt: exp}, seq: 1}.change(),
		record{Token: storage.Token{ID: "abcdefgh2346", Name: "n"}, seq: 1}.change())
	if e, _ := indexEntry(&ix, "abcdefgh2345"); e.ExpiresAt != exp {
		t.Errorf("ExpiresAt = %v, want %v", e.ExpiresAt, exp)
	}
	if e, _ := indexEntry(&ix, "abcdefgh2346"); e.ExpiresAt != (time.Time{}) {
		t.Errorf("ExpiresAt = %v, want the zero time", e.ExpiresAt)
	}
}

// TestRulesShareAllowedIPs: interning must not let a caller's append to
// one token's AllowedIPs reach another's.
func TestRulesShareAllowedIPs(t *testing.T) {
	s, _, _ := newTestStore(t)
	nt := storage.NewToken{User: "a", AllowedIPs: []string{"10.0.0.0/8"}}
	nt.Name = "one"
	_, s1 := mustCreate(t, s, nt)
	nt.Name = "two"
	_, s2 := mustCreate(t, s, nt)
	e1, _ := s.Lookup(s1)
	_ = append(e1.AllowedIPs, netip.MustParsePrefix("0.0.0.0/0"))
	e2, _ := s.Lookup(s2)
	if len(e2.AllowedIPs) != 1 || cap(e2.AllowedIPs) != 1 {
		t.Errorf("AllowedIPs = %v (cap %d), want the one prefix", e2.AllowedIPs, cap(e2.AllowedIPs))
	}
}

// TestIndexOddIDs: a row whose id no token can carry (written by other
// means: the schema checks only its length) is kept and counted, and
// replaced by newer versions, but never found by a look-up.
func TestIndexOddIDs(t *testing.T) {
	s := &Store{}
	now := time.Date(2030, 1, 1, 0, 0, 0, 0, time.UTC)
	s.index.Apply(
		record{Token: storage.Token{ID: "ABCDEFGH2345", User: "a", Name: "odd"}, seq: 1}.change(),
		record{Token: storage.Token{ID: "abcdefgh2345", User: "a", Name: "valid"}, seq: 1}.change(),
	)
	s.index.Apply(record{Token: storage.Token{ID: "ABCDEFGH2345", User: "a", Name: "odd", RevokedAt: now}, seq: 2}.change())
	want := map[storage.State]int{storage.StateActive: 1, storage.StateExpired: 0, storage.StateRevoked: 1}
	if got := s.CountByState(now); !reflect.DeepEqual(got, want) {
		t.Errorf("CountByState = %v, want %v", got, want)
	}
	if e, ok := indexEntry(&s.index, "ABCDEFGH2345"); !ok || !e.Revoked || e.Name != "odd" {
		t.Errorf("odd id: %+v, %v", e, ok)
	}
	if _, ok := s.LookupID("ABCDEFGH2345", "x"); ok {
		t.Error("LookupID found the odd id")
	}
	checkInterned(t, &s.index)
}

// TestLookupExport: LookupID builds its Entry as tokenindex.Index.Get does.
func TestLookupExport(t *testing.T) {
	s, clock, _ := newTestStore(t)
	tok, secret := mustCreate(t, s, storage.NewToken{User: "Alice", Name: "ci", ExpiresAt: clock.Now().Add(time.Hour), RateLimit: "5/1s"})
	got, ok := s.Lookup(secret)
	want, _ := indexEntry(&s.index, tok.ID)
	if !ok || !reflect.DeepEqual(got, want) {
		t.Errorf("Lookup = %+v, %v; export gives %+v", got, ok, want)
	}
	if got.ExpiresAt != tok.ExpiresAt || got.ID != tok.ID || got.Name != "ci" || got.User != "Alice" || got.UserKey != "alice" {
		t.Errorf("Lookup = %+v, want the token's facts %+v", got, tok)
	}
}

// TestRulesKeyCoversEveryField fails when the rules gain a field that
// appendRulesKey does not encode: two tokens differing only in it would
// share one compiled rule set, and one would be judged by the other's
// rules. Encode the new field, then update the lists here.
func TestRulesKeyCoversEveryField(t *testing.T) {
	for _, tt := range []struct {
		typ  reflect.Type
		want []string
	}{
		{reflect.TypeFor[policy.Scope](), []string{"ReadOnly", "Methods", "Paths", "Hosts"}},
		{reflect.TypeFor[compiled](), []string{"prefixes", "scope", "rate"}},
		{reflect.TypeFor[policy.Rate](), []string{"Events", "Per"}},
	} {
		var got []string
		for f := range tt.typ.Fields() {
			got = append(got, f.Name)
		}
		if !reflect.DeepEqual(got, tt.want) {
			t.Errorf("%v has fields %v; appendRulesKey encodes %v", tt.typ, got, tt.want)
		}
	}
}
