package caddymodule

// In-process Caddy tests: one Caddy per test binary, admin on
// localhost:2999, no t.Parallel (see caddytest).

import (
	"bytes"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/caddyserver/caddy/v2/caddytest"

	"github.com/apitoken/caddy-apitoken/token"
	"github.com/apitoken/caddy-apitoken/tokenstore"
)

const (
	adminURL = "http://localhost:2999"
	siteURL  = "http://localhost:9080"
)

// testGlobals are the global options every caddytest config starts with:
// the admin address and ports caddytest expects, no local CA, and no
// grace period to wait out between configs.
const testGlobals = `skip_install_trust
	admin localhost:2999
	http_port 9080
	https_port 9443
	grace_period 1ns`

// gateConfig is a Caddyfile with the gate in front of /rest/* and a
// respond backend that echoes the identity the gate set.
func gateConfig(db, handlerOpts, extraSite string) string {
	return fmt.Sprintf(`{
	`+testGlobals+`
	api_tokens {
		database %s
	}
}
http://localhost:9080 {
	api_token /rest/* {
		throttle off
		%s
	}
	%s
	respond /rest/* "user={http.auth.user.id} token={http.auth.user.token_id} name={http.auth.user.token_name} authz={header.Authorization} xtok={header.X-Api-Token} query={query}" 200
	respond "public" 200
}
`, db, handlerOpts, extraSite)
}

// startGate loads config into the test Caddy and returns a tester.
func startGate(t *testing.T, config string) *caddytest.Tester {
	t.Helper()
	tester := caddytest.NewTester(t)
	tester.InitServer(config, "caddyfile")
	return tester
}

// do sends a request and returns status, headers and body.
func do(t *testing.T, tester *caddytest.Tester, method, url string, body string, header ...string) (int, http.Header, string) {
	t.Helper()
	var rd io.Reader
	if body != "" {
		rd = strings.NewReader(body)
	}
	req, err := http.NewRequest(method, url, rd)
	if err != nil {
		t.Fatal(err)
	}
	for i := 0; i+1 < len(header); i += 2 {
		req.Header.Set(header[i], header[i+1])
	}
	resp, err := tester.Client.Do(req)
	if err != nil {
		t.Fatalf("%s %s: %v", method, url, err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	return resp.StatusCode, resp.Header, string(b)
}

func basicAuth(user, pass string) string {
	return "Basic " + base64.StdEncoding.EncodeToString([]byte(user+":"+pass))
}

// createToken makes a token through the admin API and returns it with its secret.
func createToken(t *testing.T, tester *caddytest.Tester, body string) tokenJSON {
	t.Helper()
	status, _, out := do(t, tester, http.MethodPost, adminURL+"/api_tokens/tokens", body)
	if status != http.StatusCreated {
		t.Fatalf("create %s: status %d: %s", body, status, out)
	}
	var tok tokenJSON
	if err := json.Unmarshal([]byte(out), &tok); err != nil {
		t.Fatalf("decoding %s: %v", out, err)
	}
	if tok.Token == "" || tok.ID == "" {
		t.Fatalf("create answered without id or secret: %s", out)
	}
	return tok
}

// listTokens returns every token through the admin API.
func listTokens(t *testing.T, tester *caddytest.Tester, query string) []tokenJSON {
	t.Helper()
	status, _, out := do(t, tester, http.MethodGet, adminURL+"/api_tokens/tokens"+query, "")
	if status != http.StatusOK {
		t.Fatalf("list: status %d: %s", status, out)
	}
	var toks []tokenJSON
	if err := json.Unmarshal([]byte(out), &toks); err != nil {
		t.Fatalf("decoding %s: %v", out, err)
	}
	return toks
}

func TestGateStatuses(t *testing.T) {
	db := filepath.Join(t.TempDir(), "tokens.db")
	tester := startGate(t, gateConfig(db, "realm jira", ""))
	tok := createToken(t, tester, `{"user":"Alice","name":"ci","description":"build server"}`)
	other := createToken(t, tester, `{"user":"bob","name":"ci"}`)

	wantOK := fmt.Sprintf("user=Alice token=%s name=ci", tok.ID)
	unknown, _, err := token.Generate(token.DefaultPrefix)
	if err != nil {
		t.Fatal(err)
	}
	_, unknownSecret, _ := token.Generate(token.DefaultPrefix)
	_ = unknown

	tests := []struct {
		name    string
		header  []string
		path    string
		status  int
		body    string // substring
		wwwAuth bool
		noIdent bool
	}{
		{name: "no credentials", path: "/rest/api", status: 401, body: msgUnauthorized, wwwAuth: true, noIdent: true},
		{name: "basic with token", header: []string{"Authorization", basicAuth("Alice", tok.Token)}, path: "/rest/api", status: 200, body: wantOK},
		{name: "basic user case-insensitive", header: []string{"Authorization", basicAuth("alice", tok.Token)}, path: "/rest/api", status: 200, body: wantOK},
		{name: "basic scheme lowercase", header: []string{"Authorization", "basic " + base64.StdEncoding.EncodeToString([]byte("alice:"+tok.Token))}, path: "/rest/api", status: 200, body: wantOK},
		{name: "bearer", header: []string{"Authorization", "Bearer " + tok.Token}, path: "/rest/api", status: 200, body: wantOK},
		{name: "bearer scheme uppercase", header: []string{"Authorization", "BEARER " + tok.Token}, path: "/rest/api", status: 200, body: wantOK},
		{name: "password blocked", header: []string{"Authorization", basicAuth("alice", "hunter2")}, path: "/rest/api", status: 401, body: "password authentication is disabled", wwwAuth: true, noIdent: true},
		{name: "wrong user", header: []string{"Authorization", basicAuth("bob", tok.Token)}, path: "/rest/api", status: 401, body: msgUnauthorized, wwwAuth: true, noIdent: true},
		{name: "other user's token", header: []string{"Authorization", basicAuth("alice", other.Token)}, path: "/rest/api", status: 401, body: msgUnauthorized, wwwAuth: true, noIdent: true},
		{name: "unknown token", header: []string{"Authorization", "Bearer " + unknownSecret}, path: "/rest/api", status: 401, body: msgUnauthorized, wwwAuth: true, noIdent: true},
		{name: "mistyped token", header: []string{"Authorization", "Bearer " + mistype(tok.Token)}, path: "/rest/api", status: 401, body: msgUnauthorized, wwwAuth: true, noIdent: true},
		{name: "malformed bearer", header: []string{"Authorization", "Bearer not-a-token"}, path: "/rest/api", status: 401, body: msgUnauthorized, wwwAuth: true, noIdent: true},
		{name: "malformed basic", header: []string{"Authorization", "Basic !!!"}, path: "/rest/api", status: 401, body: msgUnauthorized, wwwAuth: true, noIdent: true},
		{name: "unsupported scheme", header: []string{"Authorization", "Digest username=alice"}, path: "/rest/api", status: 401, body: msgUnauthorized, wwwAuth: true, noIdent: true},
		{name: "outside the matcher", path: "/public", status: 200, body: "public"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			status, hdr, body := do(t, tester, http.MethodGet, siteURL+tt.path, "", tt.header...)
			if status != tt.status {
				t.Fatalf("status %d, want %d (body %q)", status, tt.status, body)
			}
			if !strings.Contains(body, tt.body) {
				t.Errorf("body %q does not contain %q", body, tt.body)
			}
			if got := hdr.Get("WWW-Authenticate"); tt.wwwAuth != (got != "") {
				t.Errorf("WWW-Authenticate = %q, want present=%v", got, tt.wwwAuth)
			} else if tt.wwwAuth && got != `Basic realm="jira", charset="UTF-8"` {
				t.Errorf("WWW-Authenticate = %q", got)
			}
			if tt.noIdent && (strings.Contains(body, "user=") || strings.Contains(body, tok.ID)) {
				t.Errorf("identity leaked into a denied response: %q", body)
			}
			if status != 200 && strings.Contains(body, tok.Token) {
				t.Errorf("the secret came back in a denial")
			}
		})
	}
}

func TestGateRevokeRotateExpire(t *testing.T) {
	db := filepath.Join(t.TempDir(), "tokens.db")
	tester := startGate(t, gateConfig(db, "", ""))
	get := func(secret string) int {
		t.Helper()
		status, _, _ := do(t, tester, http.MethodGet, siteURL+"/rest/x", "", "Authorization", "Bearer "+secret)
		return status
	}

	t.Run("revoke takes effect on the next request", func(t *testing.T) {
		tok := createToken(t, tester, `{"user":"carol","name":"revoke-me"}`)
		if s := get(tok.Token); s != 200 {
			t.Fatalf("before revoke: %d", s)
		}
		status, _, out := do(t, tester, http.MethodDelete, adminURL+"/api_tokens/tokens/"+tok.ID, "")
		if status != 200 || !strings.Contains(out, `"state":"revoked"`) {
			t.Fatalf("revoke: %d %s", status, out)
		}
		if s := get(tok.Token); s != 401 {
			t.Fatalf("after revoke: %d, want 401", s)
		}
	})

	t.Run("rotate kills the old secret at once", func(t *testing.T) {
		tok := createToken(t, tester, `{"user":"carol","name":"rotate-me","description":"kept"}`)
		status, _, out := do(t, tester, http.MethodPost, adminURL+"/api_tokens/tokens/"+tok.ID+"/rotate", "")
		if status != 201 {
			t.Fatalf("rotate: %d %s", status, out)
		}
		var rotated tokenJSON
		if err := json.Unmarshal([]byte(out), &rotated); err != nil {
			t.Fatal(err)
		}
		if rotated.ID != tok.ID || rotated.Token == "" || rotated.Token == tok.Token || rotated.Description != "kept" {
			t.Fatalf("rotated = %+v", rotated)
		}
		if !rotated.ExpiresAt.Equal(*tok.ExpiresAt) {
			t.Errorf("rotation changed the expiry: %v -> %v", tok.ExpiresAt, rotated.ExpiresAt)
		}
		if s := get(tok.Token); s != 401 {
			t.Errorf("old secret after rotate: %d, want 401", s)
		}
		if s := get(rotated.Token); s != 200 {
			t.Errorf("new secret after rotate: %d, want 200", s)
		}
	})

	t.Run("revoke all of a user's tokens", func(t *testing.T) {
		a := createToken(t, tester, `{"user":"dave","name":"one"}`)
		b := createToken(t, tester, `{"user":"Dave","name":"two"}`)
		status, _, out := do(t, tester, http.MethodDelete, adminURL+"/api_tokens/users/dave/tokens", "")
		if status != 200 || !strings.Contains(out, `"revoked":2`) {
			t.Fatalf("revoke user: %d %s", status, out)
		}
		if get(a.Token) != 401 || get(b.Token) != 401 {
			t.Error("a revoked user's token still works")
		}
	})

	t.Run("expiry takes effect on the next request", func(t *testing.T) {
		tok := createToken(t, tester, `{"user":"erin","name":"short","expires_in":"1s"}`)
		if s := get(tok.Token); s != 200 {
			t.Fatalf("before expiry: %d", s)
		}
		deadline := time.Now().Add(10 * time.Second)
		for get(tok.Token) != 401 {
			if time.Now().After(deadline) {
				t.Fatal("token still accepted 10s after a 1s expiry")
			}
			time.Sleep(100 * time.Millisecond)
		}
		toks := listTokens(t, tester, "?user=erin&state=expired")
		if len(toks) != 1 || toks[0].ID != tok.ID {
			t.Errorf("expired list = %+v", toks)
		}
	})
}

func TestGatePasswordsPass(t *testing.T) {
	db := filepath.Join(t.TempDir(), "tokens.db")
	tester := startGate(t, gateConfig(db, "passwords pass", ""))
	tok := createToken(t, tester, `{"user":"frank","name":"ci"}`)

	authz := basicAuth("frank", "hunter2")
	status, _, body := do(t, tester, http.MethodGet, siteURL+"/rest/x", "", "Authorization", authz)
	if status != 200 {
		t.Fatalf("password with passwords pass: %d %q", status, body)
	}
	if !strings.Contains(body, "authz="+authz) || !strings.Contains(body, "user={http.auth.user.id} ") {
		t.Errorf("password not handed on untouched, or identity set: %q", body)
	}
	status, _, body = do(t, tester, http.MethodGet, siteURL+"/rest/x", "", "Authorization", basicAuth("frank", tok.Token))
	if status != 200 || !strings.Contains(body, "user=frank") {
		t.Errorf("token with passwords pass: %d %q", status, body)
	}
	// A token-shaped password that is not a valid token is still refused.
	_, bad, _ := token.Generate(token.DefaultPrefix)
	if status, _, _ := do(t, tester, http.MethodGet, siteURL+"/rest/x", "", "Authorization", basicAuth("frank", bad)); status != 401 {
		t.Errorf("unknown token with passwords pass: %d, want 401", status)
	}
}

func TestGateHeaderQueryStrip(t *testing.T) {
	db := filepath.Join(t.TempDir(), "tokens.db")
	// The header named in lower case: the gate reads and strips it by
	// its canonical form.
	tester := startGate(t, gateConfig(db, "header x-api-token\n\t\tquery api_token\n\t\tstrip_credentials", ""))
	tok := createToken(t, tester, `{"user":"gina","name":"ci"}`)

	tests := []struct {
		name   string
		url    string
		header []string
		want   string
	}{
		{"header", siteURL + "/rest/x", []string{"X-Api-Token", tok.Token}, "xtok= "},
		{"query", siteURL + "/rest/x?a=1&api_token=" + tok.Token + "&b=2", nil, "query=a=1&b=2"},
		{"bearer", siteURL + "/rest/x", []string{"Authorization", "Bearer " + tok.Token}, "authz= "},
		{"basic", siteURL + "/rest/x", []string{"Authorization", basicAuth("gina", tok.Token)}, "authz= "},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			status, _, body := do(t, tester, http.MethodGet, tt.url, "", tt.header...)
			if status != 200 || !strings.Contains(body, "user=gina") {
				t.Fatalf("%d %q", status, body)
			}
			if !strings.Contains(body, tt.want) || strings.Contains(body, tok.Token) {
				t.Errorf("credential not stripped: %q", body)
			}
		})
	}
	if status, _, _ := do(t, tester, http.MethodGet, siteURL+"/rest/x", "", "X-Api-Token", "junk"); status != 401 {
		t.Errorf("malformed header token: %d, want 401", status)
	}
}

func TestGateHandleErrors(t *testing.T) {
	db := filepath.Join(t.TempDir(), "tokens.db")
	tester := startGate(t, gateConfig(db, "", `handle_errors {
		respond "custom {err.status_code}: {err.message}"
	}`))
	status, hdr, body := do(t, tester, http.MethodGet, siteURL+"/rest/x", "", "Authorization", basicAuth("a", "password"))
	if status != 401 || body != "custom 401: "+msgPasswordBlocked {
		t.Errorf("handle_errors: %d %q", status, body)
	}
	if hdr.Get("WWW-Authenticate") == "" {
		t.Error("WWW-Authenticate lost in handle_errors")
	}
}

// currentStore returns the pooled store for db, or nil.
func currentStore(t *testing.T, db string) *tokenstore.Store {
	t.Helper()
	var found *tokenstore.Store
	stores.Range(func(key, value any) bool {
		if key == db {
			found = value.(storeHandle).Store
		}
		return true
	})
	return found
}

func TestGateReload(t *testing.T) {
	db := filepath.Join(t.TempDir(), "tokens.db")
	tester := startGate(t, gateConfig(db, "realm one", ""))
	tok := createToken(t, tester, `{"user":"hank","name":"ci"}`)
	before := currentStore(t, db)
	if before == nil {
		t.Fatal("store not in the pool")
	}
	for i, realm := range []string{"two", "three"} {
		tester.InitServer(gateConfig(db, "realm "+realm, ""), "caddyfile")
		status, hdr, _ := do(t, tester, http.MethodGet, siteURL+"/rest/x", "")
		if status != 401 || !strings.Contains(hdr.Get("WWW-Authenticate"), realm) {
			t.Fatalf("reload %d did not take: %d %q", i, status, hdr.Get("WWW-Authenticate"))
		}
		if status, _, _ := do(t, tester, http.MethodGet, siteURL+"/rest/x", "", "Authorization", "Bearer "+tok.Token); status != 200 {
			t.Fatalf("token after reload %d: %d", i, status)
		}
		if after := currentStore(t, db); after != before {
			t.Fatalf("reload %d reopened the store", i)
		}
		if n := len(listTokens(t, tester, "")); n != 1 {
			t.Fatalf("admin API after reload %d lists %d tokens", i, n)
		}
	}
	refs, ok := stores.References(db)
	if !ok || refs != 1 {
		t.Errorf("store references after reloads = %d (%v), want 1", refs, ok)
	}
}

func TestGateWithoutGlobalOption(t *testing.T) {
	// Without the api_tokens block the handler gets the app's defaults
	// (the database under Caddy's data directory) and the admin API works
	// all the same. Point the data directory at a temp dir.
	t.Setenv("XDG_DATA_HOME", t.TempDir())
	tester := startGate(t, `{
	`+testGlobals+`
}
http://localhost:9080 {
	api_token
	respond "hello {http.auth.user.id}"
}
`)
	tok := createToken(t, tester, `{"user":"ivy","name":"ci"}`)
	status, _, body := do(t, tester, http.MethodGet, siteURL+"/", "", "Authorization", basicAuth("ivy", tok.Token))
	if status != 200 || body != "hello ivy" {
		t.Fatalf("%d %q", status, body)
	}
	exp := tok.ExpiresAt.Sub(tok.CreatedAt)
	if exp < DefaultValidity-time.Minute || exp > DefaultValidity+time.Minute {
		t.Errorf("default validity %v, want about %v", exp, DefaultValidity)
	}
}

func TestAdminWithoutStore(t *testing.T) {
	tester := startGate(t, `{
	`+testGlobals+`
}
http://localhost:9080 {
	respond "hi"
}
`)
	status, _, body := do(t, tester, http.MethodGet, adminURL+"/api_tokens/tokens", "")
	if status != http.StatusServiceUnavailable || !strings.Contains(body, "no token store configured") {
		t.Errorf("%d %q", status, body)
	}
}

func TestAdminAPI(t *testing.T) {
	db := filepath.Join(t.TempDir(), "tokens.db")
	tester := startGate(t, gateConfig(db, "", ""))
	tok := createToken(t, tester, `{"user":"jane","name":"ci","expires_at":"`+time.Now().Add(48*time.Hour).UTC().Format(time.RFC3339)+`"}`)

	t.Run("bad input is refused and nothing is written", func(t *testing.T) {
		tests := []struct {
			name, method, path, body string
			status                   int
			msg                      string
		}{
			{"malformed JSON", "POST", "/api_tokens/tokens", `{"user":"x",`, 400, "malformed JSON"},
			{"not JSON", "POST", "/api_tokens/tokens", `user=x`, 400, "malformed JSON"},
			{"empty body", "POST", "/api_tokens/tokens", ``, 400, "request body is empty"},
			{"unknown field", "POST", "/api_tokens/tokens", `{"user":"x","name":"n","scopes":[]}`, 400, `unknown field \"scopes\"`},
			{"wrong type", "POST", "/api_tokens/tokens", `{"user":1,"name":"n"}`, 400, `field \"user\"`},
			{"trailing data", "POST", "/api_tokens/tokens", `{"user":"x","name":"n"} {}`, 400, "after top-level value"},
			{"empty user", "POST", "/api_tokens/tokens", `{"user":"","name":"n"}`, 400, "user"},
			{"user with colon", "POST", "/api_tokens/tokens", `{"user":"a:b","name":"n"}`, 400, "user"},
			{"empty name", "POST", "/api_tokens/tokens", `{"user":"x","name":""}`, 400, "name"},
			{"past expiry", "POST", "/api_tokens/tokens", `{"user":"x","name":"n","expires_at":"2001-01-01T00:00:00Z"}`, 400, "in the future"},
			{"bad expiry time", "POST", "/api_tokens/tokens", `{"user":"x","name":"n","expires_at":"tomorrow"}`, 400, "RFC 3339"},
			{"expiry beyond policy", "POST", "/api_tokens/tokens", `{"user":"x","name":"n","expires_in":"400d"}`, 400, "max_validity (365d)"},
			{"no expiry", "POST", "/api_tokens/tokens", `{"user":"x","name":"n","expires_in":"never"}`, 400, "without expiry are not allowed"},
			{"bad duration", "POST", "/api_tokens/tokens", `{"user":"x","name":"n","expires_in":"soon"}`, 400, "not a duration"},
			{"negative duration", "POST", "/api_tokens/tokens", `{"user":"x","name":"n","expires_in":"-1h"}`, 400, "must be positive"},
			{"both expiries", "POST", "/api_tokens/tokens", `{"user":"x","name":"n","expires_in":"1d","expires_at":"2030-01-01T00:00:00Z"}`, 400, "not both"},
			{"duplicate active name", "POST", "/api_tokens/tokens", `{"user":"JANE","name":"ci"}`, 409, "conflict"},
			{"oversize body", "POST", "/api_tokens/tokens", `{"user":"x","name":"n","description":"` + strings.Repeat("a", maxBodyBytes) + `"}`, 413, "larger than"},
			{"bad state filter", "GET", "/api_tokens/tokens?state=zombie", ``, 400, "state"},
			{"unknown filter", "GET", "/api_tokens/tokens?owner=x", ``, 400, "unknown query parameter"},
			{"malformed query escape", "GET", "/api_tokens/tokens?user=%zz", ``, 400, `malformed query string: invalid URL escape \"%zz\"`},
			{"query with semicolon", "GET", "/api_tokens/tokens?user=jane;state=revoked", ``, 400, "malformed query string: invalid semicolon separator"},
			{"malformed audit query", "GET", "/api_tokens/audit?user=%G0", ``, 400, "malformed query string"},
			{"audit filter twice", "GET", "/api_tokens/audit?user=a&user=b", ``, 400, `query parameter \"user\" given 2 times`},
			{"bad audit cursor", "GET", "/api_tokens/audit?cursor=zz", ``, 400, "cursor"},
			{"bad audit limit", "GET", "/api_tokens/audit?limit=0", ``, 400, "limit"},
			{"bad audit time", "GET", "/api_tokens/audit?since=yesterday", ``, 400, "RFC 3339"},
			{"unknown id", "GET", "/api_tokens/tokens/aaaaaaaaaaaa", ``, 404, "not found"},
			{"malformed id", "GET", "/api_tokens/tokens/..", ``, 404, "not found"},
			{"patch beyond policy", "PATCH", "/api_tokens/tokens/" + tok.ID, `{"expires_in":"2y"}`, 400, "not a duration"},
			{"patch too long", "PATCH", "/api_tokens/tokens/" + tok.ID, `{"expires_in":"366d"}`, 400, "max_validity"},
			{"patch nothing", "PATCH", "/api_tokens/tokens/" + tok.ID, `{}`, 400, "nothing to update"},
			{"patch unknown field", "PATCH", "/api_tokens/tokens/" + tok.ID, `{"user":"mallory"}`, 400, `unknown field \"user\"`},
			{"rotate with body", "POST", "/api_tokens/tokens/" + tok.ID + "/rotate", `{"x":1}`, 400, "no request body"},
			{"wrong method", "PUT", "/api_tokens/tokens", `{}`, 405, "not allowed"},
			{"unknown route", "GET", "/api_tokens/nope", ``, 404, "not found"},
		}
		before := listTokens(t, tester, "")
		for _, tt := range tests {
			t.Run(tt.name, func(t *testing.T) {
				status, _, body := do(t, tester, tt.method, adminURL+tt.path, tt.body)
				if status != tt.status || !strings.Contains(body, tt.msg) {
					t.Errorf("%s %s: %d %s; want %d containing %q", tt.method, tt.path, status, body, tt.status, tt.msg)
				}
			})
		}
		after := listTokens(t, tester, "")
		if len(after) != len(before) || after[0].UpdatedAt != before[0].UpdatedAt || after[0].Hint != before[0].Hint {
			t.Errorf("bad input changed stored data:\nbefore %+v\nafter  %+v", before, after)
		}
	})

	t.Run("show, list and patch never reveal the secret", func(t *testing.T) {
		for _, path := range []string{"/api_tokens/tokens", "/api_tokens/tokens/" + tok.ID, "/api_tokens/tokens?user=JANE"} {
			status, _, body := do(t, tester, http.MethodGet, adminURL+path, "")
			if status != 200 || !strings.Contains(body, tok.ID) {
				t.Errorf("GET %s: %d %s", path, status, body)
			}
			if strings.Contains(body, tok.Token) || strings.Contains(body, `"token"`) {
				t.Errorf("GET %s reveals the secret: %s", path, body)
			}
		}
		status, _, body := do(t, tester, http.MethodPatch, adminURL+"/api_tokens/tokens/"+tok.ID, `{"name":"ci-2","description":"d","expires_in":"10d"}`)
		if status != 200 || !strings.Contains(body, `"name":"ci-2"`) || strings.Contains(body, tok.Token) {
			t.Fatalf("patch: %d %s", status, body)
		}
		var got tokenJSON
		if err := json.Unmarshal([]byte(body), &got); err != nil {
			t.Fatal(err)
		}
		if d := time.Until(*got.ExpiresAt); d < 9*24*time.Hour || d > 10*24*time.Hour {
			t.Errorf("patched expiry %v from now", d)
		}
		if n := len(listTokens(t, tester, "?state=active&user=jane")); n != 1 {
			t.Errorf("active tokens of jane: %d", n)
		}
		if n := len(listTokens(t, tester, "?state=revoked")); n != 0 {
			t.Errorf("revoked tokens: %d", n)
		}
	})

	t.Run("revoked tokens can't be rotated or patched", func(t *testing.T) {
		victim := createToken(t, tester, `{"user":"kim","name":"ci"}`)
		if status, _, body := do(t, tester, http.MethodDelete, adminURL+"/api_tokens/tokens/"+victim.ID, ""); status != 200 {
			t.Fatalf("revoke: %d %s", status, body)
		}
		if status, _, body := do(t, tester, http.MethodPost, adminURL+"/api_tokens/tokens/"+victim.ID+"/rotate", ""); status != 409 {
			t.Errorf("rotate revoked: %d %s", status, body)
		}
		if status, _, body := do(t, tester, http.MethodPatch, adminURL+"/api_tokens/tokens/"+victim.ID, `{"name":"x"}`); status != 409 {
			t.Errorf("patch revoked: %d %s", status, body)
		}
		// Revoking again is harmless and keeps the first revocation time.
		_, _, first := do(t, tester, http.MethodGet, adminURL+"/api_tokens/tokens/"+victim.ID, "")
		_, _, again := do(t, tester, http.MethodDelete, adminURL+"/api_tokens/tokens/"+victim.ID, "")
		if !strings.Contains(again, `"state":"revoked"`) || !bytes.Equal(revokedAt(t, first), revokedAt(t, again)) {
			t.Errorf("second revoke changed the record: %s -> %s", first, again)
		}
	})
}

func revokedAt(t *testing.T, body string) []byte {
	t.Helper()
	var v struct {
		RevokedAt json.RawMessage `json:"revoked_at"`
	}
	if err := json.Unmarshal([]byte(body), &v); err != nil || len(v.RevokedAt) == 0 {
		t.Fatalf("no revoked_at in %s (%v)", body, err)
	}
	return v.RevokedAt
}

// mistype changes a token's last character, part of its checksum, to
// another one: a random token may already end in any of them.
func mistype(token string) string {
	last := "x"
	if strings.HasSuffix(token, last) {
		last = "y"
	}
	return token[:len(token)-1] + last
}
