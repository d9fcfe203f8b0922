package caddymodule

import (
	"context"
	"encoding/base64"
	"fmt"
	"net/http"
	"net/http/httptest"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/caddyserver/caddy/v2"
	"github.com/caddyserver/caddy/v2/modules/caddyhttp"

	"github.com/apitoken/caddy-apitoken/limit"
	"github.com/apitoken/caddy-apitoken/policy"
	"github.com/apitoken/caddy-apitoken/storage"
	"github.com/apitoken/caddy-apitoken/token"
	"github.com/apitoken/caddy-apitoken/tokenstore"
)

// Tests of which credentials the gate reads, where, and what it refuses:
// a token is judged wherever it appears, never taken for a password and
// never handed on; a request may carry only one credential.

// seen is what the backend got from one request through the gate.
type seen struct {
	called bool
	code   int
	header http.Header
	query  string
	user   string // the http.auth.user.id placeholder
}

// send runs one request with the given headers (each key's values in
// order) through h, as from 198.51.100.4.
func send(t *testing.T, h *Handler, target string, header http.Header) seen {
	t.Helper()
	req := httptest.NewRequest(http.MethodGet, target, nil)
	req.Header = header.Clone()
	w := httptest.NewRecorder()
	repl := caddy.NewReplacer()
	req = caddyhttp.PrepareRequest(req, repl, w, nil)
	caddyhttp.SetVar(req.Context(), caddyhttp.ClientIPVarKey, "198.51.100.4")
	var s seen
	next := caddyhttp.HandlerFunc(func(w http.ResponseWriter, r *http.Request) error {
		s.called, s.header, s.query = true, r.Header.Clone(), r.URL.RawQuery
		w.WriteHeader(http.StatusNoContent)
		return nil
	})
	if err := h.ServeHTTP(w, req, next); err != nil {
		t.Fatalf("ServeHTTP returned %v without handle_errors routes", err)
	}
	s.code = w.Code
	s.user, _ = repl.GetString("http.auth.user.id")
	return s
}

// credentialHandler is testHandler with a token of alice's, the gate
// reading X-Api-Token and api_token too, and strip_credentials on.
func credentialHandler(t *testing.T) (h *Handler, secret string, sink *captureSink, st *tokenstore.Store) {
	t.Helper()
	h, st, clock, sink := testHandler(t)
	h.StripCredentials = true
	h.Header, h.headerKey = "X-Api-Token", "X-Api-Token"
	h.Query = "api_token"
	_, secret, err := st.Create(context.Background(), storage.NewToken{Prefix: "caddytok", User: "alice", Name: "ci", ExpiresAt: clock.Now().Add(time.Hour)}, nil)
	if err != nil {
		t.Fatal(err)
	}
	return h, secret, sink, st
}

// checkNoToken fails if the backend got any of the secrets anywhere.
func checkNoToken(t *testing.T, s seen, secrets ...string) {
	t.Helper()
	got := fmt.Sprint(s.header) + " " + s.query
	for _, secret := range secrets {
		if strings.Contains(got, secret) || strings.Contains(got, base64.StdEncoding.EncodeToString([]byte(secret))[:20]) {
			t.Errorf("a token reached the backend: %s", got)
		}
	}
}

// TestHandlerUnprotectedToken: protect decides only whether a request
// without a token may pass. A token on a path protect leaves open (Jira's
// attachments, which python3-jira fetches with the same Basic user:token)
// is authenticated, its identity set and the credential stripped; a bad
// one is refused; everything else passes untouched, as before.
func TestHandlerUnprotectedToken(t *testing.T) {
	h, secret, sink, _ := credentialHandler(t)
	var err error
	if h.protect, err = policy.CompilePathSet("protect", []string{"/rest/*"}); err != nil {
		t.Fatal(err)
	}
	_, unknown, _ := token.Generate("caddytok")
	const attachment = "/secure/attachment/10000/report.pdf"
	tests := []struct {
		name   string
		target string
		header http.Header
		reason policy.Reason // "" for a request the gate does not judge
		user   string        // the identity set on success
		keep   string        // a header that must reach the backend unchanged
	}{
		{name: "basic token", target: attachment, header: http.Header{"Authorization": {basicAuth("alice", secret)}}, reason: policy.ReasonOK, user: "alice"},
		{name: "bearer token", target: attachment, header: http.Header{"Authorization": {"Bearer " + secret}}, reason: policy.ReasonOK, user: "alice"},
		{name: "header token", target: "/plugins/servlet/x", header: http.Header{"X-Api-Token": {secret}}, reason: policy.ReasonOK, user: "alice"},
		{name: "query token", target: "/download/x?api_token=" + secret, header: http.Header{}, reason: policy.ReasonOK, user: "alice"},
		{name: "token of another user", target: attachment, header: http.Header{"Authorization": {basicAuth("bob", secret)}}, reason: policy.ReasonWrongUser},
		{name: "unknown token", target: attachment, header: http.Header{"Authorization": {basicAuth("alice", unknown)}}, reason: policy.ReasonUnknownToken},
		{name: "mistyped token", target: attachment, header: http.Header{"Authorization": {"Bearer " + mistype(secret)}}, reason: policy.ReasonMalformedToken},
		{name: "cut short", target: attachment, header: http.Header{"Authorization": {basicAuth("alice", secret[:len(secret)-1])}}, reason: policy.ReasonMalformedToken},
		{name: "token in an unknown scheme", target: attachment, header: http.Header{"Authorization": {"Token " + secret}}, reason: policy.ReasonMalformedHeader},
		{name: "token beside a password", target: attachment, header: http.Header{"Authorization": {basicAuth("alice", "hunter2"), "Bearer " + secret}}, reason: policy.ReasonAmbiguousCredentials},
		{name: "no credentials", target: attachment, header: http.Header{}},
		{name: "password", target: attachment, header: http.Header{"Authorization": {basicAuth("alice", "hunter2")}}, keep: "Authorization"},
		{name: "user name with the prefix", target: attachment, header: http.Header{"Authorization": {basicAuth("caddytok_bot", "hunter2")}}, keep: "Authorization"},
		{name: "backend's own bearer token", target: attachment, header: http.Header{"Authorization": {"Bearer NjE2NTU1NDc3NzY4OkZyZWVkb21Ub0JlVGhlQmVzdA"}}, keep: "Authorization"},
		{name: "negotiate", target: attachment, header: http.Header{"Authorization": {"Negotiate YIIBhgYGKwYBBQUCoII="}}, keep: "Authorization"},
		{name: "junk in the token header", target: attachment, header: http.Header{"X-Api-Token": {"junk"}}, keep: "X-Api-Token"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			before := len(sink.events)
			s := send(t, h, tt.target, tt.header)
			switch tt.reason {
			case "":
				if !s.called || s.user != "" || len(sink.events) != before {
					t.Fatalf("not passed untouched: called %v, user %q, %d audit events", s.called, s.user, len(sink.events)-before)
				}
				if tt.keep != "" && fmt.Sprint(s.header[tt.keep]) != fmt.Sprint(tt.header[tt.keep]) {
					t.Errorf("%s changed on its way: %q, sent %q", tt.keep, s.header[tt.keep], tt.header[tt.keep])
				}
				return
			case policy.ReasonOK:
				if !s.called || s.user != tt.user {
					t.Fatalf("a valid token was not accepted: called %v, user %q, code %d", s.called, s.user, s.code)
				}
			default:
				if s.called || s.code != http.StatusUnauthorized {
					t.Fatalf("a bad token was not refused: called %v, code %d", s.called, s.code)
				}
			}
			if e := sink.last(t); e.Reason != string(tt.reason) {
				t.Errorf("audit reason %q, want %q", e.Reason, tt.reason)
			}
			checkNoToken(t, s, secret)
		})
	}
}

// TestHandlerNearToken: a secret with a token's shape or prefix is judged
// as a token, also in a Basic password: a mistyped token is malformed
// (with the generic text), never "password authentication is disabled",
// and with passwords pass it is not handed on as a password.
func TestHandlerNearToken(t *testing.T) {
	for _, mode := range []PasswordMode{PasswordsBlock, PasswordsPass} {
		t.Run(string(mode), func(t *testing.T) {
			h, secret, sink, _ := credentialHandler(t)
			h.Passwords = mode
			tests := []struct {
				name     string
				password string
			}{
				{"bad checksum", mistype(secret)},
				{"cut short", secret[:len(secret)-1]},
				{"one character too many", secret + "x"},
				{"the prefix alone", "caddytok_"},
				{"another prefix, bad checksum", "jira_" + mistype(secret)[len("caddytok_"):]},
			}
			for _, tt := range tests {
				t.Run(tt.name, func(t *testing.T) {
					s := send(t, h, "/rest/api/2/myself", http.Header{"Authorization": {basicAuth("alice", tt.password)}})
					if s.called || s.code != http.StatusUnauthorized {
						t.Fatalf("called %v, code %d: a near-token went on", s.called, s.code)
					}
					if e := sink.last(t); e.Reason != string(policy.ReasonMalformedToken) {
						t.Errorf("audit reason %q, want %q", e.Reason, policy.ReasonMalformedToken)
					}
				})
			}
		})
	}
}

// TestHandlerAmbiguousCredentials: a request with more than one
// credential, or one carrier twice, is refused whatever the order, and
// nothing of it reaches the backend.
func TestHandlerAmbiguousCredentials(t *testing.T) {
	h, secret, sink, _ := credentialHandler(t)
	h.Passwords = PasswordsPass
	_, other, _ := token.Generate("caddytok")
	tests := []struct {
		name   string
		target string
		header http.Header
	}{
		{"password beside a token", "/rest/x", http.Header{"Authorization": {"Bearer " + secret, basicAuth("alice", "hunter2")}}},
		{"token beside a password", "/rest/x", http.Header{"Authorization": {basicAuth("alice", "hunter2"), "Bearer " + secret}}},
		{"an empty Authorization first", "/rest/x", http.Header{"Authorization": {"", "Bearer " + secret}}},
		{"authorization and the header", "/rest/x", http.Header{"Authorization": {"Bearer " + secret}, "X-Api-Token": {secret}}},
		{"a password and the header", "/rest/x", http.Header{"Authorization": {basicAuth("alice", "hunter2")}, "X-Api-Token": {secret}}},
		{"the header twice", "/rest/x", http.Header{"X-Api-Token": {secret, other}}},
		{"the query twice, junk second", "/rest/x?api_token=" + secret + "&api_token=junk", http.Header{}},
		{"the query twice, empty first", "/rest/x?api_token=&api_token=" + secret, http.Header{}},
		{"the query twice, one escaped", "/rest/x?api_token=" + secret + "&api%5Ftoken=junk", http.Header{}},
		{"the query and bearer", "/rest/x?api_token=" + secret, http.Header{"Authorization": {"Bearer " + secret}}},
		{"two tokens in basic", "/rest/x", http.Header{"Authorization": {basicAuth(secret, other)}}},
		{"a token as the user, a password", "/rest/x", http.Header{"Authorization": {basicAuth(secret, "hunter2")}}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			s := send(t, h, tt.target, tt.header)
			if s.called || s.code != http.StatusUnauthorized {
				t.Fatalf("called %v, code %d: an ambiguous request went on", s.called, s.code)
			}
			e := sink.last(t)
			if e.Reason != string(policy.ReasonAmbiguousCredentials) || e.TokenID != "" {
				t.Errorf("audit reason %q, token %q; want %q and none", e.Reason, e.TokenID, policy.ReasonAmbiguousCredentials)
			}
			if strings.Contains(e.User, secret) || strings.Contains(e.User, other) {
				t.Errorf("audit user %q is a token", e.User)
			}
		})
	}
}

// TestHandlerStripsEveryCarrier: with strip_credentials, every carrier the
// gate reads leaves the request, not only the one that held the token.
func TestHandlerStripsEveryCarrier(t *testing.T) {
	h, secret, _, _ := credentialHandler(t)
	tests := []struct {
		name   string
		target string
		header http.Header
	}{
		{"bearer and an empty header", "/rest/x?api_token=", http.Header{"Authorization": {"Bearer " + secret}, "X-Api-Token": {""}}},
		{"header and an empty Authorization", "/rest/x", http.Header{"Authorization": {""}, "X-Api-Token": {secret}}},
		{"query and empty headers", "/rest/x?a=1&api_token=" + secret, http.Header{"Authorization": {""}, "X-Api-Token": {""}}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			s := send(t, h, tt.target, tt.header)
			if !s.called || s.user != "alice" {
				t.Fatalf("not accepted: called %v, user %q, code %d", s.called, s.user, s.code)
			}
			for _, key := range []string{"Authorization", "X-Api-Token"} {
				if vs, ok := s.header[key]; ok {
					t.Errorf("%s reached the backend: %q", key, vs)
				}
			}
			if strings.Contains(s.query, "api_token") {
				t.Errorf("the query still names the parameter: %q", s.query)
			}
		})
	}
}

// TestHandlerTokenAsUser: a token in the Basic user-id, with an empty
// password or GitHub's x-oauth-basic, is taken as the token (like Bearer:
// no owner to check); with any other password it is refused. The user-id
// is never kept as the user name.
func TestHandlerTokenAsUser(t *testing.T) {
	h, secret, sink, st := credentialHandler(t)
	revoked, revokedSecret, err := st.Create(context.Background(), storage.NewToken{Prefix: "caddytok", User: "alice", Name: "old"}, nil)
	if err != nil {
		t.Fatal(err)
	}
	if _, _, err := st.Revoke(context.Background(), revoked.ID, nil); err != nil {
		t.Fatal(err)
	}
	_, unknown, _ := token.Generate("caddytok")
	tests := []struct {
		name   string
		authz  string
		reason policy.Reason
	}{
		{"token and no password", basicAuth(secret, ""), policy.ReasonOK},
		{"token and x-oauth-basic", basicAuth(secret, "x-oauth-basic"), policy.ReasonOK},
		{"revoked token", basicAuth(revokedSecret, ""), policy.ReasonRevoked},
		{"unknown token", basicAuth(unknown, "x-oauth-basic"), policy.ReasonUnknownToken},
		{"mistyped token", basicAuth(mistype(secret), ""), policy.ReasonMalformedToken},
		{"cut short", basicAuth(secret[:len(secret)-2], ""), policy.ReasonMalformedToken},
		{"token and a password", basicAuth(secret, "hunter2"), policy.ReasonAmbiguousCredentials},
		{"token and the owner's name", basicAuth(secret, "alice"), policy.ReasonAmbiguousCredentials},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			s := send(t, h, "/rest/x", http.Header{"Authorization": {tt.authz}})
			if ok := tt.reason == policy.ReasonOK; s.called != ok || (ok && s.user != "alice") {
				t.Fatalf("called %v, user %q, code %d; want accepted %v", s.called, s.user, s.code, ok)
			}
			e := sink.last(t)
			if e.Reason != string(tt.reason) {
				t.Errorf("audit reason %q, want %q", e.Reason, tt.reason)
			}
			for _, tok := range []string{secret, revokedSecret, unknown, secret[:len(secret)-2]} {
				if strings.Contains(e.User, tok[len("caddytok_"):len("caddytok_")+20]) {
					t.Errorf("audit user %q holds a token", e.User)
				}
			}
			checkNoToken(t, s, secret)
		})
	}
}

// TestHandlerEmptyPassword: git sends "user:" with an empty password
// first and asks for the password only after a 401. That is no
// credential: a challenge, no failure counted, and never handed on.
func TestHandlerEmptyPassword(t *testing.T) {
	for _, mode := range []PasswordMode{PasswordsBlock, PasswordsPass} {
		t.Run(string(mode), func(t *testing.T) {
			h, secret, sink, _ := credentialHandler(t)
			h.Passwords = mode
			h.throttle = limit.NewThrottle(limit.ThrottleConfig{MaxFailures: 2, Window: time.Minute, Cooldown: time.Minute})
			for i := range 5 {
				s := send(t, h, "/rest/x", http.Header{"Authorization": {basicAuth("alice", "")}})
				if s.called || s.code != http.StatusUnauthorized {
					t.Fatalf("request %d: called %v, code %d; want a 401 challenge", i, s.called, s.code)
				}
				if e := sink.last(t); e.Reason != string(policy.ReasonNoCredentials) || e.User != "alice" {
					t.Errorf("request %d: audit reason %q user %q, want %q alice", i, e.Reason, e.User, policy.ReasonNoCredentials)
				}
			}
			if s := send(t, h, "/rest/x", http.Header{"Authorization": {basicAuth("alice", secret)}}); !s.called {
				t.Errorf("after five empty passwords the token is refused with %d: they counted as failures", s.code)
			}
		})
	}
}

// TestHandlerControlCharacters: RFC 7617 forbids control characters in a
// Basic user-id or password; such a header is malformed.
func TestHandlerControlCharacters(t *testing.T) {
	h, secret, sink, _ := credentialHandler(t)
	h.Passwords = PasswordsPass
	tests := []struct{ name, user, password string }{
		{"escape in the user", "alice\x1b]0;x\x07", secret},
		{"newline in the user", "alice\nforged row", "hunter2"},
		{"NUL in the password", "alice", "hunter2\x00"},
		{"DEL in the password", "alice", "hunter\x7f2"},
		{"C1 control in the user", "alice\u009b31m", "hunter2"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			s := send(t, h, "/rest/x", http.Header{"Authorization": {basicAuth(tt.user, tt.password)}})
			if s.called || s.code != http.StatusUnauthorized {
				t.Fatalf("called %v, code %d", s.called, s.code)
			}
			if e := sink.last(t); e.Reason != string(policy.ReasonMalformedHeader) || e.User != "" {
				t.Errorf("audit reason %q user %q, want %q and no user", e.Reason, e.User, policy.ReasonMalformedHeader)
			}
		})
	}
}

// TestGateUnprotectedAttachment is TestHandlerUnprotectedToken in a real
// Caddy with the Jira example's options: the attachment download python3-jira
// makes with Basic alice:<token> reaches the backend without the token.
func TestGateUnprotectedAttachment(t *testing.T) {
	db := filepath.Join(t.TempDir(), "tokens.db")
	tester := startGate(t, fmt.Sprintf(`{
	`+testGlobals+`
	api_tokens {
		database %s
	}
}
http://localhost:9080 {
	api_token {
		protect /rest/*
		strip_credentials
		user_header X-Remote-User
		throttle off
	}
	respond "user={header.X-Remote-User} authz={header.Authorization}" 200
}
`, db))
	tok := createToken(t, tester, `{"user":"alice","name":"jira-cli"}`)
	status, _, body := do(t, tester, http.MethodGet, siteURL+"/secure/attachment/10000/a.pdf", "", "Authorization", basicAuth("alice", tok.Token))
	if status != 200 || body != "user=alice authz=" {
		t.Errorf("attachment with a token: %d %q, want 200 %q", status, body, "user=alice authz=")
	}
	status, _, body = do(t, tester, http.MethodGet, siteURL+"/secure/attachment/10000/a.pdf", "", "Authorization", basicAuth("alice", mistype(tok.Token)))
	if status != 401 || strings.Contains(body, "user=") {
		t.Errorf("attachment with a mistyped token: %d %q, want 401", status, body)
	}
	authz := basicAuth("alice", "hunter2")
	status, _, body = do(t, tester, http.MethodGet, siteURL+"/secure/Dashboard.jspa", "", "Authorization", authz)
	if status != 200 || body != "user= authz="+authz {
		t.Errorf("UI with a password: %d %q, want it untouched", status, body)
	}
}
