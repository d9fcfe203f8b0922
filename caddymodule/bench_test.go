package caddymodule

import (
	"context"
	"net/http"
	"net/http/httptest"
	"net/netip"
	"path/filepath"
	"runtime"
	"strconv"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/caddyserver/caddy/v2"
	"github.com/caddyserver/caddy/v2/modules/caddyhttp"
	"go.uber.org/zap"

	"github.com/apitoken/caddy-apitoken/audit"
	"github.com/apitoken/caddy-apitoken/event"
	"github.com/apitoken/caddy-apitoken/internal/benchsizes"
	"github.com/apitoken/caddy-apitoken/internal/testkit"
	"github.com/apitoken/caddy-apitoken/limit"
	"github.com/apitoken/caddy-apitoken/policy"
	"github.com/apitoken/caddy-apitoken/storage"
	"github.com/apitoken/caddy-apitoken/token"
	"github.com/apitoken/caddy-apitoken/tokenstore"
)

// The valid and unknown-token cases cycle through benchRing distinct
// tokens (all of them in a smaller store): the same working set at every
// store size, so that the sizes compare the index and nothing else. The
// *_spread cases cycle through benchSpread tokens spread over the store,
// which at 100 000 tokens and more no longer fit in the CPU caches: the
// cost of an index probed all over, as diverse real traffic would.
const (
	benchRing   = 1000
	benchSpread = 16384
)

// benchUsers is how many users own the store's tokens, round robin; all of
// them are in the holders group "staff".
const benchUsers = 100

// benchGate is a handler with every check on (path inspection, protect,
// throttle, gate and token CIDRs, holders, scope, rate limit, usage
// tracking and the request metric) over a store of n tokens, and the
// credentials for each of BenchmarkServeHTTP's cases.
type benchGate struct {
	h         *Handler
	throttled *Handler // h with a throttle in which throttleIP is blocked
	stripped  *Handler // h with strip_credentials and user_header, as bench/run's gate
	sink      *benchSink

	user, secret    string   // a valid token of a holder
	basic, bearer   []string // Authorization values of up to benchSpread valid tokens
	unknown         []string // as many well-formed tokens that are not stored
	wrong           string   // the secret with its last character changed
	outsider        string   // a valid token of a user who is not a holder
	expired         string
	revoked         string
	limited         string // a token whose own rate limit is used up
	readOnly        string // a valid token scoped read_only
	hostBound       string // a valid token scoped to one host, not the requests'
	throttleIP      netip.Addr
	setup           time.Duration // building the store and the index
	heapPerToken    float64       // live heap of the index, per token
	sysGrowth       uint64        // bytes the Go runtime took from the OS during setup
	populateBatches int
}

// benchSink keeps the reason of the last audit event, so each case can be
// checked to take the path it is named after.
type benchSink struct{ reason string }

func (s *benchSink) Record(e event.Event) { s.reason = e.Reason }

// benchBatch is how many tokens one CreateBatch call writes while
// populating the store: each batch holds its records in memory until it
// commits.
const benchBatch = 50_000

func newBenchGate(tb testing.TB, n int) *benchGate {
	tb.Helper()
	// As testHandler, but without the store's poller: it would re-read
	// every row the setup writes (the writer is another connection), for
	// seconds of CPU during the first cases at a million tokens. A server
	// whose store is not being written polls one PRAGMA a second.
	clock := testkit.NewClock(time.Date(2026, 11, 22, 12, 0, 0, 0, time.UTC))
	st, err := tokenstore.Open(context.Background(), filepath.Join(tb.TempDir(), "t.db"),
		tokenstore.Options{Now: clock.Now, PollInterval: -1})
	if err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(func() { st.Close() })
	g := &benchGate{sink: &benchSink{}, throttleIP: netip.MustParseAddr("203.0.113.66")}
	app := &App{store: st, now: clock.Now, audit: g.sink, TokenPrefix: token.DefaultPrefix, staleAfter: DefaultStaleAfter}
	h := &Handler{Realm: "test", Passwords: PasswordsBlock, app: app, logger: zap.NewNop()}
	g.h = h
	// What the app has on every request in production: usage tracking
	// and the request metric (a zero Context has no registry: only the
	// counter is created).
	h.app.auditState = &auditState{usage: audit.NewUsageTracker(0)}
	h.app.registerMetrics(caddy.Context{})
	if h.paths, err = policy.CompilePathRules(policy.PathConfig{Deny: []string{"/secure/admin/*"}}); err != nil {
		tb.Fatal(err)
	}
	if h.protect, err = policy.CompilePathSet("protect", []string{"/rest/*"}); err != nil {
		tb.Fatal(err)
	}
	if h.allowIPs, err = policy.ParsePrefixes([]string{"10.0.0.0/8", "198.51.100.0/24"}); err != nil {
		tb.Fatal(err)
	}
	if h.app.holders, err = policy.ParseHolders([]string{"group:staff"}); err != nil {
		tb.Fatal(err)
	}
	// The throttle runs on every request and counts every failure, but
	// never blocks: a case that fails 200 000 times from one address must
	// keep measuring its own path, not the throttle's 429. The throttled
	// case uses a copy of the handler whose throttle has blocked
	// throttleIP.
	h.throttle = limit.NewThrottle(limit.ThrottleConfig{MaxFailures: 1 << 30, Window: time.Minute, Cooldown: 5 * time.Minute})
	h.limiter = limit.NewRateLimiter(0)
	h.rate = policy.Rate{Events: 1 << 30, Per: time.Second}
	throttled := *h
	throttled.throttle = limit.NewThrottle(limit.ThrottleConfig{MaxFailures: 10, MaxFailuresPerAddress: 10, Window: time.Minute, Cooldown: 5 * time.Minute})
	for range 10 {
		throttled.throttle.Fail(g.throttleIP, "", clock.Now())
	}
	g.throttled = &throttled
	stripped := *h
	stripped.StripCredentials = true
	stripped.UserHeader, stripped.userHeaderKey = "X-Remote-User", "X-Remote-User"
	g.stripped = &stripped

	ctx := context.Background()
	for u := range benchUsers {
		if _, _, err := st.AddMember(ctx, "staff", "user"+strconv.Itoa(u), nil); err != nil {
			tb.Fatal(err)
		}
	}

	// The store: n tokens with rules, in batches; keep the secrets of
	// benchSpread tokens spread evenly over it.
	ring := min(n, benchSpread)
	step := n / ring
	var ringSecrets, ringUsers []string
	var before, after runtime.MemStats
	runtime.GC()
	runtime.ReadMemStats(&before)
	start := time.Now()
	nts := make([]storage.NewToken, 0, benchBatch)
	for lo := 0; lo < n; lo += benchBatch {
		nts = nts[:0]
		for i := lo; i < min(lo+benchBatch, n); i++ {
			nts = append(nts, storage.NewToken{
				Prefix: "caddytok", User: "user" + strconv.Itoa(i%benchUsers), Name: "t" + strconv.Itoa(i),
				ExpiresAt:  clock.Now().Add(24 * time.Hour),
				AllowedIPs: []string{"198.51.100.0/24"},
				Scope:      policy.Scope{Methods: []string{"GET", "POST"}, Paths: []string{"/rest/api/*"}},
			})
		}
		toks, secrets, err := st.CreateBatch(ctx, nts)
		if err != nil {
			tb.Fatal(err)
		}
		g.populateBatches++
		for j := range toks {
			if i := lo + j; i%step == 0 && len(ringSecrets) < ring {
				ringSecrets = append(ringSecrets, secrets[j])
				ringUsers = append(ringUsers, toks[j].User)
			}
		}
	}
	nts = nil
	g.setup = time.Since(start)
	runtime.GC()
	runtime.ReadMemStats(&after)
	g.heapPerToken = float64(int64(after.HeapAlloc)-int64(before.HeapAlloc)) / float64(n)
	g.sysGrowth = after.Sys - before.Sys

	g.user, g.secret = ringUsers[0], ringSecrets[0]
	for i, s := range ringSecrets {
		g.basic = append(g.basic, basicAuth(ringUsers[i], s))
		g.bearer = append(g.bearer, "Bearer "+s)
		_, unknown, err := token.Generate("caddytok")
		if err != nil {
			tb.Fatal(err)
		}
		g.unknown = append(g.unknown, "Bearer "+unknown)
	}
	g.wrong = mistype(g.secret)

	create := func(nt storage.NewToken) (storage.Token, string) {
		tb.Helper()
		nt.Prefix = "caddytok"
		nt.AllowedIPs = []string{"198.51.100.0/24"}
		tok, secret, err := st.Create(ctx, nt, nil)
		if err != nil {
			tb.Fatal(err)
		}
		return tok, secret
	}
	_, g.outsider = create(storage.NewToken{User: "outsider", Name: "x", ExpiresAt: clock.Now().Add(time.Hour)})
	_, g.expired = create(storage.NewToken{User: "user0", Name: "expired", ExpiresAt: clock.Now().Add(-time.Hour)})
	limited, limitedSecret := create(storage.NewToken{User: "user0", Name: "limited", ExpiresAt: clock.Now().Add(time.Hour), RateLimit: "1/1h"})
	le, found := st.LookupID(limited.ID, limitedSecret)
	if !found {
		tb.Fatal("the limited token is not in the index")
	}
	if _, ok := h.limiter.Allow(le.Key, policy.Rate{Events: 1, Per: time.Hour}, clock.Now()); !ok {
		tb.Fatal("the limited token's one request is already used up")
	}
	g.limited = limitedSecret
	_, g.readOnly = create(storage.NewToken{User: "user0", Name: "read-only", ExpiresAt: clock.Now().Add(time.Hour),
		Scope: policy.Scope{ReadOnly: true}})
	_, g.hostBound = create(storage.NewToken{User: "user0", Name: "host-bound", ExpiresAt: clock.Now().Add(time.Hour),
		Scope: policy.Scope{Hosts: []string{"jira.example.com"}}})
	revoked, secret := create(storage.NewToken{User: "user0", Name: "revoked", ExpiresAt: clock.Now().Add(time.Hour)})
	if _, _, err := st.Revoke(ctx, revoked.ID, nil); err != nil {
		tb.Fatal(err)
	}
	g.revoked = secret
	return g
}

// benchCase is one path through ServeHTTP.
type benchCase struct {
	name   string
	h      *Handler
	target string
	authz  []string // Authorization values, cycled through; none: no header
	ip     string
	reason policy.Reason // what the audit event says; "": no event
	method string        // "": GET
}

func (g *benchGate) cases() []benchCase {
	const api, ip = "/rest/api/2/issue/ABC-1", "198.51.100.7"
	one := func(s string) []string { return []string{s} }
	ring := func(s []string) []string { return s[:min(len(s), benchRing)] }
	return []benchCase{
		{"baseline_unprotected", g.h, "/secure/Dashboard.jspa", nil, ip, "", ""},
		{"valid_basic", g.h, api, ring(g.basic), ip, policy.ReasonOK, ""},
		{"valid_bearer", g.h, api, ring(g.bearer), ip, policy.ReasonOK, ""},
		{"valid_basic_stripped", g.stripped, api, ring(g.basic), ip, policy.ReasonOK, ""},
		{"valid_bearer_one_token", g.h, api, one("Bearer " + g.secret), ip, policy.ReasonOK, ""},
		{"valid_bearer_spread", g.h, api, g.bearer, ip, policy.ReasonOK, ""},
		{"no_credentials", g.h, api, nil, ip, policy.ReasonNoCredentials, ""},
		{"malformed_header", g.h, api, one("Basic %%%"), ip, policy.ReasonMalformedHeader, ""},
		{"malformed_token", g.h, api, one("Bearer caddytok_nope"), ip, policy.ReasonMalformedToken, ""},
		{"mistyped_token", g.h, api, one("Bearer " + g.wrong), ip, policy.ReasonMalformedToken, ""},
		{"unknown_token", g.h, api, ring(g.unknown), ip, policy.ReasonUnknownToken, ""},
		{"unknown_token_spread", g.h, api, g.unknown, ip, policy.ReasonUnknownToken, ""},
		{"wrong_user", g.h, api, one(basicAuth("mallory", g.secret)), ip, policy.ReasonWrongUser, ""},
		{"expired", g.h, api, one("Bearer " + g.expired), ip, policy.ReasonExpired, ""},
		{"revoked", g.h, api, one("Bearer " + g.revoked), ip, policy.ReasonRevoked, ""},
		{"password_blocked", g.h, api, one(basicAuth(g.user, "hunter2")), ip, policy.ReasonPasswordBlocked, ""},
		{"ip_denied", g.h, api, one("Bearer " + g.secret), "10.1.2.3", policy.ReasonIPNotAllowed, ""},
		{"holder_denied", g.h, api, one("Bearer " + g.outsider), ip, policy.ReasonHolderNotAllowed, ""},
		{"scope_denied", g.h, "/rest/other", one("Bearer " + g.secret), ip, policy.ReasonPathNotAllowed, ""},
		{"path_blocked", g.h, "/rest/..;/WEB-INF/web.xml", one("Bearer " + g.secret), ip, policy.ReasonPathBlocked, ""},
		{"throttled", g.throttled, api, one("Bearer " + g.secret), g.throttleIP.String(), policy.ReasonThrottled, ""},
		{"rate_limited", g.h, api, one("Bearer " + g.limited), ip, policy.ReasonRateLimited, ""},
		{"method_denied", g.h, api, one("Bearer " + g.secret), ip, policy.ReasonMethodNotAllowed, http.MethodDelete},
		{"read_only_denied", g.h, api, one("Bearer " + g.readOnly), ip, policy.ReasonReadOnly, http.MethodPost},
		{"host_denied", g.h, api, one("Bearer " + g.hostBound), ip, policy.ReasonHostNotAllowed, ""},
		{"ip_unparsable", g.h, api, one("Bearer " + g.secret), "not-an-ip", policy.ReasonIPUnparsable, ""},
	}
}

// benchRequests is a ring of prepared requests for one case. Each request
// is served many times, like the handler's state; only its Authorization
// value changes, through the header's own slice, so cycling through
// tokens costs one store and no map access.
type benchRequests struct {
	reqs  []*http.Request
	slots [][]string // reqs[i].Header["Authorization"], nil without one
	authz []string
	// Each request's replacer, and its state as Caddy hands it to the
	// handlers: serve restores it, so that every request starts with the
	// replacer a fresh one has (the gate adds its placeholders to it).
	repls    []*caddy.Replacer
	pristine []caddy.Replacer
}

func (g *benchGate) requests(c benchCase) *benchRequests {
	rs := &benchRequests{authz: c.authz}
	for range 256 {
		method := c.method
		if method == "" {
			method = http.MethodGet
		}
		req := httptest.NewRequest(method, c.target, nil)
		var slot []string
		if len(c.authz) > 0 {
			req.Header.Set("Authorization", c.authz[0])
			slot = req.Header["Authorization"]
		}
		repl := caddy.NewReplacer()
		req = caddyhttp.PrepareRequest(req, repl, nil, nil)
		caddyhttp.SetVar(req.Context(), caddyhttp.ClientIPVarKey, c.ip)
		rs.repls = append(rs.repls, repl)
		rs.pristine = append(rs.pristine, *repl)
		rs.reqs = append(rs.reqs, req)
		rs.slots = append(rs.slots, slot)
	}
	return rs
}

// serve serves the i-th request of the ring. For a handler that strips the
// credential and sets the user header, it first puts the request's
// headers back as they came: two map writes more than other cases.
func (rs *benchRequests) serve(h *Handler, w *discardWriter, i int) {
	j := i % len(rs.reqs)
	if s := rs.slots[j]; s != nil {
		s[0] = rs.authz[i%len(rs.authz)]
		if h.StripCredentials {
			hdr := rs.reqs[j].Header
			hdr["Authorization"] = s
			delete(hdr, "X-Remote-User")
		}
	}
	clear(w.h)
	*rs.repls[j] = rs.pristine[j]
	_ = h.ServeHTTP(w, rs.reqs[j], nopNext)
}

// check serves one request and fails b unless it takes c's path.
func (g *benchGate) check(tb testing.TB, c benchCase, rs *benchRequests, w *discardWriter, i int, when string) {
	tb.Helper()
	g.sink.reason = ""
	rs.serve(c.h, w, i)
	if got := policy.Reason(g.sink.reason); got != c.reason {
		tb.Fatalf("%s: case %s ends in reason %q, want %q", when, c.name, got, c.reason)
	}
}

var nopNext = caddyhttp.HandlerFunc(func(http.ResponseWriter, *http.Request) error { return nil })

// discardWriter is a ResponseWriter that keeps nothing.
type discardWriter struct{ h http.Header }

func (w *discardWriter) Header() http.Header         { return w.h }
func (w *discardWriter) Write(b []byte) (int, error) { return len(b), nil }
func (w *discardWriter) WriteHeader(int)             {}

// prepare builds case c's requests, checks that they take the path the
// case is named after, and warms up: every token of the ring once (the
// rate limiter and usage tracker learn their keys), every request once.
func (g *benchGate) prepare(b *testing.B, c benchCase) (*benchRequests, *discardWriter) {
	b.Helper()
	rs := g.requests(c)
	w := &discardWriter{h: make(http.Header)}
	g.check(b, c, rs, w, 0, "before")
	for i := range max(len(c.authz), len(rs.reqs)) {
		rs.serve(c.h, w, i)
	}
	return rs, w
}

// BenchmarkServeHTTP measures the whole decision for one request: the
// handler's ServeHTTP with every check on and a no-op next, for each path
// a request can take, over stores of -apitoken.bench-sizes tokens
// (package benchsizes). Each size's store is built once and shared by its cases; each
// case first checks, through the audit reason, that its request takes
// the path it is named after, before and after the timed loop. Requests
// are built outside the timed region and reused; "baseline_unprotected"
// serves a request outside protect (inspection only), so each case can be
// read as a ratio to it. The valid and unknown-token cases cycle through
// 1000 different tokens at every size, the *_spread ones through 16384
// (see benchRing), and *_one_token through one.
//
// The store's build time and the index's heap per token are logged with
// each size (go test -v).
func BenchmarkServeHTTP(b *testing.B) {
	for _, n := range benchsizes.Sizes(b) {
		b.Run("tokens="+strconv.Itoa(n), func(b *testing.B) {
			g := newBenchGate(b, n)
			b.Logf("%d tokens: built in %v (%d batches), index heap %.0f bytes per token (%.1f MB), runtime grew by %.1f MB",
				n, g.setup.Round(time.Millisecond), g.populateBatches, g.heapPerToken, g.heapPerToken*float64(n)/1e6, float64(g.sysGrowth)/1e6)
			for _, c := range g.cases() {
				b.Run(c.name, func(b *testing.B) {
					rs, w := g.prepare(b, c)
					b.ReportAllocs()
					b.ResetTimer()
					for i := 0; i < b.N; i++ {
						rs.serve(c.h, w, i)
					}
					b.StopTimer()
					g.check(b, c, rs, w, b.N, "after")
				})
			}
		})
	}
}

// BenchmarkServeHTTPAfterSyscall is BenchmarkServeHTTP's main cases with
// a system call (getppid) before every request, as a server makes several
// (read, write, epoll) between two requests. On a kernel with page table
// isolation and no PCID, each system call flushes the TLB, and the gate
// then pays a page walk for every page of code and data it touches: its
// cost under load, which the warm loop of BenchmarkServeHTTP does not
// show. "syscall_only" is the system call alone: subtract it. Where
// system calls don't flush the TLB, each case costs its BenchmarkServeHTTP
// figure plus syscall_only's.
func BenchmarkServeHTTPAfterSyscall(b *testing.B) {
	g := newBenchGate(b, 1000)
	b.Run("syscall_only", func(b *testing.B) {
		for i := 0; i < b.N; i++ {
			syscall.Getppid()
		}
	})
	for _, c := range g.cases() {
		switch c.name {
		case "baseline_unprotected", "valid_basic", "valid_basic_stripped", "valid_bearer", "unknown_token", "malformed_token":
		default:
			continue
		}
		b.Run(c.name, func(b *testing.B) {
			rs, w := g.prepare(b, c)
			b.ReportAllocs()
			b.ResetTimer()
			for i := 0; i < b.N; i++ {
				syscall.Getppid()
				rs.serve(c.h, w, i)
			}
			b.StopTimer()
			g.check(b, c, rs, w, b.N, "after")
		})
	}
}

// TestServeHTTPAllocs bounds the allocations of a valid request with every
// check on, so a change that adds allocations to the hot path shows up.
func TestServeHTTPAllocs(t *testing.T) {
	g := newBenchGate(t, 10)
	tests := []struct {
		name   string
		authz  string
		reason policy.Reason
		limit  float64
	}{
		// Nothing: not per check, nor for decoding Basic (lookupBasic's
		// pooled buffer), nor for the identity placeholders once the
		// token's provider is cached (identities).
		{"basic", basicAuth(g.user, g.secret), policy.ReasonOK, 0},
		{"bearer", "Bearer " + g.secret, policy.ReasonOK, 0},
		// A refusal: the header values (1).
		{"unknown token", "Bearer " + g.unknown[0][len("Bearer "):], policy.ReasonUnknownToken, 1},
		// Telling the holder that the token expired costs nothing more:
		// the text and the challenge are built once.
		{"expired token", "Bearer " + g.expired, policy.ReasonExpired, 1},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c := benchCase{name: tt.name, h: g.h, target: "/rest/api/2/issue/ABC-1", authz: []string{tt.authz}, ip: "198.51.100.7", reason: tt.reason}
			rs := g.requests(c)
			w := &discardWriter{h: make(http.Header)}
			g.check(t, c, rs, w, 0, "before")
			if v, _ := rs.reqs[0].Context().Value(caddy.ReplacerCtxKey).(*caddy.Replacer).GetString("http.auth.user.id"); tt.reason == policy.ReasonOK && v != g.user {
				t.Fatalf("the request does not authenticate: user %q", v)
			}
			i := 0
			allocs := testing.AllocsPerRun(200, func() {
				rs.serve(g.h, w, i)
				i++
			})
			if allocs > tt.limit {
				t.Errorf("%s: %v allocations a request, want at most %v", tt.name, allocs, tt.limit)
			}
			t.Logf("%s: %v allocations", tt.name, allocs)
		})
	}
}

// failureCount is an audit sink for parallel benchmarks: it counts the
// events of requests that did not succeed (there should be none), and
// writes nothing shared on success, so that the benchmark adds no
// contention of its own.
type failureCount struct{ n atomic.Int64 }

func (f *failureCount) Record(e event.Event) {
	if e.Reason != string(policy.ReasonOK) {
		f.n.Add(1)
	}
}

// BenchmarkServeHTTPParallel measures valid requests served from every
// core at once (b.RunParallel; compare -cpu 1,2): what the gate's shared
// state costs when cores take turns writing it. "one_token" is a single
// busy token, as a CI system hammering an API with its token; "ring"
// cycles through 1000 tokens. ns/op is wall time: at -cpu 2 without
// contention it would be half the -cpu 1 figure.
func BenchmarkServeHTTPParallel(b *testing.B) {
	g := newBenchGate(b, 1000)
	sink := &failureCount{}
	g.h.app.audit = sink
	cases := []benchCase{
		{name: "one_token", h: g.h, target: "/rest/api/2/issue/ABC-1", authz: []string{"Bearer " + g.secret}, ip: "198.51.100.7"},
		{name: "ring", h: g.h, target: "/rest/api/2/issue/ABC-1", authz: g.bearer[:min(len(g.bearer), benchRing)], ip: "198.51.100.7"},
	}
	for _, c := range cases {
		b.Run(c.name, func(b *testing.B) {
			b.ReportAllocs()
			b.RunParallel(func(pb *testing.PB) {
				rs := g.requests(c)
				w := &discardWriter{h: make(http.Header)}
				for i := 0; pb.Next(); i++ {
					rs.serve(c.h, w, i)
				}
			})
			if n := sink.n.Load(); n > 0 {
				b.Fatalf("%d requests did not succeed", n)
			}
		})
	}
}
