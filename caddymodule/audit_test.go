package caddymodule

import (
	"context"
	"database/sql"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/caddyserver/caddy/v2"
	"github.com/caddyserver/caddy/v2/caddyconfig/caddyfile"
	"github.com/caddyserver/caddy/v2/caddytest"
	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"
	"go.uber.org/zap/zaptest/observer"

	"github.com/apitoken/caddy-apitoken/audit"
	"github.com/apitoken/caddy-apitoken/event"
	"github.com/apitoken/caddy-apitoken/internal/testkit"
	"github.com/apitoken/caddy-apitoken/storage"
	"github.com/apitoken/caddy-apitoken/token"
)

func init() {
	caddy.RegisterModule(eventRecorder{})
}

// eventRecorder is a test-only Caddy event handler that keeps what it is
// given, to check the api_token_* events.
type eventRecorder struct{}

var recorded = struct {
	sync.Mutex
	events []caddy.Event
}{}

func (eventRecorder) CaddyModule() caddy.ModuleInfo {
	return caddy.ModuleInfo{ID: "events.handlers.api_token_test", New: func() caddy.Module { return new(eventRecorder) }}
}

func (*eventRecorder) UnmarshalCaddyfile(d *caddyfile.Dispenser) error {
	d.Next()
	return nil
}

func (*eventRecorder) Handle(_ context.Context, e caddy.Event) error {
	recorded.Lock()
	defer recorded.Unlock()
	recorded.events = append(recorded.events, e)
	return nil
}

// recordedEvents returns the recorded events named name.
func recordedEvents(name string) []caddy.Event {
	recorded.Lock()
	defer recorded.Unlock()
	var out []caddy.Event
	for _, e := range recorded.events {
		if e.Name() == name {
			out = append(out, e)
		}
	}
	return out
}

// auditConfig records every class, logs the audit trail to auditLog and
// subscribes the test event recorder to the module's events.
func auditConfig(db, auditLog string) string {
	return fmt.Sprintf(`{
	`+testGlobals+`
	servers {
		trusted_proxies static 127.0.0.1/32
		metrics
	}
	log audit {
		include api_tokens.audit
		output file %s
		level DEBUG
	}
	events {
		on api_token_created api_token_test
		on api_token_revoked api_token_test
		on api_token_denied api_token_test
		on api_token_expiring api_token_test
	}
	api_tokens {
		database %s
		holders alice bob group:ops
		audit {
			events admin failure denied success
			expiry_warning 1h
		}
	}
}
http://localhost:9080 {
	api_token {
		protect /rest/*
		passwords pass_from 10.0.0.0/8
		allow_ips 10.0.0.0/8 192.0.2.0/24 198.51.100.0/24
		throttle 3 1m 5m
		rate_limit 100/1m
	}
	respond "ok {http.auth.user.id}"
}
http://localhost:9081 {
	api_token {
		report_only
		allow_ips 10.0.0.0/8
	}
	respond "ok"
}
`, auditLog, db)
}

// waitAudit polls GET /api_tokens/audit until an event with the fields is
// stored (request events reach the database through a queue).
func waitAudit(t *testing.T, tester *caddytest.Tester, query string, fields map[string]any) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for {
		_, _, body := do(t, tester, http.MethodGet, adminURL+"/api_tokens/audit?limit=1000"+query, "")
		var page struct {
			Events []map[string]any `json:"events"`
		}
		if err := json.Unmarshal([]byte(body), &page); err != nil {
			t.Fatalf("audit page %q: %v", body, err)
		}
		if hasEvent(page.Events, fields) {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("no stored audit event %v (query %q)", fields, query)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

func TestAuditTrail(t *testing.T) {
	dir := t.TempDir()
	db, logFile := filepath.Join(dir, "t.db"), filepath.Join(dir, "audit.log")
	tester := startGate(t, auditConfig(db, logFile))
	secrets := []string{"hunter2", "Zm9v"} // a password, and a query value

	alice := createToken(t, tester, `{"user":"alice","name":"ci","read_only":true,"rate_limit":"2/1h"}`)
	soon := createToken(t, tester, `{"user":"alice","name":"soon","expires_in":"1s"}`)
	_, unknown, err := token.Generate(token.DefaultPrefix)
	if err != nil {
		t.Fatal(err)
	}
	short := createToken(t, tester, `{"user":"alice","name":"short","expires_in":"30m"}`)
	other := createToken(t, tester, `{"user":"bob","name":"old"}`)
	secrets = append(secrets, alice.Token, short.Token, other.Token, soon.Token, unknown)
	get := func(ip, path, authz string, port ...string) int {
		t.Helper()
		site := siteURL
		if len(port) > 0 {
			site = "http://localhost:" + port[0]
		}
		status, _, _ := from(t, tester, ip, http.MethodGet, site+path, "Authorization", authz)
		return status
	}

	// Admin events.
	do(t, tester, http.MethodPatch, adminURL+"/api_tokens/tokens/"+alice.ID, `{"description":"nightly"}`)
	_, _, rotated := do(t, tester, http.MethodPost, adminURL+"/api_tokens/tokens/"+other.ID+"/rotate", "")
	var rot tokenJSON
	_ = json.Unmarshal([]byte(rotated), &rot)
	secrets = append(secrets, rot.Token)
	do(t, tester, http.MethodPut, adminURL+"/api_tokens/groups/ops/members/carol", "")
	do(t, tester, http.MethodDelete, adminURL+"/api_tokens/groups/ops/members/carol", "")

	// Request events.
	if s := get("10.0.0.1", "/rest/x?q=Zm9v", basicAuth("alice", alice.Token)); s != 200 {
		t.Fatalf("valid request: %d", s)
	}
	cases := []struct {
		ip, path, authz string
		status          int
		want            map[string]any
	}{
		{"10.0.0.2", "/rest/x", "Bearer caddytok_x", 401, map[string]any{"type": "auth_failed", "reason": "malformed_token"}},
		{"10.0.0.2", "/rest/x", "Bearer " + unknown, 401, map[string]any{"type": "auth_failed", "reason": "unknown_token"}},
		{"10.0.0.2", "/rest/x", basicAuth("bob", alice.Token), 401, map[string]any{"type": "auth_failed", "reason": "wrong_user", "token_id": alice.ID}},
		{"192.0.2.1", "/rest/x", basicAuth("alice", "hunter2"), 401, map[string]any{"type": "auth_failed", "reason": "password_blocked"}},
		{"10.0.0.3", "/rest/x", basicAuth("alice", "hunter2"), 200, map[string]any{"type": "password_passed", "outcome": "passed"}},
		{"203.0.113.1", "/rest/x", "Bearer " + alice.Token, 403, map[string]any{"type": "denied", "reason": "ip_not_allowed", "token_id": alice.ID}},
		{"10.0.0.4", "/rest/%2e%2e/x", "", 400, map[string]any{"type": "denied", "reason": "path_blocked", "rule": "dot_segment"}},
		{"10.0.0.4", "/rest/x", "Bearer " + rot.Token, 200, map[string]any{"type": "auth_succeeded", "token_id": other.ID}},
	}
	for _, c := range cases {
		if s := get(c.ip, c.path, c.authz); s != c.status {
			t.Errorf("%s %s: %d, want %d", c.ip, c.path, s, c.status)
		}
	}
	// Scope: a read-only token's POST.
	if s, _, _ := from(t, tester, "10.0.0.5", http.MethodPost, siteURL+"/rest/x", "Authorization", "Bearer "+alice.Token); s != 403 {
		t.Errorf("read-only POST: %d", s)
	}
	// Rate limit: alice's token allows 2 an hour; one used above, one POST refused (not counted).
	get("10.0.0.6", "/rest/x", "Bearer "+alice.Token)
	if s := get("10.0.0.6", "/rest/x", "Bearer "+alice.Token); s != 429 {
		t.Errorf("beyond the token's rate: %d", s)
	}
	// Throttle: three failures from one IP, then 429.
	for range 3 {
		get("198.51.100.9", "/rest/x", "Bearer caddytok_y")
	}
	if s := get("198.51.100.9", "/rest/x", "Bearer "+rot.Token); s != 429 {
		t.Errorf("throttled: %d", s)
	}
	// Holder no longer allowed: bob is a holder by name, so use a group.
	do(t, tester, http.MethodPut, adminURL+"/api_tokens/groups/ops/members/dave", "")
	dave := createToken(t, tester, `{"user":"dave","name":"ci"}`)
	secrets = append(secrets, dave.Token)
	do(t, tester, http.MethodDelete, adminURL+"/api_tokens/groups/ops/members/dave", "")
	if s := get("10.0.0.7", "/rest/x", "Bearer "+dave.Token); s != 403 {
		t.Errorf("ex-holder: %d", s)
	}
	// Expired (1s after creation) and revoked.
	deadline := time.Now().Add(10 * time.Second)
	for get("10.0.0.8", "/rest/x", "Bearer "+soon.Token) != 401 {
		if time.Now().After(deadline) {
			t.Fatal("a 1s token still works after 10s")
		}
		time.Sleep(100 * time.Millisecond)
	}
	do(t, tester, http.MethodDelete, adminURL+"/api_tokens/tokens/"+dave.ID, "")
	if s := get("10.0.0.7", "/rest/x", "Bearer "+dave.Token); s != 401 {
		t.Errorf("revoked: %d", s)
	}
	do(t, tester, http.MethodDelete, adminURL+"/api_tokens/users/bob/tokens", "")
	// Report-only on the second site.
	if s := get("203.0.113.9", "/", "Bearer "+alice.Token, "9081"); s != 200 {
		t.Errorf("report-only: %d", s)
	}

	want := []struct {
		query  string
		fields map[string]any
	}{
		{"&type=token_created", map[string]any{"type": "token_created", "token_id": alice.ID, "user": "alice", "actor": "127.0.0.1"}},
		{"&type=token_updated", map[string]any{"type": "token_updated", "token_id": alice.ID}},
		{"&type=token_rotated", map[string]any{"type": "token_rotated", "token_id": other.ID}},
		{"&type=token_revoked", map[string]any{"type": "token_revoked", "token_id": dave.ID}},
		{"&type=user_tokens_revoked", map[string]any{"type": "user_tokens_revoked", "user": "bob", "count": 1}},
		{"&type=group_member_added", map[string]any{"type": "group_member_added", "user": "carol", "group": "ops"}},
		{"&type=group_member_removed", map[string]any{"type": "group_member_removed", "user": "carol", "group": "ops"}},
		{"&type=auth_succeeded", map[string]any{"type": "auth_succeeded", "token_id": alice.ID, "client_ip": "10.0.0.1", "path": "/rest/x"}},
		{"&type=denied", map[string]any{"type": "denied", "reason": "read_only", "token_id": alice.ID, "method": "POST"}},
		{"&type=denied", map[string]any{"type": "denied", "reason": "rate_limited", "status": 429}},
		{"&type=denied", map[string]any{"type": "denied", "reason": "throttled", "client_ip": "198.51.100.9"}},
		{"&type=denied", map[string]any{"type": "denied", "reason": "holder_not_allowed", "token_id": dave.ID}},
		{"&type=auth_failed", map[string]any{"type": "auth_failed", "reason": "revoked", "token_id": dave.ID}},
		{"&type=auth_failed", map[string]any{"type": "auth_failed", "reason": "expired", "token_id": soon.ID}},
		{"&type=would_deny", map[string]any{"type": "would_deny", "reason": "ip_not_allowed", "client_ip": "203.0.113.9"}},
		{"&user=ALICE&outcome=failure", map[string]any{"reason": "password_blocked", "client_ip": "192.0.2.1"}},
		{"&token=" + alice.ID + "&client_ip=10.0.0.2", map[string]any{"reason": "wrong_user"}},
	}
	for _, c := range cases {
		want = append(want, struct {
			query  string
			fields map[string]any
		}{"&type=" + fmt.Sprint(c.want["type"]), c.want})
	}
	for _, w := range want {
		waitAudit(t, tester, w.query, w.fields)
	}

	t.Run("zap sink has the same events", func(t *testing.T) {
		events := auditEvents(t, logFile)
		for _, w := range want {
			if w.fields["type"] == nil {
				continue // a filter check of the admin API only
			}
			fields := map[string]any{"msg": w.fields["type"]}
			for k, v := range w.fields {
				if k != "type" {
					fields[k] = v
				}
			}
			if !hasEvent(events, fields) {
				t.Errorf("not in the zap output: %v", fields)
			}
		}
	})

	t.Run("no secret in any sink", func(t *testing.T) {
		logged, err := os.ReadFile(logFile)
		if err != nil {
			t.Fatal(err)
		}
		_, _, stored := do(t, tester, http.MethodGet, adminURL+"/api_tokens/audit?limit=1000", "")
		raw, err := sql.Open("sqlite3", "file:"+db+"?mode=ro")
		if err != nil {
			t.Fatal(err)
		}
		defer raw.Close()
		var dump strings.Builder
		rows, err := raw.Query(`SELECT * FROM audit_events`)
		if err != nil {
			t.Fatal(err)
		}
		testkit.ScanRows(t, rows, func(_ []string, vals []any) { fmt.Fprintln(&dump, vals...) })
		if dump.Len() == 0 {
			t.Fatal("audit_events is empty")
		}
		for _, s := range secrets {
			forms := []string{s, base64.StdEncoding.EncodeToString([]byte("alice:" + s))}
			for _, f := range forms {
				for name, sink := range map[string]string{"zap": string(logged), "api": stored, "table": dump.String()} {
					if strings.Contains(sink, f) {
						t.Errorf("%s sink carries a secret or credential (%.12s…)", name, f)
					}
				}
			}
		}
		for name, sink := range map[string]string{"zap": string(logged), "table": dump.String()} {
			if strings.Contains(sink, "q=") || strings.Contains(strings.ToLower(sink), "authorization") {
				t.Errorf("%s sink carries a query string or an Authorization header", name)
			}
		}
	})

	t.Run("usage is shown", func(t *testing.T) {
		_, _, body := do(t, tester, http.MethodGet, adminURL+"/api_tokens/tokens/"+alice.ID, "")
		var tok tokenJSON
		if err := json.Unmarshal([]byte(body), &tok); err != nil {
			t.Fatal(err)
		}
		// Two uses on the gate, and one let through by report_only.
		if tok.UseCount != 3 || tok.LastUsedAt == nil || tok.LastUsedIP != "203.0.113.9" {
			t.Errorf("usage: count %d last %v from %q", tok.UseCount, tok.LastUsedAt, tok.LastUsedIP)
		}
		var ips []string
		for _, seen := range tok.RecentIPs {
			ips = append(ips, seen.IP)
		}
		if strings.Join(ips, " ") != "203.0.113.9 10.0.0.6 10.0.0.1" {
			t.Errorf("recent IPs: %v", ips)
		}
		out, err := runCLI(t, "list", "--user", "alice")
		if err != nil || !strings.Contains(out, "203.0.113.9") {
			t.Errorf("CLI list without usage: %v\n%s", err, out)
		}
	})

	t.Run("usage survives a reload", func(t *testing.T) {
		// The old config's Stop flushes its pending usage; the new one
		// starts with none pending and reads the stored totals.
		tester.InitServer(strings.Replace(auditConfig(db, logFile), "expiry_warning 1h", "expiry_warning 2h", 1), "caddyfile")
		_, _, body := do(t, tester, http.MethodGet, adminURL+"/api_tokens/tokens/"+alice.ID, "")
		var tok tokenJSON
		if err := json.Unmarshal([]byte(body), &tok); err != nil {
			t.Fatal(err)
		}
		if tok.UseCount != 3 || tok.LastUsedIP != "203.0.113.9" || len(tok.RecentIPs) != 3 {
			t.Errorf("usage after reload: count %d from %q, %d recent IPs", tok.UseCount, tok.LastUsedIP, len(tok.RecentIPs))
		}
	})

	t.Run("caddy events", func(t *testing.T) {
		if evs := recordedEvents("api_token_created"); len(evs) < 3 {
			t.Errorf("api_token_created: %d events", len(evs))
		}
		if evs := recordedEvents("api_token_revoked"); len(evs) < 2 {
			t.Errorf("api_token_revoked: %d events", len(evs))
		}
		denied := recordedEvents("api_token_denied")
		found := false
		for _, e := range denied {
			if e.Data["reason"] == "ip_not_allowed" && e.Data["token_id"] == alice.ID {
				found = true
			}
		}
		if !found {
			t.Errorf("no api_token_denied for the IP refusal among %d", len(denied))
		}
		expiring := recordedEvents("api_token_expiring")
		n := 0
		for _, e := range expiring {
			if e.Data["token_id"] == short.ID {
				n++
			}
		}
		if n != 1 {
			t.Errorf("api_token_expiring fired %d times for the short token, want once", n)
		}
	})

	t.Run("metrics", func(t *testing.T) {
		_, _, body := do(t, tester, http.MethodGet, adminURL+"/metrics", "")
		for _, want := range []string{
			`caddy_api_tokens_requests_total{outcome="failure",reason="wrong_user"}`,
			`caddy_api_tokens_requests_total{outcome="denied",reason="throttled"}`,
			`caddy_api_tokens_tokens{state="active"}`,
			`caddy_api_tokens_tokens{state="revoked"}`,
			`caddy_api_tokens_audit_events_dropped_total 0`,
			`caddy_api_tokens_audit_events_trimmed_total 0`,
			"\ncaddy_api_tokens_audit_events_summarized_total ",
		} {
			if !strings.Contains(body, want) {
				t.Errorf("metrics lack %s", want)
			}
		}
	})

	t.Run("the CLI reads the trail", func(t *testing.T) {
		out, err := runCLI(t, "audit", "--token", alice.ID, "--limit", "2")
		if err != nil || !strings.Contains(out, "TIME") || !strings.Contains(out, "More: caddy api-token audit --cursor") {
			t.Errorf("audit: %v\n%s", err, out)
		}
		out, err = runCLI(t, "audit", "--type", "token_created", "--json")
		if err != nil || !strings.Contains(out, `"events"`) {
			t.Errorf("audit --json: %v\n%s", err, out)
		}
	})

	t.Run("bad queries are refused", func(t *testing.T) {
		for _, q := range []string{"?cursor=!!not-a-cursor", "?type=nope", "?outcome=maybe", "?since=yesterday", "?limit=0", "?limit=5000", "?foo=1", "?user=a&user=b"} {
			if status, _, body := do(t, tester, http.MethodGet, adminURL+"/api_tokens/audit"+q, ""); status != 400 {
				t.Errorf("%s: %d %s", q, status, body)
			}
		}
	})
}

// TestAuditDetailLimit drives refusals through the handler with the app's
// real audit machinery (a detail limit of 5 a minute) and reads what
// reached the database: the detailed events, one summary per window with
// the right count, written by the summary loop once the window is over,
// and by stopAudit for the window still running — before the queue's
// writer drains and ends.
func TestAuditDetailLimit(t *testing.T) {
	h, st, clock, _ := testHandler(t)
	ctx := context.Background()
	app := h.app
	core, logs := observer.New(zapcore.InfoLevel)
	app.logger = zap.New(core)
	app.Audit = &AuditConfig{DetailLimit: &DetailLimitConfig{Events: 5, Window: caddy.Duration(time.Minute)}}
	cctx, cancel := caddy.NewContext(caddy.Context{Context: ctx})
	defer cancel()
	if err := app.provisionAudit(cctx); err != nil {
		t.Fatal(err)
	}
	app.audit = app.auditState.recorder
	app.startAudit()
	stopped := false
	t.Cleanup(func() {
		if !stopped {
			app.stopAudit()
		}
	})

	revoked, revokedSecret, err := st.Create(ctx, storage.NewToken{Prefix: "caddytok", User: "alice", Name: "old"}, nil)
	if err != nil {
		t.Fatal(err)
	}
	if _, _, err := st.Revoke(ctx, revoked.ID, nil); err != nil {
		t.Fatal(err)
	}
	_, unknown, err := token.Generate("caddytok")
	if err != nil {
		t.Fatal(err)
	}
	refuse := func(authz string) {
		t.Helper()
		req := httptest.NewRequest(http.MethodGet, "/rest/api/2/myself", nil)
		req.Header.Set("Authorization", authz)
		if w, _, called := serve(t, h, req); called || w.Code != http.StatusUnauthorized {
			t.Fatalf("refusal answered %d (next called: %v)", w.Code, called)
		}
	}
	stored := func() []event.Event {
		t.Helper()
		page, err := st.QueryAudit(ctx, event.Query{Limit: event.MaxQueryLimit})
		if err != nil {
			t.Fatal(err)
		}
		return page.Events
	}
	summaries := func() []event.Event {
		var out []event.Event
		for _, e := range stored() {
			if e.IsSummary() {
				out = append(out, e)
			}
		}
		return out
	}

	// Window 1 (12:00–12:01): a flood of one unknown token under two user
	// names, and a revoked token's use in between, on a budget of its own.
	start := clock.Now()
	for i := range 40 {
		user := "admin"
		if i%4 == 3 {
			user = "root"
		}
		refuse(basicAuth(user, unknown))
		if i == 20 || i == 30 {
			refuse("Bearer " + revokedSecret)
		}
	}
	// The flood stops; the summary loop records the window once it is over.
	clock.Advance(time.Minute)
	deadline := time.Now().Add(10 * time.Second)
	for len(summaries()) == 0 {
		if time.Now().After(deadline) {
			t.Fatal("no summary stored after the window ended")
		}
		time.Sleep(20 * time.Millisecond)
	}
	// Window 2: 8 more, then the app stops while the window runs.
	for range 8 {
		refuse(basicAuth("admin", unknown))
	}
	clock.Advance(10 * time.Second)
	app.stopAudit()
	stopped = true

	events := stored()
	var detailed []string
	for _, e := range events {
		if !e.IsSummary() {
			detailed = append(detailed, e.Reason)
		}
	}
	if n, r := strings.Count(strings.Join(detailed, " "), "unknown_token"), strings.Count(strings.Join(detailed, " "), "revoked"); n != 10 || r != 2 || len(detailed) != 12 {
		t.Errorf("detailed events %q: want 5 unknown_token a window, and both revoked", detailed)
	}
	got := summaries() // newest first
	want := []event.Event{
		{Time: start.Add(time.Minute + 10*time.Second), Count: 3, User: "admin",
			TopClients: []event.Tally{{Value: "198.51.100.4", Count: 3}}, TopUsers: []event.Tally{{Value: "admin", Count: 3}}},
		{Time: start.Add(time.Minute), Count: 35, User: "admin",
			TopClients: []event.Tally{{Value: "198.51.100.4", Count: 35}}, TopUsers: []event.Tally{{Value: "admin", Count: 26}, {Value: "root", Count: 9}}},
	}
	if len(got) != len(want) {
		t.Fatalf("summaries %+v, want %d", got, len(want))
	}
	for i, w := range want {
		w.ID, w.Type, w.Outcome, w.Reason = got[i].ID, event.TypeAuthFailed, event.OutcomeFailure, "unknown_token"
		w.Scheme, w.ClientIP, w.Method, w.Host, w.Path, w.Status = "basic", "198.51.100.4", "GET", "example.com", "/rest/api/2/myself", 401
		if !reflect.DeepEqual(got[i], w) {
			t.Errorf("summary %d\n%+v, want\n%+v", i, got[i], w)
		}
	}

	t.Run("zap", func(t *testing.T) {
		lines := logs.FilterMessage("auth_failed").FilterField(zap.String("reason", "unknown_token")).All()
		if len(lines) != 10+2 {
			t.Fatalf("%d unknown_token lines logged, want 10 in full and 2 summaries", len(lines))
		}
		var counts []any
		for _, l := range lines {
			if c, ok := l.ContextMap()["count"]; ok {
				counts = append(counts, c, l.ContextMap()["top_users"])
			}
		}
		wantCounts := []any{
			int64(35), []any{map[string]any{"value": "admin", "count": 26}, map[string]any{"value": "root", "count": 9}},
			int64(3), []any{map[string]any{"value": "admin", "count": 3}},
		}
		if !reflect.DeepEqual(counts, wantCounts) {
			t.Errorf("summary lines: %v, want %v", counts, wantCounts)
		}
	})

	t.Run("admin API and CLI", func(t *testing.T) {
		w := httptest.NewRecorder()
		r := httptest.NewRequest(http.MethodGet, "/api_tokens/audit?type=auth_failed&limit=1", nil)
		if err := new(adminAPI).queryAudit(w, r, app); err != nil {
			t.Fatal(err)
		}
		var page auditPageJSON
		if err := json.Unmarshal(w.Body.Bytes(), &page); err != nil {
			t.Fatal(err)
		}
		if len(page.Events) != 1 || page.Events[0].Count != 3 || !strings.Contains(w.Body.String(), `"top_clients":[{"value":"198.51.100.4","count":3}]`) {
			t.Errorf("GET /api_tokens/audit answered %s", w.Body)
		}
		page.NextCursor = ""
		var out strings.Builder
		if err := printEvents(&out, page); err != nil {
			t.Fatal(err)
		}
		if want := "→ 401 [summary of 3; clients 198.51.100.4 (3); users admin (3)]"; !strings.Contains(out.String(), want) {
			t.Errorf("CLI output lacks %q:\n%s", want, out.String())
		}
	})
}

func TestDetailLimitConfig(t *testing.T) {
	tests := []struct {
		name string
		c    *DetailLimitConfig
		want audit.DetailLimit
		err  string
	}{
		{"default", nil, audit.DetailLimit{Events: 100, Window: 10 * time.Second}, ""},
		{"empty", &DetailLimitConfig{}, audit.DetailLimit{Events: 100, Window: 10 * time.Second}, ""},
		{"events only", &DetailLimitConfig{Events: 20}, audit.DetailLimit{Events: 20, Window: 10 * time.Second}, ""},
		{"both", &DetailLimitConfig{Events: 20, Window: caddy.Duration(time.Minute)}, audit.DetailLimit{Events: 20, Window: time.Minute}, ""},
		{"off", &DetailLimitConfig{Off: true}, audit.DetailLimit{}, ""},
		{"off with events", &DetailLimitConfig{Off: true, Events: 3}, audit.DetailLimit{}, "off takes no events or window"},
		{"negative events", &DetailLimitConfig{Events: -1}, audit.DetailLimit{}, "events -1: must be a positive whole number"},
		{"negative window", &DetailLimitConfig{Window: -caddy.Duration(time.Second)}, audit.DetailLimit{}, "window -1s: must be at least 1s"},
		{"short window", &DetailLimitConfig{Window: caddy.Duration(time.Millisecond)}, audit.DetailLimit{}, "window 1ms: must be at least 1s"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := tt.c.limit()
			if (err == nil) != (tt.err == "") || (err != nil && !strings.Contains(err.Error(), tt.err)) {
				t.Fatalf("limit() error = %v, want %q", err, tt.err)
			}
			if got != tt.want {
				t.Errorf("limit() = %+v, want %+v", got, tt.want)
			}
		})
	}
	t.Run("provision refuses", func(t *testing.T) {
		h, _, _, _ := testHandler(t)
		h.app.logger = zap.NewNop()
		h.app.Audit = &AuditConfig{DetailLimit: &DetailLimitConfig{Events: -3}}
		cctx, cancel := caddy.NewContext(caddy.Context{Context: context.Background()})
		defer cancel()
		if err := h.app.provisionAudit(cctx); err == nil || !strings.Contains(err.Error(), "audit: detail_limit: events -3") {
			t.Errorf("provisionAudit = %v, want the events refused", err)
		}
	})
}

func TestMaxEventsConfig(t *testing.T) {
	tests := []struct {
		name string
		max  int
		want int // the pruner's MaxEvents; 0: the default
		err  string
	}{
		{"default", 0, 0, ""},
		{"set", 5000, 5000, ""},
		{"negative", -1, 0, "audit: max_events -1: must be a positive whole number"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			h, _, _, _ := testHandler(t)
			h.app.logger = zap.NewNop()
			h.app.Audit = &AuditConfig{MaxEvents: tt.max}
			cctx, cancel := caddy.NewContext(caddy.Context{Context: context.Background()})
			defer cancel()
			err := h.app.provisionAudit(cctx)
			if tt.err != "" {
				if err == nil || !strings.Contains(err.Error(), tt.err) {
					t.Fatalf("provisionAudit = %v, want %q", err, tt.err)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if got := h.app.auditState.pruner.MaxEvents; got != tt.want {
				t.Errorf("pruner MaxEvents = %d, want %d", got, tt.want)
			}
		})
	}
}
