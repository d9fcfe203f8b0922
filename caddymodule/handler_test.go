package caddymodule

import (
	"bytes"
	"context"
	"fmt"
	"net/http"
	"net/http/httptest"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/caddyserver/caddy/v2"
	"github.com/caddyserver/caddy/v2/modules/caddyhttp"
	"go.uber.org/zap"

	"github.com/apitoken/caddy-apitoken/event"
	"github.com/apitoken/caddy-apitoken/internal/keytable"
	"github.com/apitoken/caddy-apitoken/internal/testkit"
	"github.com/apitoken/caddy-apitoken/limit"
	"github.com/apitoken/caddy-apitoken/policy"
	"github.com/apitoken/caddy-apitoken/storage"
	"github.com/apitoken/caddy-apitoken/token"
	"github.com/apitoken/caddy-apitoken/tokenstore"
)

// captureSink keeps audit events for assertions.
type captureSink struct {
	mu     sync.Mutex
	events []event.Event
}

func (c *captureSink) Record(e event.Event) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.events = append(c.events, e)
}

func (c *captureSink) last(t *testing.T) event.Event {
	t.Helper()
	c.mu.Lock()
	defer c.mu.Unlock()
	if len(c.events) == 0 {
		t.Fatal("no audit event recorded")
	}
	return c.events[len(c.events)-1]
}

// fakeClock is an injectable clock.
type fakeClock = testkit.Clock

// testHandler returns a handler over a fresh store in a temp dir, without
// a Caddy server.
func testHandler(t testing.TB) (*Handler, *tokenstore.Store, *fakeClock, *captureSink) {
	t.Helper()
	clock := testkit.NewClock(time.Date(2026, 11, 22, 12, 0, 0, 0, time.UTC))
	st, err := tokenstore.Open(context.Background(), filepath.Join(t.TempDir(), "t.db"), tokenstore.Options{Now: clock.Now})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { st.Close() })
	sink := &captureSink{}
	app := &App{store: st, now: clock.Now, audit: sink, TokenPrefix: token.DefaultPrefix}
	h := &Handler{Realm: "test", Passwords: PasswordsBlock, app: app, logger: zap.NewNop()}
	h.buildChallenges()
	return h, st, clock, sink
}

// serve runs one request through h and reports whether next was called.
func serve(t *testing.T, h *Handler, req *http.Request) (*httptest.ResponseRecorder, *caddy.Replacer, bool) {
	t.Helper()
	return serveFrom(t, h, req, "198.51.100.4")
}

// serveFrom is serve with Caddy's client IP set to clientIP.
func serveFrom(t *testing.T, h *Handler, req *http.Request, clientIP string) (*httptest.ResponseRecorder, *caddy.Replacer, bool) {
	t.Helper()
	w := httptest.NewRecorder()
	repl := caddy.NewReplacer()
	req = caddyhttp.PrepareRequest(req, repl, w, nil)
	caddyhttp.SetVar(req.Context(), caddyhttp.ClientIPVarKey, clientIP)
	called := false
	next := caddyhttp.HandlerFunc(func(w http.ResponseWriter, r *http.Request) error {
		called = true
		w.WriteHeader(http.StatusNoContent)
		return nil
	})
	if err := h.ServeHTTP(w, req, next); err != nil {
		t.Fatalf("ServeHTTP returned %v without handle_errors routes", err)
	}
	return w, repl, called
}

// createRevoked creates a token of user named "old" and revokes it.
func createRevoked(t *testing.T, st *tokenstore.Store, user string) (storage.Token, string) {
	t.Helper()
	ctx := context.Background()
	tok, secret, err := st.Create(ctx, storage.NewToken{Prefix: "caddytok", User: user, Name: "old"}, nil)
	if err != nil {
		t.Fatal(err)
	}
	if _, _, err := st.Revoke(ctx, tok.ID, nil); err != nil {
		t.Fatal(err)
	}
	return tok, secret
}

func TestHandlerReasons(t *testing.T) {
	h, st, clock, sink := testHandler(t)
	ctx := context.Background()
	tok, secret, err := st.Create(ctx, storage.NewToken{Prefix: "caddytok", User: "alice", Name: "ci", ExpiresAt: clock.Now().Add(time.Hour)}, nil)
	if err != nil {
		t.Fatal(err)
	}
	revoked, revokedSecret := createRevoked(t, st, "alice")
	_, unknownSecret, _ := token.Generate("caddytok")

	tests := []struct {
		name    string
		authz   string
		advance time.Duration
		reason  policy.Reason
		tokenID string
	}{
		{"ok", basicAuth("ALICE", secret), 0, policy.ReasonOK, tok.ID},
		{"no credentials", "", 0, policy.ReasonNoCredentials, ""},
		{"malformed header", "Basic %%%", 0, policy.ReasonMalformedHeader, ""},
		{"malformed token", "Bearer caddytok_short", 0, policy.ReasonMalformedToken, ""},
		// The checksum is checked after the look-up fails (ParseShape):
		// a mistyped token is still malformed, in Basic too (never a
		// password).
		{"mistyped token", "Bearer " + mistype(secret), 0, policy.ReasonMalformedToken, ""},
		{"mistyped token as a password", basicAuth("alice", mistype(secret)), 0, policy.ReasonMalformedToken, ""},
		{"ambiguous", basicAuth(secret, "correct horse"), 0, policy.ReasonAmbiguousCredentials, ""},
		{"password", basicAuth("alice", "correct horse"), 0, policy.ReasonPasswordBlocked, ""},
		{"unknown", "Bearer " + unknownSecret, 0, policy.ReasonUnknownToken, ""},
		{"wrong user", basicAuth("mallory", secret), 0, policy.ReasonWrongUser, tok.ID},
		{"revoked", "Bearer " + revokedSecret, 0, policy.ReasonRevoked, revoked.ID},
		{"revoked, another user's", basicAuth("mallory", revokedSecret), 0, policy.ReasonRevoked, revoked.ID},
		{"expired", "Bearer " + secret, time.Hour, policy.ReasonExpired, tok.ID},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			clock.Advance(tt.advance)
			req := httptest.NewRequest(http.MethodGet, "/rest/api/2/issue?jql=secret", nil)
			if tt.authz != "" {
				req.Header.Set("Authorization", tt.authz)
			}
			w, repl, called := serve(t, h, req)
			e := sink.last(t)
			if e.Reason != string(tt.reason) || e.TokenID != tt.tokenID {
				t.Errorf("audit reason %q token %q, want %q %q", e.Reason, e.TokenID, tt.reason, tt.tokenID)
			}
			if e.ClientIP != "198.51.100.4" || e.Path != "/rest/api/2/issue" || e.Method != "GET" {
				t.Errorf("audit request fields: %+v", e)
			}
			for _, s := range []string{secret, revokedSecret, unknownSecret, "correct horse", "jql", tt.authz} {
				if s != "" && strings.Contains(fmt.Sprintf("%+v", e), s) {
					t.Errorf("audit event carries a secret or query: %+v", e)
				}
			}
			user, _ := repl.GetString("http.auth.user.id")
			if tt.reason == policy.ReasonOK {
				if !called || user != "alice" || w.Code != http.StatusNoContent {
					t.Errorf("success: called=%v user=%q code=%d", called, user, w.Code)
				}
				if id, _ := repl.GetString("http.auth.user.token_id"); id != tok.ID {
					t.Errorf("token_id placeholder = %q", id)
				}
				return
			}
			if called || user != "" || w.Code != http.StatusUnauthorized {
				t.Errorf("denial: called=%v user=%q code=%d", called, user, w.Code)
			}
			if got := w.Header().Get("WWW-Authenticate"); got != `Basic realm="test", charset="UTF-8"` {
				t.Errorf("WWW-Authenticate = %q", got)
			}
			// Only a holder of the secret learns that the token expired or
			// was revoked; anyone else gets the generic text.
			want := msgUnauthorized
			switch tt.reason {
			case policy.ReasonPasswordBlocked:
				want = msgPasswordBlocked
			case policy.ReasonExpired:
				want = "this API token has expired"
			case policy.ReasonRevoked:
				want = "this API token has been revoked"
			}
			if w.Body.String() != want+"\n" {
				t.Errorf("body %q, want %q", w.Body.String(), want)
			}
		})
	}
}

func TestHandlerBearerChallenge(t *testing.T) {
	h, _, _, _ := testHandler(t)
	req := httptest.NewRequest(http.MethodGet, "/", nil)
	req.Header.Set("Authorization", "Bearer nope")
	w, _, _ := serve(t, h, req)
	got := w.Header().Values("WWW-Authenticate")
	if len(got) != 2 || got[1] != `Bearer realm="test", error="invalid_token"` {
		t.Errorf("WWW-Authenticate = %q", got)
	}
}

// TestHandlerChallengeDescriptions: a Bearer challenge says why a token
// whose secret matched is refused (RFC 6750 error_description); a wrong
// or unknown token gets the challenge without one.
func TestHandlerChallengeDescriptions(t *testing.T) {
	h, st, clock, _ := testHandler(t)
	ctx := context.Background()
	_, expiring, err := st.Create(ctx, storage.NewToken{Prefix: "caddytok", User: "alice", Name: "soon", ExpiresAt: clock.Now().Add(time.Minute)}, nil)
	if err != nil {
		t.Fatal(err)
	}
	_, revokedSecret := createRevoked(t, st, "alice")
	_, unknown, _ := token.Generate("caddytok")
	clock.Advance(time.Hour)
	basic := `Basic realm="test", charset="UTF-8"`
	tests := []struct {
		name, authz string
		challenge   []string
		body        string
	}{
		{"expired bearer", "Bearer " + expiring, []string{basic, `Bearer realm="test", error="invalid_token", error_description="this API token has expired"`}, "this API token has expired"},
		{"revoked bearer", "Bearer " + revokedSecret, []string{basic, `Bearer realm="test", error="invalid_token", error_description="this API token has been revoked"`}, "this API token has been revoked"},
		{"expired basic", basicAuth("alice", expiring), []string{basic}, "this API token has expired"},
		{"unknown bearer", "Bearer " + unknown, []string{basic, `Bearer realm="test", error="invalid_token"`}, msgUnauthorized},
		{"malformed bearer", "Bearer nope", []string{basic, `Bearer realm="test", error="invalid_token"`}, msgUnauthorized},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			req := httptest.NewRequest(http.MethodGet, "/rest/x", nil)
			req.Header.Set("Authorization", tt.authz)
			w, _, called := serve(t, h, req)
			if called || w.Code != http.StatusUnauthorized {
				t.Fatalf("%d, next called %v", w.Code, called)
			}
			if got := w.Header().Values("WWW-Authenticate"); !slices.Equal(got, tt.challenge) {
				t.Errorf("WWW-Authenticate = %q, want %q", got, tt.challenge)
			}
			if w.Body.String() != tt.body+"\n" {
				t.Errorf("body %q, want %q", w.Body.String(), tt.body)
			}
			if n := len(tt.body) + 1; w.Header().Get("Content-Length") != fmt.Sprint(n) {
				t.Errorf("Content-Length %q, want %d", w.Header().Get("Content-Length"), n)
			}
		})
	}
}

func TestHandlerValidate(t *testing.T) {
	tests := []struct {
		name string
		h    Handler
		err  string
	}{
		{"defaults", Handler{Passwords: PasswordsBlock}, ""},
		{"pass", Handler{Passwords: PasswordsPass, Header: "X-Api-Token", Query: "api_token"}, ""},
		{"bad mode", Handler{Passwords: "allow"}, `passwords "allow"`},
		{"quote in realm", Handler{Passwords: PasswordsBlock, Realm: `a"b`}, "realm"},
		{"bad header", Handler{Passwords: PasswordsBlock, Header: "X Api"}, `header "X Api"`},
		{"authorization header", Handler{Passwords: PasswordsBlock, Header: "authorization"}, "always read"},
		{"bad query", Handler{Passwords: PasswordsBlock, Query: "a&b"}, `query "a&b"`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			err := tt.h.Validate()
			if (err == nil) != (tt.err == "") || (err != nil && !strings.Contains(err.Error(), tt.err)) {
				t.Errorf("Validate() = %v, want %q", err, tt.err)
			}
		})
	}
}

func TestRemoveQueryParam(t *testing.T) {
	tests := []struct{ raw, name, want string }{
		{"api_token=x", "api_token", ""},
		{"a=1&api_token=x&b=2", "api_token", "a=1&b=2"},
		{"api_token=x&api_token=y&a=%20", "api_token", "a=%20"},
		{"api%5Ftoken=x&a=1", "api_token", "a=1"},
		{"api_tokens=x", "api_token", "api_tokens=x"},
		{"a=1&b", "api_token", "a=1&b"},
	}
	for _, tt := range tests {
		if got := removeQueryParam(tt.raw, tt.name); got != tt.want {
			t.Errorf("removeQueryParam(%q) = %q, want %q", tt.raw, got, tt.want)
		}
	}
}

// TestRequestTime: with the real clock the gate judges a request at the
// time Caddy took it in; a test's clock wins over it.
func TestRequestTime(t *testing.T) {
	start := time.Date(2026, 11, 22, 8, 0, 0, 0, time.UTC)
	vars := map[string]any{"start_time": start}
	real := &Handler{app: &App{now: time.Now, realClock: true}}
	if got := real.requestTime(vars); !got.Equal(start) {
		t.Errorf("real clock, start_time %v: judged at %v", start, got)
	}
	before := time.Now()
	if got := real.requestTime(map[string]any{}); got.Before(before) {
		t.Errorf("real clock, no start_time: judged at %v, before %v", got, before)
	}
	if got := real.requestTime(map[string]any{"start_time": "noon"}); got.Before(before) {
		t.Errorf("real clock, a start_time that is no time: judged at %v, before %v", got, before)
	}
	clock := testkit.NewClock(start.Add(time.Hour))
	fake := &Handler{app: &App{now: clock.Now}}
	if got := fake.requestTime(vars); !got.Equal(clock.Now()) {
		t.Errorf("test clock: judged at %v, want the clock's %v", got, clock.Now())
	}
}

// TestRefusalHeaderValues: a refusal's header values share one allocation,
// but a later handler adding to one header must not change another.
func TestRefusalHeaderValues(t *testing.T) {
	h, _, _, _ := testHandler(t)
	_, unknown, _ := token.Generate("caddytok")
	req := httptest.NewRequest(http.MethodGet, "/rest/x", nil)
	req.Header.Set("Authorization", "Bearer "+unknown)
	w, _, called := serve(t, h, req)
	if called || w.Code != http.StatusUnauthorized {
		t.Fatalf("unknown token: %d, next called %v", w.Code, called)
	}
	hdr := w.Header()
	want := map[string][]string{
		"Www-Authenticate":       {h.basicChallenge, h.bearerChallenge},
		"Content-Type":           {"text/plain; charset=utf-8"},
		"Content-Length":         {textUnauthorized.length},
		"X-Content-Type-Options": {"nosniff"},
	}
	for k, v := range want {
		if !slices.Equal(hdr[k], v) {
			t.Errorf("%s: %q, want %q", k, hdr[k], v)
		}
	}
	hdr.Add("Www-Authenticate", "Other")
	hdr.Add("Content-Type", "x")
	for _, k := range []string{"Content-Length", "X-Content-Type-Options"} {
		if !slices.Equal(hdr[k], want[k]) {
			t.Errorf("after adding to other headers, %s: %q, want %q", k, hdr[k], want[k])
		}
	}
	if got := hdr["Content-Type"]; !slices.Equal(got, []string{"text/plain; charset=utf-8", "x"}) {
		t.Errorf("Content-Type after Add: %q", got)
	}
}

// TestHandlerUserHeaderStripped checks what the backend gets with
// strip_credentials and user_header together, for every place a token can
// come from: no credential, and the user header alone with one value (the
// gate reuses the removed header's value slice for it).
func TestHandlerUserHeaderStripped(t *testing.T) {
	h, st, clock, _ := testHandler(t)
	h.StripCredentials = true
	h.UserHeader, h.userHeaderKey = "X-Remote-User", "X-Remote-User"
	h.Header, h.headerKey = "X-Api-Token", "X-Api-Token"
	h.Query = "api_token"
	_, secret, err := st.Create(context.Background(), storage.NewToken{Prefix: "caddytok", User: "alice", Name: "ci", ExpiresAt: clock.Now().Add(time.Hour)}, nil)
	if err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name   string
		target string
		header http.Header
	}{
		{"bearer", "/rest/x", http.Header{"Authorization": {"Bearer " + secret}}},
		{"basic", "/rest/x", http.Header{"Authorization": {basicAuth("alice", secret)}}},
		{"spoofed user header", "/rest/x", http.Header{"Authorization": {"Bearer " + secret}, "X-Remote-User": {"admin", "root"}}},
		{"header", "/rest/x", http.Header{"X-Api-Token": {secret}}},
		{"query", "/rest/x?a=1&api_token=" + secret, http.Header{}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			req := httptest.NewRequest(http.MethodGet, tt.target, nil)
			req.Header = tt.header.Clone()
			req = caddyhttp.PrepareRequest(req, caddy.NewReplacer(), httptest.NewRecorder(), nil)
			caddyhttp.SetVar(req.Context(), caddyhttp.ClientIPVarKey, "198.51.100.4")
			var got http.Header
			var query string
			next := caddyhttp.HandlerFunc(func(w http.ResponseWriter, r *http.Request) error {
				got, query = r.Header.Clone(), r.URL.RawQuery
				return nil
			})
			if err := h.ServeHTTP(httptest.NewRecorder(), req, next); err != nil || got == nil {
				t.Fatalf("the request did not go on: %v", err)
			}
			if vs := got["X-Remote-User"]; len(vs) != 1 || vs[0] != "alice" {
				t.Errorf("X-Remote-User = %q, want [alice]", vs)
			}
			for _, key := range []string{"Authorization", "X-Api-Token"} {
				if vs, ok := got[key]; ok {
					t.Errorf("%s reached the backend: %q", key, vs)
				}
			}
			if strings.Contains(query, secret) {
				t.Errorf("the query still holds the token: %q", query)
			}
		})
	}
}

// TestHandlerBasicBufferCleared checks that the buffers Basic credentials
// are decoded into go back to their pool without the credential: every
// buffer the pool hands out after a request is all zeros.
func TestHandlerBasicBufferCleared(t *testing.T) {
	h, st, clock, _ := testHandler(t)
	_, secret, err := st.Create(context.Background(), storage.NewToken{Prefix: "caddytok", User: "alice", Name: "ci", ExpiresAt: clock.Now().Add(time.Hour)}, nil)
	if err != nil {
		t.Fatal(err)
	}
	for i, authz := range []string{basicAuth("alice", secret), basicAuth("mallory", secret), basicAuth("alice", "hunter2"), "Basic %%%"} {
		for range 10 {
			req := httptest.NewRequest(http.MethodGet, "/rest/x", nil)
			req.Header.Set("Authorization", authz)
			serve(t, h, req)
			buf := basicBuffers.Get().(*policy.BasicBuffer)
			if *buf != (policy.BasicBuffer{}) {
				t.Fatalf("credential %d: a pooled buffer holds %q", i, bytes.TrimRight(buf[:], "\x00"))
			}
			basicBuffers.Put(buf)
		}
	}
}

// TestIdentityPlaceholders: a token's placeholders follow its current
// name, and a request keeps the identity it was accepted with, even
// after the token is renamed (Caddy may read them after the handler
// returns, as an access log does).
func TestIdentityPlaceholders(t *testing.T) {
	h, st, _, _ := testHandler(t)
	ctx := context.Background()
	tok, secret, err := st.Create(ctx, storage.NewToken{Prefix: "caddytok", User: "alice", Name: "ci"}, nil)
	if err != nil {
		t.Fatal(err)
	}
	placeholders := func(repl *caddy.Replacer) string {
		user, _ := repl.GetString("http.auth.user.id")
		id, _ := repl.GetString("http.auth.user.token_id")
		name, _ := repl.GetString("http.auth.user.token_name")
		return user + " " + id + " " + name
	}
	request := func() *caddy.Replacer {
		req := httptest.NewRequest(http.MethodGet, "/rest/api", nil)
		req.SetBasicAuth("alice", secret)
		_, repl, called := serve(t, h, req)
		if !called {
			t.Fatal("the request was refused")
		}
		return repl
	}
	first := request()
	if got, want := placeholders(first), "alice "+tok.ID+" ci"; got != want {
		t.Fatalf("placeholders %q, want %q", got, want)
	}
	if got := placeholders(request()); got != "alice "+tok.ID+" ci" {
		t.Fatalf("second request: placeholders %q", got)
	}
	name := "deploy"
	if _, err := st.Update(ctx, tok.ID, storage.Patch{Name: &name}, nil); err != nil {
		t.Fatal(err)
	}
	if got, want := placeholders(request()), "alice "+tok.ID+" deploy"; got != want {
		t.Errorf("after the rename: placeholders %q, want %q", got, want)
	}
	if got, want := placeholders(first), "alice "+tok.ID+" ci"; got != want {
		t.Errorf("the first request's placeholders changed to %q, want %q", got, want)
	}
}

// TestIdentityCacheCollision: two tokens in one slot of the cache each
// get their own identity, whichever came last.
func TestIdentityCacheCollision(t *testing.T) {
	c := new(identityCache)
	slotOf := func(key uint64) uint64 { return keytable.Hash(key) >> (64 - identityCacheBits) }
	a := storage.Entry{Key: 12345, ID: "aaaaaaaaaaab", Name: "one", User: "alice"}
	b := storage.Entry{Key: a.Key + 1, ID: "aaaaaaaaaaac", Name: "two", User: "bob"}
	for slotOf(b.Key) != slotOf(a.Key) {
		b.Key++
	}
	get := func(f caddy.ReplacerFunc, key string) string {
		v, ok := f(key)
		if !ok {
			t.Fatalf("the provider does not know %s", key)
		}
		return v.(string)
	}
	for round := range 3 {
		for _, e := range []storage.Entry{a, b} {
			f := c.provider(&e)
			got := get(f, "http.auth.user.id") + " " + get(f, "http.auth.user.token_id") + " " + get(f, "http.auth.user.token_name")
			if want := e.User + " " + e.ID + " " + e.Name; got != want {
				t.Errorf("round %d: %q, want %q", round, got, want)
			}
			if _, ok := f("http.auth.user.other"); ok {
				t.Errorf("the provider answers for an unknown placeholder")
			}
		}
	}
	// The same token again, with its slot holding it: the same identity.
	slot := &c.slots[slotOf(b.Key)]
	held := slot.Load()
	if held == nil || held.id != b.ID {
		t.Fatalf("the slot holds %+v, want b's identity", held)
	}
	c.provider(&b)
	if slot.Load() != held {
		t.Errorf("a cached token got a new identity")
	}
}

// TestHandlerThrottleKeys: the throttle counts failures per client IP and
// claimed user, so one client that keeps failing as one user does not
// lock out the others behind its address; and clients whose address did
// not parse (a unix socket front proxy Caddy does not trust) do not all
// share one count.
func TestHandlerThrottleKeys(t *testing.T) {
	for _, clientIP := range []string{"203.0.113.5", "", "@"} {
		t.Run("client_ip="+clientIP, func(t *testing.T) {
			h, st, clock, _ := testHandler(t)
			h.throttle = limit.NewThrottle(limit.ThrottleConfig{MaxFailures: 2})
			_, secret, err := st.Create(context.Background(), storage.NewToken{Prefix: "caddytok", User: "alice", Name: "ci", ExpiresAt: clock.Now().Add(time.Hour)}, nil)
			if err != nil {
				t.Fatal(err)
			}
			send := func(authz string) int {
				t.Helper()
				req := httptest.NewRequest(http.MethodGet, "/rest/x", nil)
				req.Header.Set("Authorization", authz)
				w := httptest.NewRecorder()
				req = caddyhttp.PrepareRequest(req, caddy.NewReplacer(), w, nil)
				caddyhttp.SetVar(req.Context(), caddyhttp.ClientIPVarKey, clientIP)
				next := caddyhttp.HandlerFunc(func(w http.ResponseWriter, r *http.Request) error {
					w.WriteHeader(http.StatusNoContent)
					return nil
				})
				if err := h.ServeHTTP(w, req, next); err != nil {
					t.Fatal(err)
				}
				return w.Code
			}
			for i := range 2 {
				if code := send(basicAuth("mallory", "guess")); code != http.StatusUnauthorized {
					t.Fatalf("failure %d: %d", i+1, code)
				}
			}
			if code := send(basicAuth("mallory", "guess")); code != http.StatusTooManyRequests {
				t.Errorf("mallory after 2 failures: %d, want 429", code)
			}
			if code := send(basicAuth("alice", secret)); code != http.StatusNoContent {
				t.Errorf("alice from the same address: %d, want 204", code)
			}
			if code := send("Bearer " + secret); code != http.StatusNoContent {
				t.Errorf("a Bearer token from the same address: %d, want 204", code)
			}
		})
	}
}

// TestCheckScopeRewritten: when an earlier handler changed r.URL but not
// the request-target, a token's paths scope must hold for both.
func TestCheckScopeRewritten(t *testing.T) {
	scope, err := policy.CompileScope(policy.Scope{Paths: []string{"/rest/api/*"}})
	if err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name, target, path string
		want               policy.Reason
	}{
		{"not rewritten", "/rest/api/2/myself", "/rest/api/2/myself", policy.ReasonOK},
		{"both in scope", "/rest/api/a", "/rest/api/b", policy.ReasonOK},
		{"rewritten out of scope", "/rest/api/a", "/secure/admin/users", policy.ReasonPathNotAllowed},
		{"raw out of scope", "/alias", "/rest/api/2/myself", policy.ReasonPathNotAllowed},
		{"raw traversal", "/rest/api/..;/..;/secure", "/rest/api/x", policy.ReasonPathNotAllowed},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			r := httptest.NewRequest(http.MethodGet, tt.target, nil)
			r.URL.Path, r.URL.RawPath = tt.path, ""
			paths := targets(r)
			if got := new(Handler).checkScope(r, &paths, &scope); got != tt.want {
				t.Errorf("checkScope = %q, want %q (rewrote %v)", got, tt.want, paths.rewrote)
			}
		})
	}
}
