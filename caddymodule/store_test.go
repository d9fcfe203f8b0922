package caddymodule

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"net/http"
	"net/http/httptest"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/caddyserver/caddy/v2"
	"github.com/prometheus/client_golang/prometheus"
	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"
	"go.uber.org/zap/zaptest/observer"

	"github.com/apitoken/caddy-apitoken/internal/testkit"
	"github.com/apitoken/caddy-apitoken/policy"
	"github.com/apitoken/caddy-apitoken/storage"
	"github.com/apitoken/caddy-apitoken/token"
	"github.com/apitoken/caddy-apitoken/tokenstore"
)

// logLine is what a test checks of one log entry: its level, message and
// the fields it names.
func logLine(e observer.LoggedEntry) string {
	var b strings.Builder
	b.WriteString(e.Level.String() + " " + e.Message)
	fields := e.ContextMap()
	for _, k := range []string{"database", "failures", "failing_for", "stale_for", "error"} {
		if v, ok := fields[k]; ok {
			fmt.Fprintf(&b, " %s=%v", k, v)
		}
	}
	return b.String()
}

// TestStoreReporterRateLimits: a poller that keeps failing is logged at
// its first failure, then at most once a minute, with the count so far,
// how long it has failed and the error; its recovery is logged with how
// long the view was stale; a failure after the recovery is logged at once.
func TestStoreReporterRateLimits(t *testing.T) {
	clock := testkit.NewClock(time.Date(2026, 11, 22, 12, 0, 0, 0, time.UTC))
	core, logs := observer.New(zapcore.InfoLevel)
	r := &storeReporter{database: "/data/tokens.db", now: clock.Now, logger: func() *zap.Logger { return zap.New(core) }}
	fail := errors.New("reading data version: disk I/O error")
	const failed = "error cannot read the token store: changes made by other processes are not applied database=/data/tokens.db "

	steps := []struct {
		name string
		do   func()
		want []string // the log lines the step adds
	}{
		{"first failure", func() { r.pollFailed(fail) },
			[]string{failed + "failures=1 failing_for=0s error=reading data version: disk I/O error"}},
		{"59 more within the minute", func() {
			for range 59 {
				clock.Advance(time.Second)
				r.pollFailed(fail)
			}
		}, nil},
		{"a minute after the first", func() { clock.Advance(time.Second); r.pollFailed(fail) },
			[]string{failed + "failures=61 failing_for=1m0s error=reading data version: disk I/O error"}},
		{"recovered", func() { clock.Advance(time.Second); r.pollRecovered(62*time.Second, 61) },
			[]string{"info token store readable again: changes made by other processes apply database=/data/tokens.db failures=61 stale_for=1m2s"}},
		{"failing again", func() { clock.Advance(time.Second); r.pollFailed(fail) },
			[]string{failed + "failures=1 failing_for=0s error=reading data version: disk I/O error"}},
		{"writable", r.writable,
			[]string{"info token store writable again database=/data/tokens.db"}},
	}
	for _, st := range steps {
		t.Run(st.name, func(t *testing.T) {
			st.do()
			var got []string
			for _, e := range logs.TakeAll() {
				got = append(got, logLine(e))
			}
			if strings.Join(got, "\n") != strings.Join(st.want, "\n") {
				t.Errorf("logged:\n%s\nwant:\n%s", strings.Join(got, "\n"), strings.Join(st.want, "\n"))
			}
		})
	}
}

// storeMetrics reads the store's poll metrics.
func storeMetrics(t *testing.T, st *tokenstore.Store, now func() time.Time) (errs, staleness float64) {
	t.Helper()
	reg := prometheus.NewRegistry()
	reg.MustRegister(storeCollectors(st, now)...)
	families, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, f := range families {
		m := f.GetMetric()[0]
		switch f.GetName() {
		case "caddy_api_tokens_store_poll_errors_total":
			errs = m.GetCounter().GetValue()
		case "caddy_api_tokens_store_staleness_seconds":
			staleness = m.GetGauge().GetValue()
		default:
			t.Errorf("unexpected metric %s", f.GetName())
		}
	}
	return errs, staleness
}

// waitUntil polls cond until it holds, or fails t after 10s.
func waitUntil(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting until %s", what)
		}
		time.Sleep(2 * time.Millisecond)
	}
}

// TestGateFailsClosedWhenStale breaks the store's poller as an operator's
// SQL can (the tokens table renamed away) under a gate with stale_after
// 30s. The failure is logged and counted; while the view is younger than
// 30s by the app's clock, tokens still pass; past it, every request that
// needs a token is answered 503 saying the token store is unavailable
// (audited as store_stale), and the staleness gauge says how stale. Once a
// poll succeeds again, the gate recovers by itself, logs for how long the
// store was stale, and a token created meanwhile by another process works.
func TestGateFailsClosedWhenStale(t *testing.T) {
	clock := testkit.NewClock(time.Date(2026, 11, 22, 12, 0, 0, 0, time.UTC))
	core, logs := observer.New(zapcore.InfoLevel)
	path := filepath.Join(t.TempDir(), "t.db")
	rep := &storeReporter{database: path, now: clock.Now, logger: func() *zap.Logger { return zap.New(core) }}
	st, err := tokenstore.Open(context.Background(), path, tokenstore.Options{
		Now: clock.Now, PollInterval: 2 * time.Millisecond,
		OnPollError: rep.pollFailed, OnPollRecovered: rep.pollRecovered,
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { st.Close() })
	sink := &captureSink{}
	app := &App{store: st, now: clock.Now, audit: sink, TokenPrefix: token.DefaultPrefix, staleAfter: 30 * time.Second}
	h := &Handler{Realm: "test", Passwords: PasswordsBlock, app: app, logger: zap.NewNop()}
	h.buildChallenges()
	ctx := context.Background()
	_, secret, err := st.Create(ctx, storage.NewToken{Prefix: "caddytok", User: "alice", Name: "ci"}, nil)
	if err != nil {
		t.Fatal(err)
	}
	request := func(t *testing.T, secret string) *httptest.ResponseRecorder {
		t.Helper()
		req := httptest.NewRequest(http.MethodGet, "/rest/api/2/myself", nil)
		req.Header.Set("Authorization", "Bearer "+secret)
		w, _, _ := serve(t, h, req)
		return w
	}
	if w := request(t, secret); w.Code != http.StatusNoContent {
		t.Fatalf("before the fault: %d %s", w.Code, w.Body)
	}

	db, err := sql.Open("sqlite3", "file:"+path+"?_busy_timeout=5000")
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	if _, err := db.Exec(`ALTER TABLE tokens RENAME TO tokens_away`); err != nil {
		t.Fatal(err)
	}
	waitUntil(t, "polls fail", func() bool { return st.PollFailures() >= 2 })

	t.Run("logged and counted", func(t *testing.T) {
		entries := logs.FilterMessage("cannot read the token store: changes made by other processes are not applied").AllUntimed()
		if len(entries) != 1 || entries[0].Level != zapcore.ErrorLevel ||
			!strings.Contains(logLine(entries[0]), "database="+path+" failures=1 failing_for=0s error=polling token store "+path+": no such table: tokens") {
			t.Errorf("logs %v, want one error naming the store and the missing table", entries)
		}
		if errs, _ := storeMetrics(t, st, clock.Now); errs < 2 {
			t.Errorf("poll error counter %v, want at least 2", errs)
		}
	})
	t.Run("within stale_after", func(t *testing.T) {
		clock.Advance(30 * time.Second)
		if w := request(t, secret); w.Code != http.StatusNoContent {
			t.Errorf("30s stale: %d %s, want the token to pass", w.Code, w.Body)
		}
		if _, stale := storeMetrics(t, st, clock.Now); stale != 30 {
			t.Errorf("staleness gauge %v, want 30", stale)
		}
	})
	t.Run("past stale_after", func(t *testing.T) {
		clock.Advance(time.Second)
		for _, s := range []string{secret, "caddytok_notatoken"} {
			w := request(t, s)
			if w.Code != http.StatusServiceUnavailable || w.Body.String() != msgStoreStale+"\n" {
				t.Errorf("31s stale: %d %q, want 503 %q", w.Code, w.Body, msgStoreStale)
			}
			if e := sink.last(t); e.Reason != string(policy.ReasonStoreStale) || e.Status != http.StatusServiceUnavailable {
				t.Errorf("audited %q %d, want store_stale 503", e.Reason, e.Status)
			}
		}
		if _, stale := storeMetrics(t, st, clock.Now); stale != 31 {
			t.Errorf("staleness gauge %v, want 31", stale)
		}
	})

	if _, err := db.Exec(`ALTER TABLE tokens_away RENAME TO tokens`); err != nil {
		t.Fatal(err)
	}
	other, err := tokenstore.Open(ctx, path, tokenstore.Options{PollInterval: -1})
	if err != nil {
		t.Fatal(err)
	}
	defer other.Close()
	_, otherSecret, err := other.Create(ctx, storage.NewToken{Prefix: "caddytok", User: "bob", Name: "elsewhere"}, nil)
	if err != nil {
		t.Fatal(err)
	}
	waitUntil(t, "the poller recovers and reads the other process's token", func() bool {
		_, ok := st.Lookup(otherSecret)
		return ok && st.Staleness(clock.Now()) == 0
	})

	t.Run("recovered", func(t *testing.T) {
		for _, s := range []string{secret, otherSecret} {
			if w := request(t, s); w.Code != http.StatusNoContent {
				t.Errorf("after the recovery: %d %s", w.Code, w.Body)
			}
		}
		entries := logs.FilterMessage("token store readable again: changes made by other processes apply").AllUntimed()
		if len(entries) != 1 || !strings.Contains(logLine(entries[0]), "stale_for=31s") {
			t.Errorf("logs %v, want one saying the store was stale for 31s", entries)
		}
		if _, stale := storeMetrics(t, st, clock.Now); stale != 0 {
			t.Errorf("staleness gauge %v, want 0", stale)
		}
	})
}

// TestAppValidateStaleAfter: stale_after must be well above the store's
// one-second poll, or off.
func TestAppValidateStaleAfter(t *testing.T) {
	tests := []struct {
		name    string
		stale   time.Duration
		wantErr string
	}{
		{"default", 0, ""},
		{"off", -1, ""},
		{"the least", MinStaleAfter, ""},
		{"too short", 2 * time.Second, "stale_after 2s: must be at least 5s"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			a := &App{TokenPrefix: token.DefaultPrefix, StaleAfter: caddy.Duration(tt.stale)}
			err := a.Validate()
			if (err == nil) != (tt.wantErr == "") || (err != nil && !strings.Contains(err.Error(), tt.wantErr)) {
				t.Errorf("Validate: %v, want %q", err, tt.wantErr)
			}
		})
	}
}
