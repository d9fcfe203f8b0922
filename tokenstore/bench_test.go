//go:build cgo

package tokenstore

import (
	"fmt"
	"testing"
	"time"

	"github.com/apitoken/caddy-apitoken/audit"
	"github.com/apitoken/caddy-apitoken/policy"
)

// benchStore returns a store holding 1000 tokens and the secret of one.
func benchStore(b *testing.B) (*Store, string) {
	b.Helper()
	s := openStore(b, b.TempDir()+"/tokens.db", Options{PollInterval: -1})
	var secret string
	for i := range 1000 {
		_, secret = mustCreate(b, s, NewToken{User: fmt.Sprintf("user%d", i%50), Name: fmt.Sprintf("token%d", i)})
	}
	return s, secret
}

func BenchmarkLookupHit(b *testing.B) {
	s, secret := benchStore(b)
	b.ReportAllocs()
	for b.Loop() {
		if _, ok := s.Lookup(secret); !ok {
			b.Fatal("Lookup failed")
		}
	}
}

// BenchmarkLookupHitWithRules: every token has allowed IPs, a scope and a
// rate; Lookup hands out the parsed rules without copying them.
func BenchmarkLookupHitWithRules(b *testing.B) {
	s := openStore(b, b.TempDir()+"/tokens.db", Options{PollInterval: -1})
	var secret string
	for i := range 1000 {
		_, secret = mustCreate(b, s, NewToken{
			User: fmt.Sprintf("user%d", i%50), Name: fmt.Sprintf("token%d", i),
			AllowedIPs: []string{"private_ranges", "203.0.113.0/24"},
			Scope:      policy.Scope{Methods: []string{"GET", "POST"}, Paths: []string{"/api/*", "*.json"}, Hosts: []string{"*.example.com"}},
			RateLimit:  "600/1m",
		})
	}
	b.ReportAllocs()
	for b.Loop() {
		if e, ok := s.Lookup(secret); !ok || e.Scope == nil {
			b.Fatal("Lookup failed")
		}
	}
}

// BenchmarkGroupsOf: the holders check's membership look-up, among 1000
// users in 20 groups.
func BenchmarkGroupsOf(b *testing.B) {
	s := openStore(b, b.TempDir()+"/tokens.db", Options{PollInterval: -1})
	for i := range 1000 {
		for g := range 3 {
			mustAddMember(b, s, fmt.Sprintf("group%d", (i+g*7)%20), fmt.Sprintf("user%d", i))
		}
	}
	b.ReportAllocs()
	for b.Loop() {
		if len(s.GroupsOf("user500")) != 3 {
			b.Fatal("GroupsOf failed")
		}
	}
}

// BenchmarkLookupMiss: a well-formed token (valid checksum) with an unknown
// id. It should cost what a hit costs.
func BenchmarkLookupMiss(b *testing.B) {
	s, _ := benchStore(b)
	token := unknownIDToken(b, s)
	b.ReportAllocs()
	for b.Loop() {
		if _, ok := s.Lookup(token); ok {
			b.Fatal("Lookup succeeded")
		}
	}
}

// BenchmarkParseMalformed: the costliest malformed token, one whose
// checksum alone is wrong.
func BenchmarkParseMalformed(b *testing.B) {
	token := fixedToken(b, DefaultPrefix)
	token = token[:len(token)-1] + "x"
	b.ReportAllocs()
	for b.Loop() {
		if _, ok := Parse(token); ok {
			b.Fatal("Parse succeeded")
		}
	}
}

// BenchmarkAppendAudit: one batch of 100 request events, as the audit
// queue flushes them.
func BenchmarkAppendAudit(b *testing.B) {
	s := openStore(b, b.TempDir()+"/tokens.db", Options{PollInterval: -1})
	events := make([]audit.Event, 100)
	for i := range events {
		events[i] = audit.Event{
			Time: time.Now(), Type: audit.TypeAuthSucceeded, Outcome: audit.OutcomeSuccess,
			User: fmt.Sprintf("user%d", i%50), TokenID: "abcdefgh2345", Scheme: "bearer",
			ClientIP: "192.0.2.1", Method: "GET", Host: "api.example.com", Path: "/v1/items/42", Status: 200,
		}
	}
	b.ReportAllocs()
	for b.Loop() {
		if err := s.AppendAudit(b.Context(), events); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkFlushUsage: one flush of usage deltas for 100 of 1000 tokens,
// each merging its recent IPs into stored ones.
func BenchmarkFlushUsage(b *testing.B) {
	s, _ := benchStore(b)
	toks, err := s.List(b.Context(), Filter{})
	if err != nil {
		b.Fatal(err)
	}
	now := time.Now()
	deltas := make([]audit.Usage, 100)
	for i := range deltas {
		deltas[i] = audit.Usage{
			TokenID: toks[i*7].ID, Count: 3, LastUsedAt: now, LastIP: fmt.Sprintf("192.0.2.%d", i),
			RecentIPs: []audit.IPSeen{{IP: fmt.Sprintf("192.0.2.%d", i), LastSeen: now}, {IP: "198.51.100.1", LastSeen: now.Add(-time.Second)}},
		}
	}
	if err := s.FlushUsage(b.Context(), deltas); err != nil { // the rows exist from here on
		b.Fatal(err)
	}
	b.ReportAllocs()
	for b.Loop() {
		if err := s.FlushUsage(b.Context(), deltas); err != nil {
			b.Fatal(err)
		}
	}
}
