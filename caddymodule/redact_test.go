package caddymodule

import (
	"context"
	"database/sql"
	"encoding/json"
	"fmt"
	"net/http"
	"net/http/httptest"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/caddyserver/caddy/v2"
	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"
	"go.uber.org/zap/zaptest/observer"

	"github.com/apitoken/caddy-apitoken/event"
	"github.com/apitoken/caddy-apitoken/internal/testkit"
	"github.com/apitoken/caddy-apitoken/storage"
	"github.com/apitoken/caddy-apitoken/token"
	"github.com/apitoken/caddy-apitoken/tokenstore"
)

// redactConfig records every class with a tiny detail limit, so that a
// flood is summarised, logs the audit trail to auditLog, and subscribes the
// test event recorder to api_token_denied. The site answers any host.
func redactConfig(db, auditLog string) string {
	return fmt.Sprintf(`{
	`+testGlobals+`
	log audit {
		include api_tokens.audit
		output file %s
		level DEBUG
	}
	events {
		on api_token_denied api_token_test
	}
	api_tokens {
		database %s
		audit {
			events admin failure denied success
			detail_limit 2 1s
		}
	}
}
http://:9080 {
	api_token {
		header X-Api-Token
		query api_token
		throttle off
	}
	respond "ok"
}
`, auditLog, db)
}

// TestNoSecretInAnySink sends real and near tokens in every position a
// client can put one (Basic user and password, Bearer, the configured
// header and query parameter, the path, the host, the method) and scans
// every sink for them: the zap audit log, GET /api_tokens/audit, the
// audit_events table, the api_token_denied Caddy event, the summaries of a
// flood and the CLI. It asserts on the sinks, not on the statuses: whether
// a token in the user field is accepted is the gate's business.
func TestNoSecretInAnySink(t *testing.T) {
	dir := t.TempDir()
	db, logFile := filepath.Join(dir, "t.db"), filepath.Join(dir, "audit.log")
	tester := startGate(t, redactConfig(db, logFile))

	alice := createToken(t, tester, `{"user":"alice","name":"ci"}`)
	_, unknown, err := token.Generate(token.DefaultPrefix)
	if err != nil {
		t.Fatal(err)
	}
	prefixLen := len(token.DefaultPrefix) + 1
	secrets := map[string]string{
		"valid":         alice.Token,
		"unknown":       unknown,
		"bad checksum":  mistype(alice.Token),
		"one short":     alice.Token[:len(alice.Token)-1],
		"one long":      alice.Token + "Q",
		"upper prefix":  strings.ToUpper(token.DefaultPrefix) + alice.Token[prefixLen-1:],
		"other prefix":  "jira" + alice.Token[prefixLen-1:],
		"inside a word": "x" + unknown + "-y",
	}
	var sent []string // credentials as they went over the wire
	send := func(method, target string, header ...string) {
		t.Helper()
		for i := 0; i+1 < len(header); i += 2 {
			sent = append(sent, header[i+1])
		}
		req, err := http.NewRequest(method, target, nil)
		if err != nil {
			t.Fatal(err)
		}
		for i := 0; i+1 < len(header); i += 2 {
			if header[i] == "Host" {
				req.Host = header[i+1]
				continue
			}
			req.Header.Set(header[i], header[i+1])
		}
		resp, err := tester.Client.Do(req)
		if err != nil {
			t.Fatalf("%s %s: %v", method, target, err)
		}
		resp.Body.Close()
	}
	for _, s := range secrets {
		send(http.MethodGet, siteURL+"/rest/x", "Authorization", basicAuth(s, ""))
		send(http.MethodGet, siteURL+"/rest/x", "Authorization", basicAuth(s, "x-oauth-basic"))
		send(http.MethodGet, siteURL+"/rest/x", "Authorization", basicAuth("alice", s))
		send(http.MethodGet, siteURL+"/rest/x", "Authorization", basicAuth("mallory", s))
		send(http.MethodGet, siteURL+"/rest/x", "Authorization", "Bearer "+s)
		send(http.MethodGet, siteURL+"/rest/x", "X-Api-Token", s)
		send(http.MethodGet, siteURL+"/rest/x?api_token="+url.QueryEscape(s))
		send(http.MethodGet, siteURL+"/rest/"+url.PathEscape(s)+"/y")
		send(http.MethodGet, siteURL+"/rest/%2e%2e/"+url.PathEscape(s)) // refused by path inspection
		send(http.MethodGet, siteURL+"/rest/x", "Host", s+".example.com", "Authorization", "Bearer "+alice.Token)
		send(s, siteURL+"/rest/x", "Authorization", "Bearer "+alice.Token)
	}
	// A flood of tokens in the user field, summarised beyond the limit.
	for range 20 {
		send(http.MethodGet, siteURL+"/rest/flood", "Authorization", basicAuth(secrets["bad checksum"], "x-oauth-basic"))
		send(http.MethodGet, siteURL+"/rest/flood", "Authorization", basicAuth(alice.Token, ""))
	}
	// Request events are stored in order: the last one stored means all are.
	send(http.MethodGet, siteURL+"/rest/end", "Authorization", "Bearer "+alice.Token)
	waitAudit(t, tester, "&type=auth_succeeded", map[string]any{"path": "/rest/end"})
	var api string
	deadline := time.Now().Add(10 * time.Second)
	for {
		_, _, api = do(t, tester, http.MethodGet, adminURL+"/api_tokens/audit?limit=1000", "")
		if strings.Contains(api, `"top_users"`) {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("no summary with top users stored:\n%s", api)
		}
		time.Sleep(100 * time.Millisecond)
	}

	sinks := map[string]string{"admin API": api}
	logged, err := os.ReadFile(logFile)
	if err != nil {
		t.Fatal(err)
	}
	sinks["zap log"] = string(logged)
	raw, err := sql.Open("sqlite3", "file:"+db+"?mode=ro")
	if err != nil {
		t.Fatal(err)
	}
	defer raw.Close()
	rows, err := raw.Query(`SELECT * FROM audit_events`)
	if err != nil {
		t.Fatal(err)
	}
	var table strings.Builder
	testkit.ScanRows(t, rows, func(_ []string, vals []any) { fmt.Fprintln(&table, vals...) })
	sinks["audit_events table"] = table.String()
	var denied strings.Builder
	for _, e := range recordedEvents("api_token_denied") {
		b, err := json.Marshal(e.Data)
		if err != nil {
			t.Fatal(err)
		}
		denied.Write(b)
	}
	sinks["api_token_denied event"] = denied.String()
	cli, err := runCLI(t, "audit", "--limit", "1000")
	if err != nil {
		t.Fatalf("CLI audit: %v\n%s", err, cli)
	}
	sinks["CLI"] = cli

	for name, sink := range sinks {
		if !strings.Contains(sink, "_[redacted]") {
			t.Errorf("%s: no redacted value: the requests did not reach it", name)
		}
		for kind, s := range secrets {
			// The secret part of the token itself, and a slice of it that
			// any near token carries.
			body := s[strings.LastIndexByte(s, '_')+1:]
			for _, f := range []string{s, body[12:], body[20:40]} {
				if strings.Contains(sink, f) {
					t.Errorf("%s carries a %s token (%.16s…)", name, kind, f)
				}
			}
		}
		for _, c := range sent {
			if len(c) > 16 && strings.Contains(sink, c) {
				t.Errorf("%s carries a credential as sent (%.16s…)", name, c)
			}
		}
	}
}

// auditHandler is testHandler with the app's real audit machinery, every
// class recorded in full: its zap output goes to the returned observer, its
// queue to the store. stop stops it, so that everything is stored.
func auditHandler(t *testing.T) (h *Handler, st *tokenstore.Store, logs *observer.ObservedLogs, stop func()) {
	t.Helper()
	h, st, _, _ = testHandler(t)
	app := h.app
	core, logs := observer.New(zapcore.DebugLevel)
	app.logger = zap.New(core)
	app.Audit = &AuditConfig{Events: []string{"admin", "failure", "denied", "success"}, DetailLimit: &DetailLimitConfig{Off: true}}
	cctx, cancel := caddy.NewContext(caddy.Context{Context: context.Background()})
	t.Cleanup(cancel)
	if err := app.provisionAudit(cctx); err != nil {
		t.Fatal(err)
	}
	app.audit = app.auditState.recorder
	app.startAudit()
	stopped := false
	stop = func() {
		if !stopped {
			stopped = true
			app.stopAudit()
		}
	}
	t.Cleanup(stop)
	return h, st, logs, stop
}

// auditAPI answers GET /api_tokens/audit?query from h's app, raw.
func auditAPI(t *testing.T, h *Handler, query string) string {
	t.Helper()
	w := httptest.NewRecorder()
	if err := new(adminAPI).queryAudit(w, httptest.NewRequest(http.MethodGet, "/api_tokens/audit?"+query, nil), h.app); err != nil {
		t.Fatal(err)
	}
	return w.Body.String()
}

// TestAuditClaimedUser checks that a token presented under another user's
// name is recorded with both names, in every sink: the owner as user, the
// name tried as claimed_user (redacted if it is a token).
func TestAuditClaimedUser(t *testing.T) {
	h, st, logs, stop := auditHandler(t)
	ctx := context.Background()
	_, alice, err := st.Create(ctx, storage.NewToken{Prefix: "caddytok", User: "alice", Name: "ci"}, nil)
	if err != nil {
		t.Fatal(err)
	}
	_, bob, err := st.Create(ctx, storage.NewToken{Prefix: "caddytok", User: "bob", Name: "ci"}, nil)
	if err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name, user, path      string
		wantUser, wantClaimed string // "" for none
	}{
		{"another user's name", "mallory", "/rest/mallory", "alice", "mallory"},
		// Two tokens (ambiguous_credentials): neither is looked up, and
		// neither is anybody's name.
		{"another token as the name", bob, "/rest/token-as-name", "", ""},
		{"the owner's name in capitals", "ALICE", "/rest/capitals", "alice", ""},
		{"the owner's name", "alice", "/rest/owner", "alice", ""},
	}
	for _, tt := range tests {
		req := httptest.NewRequest(http.MethodGet, tt.path, nil)
		req.Header.Set("Authorization", basicAuth(tt.user, alice))
		serve(t, h, req)
	}
	stop()

	var page auditPageJSON
	api := auditAPI(t, h, "limit=100")
	if err := json.Unmarshal([]byte(api), &page); err != nil {
		t.Fatal(err)
	}
	var apiEvents struct {
		Events []map[string]any `json:"events"`
	}
	if err := json.Unmarshal([]byte(api), &apiEvents); err != nil {
		t.Fatal(err)
	}
	var cli strings.Builder
	if err := printEvents(&cli, page); err != nil {
		t.Fatal(err)
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			want := map[string]any{"path": tt.path}
			if tt.wantUser != "" {
				want["user"] = tt.wantUser
			}
			if tt.wantClaimed != "" {
				want["claimed_user"] = tt.wantClaimed
			}
			var stored []map[string]any
			for _, e := range apiEvents.Events {
				if e["path"] == tt.path {
					stored = append(stored, e)
				}
			}
			if len(stored) != 1 || stored[0]["user"] != want["user"] || stored[0]["claimed_user"] != want["claimed_user"] {
				t.Errorf("GET /api_tokens/audit: %v, want %v", stored, want)
			}
			lines := logs.FilterField(zap.String("path", tt.path)).All()
			if len(lines) != 1 {
				t.Fatalf("%d lines logged for %s", len(lines), tt.path)
			}
			logged := lines[0].ContextMap()
			if logged["user"] != want["user"] || logged["claimed_user"] != want["claimed_user"] {
				t.Errorf("zap: %v, want %v", logged, want)
			}
			var line string
			for l := range strings.Lines(cli.String()) {
				if strings.Contains(l, tt.path) {
					line = l
				}
			}
			if tt.wantClaimed != "" && !strings.Contains(line, tt.wantUser+" (claimed "+tt.wantClaimed+")") {
				t.Errorf("CLI line %q lacks the claimed user %q", line, tt.wantClaimed)
			}
			if tt.wantClaimed == "" && (line == "" || strings.Contains(line, "claimed")) {
				t.Errorf("CLI line %q", line)
			}
		})
	}
	for name, sink := range map[string]string{"admin API": api, "CLI": cli.String()} {
		if strings.Contains(sink, bob[len("caddytok_"):]) {
			t.Errorf("%s carries bob's token", name)
		}
	}
}

// TestAuditUnmappedClientIP checks that an IPv4-mapped client IP is
// recorded as the IPv4 address, and that filtering by either form finds it.
func TestAuditUnmappedClientIP(t *testing.T) {
	h, st, logs, stop := auditHandler(t)
	req := httptest.NewRequest(http.MethodGet, "/rest/x", nil)
	req.Header.Set("Authorization", "Bearer caddytok_x")
	serveFrom(t, h, req, "::ffff:198.51.100.20")
	stop()

	for _, filter := range []string{"198.51.100.20", "::ffff:198.51.100.20", "::FFFF:c633:6414"} {
		t.Run(filter, func(t *testing.T) {
			page, err := st.QueryAudit(context.Background(), event.Query{ClientIP: filter})
			if err != nil {
				t.Fatal(err)
			}
			if len(page.Events) != 1 || page.Events[0].ClientIP != "198.51.100.20" {
				t.Errorf("client_ip=%s: %+v", filter, page.Events)
			}
			if api := auditAPI(t, h, "client_ip="+url.QueryEscape(filter)); !strings.Contains(api, `"client_ip":"198.51.100.20"`) {
				t.Errorf("GET /api_tokens/audit?client_ip=%s: %s", filter, api)
			}
		})
	}
	if n := logs.FilterField(zap.String("client_ip", "198.51.100.20")).Len(); n != 1 {
		t.Errorf("%d events logged with client_ip 198.51.100.20: %v", n, logs.All())
	}
}
