package caddymodule

// In-process tests of the gate's policy: client IP limits, path hygiene,
// scopes, holders, throttling, rate limits and report-only. The test
// transport always connects from 127.0.0.1, so the configs trust it as a
// proxy and tests choose the client IP with X-Forwarded-For.

import (
	"bufio"
	"crypto/tls"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"

	"github.com/caddyserver/caddy/v2/caddytest"
	"github.com/caddyserver/caddy/v2/modules/caddyhttp"
)

// policyConfig is gateConfig with trusted proxies, extra app options and
// the audit log written to auditLog.
func policyConfig(db, auditLog, appOpts, handlerOpts string) string {
	return fmt.Sprintf(`{
	`+testGlobals+`
	servers {
		trusted_proxies static 127.0.0.1/32
		trusted_proxies_strict
	}
	log audit {
		include api_tokens.audit
		output file %s
		level DEBUG
	}
	api_tokens {
		database %s
		%s
	}
}
http://localhost:9080 {
	api_token {
		protect /rest/*
		%s
	}
	respond /rest/* "user={http.auth.user.id} authz={header.Authorization}" 200
	respond "public" 200
}
`, auditLog, db, appOpts, handlerOpts)
}

// from sends a request as if from client IP ip.
func from(t *testing.T, tester *caddytest.Tester, ip, method, url string, header ...string) (int, http.Header, string) {
	t.Helper()
	return do(t, tester, method, url, "", append([]string{"X-Forwarded-For", ip}, header...)...)
}

// auditEvents reads the audit log file.
func auditEvents(t *testing.T, path string) []map[string]any {
	t.Helper()
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	var out []map[string]any
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		var e map[string]any
		if err := json.Unmarshal(sc.Bytes(), &e); err != nil {
			t.Fatalf("audit line %q: %v", sc.Text(), err)
		}
		out = append(out, e)
	}
	return out
}

// hasEvent reports whether an audit event has all the given fields.
func hasEvent(events []map[string]any, fields map[string]any) bool {
next:
	for _, e := range events {
		for k, v := range fields {
			if fmt.Sprint(e[k]) != fmt.Sprint(v) {
				continue next
			}
		}
		return true
	}
	return false
}

func TestPolicyClientIP(t *testing.T) {
	dir := t.TempDir()
	audit := filepath.Join(dir, "audit.log")
	tester := startGate(t, policyConfig(filepath.Join(dir, "t.db"), audit, "",
		"allow_ips 10.0.0.0/8 198.51.100.0/24 2001:db8::/32\n\t\tpasswords pass_from 10.0.0.0/8"))
	tok := createToken(t, tester, `{"user":"alice","name":"ci"}`)
	narrow := createToken(t, tester, `{"user":"alice","name":"narrow","allowed_ips":["198.51.100.0/24"]}`)
	if strings.Join(narrow.AllowedIPs, ",") != "198.51.100.0/24" {
		t.Fatalf("allowed_ips = %v", narrow.AllowedIPs)
	}

	tests := []struct {
		name, ip, authz string
		status          int
		body            string
	}{
		{"inside allow_ips", "10.1.2.3", "Bearer " + tok.Token, 200, "user=alice"},
		{"ipv6 inside", "2001:db8::7", "Bearer " + tok.Token, 200, "user=alice"},
		{"ipv4-mapped ipv6 unmapped", "::ffff:10.1.2.3", "Bearer " + tok.Token, 200, "user=alice"},
		{"outside allow_ips", "203.0.113.7", "Bearer " + tok.Token, 403, msgForbidden},
		{"token's own range", "198.51.100.9", "Bearer " + narrow.Token, 200, "user=alice"},
		{"gate allows, token does not", "10.1.2.3", "Bearer " + narrow.Token, 403, msgForbidden},
		{"password from pass_from", "10.9.9.9", basicAuth("alice", "hunter2"), 200, "user={http.auth.user.id} authz=Basic"},
		{"password from elsewhere", "198.51.100.9", basicAuth("alice", "hunter2"), 401, msgPasswordBlocked},
		{"unparsable client IP", "not-an-ip", "Bearer " + tok.Token, 403, msgForbidden},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			status, _, body := from(t, tester, tt.ip, http.MethodGet, siteURL+"/rest/x", "Authorization", tt.authz)
			if status != tt.status || !strings.Contains(body, tt.body) {
				t.Errorf("%d %q, want %d containing %q", status, body, tt.status, tt.body)
			}
		})
	}
	events := auditEvents(t, audit)
	for _, want := range []map[string]any{
		{"msg": "denied", "reason": "ip_not_allowed", "client_ip": "203.0.113.7", "token_id": tok.ID, "status": 403},
		{"msg": "denied", "reason": "ip_not_allowed", "client_ip": "10.1.2.3", "token_id": narrow.ID},
		{"msg": "auth_failed", "reason": "password_blocked", "client_ip": "198.51.100.9"},
		{"msg": "password_passed", "client_ip": "10.9.9.9"},
	} {
		if !hasEvent(events, want) {
			t.Errorf("no audit event %v", want)
		}
	}
}

func TestPolicyPaths(t *testing.T) {
	dir := t.TempDir()
	tester := startGate(t, policyConfig(filepath.Join(dir, "t.db"), filepath.Join(dir, "a.log"), "", ""))
	tok := createToken(t, tester, `{"user":"alice","name":"ci"}`)
	attacks := []string{
		"/rest/..;/WEB-INF/web.xml",
		"/rest/%2e%2e/secure/admin",
		"/rest/%252e%252e/x",
		"/rest/a%2fb",
		"/rest/a%00b",
		"/rest/x/%24%7B%40java.lang.Runtime%40getRuntime%28%29%7D/",
		"/rest/s/1/_/;/META-INF/maven/pom.xml",
		"/rest/a%c0%afb",
	}
	for _, p := range attacks {
		t.Run("attack "+p, func(t *testing.T) {
			// No credentials: refused for the path before authentication.
			if status, _, body := do(t, tester, http.MethodGet, siteURL+p, ""); status != 400 || !strings.Contains(body, msgPathBlocked) {
				t.Errorf("unauthenticated %s: %d %q", p, status, body)
			}
			// A valid token does not get a traversal through either.
			if status, _, _ := do(t, tester, http.MethodGet, siteURL+p, "", "Authorization", "Bearer "+tok.Token); status != 400 {
				t.Errorf("authenticated %s: %d", p, status)
			}
		})
	}
	benign := []string{
		"/rest/api/2/search?jql=project%20%3D%20ABC%20AND%20text%20~%20%22..%2F..%22",
		"/rest/api/latest/issue/PROJ-123/comment",
		"/rest/s/d41d8cd98f00b204e9800998ecf8427e-CDN/-1234/abc/1.0/_/download/batch/com.atlassian.auiplugin:ajs/com.atlassian.auiplugin:ajs.js",
		"/rest/api/1.0/projects/PRJ/repos/repo/browse/src/a..b.txt",
		"/rest/browse/%E2%9C%93",
		"/rest/wiki/spaces/ENG/pages/123/My+Page!,~@",
	}
	for _, p := range benign {
		t.Run("benign "+p, func(t *testing.T) {
			if status, _, body := do(t, tester, http.MethodGet, siteURL+p, "", "Authorization", "Bearer "+tok.Token); status != 200 {
				t.Errorf("%s: %d %q", p, status, body)
			}
		})
	}

	t.Run("configurable", func(t *testing.T) {
		tester := startGate(t, policyConfig(filepath.Join(dir, "t.db"), filepath.Join(dir, "a.log"), "", `block_paths {
			allow encoded_slash
			deny /rest/admin/*
			exempt /rest/legacy/*
		}`))
		auth := []string{"Authorization", "Bearer " + tok.Token}
		for _, tt := range []struct {
			path   string
			status int
		}{
			{"/rest/a%2fb", 200},                 // encoded slashes switched on
			{"/rest/admin/users", 400},           // extra deny pattern
			{"/rest/legacy/a;jsessionid=1", 200}, // exempt from the soft rules
			{"/rest/legacy/%2e%2e/x", 400},       // but never from traversal
			{"/rest/..;/x", 400},
		} {
			if status, _, _ := do(t, tester, http.MethodGet, siteURL+tt.path, "", auth...); status != tt.status {
				t.Errorf("%s: %d, want %d", tt.path, status, tt.status)
			}
		}
		tester = startGate(t, policyConfig(filepath.Join(dir, "t.db"), filepath.Join(dir, "a.log"), "", "block_paths off"))
		if status, _, _ := do(t, tester, http.MethodGet, siteURL+"/rest/a%2fb", ""); status != 401 {
			t.Errorf("block_paths off still inspects: %d", status)
		}
	})

	t.Run("protect sees paths as the backend resolves them", func(t *testing.T) {
		// With inspection off, only protect stands between a path trick and
		// the backend: Tomcat resolves /x/..;/rest/ to /rest/.
		tester := startGate(t, policyConfig(filepath.Join(dir, "t.db"), filepath.Join(dir, "a.log"), "", "block_paths off"))
		for _, p := range []string{"/x/..;/rest/api/2/user", "/x/%2e%2e/rest/api", "/REST/api", "//rest//api"} {
			if status, _, body := do(t, tester, http.MethodGet, siteURL+p, ""); status != 401 {
				t.Errorf("%s without a token: %d %q, want 401", p, status, body)
			}
		}
		if status, _, body := do(t, tester, http.MethodGet, siteURL+"/secure/Dashboard.jspa", ""); status != 200 || body != "public" {
			t.Errorf("unprotected path: %d %q", status, body)
		}
	})
}

func TestPolicyScope(t *testing.T) {
	dir := t.TempDir()
	tester := startGate(t, policyConfig(filepath.Join(dir, "t.db"), filepath.Join(dir, "a.log"), "", ""))
	ro := createToken(t, tester, `{"user":"alice","name":"ro","read_only":true}`)
	meth := createToken(t, tester, `{"user":"alice","name":"meth","methods":["get","put"]}`)
	paths := createToken(t, tester, `{"user":"alice","name":"paths","paths":["/rest/api/*/issue/*","/rest/status"]}`)
	hosts := createToken(t, tester, `{"user":"alice","name":"hosts","hosts":["jira.example.com"]}`)
	if !ro.ReadOnly || strings.Join(meth.Methods, ",") != "GET,PUT" {
		t.Fatalf("scope not stored: %+v %+v", ro, meth)
	}
	tests := []struct {
		name, method, path, secret string
		header                     []string
		status                     int
	}{
		{"read-only GET", "GET", "/rest/x", ro.Token, nil, 200},
		{"read-only HEAD", "HEAD", "/rest/x", ro.Token, nil, 200},
		{"read-only POST", "POST", "/rest/x", ro.Token, nil, 403},
		{"methods PUT", "PUT", "/rest/x", meth.Token, nil, 200},
		{"methods DELETE", "DELETE", "/rest/x", meth.Token, nil, 403},
		{"paths glob", "GET", "/rest/api/2/issue/ABC-1", paths.Token, nil, 200},
		{"paths exact", "GET", "/rest/status", paths.Token, nil, 200},
		{"paths outside", "GET", "/rest/api/2/user", paths.Token, nil, 403},
		{"hosts outside", "GET", "/rest/x", hosts.Token, nil, 403},
		// Method override headers: the scope judges the method each names too.
		{"read-only GET overridden to DELETE", "GET", "/rest/x", ro.Token, []string{"X-HTTP-Method-Override", "DELETE"}, 403},
		{"read-only GET overridden to delete", "GET", "/rest/x", ro.Token, []string{"X-Method-Override", "delete"}, 403},
		{"read-only GET overridden by X-HTTP-Method", "GET", "/rest/x", ro.Token, []string{"X-HTTP-Method", "PUT"}, 403},
		{"read-only GET overridden to a list", "GET", "/rest/x", ro.Token, []string{"X-HTTP-Method-Override", "GET, DELETE"}, 403},
		{"read-only GET overridden to GET", "GET", "/rest/x", ro.Token, []string{"X-HTTP-Method-Override", "GET"}, 200},
		{"read-only search overridden to DELETE", "POST", "/rest/api/2/search", ro.Token, []string{"X-HTTP-Method-Override", "DELETE"}, 403},
		{"read-only GET overridden to a search POST", "GET", "/rest/api/2/search", ro.Token, []string{"X-HTTP-Method-Override", "POST"}, 200},
		{"methods GET overridden to PUT", "GET", "/rest/x", meth.Token, []string{"X-HTTP-Method-Override", "PUT"}, 200},
		{"methods GET overridden to DELETE", "GET", "/rest/x", meth.Token, []string{"X-HTTP-Method-Override", "DELETE"}, 403},
		{"methods PUT overridden to POST", "PUT", "/rest/x", meth.Token, []string{"X-HTTP-Method-Override", "POST"}, 403},
		{"paths ignore overrides", "GET", "/rest/status", paths.Token, []string{"X-HTTP-Method-Override", "DELETE"}, 200},
		// Reads that use POST, and git over smart HTTP.
		{"read-only Jira search", "POST", "/rest/api/2/search", ro.Token, nil, 200},
		{"read-only Jira create", "POST", "/rest/api/2/issue", ro.Token, nil, 403},
		{"read-only git fetch", "POST", "/rest/scm/p/r.git/git-upload-pack", ro.Token, nil, 200},
		{"read-only git fetch advertisement", "GET", "/rest/scm/p/r.git/info/refs?service=git-upload-pack", ro.Token, nil, 200},
		{"read-only git push advertisement", "GET", "/rest/scm/p/r.git/info/refs?service=git-receive-pack", ro.Token, nil, 403},
		{"read-only git push", "POST", "/rest/scm/p/r.git/git-receive-pack", ro.Token, nil, 403},
		{"methods do not take a search POST for a GET", "POST", "/rest/api/2/search", meth.Token, nil, 403},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			status, _, _ := from(t, tester, "10.0.0.1", tt.method, siteURL+tt.path, append([]string{"Authorization", "Bearer " + tt.secret}, tt.header...)...)
			if status != tt.status {
				t.Errorf("%s %s %q: %d, want %d", tt.method, tt.path, tt.header, status, tt.status)
			}
		})
	}

	t.Run("PATCH changes the scope on the next request", func(t *testing.T) {
		status, _, body := do(t, tester, http.MethodPatch, adminURL+"/api_tokens/tokens/"+ro.ID, `{"read_only":false,"methods":["POST"]}`)
		if status != 200 {
			t.Fatalf("patch: %d %s", status, body)
		}
		if status, _, _ := from(t, tester, "10.0.0.1", "POST", siteURL+"/rest/x", "Authorization", "Bearer "+ro.Token); status != 200 {
			t.Errorf("POST after patch: %d", status)
		}
		if status, _, _ := from(t, tester, "10.0.0.1", "GET", siteURL+"/rest/x", "Authorization", "Bearer "+ro.Token); status != 403 {
			t.Errorf("GET after patch to POST only: %d", status)
		}
	})

	t.Run("bad rules are refused and nothing is written", func(t *testing.T) {
		before := len(listTokens(t, tester, ""))
		for _, body := range []string{
			`{"user":"alice","name":"x","allowed_ips":["10.0.0.0/33"]}`,
			`{"user":"alice","name":"x","allowed_ips":"10.0.0.0/8"}`,
			`{"user":"alice","name":"x","methods":["GE T"]}`,
			`{"user":"alice","name":"x","paths":["rest/*"]}`,
			`{"user":"alice","name":"x","hosts":["a..b"]}`,
			`{"user":"alice","name":"x","rate_limit":"fast"}`,
		} {
			status, _, out := do(t, tester, http.MethodPost, adminURL+"/api_tokens/tokens", body)
			if status != 400 {
				t.Errorf("%s: %d %s", body, status, out)
			}
		}
		if after := len(listTokens(t, tester, "")); after != before {
			t.Errorf("bad rules wrote tokens: %d -> %d", before, after)
		}
	})
	t.Run("read_posts", func(t *testing.T) {
		ro := createToken(t, tester, `{"user":"alice","name":"ro-posts","read_only":true}`) // ro is patched above
		for _, tt := range []struct {
			name, opts, path string
			status           int
		}{
			{"extended: a default", "read_posts default /rest/custom/query", "/rest/api/2/search", 200},
			{"extended: the operator's", "read_posts default /rest/custom/query", "/rest/custom/query", 200},
			{"replaced", "read_posts /rest/custom/query", "/rest/api/2/search", 403},
			{"off", "read_posts off", "/rest/api/2/search", 403},
			{"off: git fetch is a write", "read_posts off", "/rest/r.git/git-upload-pack", 403},
		} {
			t.Run(tt.name, func(t *testing.T) {
				tester := startGate(t, policyConfig(filepath.Join(dir, "t.db"), filepath.Join(dir, "a.log"), "", tt.opts))
				if status, _, body := from(t, tester, "10.0.0.1", "POST", siteURL+tt.path, "Authorization", "Bearer "+ro.Token); status != tt.status {
					t.Errorf("%s: POST %s: %d %q, want %d", tt.opts, tt.path, status, body, tt.status)
				}
			})
		}
	})
}

func TestPolicyHolders(t *testing.T) {
	dir := t.TempDir()
	tester := startGate(t, policyConfig(filepath.Join(dir, "t.db"), filepath.Join(dir, "a.log"),
		"holders alice group:ops\n\t\tgroup ops {\n\t\t\tmax_validity 7d\n\t\t}", ""))

	status, _, body := do(t, tester, http.MethodPost, adminURL+"/api_tokens/tokens", `{"user":"bob","name":"ci","expires_in":"1d"}`)
	if status != 403 || !strings.Contains(body, `user \"bob\" may not hold tokens`) {
		t.Fatalf("create for a non-holder: %d %s", status, body)
	}
	if status, _, body := do(t, tester, http.MethodPut, adminURL+"/api_tokens/groups/ops/members/Bob", ""); status != 201 {
		t.Fatalf("add member: %d %s", status, body)
	}
	if status, _, _ := do(t, tester, http.MethodPut, adminURL+"/api_tokens/groups/ops/members/bob", ""); status != 200 {
		t.Errorf("adding again: %d, want 200", status)
	}
	status, _, body = do(t, tester, http.MethodPost, adminURL+"/api_tokens/tokens", `{"user":"bob","name":"ci","expires_in":"30d"}`)
	if status != 400 || !strings.Contains(body, "max_validity (7d)") {
		t.Fatalf("the group's max_validity does not apply: %d %s", status, body)
	}
	bob := createToken(t, tester, `{"user":"bob","name":"ci"}`)
	if d := bob.ExpiresAt.Sub(bob.CreatedAt); d > 7*24*60*60*1e9 {
		t.Errorf("default validity for ops is %v, want at most 7d", d)
	}
	if status, _, _ := from(t, tester, "10.0.0.1", "GET", siteURL+"/rest/x", "Authorization", basicAuth("bob", bob.Token)); status != 200 {
		t.Fatalf("member's token refused: %d", status)
	}
	_, _, groups := do(t, tester, http.MethodGet, adminURL+"/api_tokens/groups", "")
	_, _, members := do(t, tester, http.MethodGet, adminURL+"/api_tokens/groups/ops/members", "")
	if !strings.Contains(groups, `"name":"ops","members":1`) || !strings.Contains(members, `"user":"Bob"`) {
		t.Errorf("groups %s members %s", groups, members)
	}

	if status, _, body := do(t, tester, http.MethodDelete, adminURL+"/api_tokens/groups/ops/members/bob", ""); status != 200 {
		t.Fatalf("remove member: %d %s", status, body)
	}
	if status, _, _ := from(t, tester, "10.0.0.1", "GET", siteURL+"/rest/x", "Authorization", basicAuth("bob", bob.Token)); status != 403 {
		t.Errorf("ex-member's token still works: %d", status)
	}
	if status, _, _ := do(t, tester, http.MethodPost, adminURL+"/api_tokens/tokens/"+bob.ID+"/rotate", ""); status != 403 {
		t.Errorf("rotating a non-holder's token: %d, want 403", status)
	}
	for _, tt := range []struct {
		method, path string
		status       int
	}{
		{"DELETE", "/api_tokens/groups/ops/members/bob", 404},
		{"PUT", "/api_tokens/groups/Bad_Group/members/bob", 400},
		{"PUT", "/api_tokens/groups/ops/members/a:b", 400},
		{"POST", "/api_tokens/groups/ops/members/bob", 405},
	} {
		if status, _, body := do(t, tester, tt.method, adminURL+tt.path, ""); status != tt.status {
			t.Errorf("%s %s: %d %s, want %d", tt.method, tt.path, status, body, tt.status)
		}
	}
}

func TestPolicyThrottleAndRateLimit(t *testing.T) {
	dir := t.TempDir()
	tester := startGate(t, policyConfig(filepath.Join(dir, "t.db"), filepath.Join(dir, "a.log"), "",
		"throttle 3 1m 5m\n\t\trate_limit 3/1m"))
	tok := createToken(t, tester, `{"user":"alice","name":"ci"}`)
	fast := createToken(t, tester, `{"user":"alice","name":"fast","rate_limit":"100/1m"}`)
	if fast.RateLimit != "100/1m" {
		t.Errorf("rate_limit = %q", fast.RateLimit)
	}

	t.Run("throttle", func(t *testing.T) {
		for i := range 3 {
			if status, _, _ := from(t, tester, "192.0.2.1", "GET", siteURL+"/rest/x", "Authorization", "Bearer caddytok_guess"); status != 401 {
				t.Fatalf("failure %d: %d", i, status)
			}
		}
		status, hdr, body := from(t, tester, "192.0.2.1", "GET", siteURL+"/rest/x", "Authorization", "Bearer "+fast.Token)
		if status != 429 || !strings.Contains(body, msgTooMany) {
			t.Fatalf("throttled IP: %d %q", status, body)
		}
		if secs, err := strconv.Atoi(hdr.Get("Retry-After")); err != nil || secs < 290 || secs > 300 {
			t.Errorf("Retry-After = %q", hdr.Get("Retry-After"))
		}
		// As Jira Data Center says it (python3-jira reads these on every
		// 429): max_failures failures every window.
		checkRateHeaders(t, hdr, "3", "3", "60")
		if status, _, _ := from(t, tester, "192.0.2.2", "GET", siteURL+"/rest/x", "Authorization", "Bearer "+fast.Token); status != 200 {
			t.Errorf("another IP is throttled too: %d", status)
		}
		// Requests without credentials (a browser's first try) do not count.
		for range 5 {
			from(t, tester, "192.0.2.3", "GET", siteURL+"/rest/x")
		}
		if status, _, _ := from(t, tester, "192.0.2.3", "GET", siteURL+"/rest/x", "Authorization", "Bearer "+fast.Token); status != 200 {
			t.Errorf("no-credential requests were counted: %d", status)
		}
	})

	t.Run("rate limit", func(t *testing.T) {
		for i := range 3 {
			if status, _, _ := from(t, tester, "192.0.2.9", "GET", siteURL+"/rest/x", "Authorization", "Bearer "+tok.Token); status != 200 {
				t.Fatalf("request %d within the rate: %d", i, status)
			}
		}
		status, hdr, _ := from(t, tester, "192.0.2.9", "GET", siteURL+"/rest/x", "Authorization", "Bearer "+tok.Token)
		if status != 429 || hdr.Get("Retry-After") == "" {
			t.Errorf("beyond the handler's rate: %d Retry-After %q", status, hdr.Get("Retry-After"))
		}
		checkRateHeaders(t, hdr, "3", "1", "20") // 3/1m: a burst of 3, then one every 20 s
		own := createToken(t, tester, `{"user":"alice","name":"own","rate_limit":"2/10s"}`)
		for i := range 2 {
			if status, _, _ := from(t, tester, "192.0.2.9", "GET", siteURL+"/rest/x", "Authorization", "Bearer "+own.Token); status != 200 {
				t.Fatalf("request %d within the token's own rate: %d", i, status)
			}
		}
		status, hdr, _ = from(t, tester, "192.0.2.9", "GET", siteURL+"/rest/x", "Authorization", "Bearer "+own.Token)
		if secs, err := strconv.Atoi(hdr.Get("Retry-After")); status != 429 || err != nil || secs < 1 || secs > 5 {
			t.Errorf("beyond the token's own rate: %d Retry-After %q", status, hdr.Get("Retry-After"))
		}
		checkRateHeaders(t, hdr, "2", "1", "5") // 2/10s: one every 5 s
		for i := range 10 {
			if status, _, _ := from(t, tester, "192.0.2.9", "GET", siteURL+"/rest/x", "Authorization", "Bearer "+fast.Token); status != 200 {
				t.Fatalf("token with its own higher rate, request %d: %d", i, status)
			}
		}
	})
}

// checkRateHeaders checks the rate-limit headers of a 429 as Jira Data
// Center sends them.
func checkRateHeaders(t *testing.T, hdr http.Header, limit, fillRate, interval string) {
	t.Helper()
	for k, want := range map[string]string{
		"X-RateLimit-Limit":            limit,
		"X-RateLimit-Remaining":        "0",
		"X-RateLimit-FillRate":         fillRate,
		"X-RateLimit-Interval-Seconds": interval,
	} {
		if got := hdr.Values(k); len(got) != 1 || got[0] != want {
			t.Errorf("%s = %q, want %q", k, got, want)
		}
	}
}

func TestPolicyThrottleBackendPasswordFailures(t *testing.T) {
	dir := t.TempDir()
	tester := startGate(t, fmt.Sprintf(`{
	`+testGlobals+`
	servers {
		trusted_proxies static 127.0.0.1/32
	}
	api_tokens {
		database %s
	}
}
http://localhost:9080 {
	api_token {
		passwords pass
		throttle 2 1m 1m
	}
	@wrong header Authorization "Basic YWxpY2U6d3Jvbmc="
	respond @wrong "backend says no" 401
	respond "backend says yes" 200
}
`, filepath.Join(dir, "t.db")))
	wrong := basicAuth("alice", "wrong")
	for i := range 2 {
		if status, _, body := from(t, tester, "192.0.2.50", "GET", siteURL+"/", "Authorization", wrong); status != 401 || body != "backend says no" {
			t.Fatalf("guess %d: %d %q", i, status, body)
		}
	}
	// The backend refused twice: the client IP is now throttled, even with
	// the right password.
	if status, _, _ := from(t, tester, "192.0.2.50", "GET", siteURL+"/", "Authorization", basicAuth("alice", "right")); status != 429 {
		t.Errorf("after two backend 401s: %d, want 429", status)
	}
	if status, _, _ := from(t, tester, "192.0.2.51", "GET", siteURL+"/", "Authorization", basicAuth("alice", "right")); status != 200 {
		t.Errorf("another client: %d, want 200", status)
	}
	// Failures count per address and user: another user behind the same
	// address (a NAT) is not locked out.
	if status, hdr, body := from(t, tester, "192.0.2.50", "GET", siteURL+"/", "Authorization", basicAuth("bob", "right")); status != 200 {
		t.Errorf("another user from the same address: %d %q %v, want 200", status, body, hdr)
	}
}

func TestPolicyUserHeader(t *testing.T) {
	dir := t.TempDir()
	tester := startGate(t, fmt.Sprintf(`{
	`+testGlobals+`
	api_tokens {
		database %s
	}
}
http://localhost:9080 {
	api_token {
		protect /rest/*
		user_header X-Remote-User
		throttle off
	}
	respond "remote=[{header.X-Remote-User}]"
}
`, filepath.Join(dir, "t.db")))
	tok := createToken(t, tester, `{"user":"alice","name":"ci"}`)
	tests := []struct {
		name, path string
		header     []string
		status     int
		body       string
	}{
		{"token", "/rest/x", []string{"Authorization", "Bearer " + tok.Token}, 200, "remote=[alice]"},
		{"spoofed with a token", "/rest/x", []string{"Authorization", "Bearer " + tok.Token, "X-Remote-User", "admin"}, 200, "remote=[alice]"},
		{"spoofed on an unprotected path", "/secure/Dashboard.jspa", []string{"X-Remote-User", "admin"}, 200, "remote=[]"},
		{"spoofed without a token", "/rest/x", []string{"X-Remote-User", "admin"}, 401, msgUnauthorized},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			status, _, body := do(t, tester, http.MethodGet, siteURL+tt.path, "", tt.header...)
			if status != tt.status || !strings.Contains(body, tt.body) {
				t.Errorf("%d %q, want %d containing %q", status, body, tt.status, tt.body)
			}
		})
	}
}

func TestPolicyReportOnly(t *testing.T) {
	dir := t.TempDir()
	audit := filepath.Join(dir, "audit.log")
	tester := startGate(t, policyConfig(filepath.Join(dir, "t.db"), audit, "", "report_only\n\t\tallow_ips 10.0.0.0/8"))
	tok := createToken(t, tester, `{"user":"alice","name":"ci","read_only":true}`)

	tests := []struct {
		name, ip, method, path, authz string
		body                          string
		want                          map[string]any
	}{
		{"password", "10.0.0.1", "GET", "/rest/x", basicAuth("alice", "pw"), "user={http.auth.user.id} ", map[string]any{"msg": "would_deny", "reason": "password_blocked", "status": 401}},
		{"unknown token gets no identity", "10.0.0.1", "GET", "/rest/x", "Bearer caddytok_nope", "user={http.auth.user.id} ", map[string]any{"msg": "would_deny", "reason": "malformed_token"}},
		{"ip", "203.0.113.5", "GET", "/rest/x", "Bearer " + tok.Token, "user=alice", map[string]any{"msg": "would_deny", "reason": "ip_not_allowed", "status": 403}},
		{"scope", "10.0.0.1", "DELETE", "/rest/x", "Bearer " + tok.Token, "user=alice", map[string]any{"msg": "would_deny", "reason": "read_only", "token_id": tok.ID}},
		{"path", "10.0.0.1", "GET", "/rest/a/%2e%2e/x", "Bearer " + tok.Token, "user=alice", map[string]any{"msg": "would_deny", "reason": "path_blocked", "rule": "dot_segment", "status": 400}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			status, _, body := from(t, tester, tt.ip, tt.method, siteURL+tt.path, "Authorization", tt.authz)
			if status != 200 || !strings.Contains(body, tt.body) {
				t.Errorf("%d %q, want 200 containing %q", status, body, tt.body)
			}
		})
	}
	events := auditEvents(t, audit)
	for _, tt := range tests {
		if !hasEvent(events, tt.want) {
			t.Errorf("%s: no audit event %v", tt.name, tt.want)
		}
	}
	for _, e := range events {
		if b, _ := json.Marshal(e); strings.Contains(string(b), tok.Token) || strings.Contains(string(b), "cHc=") {
			t.Errorf("a secret in the audit log: %s", b)
		}
	}
}

func TestHandlerTooEarly(t *testing.T) {
	h, _, _, _ := testHandler(t)
	req := httptest.NewRequest(http.MethodGet, "/", nil)
	req.TLS = &tls.ConnectionState{HandshakeComplete: false}
	err := h.ServeHTTP(httptest.NewRecorder(), req, caddyhttp.HandlerFunc(func(http.ResponseWriter, *http.Request) error {
		t.Error("early data went on")
		return nil
	}))
	var he caddyhttp.HandlerError
	if !errors.As(err, &he) || he.StatusCode != http.StatusTooEarly {
		t.Errorf("error = %v, want 425", err)
	}
}

// TestPolicyScopeResolvedPath: a token's paths scope judges the path as
// the backend resolves it, as protect does, so a traversal that Caddy's
// cleaning leaves inside the scope ("..;" is no dot-segment to Caddy, but
// Tomcat drops the ";") is refused even with path inspection off.
func TestPolicyScopeResolvedPath(t *testing.T) {
	dir := t.TempDir()
	tester := startGate(t, fmt.Sprintf(`{
	`+testGlobals+`
	api_tokens {
		database %s
	}
}
http://localhost:9080 {
	route {
		rewrite /rest/api/alias /secure/admin/users
		rewrite /alias /rest/api/2/myself
		api_token {
			block_paths off
			throttle off
		}
		respond "user={http.auth.user.id}" 200
	}
}
`, filepath.Join(dir, "t.db")))
	tok := createToken(t, tester, `{"user":"alice","name":"api","paths":["/rest/api/*"]}`)
	tests := []struct {
		name, path string
		status     int
	}{
		{"in scope", "/rest/api/2/myself", 200},
		{"in scope, encoded", "/rest/api/2/user%20name", 200},
		{"path parameter traversal", "/rest/api/..;/..;/secure/admin/users", 403},
		{"path parameter on a segment", "/rest/api;x=1/2/myself", 200},
		{"encoded traversal", "/rest/api/%2e%2e/%2e%2e/secure/admin/users", 403},
		{"encoded slash traversal", "/rest/api%2f..%2f..%2fsecure/admin/users", 403},
		{"backslash traversal", `/rest/api/..\..\secure/admin/users`, 403},
		{"out of scope", "/secure/admin/users", 403},
		// Caddy's rewrite replaces the request-target: the scope judges
		// the path the backend gets (TestCheckScopeRewritten covers a
		// handler that changes only r.URL).
		{"rewritten out of scope", "/rest/api/alias", 403},
		{"rewritten into scope", "/alias", 200},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			status, _, body := do(t, tester, http.MethodGet, siteURL+tt.path, "", "Authorization", "Bearer "+tok.Token)
			if status != tt.status {
				t.Errorf("GET %s: %d %q, want %d", tt.path, status, body, tt.status)
			}
		})
	}
}

// TestPolicyUnreadableForwardedChain: behind a trusted proxy, a client IP
// header that Caddy cannot read leaves it with the proxy's own address as
// the client IP. An IP limit must not take that for the client's address:
// the client's address is unknown, and IP-limited credentials are refused.
func TestPolicyUnreadableForwardedChain(t *testing.T) {
	for _, strict := range []bool{true, false} {
		t.Run(fmt.Sprintf("strict=%v", strict), func(t *testing.T) {
			dir := t.TempDir()
			strictOpt := ""
			if strict {
				strictOpt = "trusted_proxies_strict"
			}
			tester := startGate(t, fmt.Sprintf(`{
	`+testGlobals+`
	servers {
		trusted_proxies static 127.0.0.1/32
		%s
	}
	api_tokens {
		database %s
	}
}
http://localhost:9080 {
	api_token /gate/* {
		throttle off
		allow_ips 127.0.0.1/32 198.51.100.0/24
	}
	api_token /token/* {
		throttle off
	}
	api_token /password/* {
		throttle off
		passwords pass_from 127.0.0.1/32
	}
	respond "user={http.auth.user.id} client={client_ip}" 200
}
`, strictOpt, filepath.Join(dir, "t.db")))
			open := createToken(t, tester, `{"user":"alice","name":"open"}`)
			internal := createToken(t, tester, `{"user":"alice","name":"internal","allowed_ips":["127.0.0.1/32"]}`)
			tests := []struct {
				name, path, authz string
				xff               []string // X-Forwarded-For values; nil: none
				status            int
			}{
				{"gate limit, no header", "/gate/x", "Bearer " + open.Token, nil, 200},
				{"gate limit, readable chain", "/gate/x", "Bearer " + open.Token, []string{"198.51.100.7"}, 200},
				{"gate limit, garbage", "/gate/x", "Bearer " + open.Token, []string{"garbage"}, 403},
				{"gate limit, empty", "/gate/x", "Bearer " + open.Token, []string{""}, 403},
				{"gate limit, garbage twice", "/gate/x", "Bearer " + open.Token, []string{"x, y"}, 403},
				{"token limit, no header", "/token/x", "Bearer " + internal.Token, nil, 200},
				{"token limit, garbage", "/token/x", "Bearer " + internal.Token, []string{"not-an-ip"}, 403},
				{"token limit, garbage with port", "/token/x", "Bearer " + internal.Token, []string{"bad:1234"}, 403},
				{"no limit, garbage", "/token/x", "Bearer " + open.Token, []string{"garbage"}, 200},
				{"pass_from, no header", "/password/x", basicAuth("alice", "hunter2"), nil, 200},
				{"pass_from, garbage", "/password/x", basicAuth("alice", "hunter2"), []string{"garbage"}, 401},
			}
			for _, tt := range tests {
				t.Run(tt.name, func(t *testing.T) {
					req, err := http.NewRequest(http.MethodGet, siteURL+tt.path, nil)
					if err != nil {
						t.Fatal(err)
					}
					req.Header.Set("Authorization", tt.authz)
					for _, v := range tt.xff {
						req.Header.Add("X-Forwarded-For", v)
					}
					resp, err := tester.Client.Do(req)
					if err != nil {
						t.Fatal(err)
					}
					body, _ := io.ReadAll(resp.Body)
					resp.Body.Close()
					if resp.StatusCode != tt.status {
						t.Errorf("%d %q, want %d", resp.StatusCode, body, tt.status)
					}
				})
			}
		})
	}
}

// TestPolicyUserHeaderEncoding: user_header can encode a UTF-8 user name
// for backends that read header values as ISO-8859-1.
func TestPolicyUserHeaderEncoding(t *testing.T) {
	dir := t.TempDir()
	tester := startGate(t, fmt.Sprintf(`{
	`+testGlobals+`
	api_tokens {
		database %s
	}
}
http://localhost:9080 {
	handle /raw/* {
		api_token {
			user_header X-Remote-User
			throttle off
		}
		respond "remote=[{header.X-Remote-User}]"
	}
	handle /percent/* {
		api_token {
			user_header X-Remote-User percent
			throttle off
		}
		respond "remote=[{header.X-Remote-User}]"
	}
	handle /rfc8187/* {
		api_token {
			user_header X-Remote-User rfc8187
			throttle off
		}
		respond "remote=[{header.X-Remote-User}]"
	}
}
`, filepath.Join(dir, "t.db")))
	tok := createToken(t, tester, `{"user":"jürgen","name":"ci"}`)
	tests := []struct{ path, body string }{
		{"/raw/x", "remote=[jürgen]"},
		{"/percent/x", "remote=[j%C3%BCrgen]"},
		{"/rfc8187/x", "remote=[UTF-8''j%C3%BCrgen]"},
	}
	for _, tt := range tests {
		t.Run(tt.path, func(t *testing.T) {
			status, _, body := do(t, tester, http.MethodGet, siteURL+tt.path, "", "Authorization", "Bearer "+tok.Token)
			if status != 200 || body != tt.body {
				t.Errorf("%d %q, want 200 %q", status, body, tt.body)
			}
		})
	}
}
