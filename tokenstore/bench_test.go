//go:build cgo

package tokenstore

import (
	"fmt"
	"net/netip"
	"runtime"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/apitoken/caddy-apitoken/event"
	"github.com/apitoken/caddy-apitoken/internal/benchsizes"
	"github.com/apitoken/caddy-apitoken/policy"
	"github.com/apitoken/caddy-apitoken/storage"
	"github.com/apitoken/caddy-apitoken/token"
)

// benchStore returns a store holding 1000 tokens and the secret of one.
func benchStore(b *testing.B) (*Store, string) {
	b.Helper()
	s := openStore(b, b.TempDir()+"/tokens.db", Options{PollInterval: -1})
	var secret string
	for i := range 1000 {
		_, secret = mustCreate(b, s, storage.NewToken{User: fmt.Sprintf("user%d", i%50), Name: fmt.Sprintf("token%d", i)})
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
		_, secret = mustCreate(b, s, storage.NewToken{
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

// BenchmarkLookupID: the look-up alone, after token.Parse, as the gate calls it.
func BenchmarkLookupID(b *testing.B) {
	s, secret := benchStore(b)
	unknown := unknownIDToken(b, s)
	for _, c := range []struct {
		name, token string
		ok          bool
	}{
		{"hit", secret, true},
		{"miss", unknown, false},
		// An existing id with a wrong secret: it must cost what a miss
		// costs, so that timing does not tell which ids exist.
		{"wrong_secret", assemble(b, token.DefaultPrefix, secret[len(token.DefaultPrefix)+1:][:token.IDLen], strings.Repeat("A", token.SecretLen)), false},
	} {
		b.Run(c.name, func(b *testing.B) {
			id, _ := token.Parse(c.token)
			b.ReportAllocs()
			for b.Loop() {
				if _, ok := s.LookupID(id, c.token); ok != c.ok {
					b.Fatalf("LookupID = %v, want %v", ok, c.ok)
				}
			}
		})
	}
}

// BenchmarkLookupIDParallel: LookupID from every CPU at once, over 1000
// tokens, as a server's request goroutines call it.
func BenchmarkLookupIDParallel(b *testing.B) {
	s := openStore(b, b.TempDir()+"/tokens.db", Options{PollInterval: -1})
	nts := make([]storage.NewToken, benchRing)
	for i := range nts {
		nts[i] = storage.NewToken{User: fmt.Sprintf("user%d", i%50), Name: fmt.Sprintf("token%d", i)}
	}
	toks, secrets, err := s.CreateBatch(b.Context(), nts)
	if err != nil {
		b.Fatal(err)
	}
	b.ReportAllocs()
	b.RunParallel(func(pb *testing.PB) {
		for i := 0; pb.Next(); i++ {
			j := i % len(toks)
			if _, ok := s.LookupID(toks[j].ID, secrets[j]); !ok {
				b.Error("LookupID failed")
				return
			}
		}
	})
}

// BenchmarkAppendAudit: one batch of 100 request events, as the audit
// queue flushes them.
func BenchmarkAppendAudit(b *testing.B) {
	s := openStore(b, b.TempDir()+"/tokens.db", Options{PollInterval: -1})
	events := make([]event.Event, 100)
	for i := range events {
		events[i] = event.Event{
			Time: time.Now(), Type: event.TypeAuthSucceeded, Outcome: event.OutcomeSuccess,
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
	toks, err := s.List(b.Context(), storage.Filter{})
	if err != nil {
		b.Fatal(err)
	}
	now := time.Now()
	deltas := make([]event.Usage, 100)
	for i := range deltas {
		deltas[i] = event.Usage{
			TokenID: toks[i*7].ID, Count: 3, LastUsedAt: now, LastIP: fmt.Sprintf("192.0.2.%d", i),
			RecentIPs: []event.IPSeen{{IP: fmt.Sprintf("192.0.2.%d", i), LastSeen: now}, {IP: "198.51.100.1", LastSeen: now.Add(-time.Second)}},
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

// The ring cases cycle through benchRing tokens at every size; the spread
// ones through benchSpread tokens spread evenly over the store, which at a
// million tokens no longer fit in the CPU caches.
const (
	benchRing   = 1000
	benchSpread = 16384
	benchUsers  = 100    // owners of the tokens, round robin, all in group "staff"
	benchBatch  = 50_000 // tokens per CreateBatch
)

// spreadStore is a store of n tokens with the same rules, as
// caddymodule's benchmark store has, and the ids and secrets of up to
// benchSpread of them, spread evenly over it.
type spreadStore struct {
	s            *Store
	ids, secrets []string
	setup        time.Duration
	heapPerToken float64 // live heap of the store, per token
}

func newSpreadStore(b *testing.B, n int) *spreadStore {
	b.Helper()
	now := time.Date(2026, 11, 22, 12, 0, 0, 0, time.UTC)
	// No poller: it would re-read every row the setup writes.
	s := openStore(b, b.TempDir()+"/tokens.db", Options{Now: func() time.Time { return now }, PollInterval: -1})
	for u := range benchUsers {
		mustAddMember(b, s, "staff", "user"+strconv.Itoa(u))
	}
	st := &spreadStore{s: s}
	keep := min(n, benchSpread)
	step := n / keep
	var before, after runtime.MemStats
	runtime.GC()
	runtime.ReadMemStats(&before)
	start := time.Now()
	nts := make([]storage.NewToken, 0, benchBatch)
	for lo := 0; lo < n; lo += benchBatch {
		nts = nts[:0]
		for i := lo; i < min(lo+benchBatch, n); i++ {
			nts = append(nts, storage.NewToken{
				User: "user" + strconv.Itoa(i%benchUsers), Name: "t" + strconv.Itoa(i),
				ExpiresAt:  now.Add(24 * time.Hour),
				AllowedIPs: []string{"198.51.100.0/24"},
				Scope:      policy.Scope{Methods: []string{"GET", "POST"}, Paths: []string{"/rest/api/*"}},
				RateLimit:  "600/1m",
			})
		}
		toks, secrets, err := s.CreateBatch(b.Context(), nts)
		if err != nil {
			b.Fatal(err)
		}
		for j := range toks {
			if i := lo + j; i%step == 0 && len(st.secrets) < keep {
				st.ids = append(st.ids, toks[j].ID)
				st.secrets = append(st.secrets, secrets[j])
			}
		}
	}
	nts = nil
	st.setup = time.Since(start)
	// The kept ids and secrets in one allocation, whose size is known and
	// not counted.
	var arena strings.Builder
	for i := range st.ids {
		arena.WriteString(st.ids[i])
		arena.WriteString(st.secrets[i])
	}
	all := arena.String()
	for i := range st.ids {
		st.ids[i], all = all[:len(st.ids[i])], all[len(st.ids[i]):]
		st.secrets[i], all = all[:len(st.secrets[i])], all[len(st.secrets[i]):]
	}
	kept := arena.Cap() + 16*(cap(st.ids)+cap(st.secrets))
	runtime.GC()
	runtime.ReadMemStats(&after)
	st.heapPerToken = float64(int64(after.HeapAlloc)-int64(before.HeapAlloc)-int64(kept)) / float64(n)
	return st
}

// BenchmarkLookupSpread: LookupID over stores of -apitoken.bench-sizes
// tokens (see the benchsizes package), cycling through 1000 tokens at every size
// ("ring") or through 16384 ("spread"), both spread over the store. The
// "lookup" cases time LookupID alone; the "rules" cases also touch what the
// gate reads of the entry on every request: its allowed IPs, its scope and
// its owner's groups. With -v each size logs its build time and the live
// heap per token.
func BenchmarkLookupSpread(b *testing.B) {
	ip := netip.MustParseAddr("198.51.100.7")
	for _, n := range benchsizes.Sizes(b) {
		b.Run("tokens="+strconv.Itoa(n), func(b *testing.B) {
			st := newSpreadStore(b, n)
			b.Logf("%d tokens: built in %v, live heap %.0f bytes per token (%.1f MB)",
				n, st.setup.Round(time.Millisecond), st.heapPerToken, st.heapPerToken*float64(n)/1e6)
			for _, c := range []struct {
				name string
				keep int
			}{{"ring", benchRing}, {"spread", benchSpread}} {
				ids, secrets := st.ids, st.secrets
				if c.keep < len(ids) {
					// Every step-th of the spread tokens: the ring is
					// spread over the store too, but small.
					ids, secrets = everyNth(ids, len(ids)/c.keep)[:c.keep], everyNth(secrets, len(secrets)/c.keep)[:c.keep]
				}
				b.Run(c.name+"/lookup", func(b *testing.B) {
					for i := range ids { // warm up: each token once
						st.s.LookupID(ids[i], secrets[i])
					}
					b.ReportAllocs()
					i := 0
					for b.Loop() {
						if _, ok := st.s.LookupID(ids[i], secrets[i]); !ok {
							b.Fatal("LookupID failed")
						}
						if i++; i == len(ids) {
							i = 0
						}
					}
				})
				b.Run(c.name+"/rules", func(b *testing.B) {
					use := func(i int) {
						e, ok := st.s.LookupID(ids[i], secrets[i])
						if !ok || policy.CheckIP(ip, true, e.AllowedIPs) != policy.ReasonOK ||
							e.Scope.Check("GET", "api.example.com", "/rest/api/2/issue/ABC-1", true) != policy.ReasonOK ||
							len(st.s.GroupsOf(e.UserKey)) != 1 || !strings.HasPrefix(e.User, "user") {
							b.Fatal("the token does not pass")
						}
					}
					for i := range ids {
						use(i)
					}
					b.ReportAllocs()
					i := 0
					for b.Loop() {
						use(i)
						if i++; i == len(ids) {
							i = 0
						}
					}
				})
			}
		})
	}
}

func everyNth(s []string, n int) []string {
	var out []string
	for i := 0; i < len(s); i += max(n, 1) {
		out = append(out, s[i])
	}
	return out
}
