package caddymodule

import (
	"context"
	"fmt"
	"net/http"
	"net/http/httptest"
	"net/netip"
	"testing"
	"time"

	"github.com/caddyserver/caddy/v2"
	"github.com/caddyserver/caddy/v2/modules/caddyhttp"

	"github.com/apitoken/caddy-apitoken/audit"
	"github.com/apitoken/caddy-apitoken/policy"
	"github.com/apitoken/caddy-apitoken/tokenstore"
)

// benchGate is a handler with every check on (path inspection, protect,
// throttle, gate and token CIDRs, holders, scope, rate limit) over a store
// of n tokens.
type benchGate struct {
	h        *Handler
	secret   string
	user     string
	unknown  string
	wrong    string
	throttle netip.Addr
}

func newBenchGate(tb testing.TB, n int) *benchGate {
	tb.Helper()
	h, st, clock, _ := testHandler(tb)
	h.app.audit = discardSink{}
	var err error
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
	h.throttle = policy.NewThrottle(policy.ThrottleConfig{MaxFailures: 10, Window: time.Minute, Cooldown: 5 * time.Minute})
	h.limiter = policy.NewRateLimiter(0)
	h.rate = policy.Rate{Events: 1 << 30, Per: time.Second}

	ctx := context.Background()
	g := &benchGate{h: h, user: "user0", throttle: netip.MustParseAddr("203.0.113.66")}
	for i := range n {
		user := fmt.Sprintf("user%d", i%1000)
		_, secret, err := st.Create(ctx, tokenstore.NewToken{
			Prefix: "caddytok", User: user, Name: fmt.Sprintf("t%d", i),
			ExpiresAt:  clock.Now().Add(24 * time.Hour),
			AllowedIPs: []string{"198.51.100.0/24"},
			Scope:      policy.Scope{Methods: []string{"GET", "POST"}, Paths: []string{"/rest/api/*"}},
		}, nil)
		if err != nil {
			tb.Fatal(err)
		}
		if i == 0 {
			g.secret = secret
		}
	}
	if _, _, err := st.AddMember(ctx, "staff", "user0", nil); err != nil {
		tb.Fatal(err)
	}
	_, g.unknown, _ = tokenstore.Generate("caddytok")
	g.wrong = g.secret[:len(g.secret)-1] + "x"
	for range 10 {
		h.throttle.Fail(g.throttle, clock.Now())
	}
	return g
}

type discardSink struct{}

func (discardSink) Record(audit.Event) {}

// benchRequest is one prepared request, reused across iterations the way a
// server reuses nothing but the handler: each iteration gets a fresh
// replacer, as Caddy gives each request.
func (g *benchGate) request(target, authz, clientIP string) func() *http.Request {
	return func() *http.Request {
		req := httptest.NewRequest(http.MethodGet, target, nil)
		if authz != "" {
			req.Header.Set("Authorization", authz)
		}
		req = caddyhttp.PrepareRequest(req, caddy.NewReplacer(), nil, nil)
		caddyhttp.SetVar(req.Context(), caddyhttp.ClientIPVarKey, clientIP)
		return req
	}
}

var nopNext = caddyhttp.HandlerFunc(func(http.ResponseWriter, *http.Request) error { return nil })

// discardWriter is a ResponseWriter that keeps nothing.
type discardWriter struct{ h http.Header }

func (w *discardWriter) Header() http.Header         { return w.h }
func (w *discardWriter) Write(b []byte) (int, error) { return len(b), nil }
func (w *discardWriter) WriteHeader(int)             {}

// BenchmarkServeHTTP measures the whole decision for one request: the
// handler's ServeHTTP with a no-op next. The request is built outside the
// timed region; "baseline" serves a request outside protect (inspection
// only), so each case can be read as a ratio to it.
func BenchmarkServeHTTP(b *testing.B) {
	for _, n := range []int{1000} {
		g := newBenchGate(b, n)
		cases := []struct {
			name, target, authz, ip string
		}{
			{"baseline_unprotected", "/secure/Dashboard.jspa", "", "198.51.100.7"},
			{"valid_basic", "/rest/api/2/issue/ABC-1", basicAuth(g.user, g.secret), "198.51.100.7"},
			{"valid_bearer", "/rest/api/2/issue/ABC-1", "Bearer " + g.secret, "198.51.100.7"},
			{"malformed_token", "/rest/api/2/issue/ABC-1", "Bearer caddytok_nope", "198.51.100.7"},
			{"unknown_token", "/rest/api/2/issue/ABC-1", "Bearer " + g.unknown, "198.51.100.7"},
			{"mistyped_token", "/rest/api/2/issue/ABC-1", "Bearer " + g.wrong, "198.51.100.7"},
			{"password_blocked", "/rest/api/2/issue/ABC-1", basicAuth(g.user, "hunter2"), "198.51.100.7"},
			{"ip_denied", "/rest/api/2/issue/ABC-1", "Bearer " + g.secret, "10.1.2.3"},
			{"scope_denied", "/rest/other", "Bearer " + g.secret, "198.51.100.7"},
			{"path_blocked", "/rest/..;/WEB-INF/web.xml", "Bearer " + g.secret, "198.51.100.7"},
			{"throttled", "/rest/api/2/issue/ABC-1", "Bearer " + g.secret, g.throttle.String()},
		}
		for _, c := range cases {
			b.Run(fmt.Sprintf("%s/tokens=%d", c.name, n), func(b *testing.B) {
				mk := g.request(c.target, c.authz, c.ip)
				reqs := make([]*http.Request, 256)
				for i := range reqs {
					reqs[i] = mk()
				}
				w := &discardWriter{h: make(http.Header)}
				b.ReportAllocs()
				b.ResetTimer()
				for i := 0; i < b.N; i++ {
					r := reqs[i%len(reqs)]
					clear(w.h)
					_ = g.h.ServeHTTP(w, r, nopNext)
				}
			})
		}
	}
}

// TestServeHTTPAllocs bounds the allocations of a valid request with every
// check on, so a change that adds allocations to the hot path shows up.
func TestServeHTTPAllocs(t *testing.T) {
	g := newBenchGate(t, 10)
	mk := g.request("/rest/api/2/issue/ABC-1", basicAuth(g.user, g.secret), "198.51.100.7")
	w := &discardWriter{h: make(http.Header)}
	req := mk()
	if err := g.h.ServeHTTP(w, req, nopNext); err != nil {
		t.Fatal(err)
	}
	if v, _ := req.Context().Value(caddy.ReplacerCtxKey).(*caddy.Replacer).GetString("http.auth.user.id"); v != g.user {
		t.Fatalf("the benchmark request does not authenticate: user %q", v)
	}
	allocs := testing.AllocsPerRun(200, func() {
		_ = g.h.ServeHTTP(w, req, nopNext)
	})
	// Basic decoding (2), and the replacer's three placeholders; nothing
	// per check.
	const limit = 8
	if allocs > limit {
		t.Errorf("a valid request allocates %v times, want at most %d", allocs, limit)
	}
	t.Logf("valid request: %v allocations", allocs)
}
