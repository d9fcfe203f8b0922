package caddymodule

import (
	"bytes"
	"context"
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"net/url"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/caddyserver/caddy/v2"
	"github.com/caddyserver/caddy/v2/caddyconfig/caddyfile"
	"go.uber.org/zap"

	"github.com/apitoken/caddy-apitoken/audit"
	"github.com/apitoken/caddy-apitoken/event"
	"github.com/apitoken/caddy-apitoken/internal/testkit"
	"github.com/apitoken/caddy-apitoken/policy"
	"github.com/apitoken/caddy-apitoken/storage"
	"github.com/apitoken/caddy-apitoken/token"
	"github.com/apitoken/caddy-apitoken/tokenstore"
)

// adminFixture is an api_tokens App over a real store, built without a
// Caddy server but wired as Provision wires it where the admin API can
// tell: the audit recorder selects admin events and has a queue, so the
// store writes each admin event in the transaction of its change.
type adminFixture struct {
	app   *App
	store *tokenstore.Store
	clock *fakeClock
	api   *adminAPI
}

func newAdminFixture(tb testing.TB, dir string) *adminFixture {
	tb.Helper()
	clock := testkit.NewClock(time.Date(2026, 11, 22, 12, 0, 0, 0, time.UTC))
	st, err := tokenstore.Open(context.Background(), filepath.Join(dir, "t.db"),
		tokenstore.Options{Now: clock.Now, PollInterval: -1})
	if err != nil {
		tb.Fatal(err)
	}
	sel, err := audit.ParseSelection(nil, 0)
	if err != nil {
		tb.Fatal(err)
	}
	q := audit.NewQueue(audit.QueueConfig{Writer: st, Logger: zap.NewNop(), Now: clock.Now})
	rec := audit.NewRecorder(audit.RecorderConfig{Selection: sel, Logger: zap.NewNop(), Queue: q})
	app := &App{
		DefaultValidity: caddy.Duration(DefaultValidity),
		MaxValidity:     caddy.Duration(DefaultMaxValid),
		TokenPrefix:     token.DefaultPrefix,
		store:           st,
		audit:           rec,
		auditState:      &auditState{recorder: rec, queue: q, usage: audit.NewUsageTracker(0), warning: DefaultExpiryWarning},
		logger:          zap.NewNop(),
		now:             clock.Now,
	}
	if !rec.StoresAdmin() {
		tb.Fatal("the fixture's recorder does not store admin events")
	}
	return &adminFixture{app: app, store: st, clock: clock, api: &adminAPI{}}
}

// adminResult is an admin call's answer as Caddy's admin server would send
// it.
type adminResult struct {
	status int
	body   []byte
	err    string // the "error" member of an error answer
}

// do calls one admin handler function with body and answers as Caddy's
// admin server does (adminHandler.handleError): a returned caddy.APIError
// becomes its status, anything else a 500, and the body is
// {"error": <message>}.
func (f *adminFixture) do(method, target string, body []byte, call func(http.ResponseWriter, *http.Request) error) adminResult {
	req := httptest.NewRequest(method, target, bytes.NewReader(body))
	w := httptest.NewRecorder()
	err := call(w, req)
	if err == nil {
		return adminResult{status: w.Code, body: w.Body.Bytes()}
	}
	apiErr, ok := err.(caddy.APIError) // as Caddy: a type assertion, not errors.As
	if !ok {
		apiErr = caddy.APIError{HTTPStatus: http.StatusInternalServerError, Err: err}
	}
	if apiErr.HTTPStatus == 0 {
		apiErr.HTTPStatus = http.StatusInternalServerError
	}
	if apiErr.Message == "" && apiErr.Err != nil {
		apiErr.Message = apiErr.Err.Error()
	}
	out, _ := json.Marshal(apiErr)
	return adminResult{status: apiErr.HTTPStatus, body: out, err: apiErr.Message}
}

func (f *adminFixture) create(body []byte) adminResult {
	return f.do(http.MethodPost, "/api_tokens/tokens", body, func(w http.ResponseWriter, r *http.Request) error {
		return f.api.create(w, r, f.app)
	})
}

func (f *adminFixture) update(id string, body []byte) adminResult {
	return f.do(http.MethodPatch, "/api_tokens/tokens/"+id, body, func(w http.ResponseWriter, r *http.Request) error {
		return f.api.update(w, r, f.app, id)
	})
}

// storeState is everything an admin call could write: the tokens as
// listed, with their rules and usage, and the newest audit event.
type storeState struct {
	tokens    []storage.Token
	lastEvent int64
}

func (f *adminFixture) state(tb testing.TB) storeState {
	tb.Helper()
	ctx := context.Background()
	toks, err := f.store.List(ctx, storage.Filter{})
	if err != nil {
		tb.Fatal(err)
	}
	page, err := f.store.QueryAudit(ctx, event.Query{Limit: 1})
	if err != nil {
		tb.Fatal(err)
	}
	s := storeState{tokens: toks}
	if len(page.Events) > 0 {
		s.lastEvent = page.Events[0].ID
	}
	return s
}

// checkAnswer checks what every admin answer must be, whatever the input:
// the wanted success status or a 4xx, never a 5xx; an error answer names
// the problem; a refused call wrote nothing; a success answers a token and
// writes exactly one audit event.
func checkAnswer(t *testing.T, body []byte, res adminResult, ok int, before, after storeState) tokenJSON {
	t.Helper()
	switch {
	case res.status == ok:
		if !json.Valid(body) {
			t.Fatalf("body %q is not JSON, yet the call answered %d", body, res.status)
		}
		var out tokenJSON
		if err := json.Unmarshal(res.body, &out); err != nil || out.ID == "" {
			t.Fatalf("success answer %q is not a token: %v", res.body, err)
		}
		if after.lastEvent <= before.lastEvent {
			t.Fatalf("body %q: the change answered %d but stored no audit event", body, res.status)
		}
		return out
	case res.status >= 400 && res.status < 500:
		if strings.TrimSpace(res.err) == "" {
			t.Fatalf("body %q: %d with an empty error message", body, res.status)
		}
		if !reflect.DeepEqual(before, after) {
			t.Fatalf("body %q: refused with %d (%s), but the store changed:\nbefore %+v\nafter  %+v", body, res.status, res.err, before, after)
		}
	default:
		t.Fatalf("body %q: status %d (%s), want %d or a 4xx", body, res.status, res.err, ok)
	}
	return tokenJSON{}
}

// fuzzFixture hands each fuzz iteration a store, replacing it with a fresh
// one once it holds many tokens, so that listing stays fast.
type fuzzFixture struct {
	dir string
	n   int
	cur *adminFixture
}

func (ff *fuzzFixture) get(tb testing.TB, setup func(testing.TB, *adminFixture)) *adminFixture {
	tb.Helper()
	if ff.cur != nil && len(ff.cur.state(tb).tokens) < 200 {
		return ff.cur
	}
	if ff.cur != nil {
		ff.cur.store.Close()
	}
	ff.n++
	dir, err := os.MkdirTemp(ff.dir, "store")
	if err != nil {
		tb.Fatal(err)
	}
	ff.cur = newAdminFixture(tb, dir)
	if setup != nil {
		setup(tb, ff.cur)
	}
	return ff.cur
}

func (ff *fuzzFixture) close() {
	if ff.cur != nil {
		ff.cur.store.Close()
	}
}

// adminBodySeeds are bodies both fuzzers start from: good ones, and the
// shapes of abuse that abuse_test.go pins down.
var adminBodySeeds = []string{
	`{"user":"alice","name":"ci"}`, // minimal create
	`{"user":"alice","name":"ci","description":"nightly\nbuild","expires_in":"30d"}`,
	`{"user":"bob","name":"deploy","expires_at":"2027-01-31T00:00:00Z","allowed_ips":["10.0.0.0/8","private_ranges"],` +
		`"read_only":true,"methods":["get"],"paths":["/rest/*"],"hosts":["jira.example.com"],"rate_limit":"600/1m"}`,
	`{"name":"renamed"}`,     // a PATCH
	`{"expires_in":"never"}`, // refused: max_validity applies
	`{"expires_in":"1d","expires_at":"2027-01-31T00:00:00Z"}`, // both
	`{"user":"a","user":"b","name":"x"}`,                      // duplicate key
	`{"user":"alice","name":"ci","extra":1}`,                  // unknown field
	`{"user":1,"name":"ci"}`,                                  // wrong type
	`{"user":null,"name":null}`,                               // null
	`[{"user":"alice","name":"ci"}]`,                          // array
	`{"user":"alice","name":"ci"} {}`,                         // trailing data
	"\xef\xbb\xbf{\"user\":\"alice\",\"name\":\"ci\"}",        // BOM
	"{\"user\":\"al\xffice\",\"name\":\"ci\"}",                // invalid UTF-8
	`{"user":"al\u0000ice","name":"ci"}`,                      // escaped NUL
	`{"user":"alice","name":"ci","description":"\u001b[31mred"}`,
	`{"user":"alice","name":"ci","allowed_ips":["10.0.0.1","10.0.0.2","10.0.0.3"]}`,
	`{"user":"alice","name":"ci","rate_limit":"1/0s"}`,
	`{"user":"alice","name":"ci","paths":["/a/**/b","*"]}`,
	`{"user":"alice","name":"ci","expires_in":"-1h"}`,
	`{"user":"alice","name":"ci","expires_in":"9999999999d"}`,
	`{"user":"alice","name":"ci","read_only":"true"}`,
	strings.Repeat("[", 100) + strings.Repeat("]", 100), // nesting
	`{"user":"alice","name":"ci","methods":` + strings.Repeat(`["GET",`, 20) + `"x"` + strings.Repeat("]", 20) + `}`,
	``,                            // empty
	`{}`,                          // nothing
	`{"user":"alice","name":"ci"`, // cut short
}

// FuzzAdminCreateBody feeds POST /api_tokens/tokens bodies to the admin
// API's create call over a real store. Properties: it never panics; it
// answers 201 or a 4xx, never a 5xx; a 201 only ever answers a body that
// is valid JSON, with a secret that Lookup finds, one more token and one
// more audit event; a 4xx names the problem and leaves the store exactly
// as it was.
func FuzzAdminCreateBody(f *testing.F) {
	for _, s := range adminBodySeeds {
		f.Add([]byte(s))
	}
	ff := &fuzzFixture{dir: f.TempDir()}
	f.Cleanup(ff.close)
	f.Fuzz(func(t *testing.T, body []byte) {
		fx := ff.get(t, nil)
		before := fx.state(t)
		res := fx.create(body)
		after := fx.state(t)
		out := checkAnswer(t, body, res, http.StatusCreated, before, after)
		if res.status != http.StatusCreated {
			return
		}
		if len(after.tokens) != len(before.tokens)+1 {
			t.Fatalf("body %q: 201 but %d tokens before, %d after", body, len(before.tokens), len(after.tokens))
		}
		e, ok := fx.store.Lookup(out.Token)
		if !ok || e.ID != out.ID || e.User != out.User || e.Name != out.Name {
			t.Fatalf("body %q: the answered secret looks up as %+v, %v; answer %+v", body, e, ok, out)
		}
		if stored, err := fx.store.Get(context.Background(), out.ID); err != nil || toJSON(stored, fx.clock.Now()).User != out.User {
			t.Fatalf("body %q: stored %+v, %v; answered %+v", body, stored, err, out)
		}
	})
}

// FuzzAdminUpdateBody feeds PATCH /api_tokens/tokens/{id} bodies to the
// admin API's update call, for a token that exists. Properties as for
// FuzzAdminCreateBody, with 200 for success and the number of tokens
// unchanged either way.
func FuzzAdminUpdateBody(f *testing.F) {
	for _, s := range adminBodySeeds {
		f.Add([]byte(s))
	}
	ff := &fuzzFixture{dir: f.TempDir()}
	f.Cleanup(ff.close)
	var target string
	setup := func(tb testing.TB, fx *adminFixture) {
		tb.Helper()
		tok, _, err := fx.store.Create(context.Background(), storage.NewToken{
			User: "alice", Name: "target", ExpiresAt: fx.clock.Now().Add(24 * time.Hour),
		}, nil)
		if err != nil {
			tb.Fatal(err)
		}
		target = tok.ID
	}
	f.Fuzz(func(t *testing.T, body []byte) {
		fx := ff.get(t, setup)
		before := fx.state(t)
		res := fx.update(target, body)
		after := fx.state(t)
		out := checkAnswer(t, body, res, http.StatusOK, before, after)
		if len(after.tokens) != len(before.tokens) {
			t.Fatalf("body %q: a PATCH changed the number of tokens from %d to %d", body, len(before.tokens), len(after.tokens))
		}
		if res.status == http.StatusOK && out.ID != target {
			t.Fatalf("body %q: PATCH of %s answered token %s", body, target, out.ID)
		}
	})
}

// FuzzAdminQuery feeds raw query strings to the admin API's two calls
// that take filters, GET /api_tokens/tokens and GET /api_tokens/audit,
// over a store with tokens and audit events. Properties: it never panics;
// it answers 200 with JSON or 400 with a message, never anything else; a
// query string that does not parse is refused, never read in part; a read
// writes nothing.
func FuzzAdminQuery(f *testing.F) {
	for _, s := range []string{
		"",
		"user=alice",
		"user=ALICE&state=active",
		"state=revoked",
		"state=zombie",             // not a state
		"owner=alice",              // not a filter
		"user=%zz",                 // bad escape
		"user=alice;state=revoked", // semicolon
		"user=a&user=b",            // twice
		"type=auth_failed,token_created&type=token_revoked",
		"type=nosuch",
		"outcome=failure&limit=1",
		"limit=0", "limit=-1", "limit=99999999999999999999", "limit=1e3",
		"since=2026-11-01T00:00:00Z&until=2026-12-01T00:00:00+01:00",
		"since=yesterday",
		"cursor=", "cursor=zz", "cursor=MQ", "cursor=%00",
		"client_ip=10.0.0.1&token=aaaaaaaaaaaa",
		"user=al%00ice", "user=%C3%28", "=", "&&&", "user", "a=1=2",
	} {
		f.Add(s)
	}
	ff := &fuzzFixture{dir: f.TempDir()}
	f.Cleanup(ff.close)
	setup := func(tb testing.TB, fx *adminFixture) {
		tb.Helper()
		for _, body := range []string{`{"user":"alice","name":"a"}`, `{"user":"bob","name":"b"}`} {
			if res := fx.create([]byte(body)); res.status != http.StatusCreated {
				tb.Fatalf("create %s: %d %s", body, res.status, res.err)
			}
		}
	}
	calls := []struct {
		path string
		call func(*adminAPI, http.ResponseWriter, *http.Request, *App) error
	}{
		{"/api_tokens/tokens", (*adminAPI).list},
		{"/api_tokens/audit", (*adminAPI).queryAudit},
	}
	f.Fuzz(func(t *testing.T, raw string) {
		fx := ff.get(t, setup)
		_, parseErr := url.ParseQuery(raw)
		for _, c := range calls {
			before := fx.state(t)
			res := fx.do(http.MethodGet, c.path, nil, func(w http.ResponseWriter, r *http.Request) error {
				r.URL.RawQuery = raw // as sent: httptest.NewRequest would parse it
				return c.call(fx.api, w, r, fx.app)
			})
			after := fx.state(t)
			if !reflect.DeepEqual(before, after) {
				t.Fatalf("GET %s?%s changed the store", c.path, raw)
			}
			switch res.status {
			case http.StatusOK:
				if parseErr != nil {
					t.Fatalf("GET %s?%q answered 200, but the query does not parse: %v", c.path, raw, parseErr)
				}
				if !json.Valid(res.body) {
					t.Fatalf("GET %s?%q answered 200 with %q", c.path, raw, res.body)
				}
			case http.StatusBadRequest:
				if strings.TrimSpace(res.err) == "" {
					t.Fatalf("GET %s?%q: 400 with an empty message", c.path, raw)
				}
			default:
				t.Fatalf("GET %s?%q: %d %s, want 200 or 400", c.path, raw, res.status, res.err)
			}
		}
	})
}

// caddyfileHandlerSeeds are bodies of the api_token block: each subdirective in
// its good forms, and the bad ones the adapt tests cover.
var caddyfileHandlerSeeds = []string{
	"",
	"realm demo API",
	"realm \"demo API\"",
	"passwords block",
	"passwords pass_from 10.0.0.0/8 private_ranges",
	"passwords pass_from",
	"header X-Api-Token\nquery api_token\nstrip_credentials\nuser_header X-Remote-User",
	"protect /rest/* /api/*",
	"allow_ips 10.0.0.0/8 2001:db8::/32",
	"allow_ips 10.0.0.0/33",
	"block_paths off",
	"block_paths {\n allow encoded_slash\n deny /secure/admin* *.vm\n exempt /public/*\n}",
	"block_paths {\n}",
	"block_paths {\n allow nosuchrule\n}",
	"throttle off",
	"throttle 10 1m 5m",
	"throttle 0 1m 5m",
	"rate_limit 600/1m",
	"rate_limit 1/0s",
	"read_posts default /rest/custom/query *.query",
	"read_posts off",
	"read_posts off /x",
	"read_posts rest/x",
	"report_only",
	"realm a\nrealm b",
	"header authorization", // parses; Validate refuses
	"realm \"a\\\"b\"",     // a quote in the realm: Validate refuses
	"nosuch",
	"{\n}",
	"}\nextra",
}

// FuzzCaddyfileHandler feeds `api_token { <body> }` to the handler's
// UnmarshalCaddyfile. Properties: it never panics; a config it accepts
// survives a JSON round trip unchanged (strict: no unknown fields), the
// parsers Provision runs accept it too (what adapts must load), and
// Validate, after Provision's defaults, does not panic.
func FuzzCaddyfileHandler(f *testing.F) {
	for _, s := range caddyfileHandlerSeeds {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, body string) {
		d, ok := dispenser("api_token {\n" + body + "\n}")
		if !ok {
			return
		}
		var h Handler
		if err := h.UnmarshalCaddyfile(d); err != nil {
			if err.Error() == "" {
				t.Fatalf("body %q: an empty error", body)
			}
			return
		}
		var back Handler
		roundTrip(t, body, &h, &back)
		if _, err := policy.ParsePrefixes(h.AllowIPs); err != nil {
			t.Fatalf("body %q: adapts, but Provision would fail: allow_ips: %v", body, err)
		}
		if _, err := policy.ParsePrefixes(h.PasswordsFrom); err != nil {
			t.Fatalf("body %q: adapts, but Provision would fail: pass_from: %v", body, err)
		}
		if _, err := policy.CompilePathSet("protect", h.Protect); err != nil {
			t.Fatalf("body %q: adapts, but Provision would fail: %v", body, err)
		}
		if h.BlockPaths != nil && !h.BlockPaths.Off {
			pc := policy.PathConfig{Deny: h.BlockPaths.Deny, Exempt: h.BlockPaths.Exempt}
			for _, r := range h.BlockPaths.Allow {
				pc.Disable = append(pc.Disable, policy.PathRule(r))
			}
			if _, err := policy.CompilePathRules(pc); err != nil {
				t.Fatalf("body %q: adapts, but Provision would fail: block_paths: %v", body, err)
			}
		}
		if _, err := policy.CompileReads(h.ReadPosts); err != nil {
			t.Fatalf("body %q: adapts, but Provision would fail: %v", body, err)
		}
		if h.RateLimit != "" {
			if _, err := policy.ParseRate(h.RateLimit); err != nil {
				t.Fatalf("body %q: adapts, but Provision would fail: %v", body, err)
			}
		}
		if h.Realm == "" {
			h.Realm = "restricted"
		}
		if h.Passwords == "" {
			h.Passwords = PasswordsBlock
		}
		_ = h.Validate() // may refuse (a header named Authorization); must not panic
	})
}

var caddyfileAppSeeds = []string{
	"",
	"database /var/lib/caddy/tokens.db",
	"default_validity 90d\nmax_validity 365d",
	"max_validity unlimited",
	"default_validity 0s",
	"default_validity -1h",
	"token_prefix acme",
	"holders alice group:staff",
	"holders group:",
	"group staff {\n default_validity 7d\n max_validity 30d\n}",
	"group staff {\n}",
	"group staff {\n max_validity 1d\n}\ngroup staff {\n max_validity 2d\n}",
	"group a b",
	"audit {\n events admin failure denied success\n sample_success 0.25\n retain 30d\n expiry_warning 3d\n}",
	"audit {\n sample_success 1e-320\n}",
	"audit {\n sample_success NaN\n}",
	"audit {\n events bogus\n}",
	"audit x",
	"audit {\n detail_limit 50 30s\n}",
	"audit {\n detail_limit off\n}",
	"audit {\n detail_limit 1 999ms\n}",
	"audit {\n detail_limit 0 10s\n}",
	"database a\ndatabase b",
	"nosuch 1",
}

// FuzzCaddyfileApp feeds `api_tokens { <body> }` to the app's
// UnmarshalCaddyfile, with the same properties as FuzzCaddyfileHandler:
// no panic; what it accepts round-trips through strict JSON and passes the
// checks Provision makes before opening the store; Validate, after
// Provision's defaults, does not panic.
func FuzzCaddyfileApp(f *testing.F) {
	for _, s := range caddyfileAppSeeds {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, body string) {
		d, ok := dispenser("api_tokens {\n" + body + "\n}")
		if !ok {
			return
		}
		var a App
		if err := a.UnmarshalCaddyfile(d); err != nil {
			if err.Error() == "" {
				t.Fatalf("body %q: an empty error", body)
			}
			return
		}
		var back App
		roundTrip(t, body, &a, &back)
		if _, err := policy.ParseHolders(a.Holders); err != nil {
			t.Fatalf("body %q: adapts, but Provision would fail: %v", body, err)
		}
		for name, g := range a.Groups {
			if err := policy.ValidGroupName(name); err != nil || g == nil {
				t.Fatalf("body %q: adapts, but Provision would fail on group %q (%v)", body, name, err)
			}
		}
		if a.Audit != nil {
			if _, err := audit.ParseSelection(a.Audit.Events, a.Audit.SampleSuccess); err != nil {
				t.Fatalf("body %q: adapts, but Provision would fail: %v", body, err)
			}
			if _, err := a.Audit.DetailLimit.limit(); err != nil {
				t.Fatalf("body %q: adapts, but Provision would fail: %v", body, err)
			}
		}
		if a.DefaultValidity == 0 {
			a.DefaultValidity = caddy.Duration(DefaultValidity)
		}
		if a.MaxValidity == 0 {
			a.MaxValidity = caddy.Duration(DefaultMaxValid)
		}
		if a.TokenPrefix == "" {
			a.TokenPrefix = token.DefaultPrefix
		}
		_ = a.Validate() // may refuse (default above max); must not panic
	})
}

// dispenser lexes a Caddyfile as the adapter does, or reports false for
// input the lexer refuses (caddyfile.NewTestDispenser would exit the
// process).
func dispenser(input string) (*caddyfile.Dispenser, bool) {
	tokens, err := caddyfile.Tokenize([]byte(input), "Caddyfile")
	if err != nil {
		return nil, false
	}
	return caddyfile.NewDispenser(tokens), true
}

// roundTrip marshals v, decodes it strictly into back, and fails t unless
// back equals v.
func roundTrip[T any](t *testing.T, body string, v, back *T) {
	t.Helper()
	raw, err := json.Marshal(v)
	if err != nil {
		t.Fatalf("body %q: adapted config does not marshal: %v", body, err)
	}
	dec := json.NewDecoder(bytes.NewReader(raw))
	dec.DisallowUnknownFields()
	if err := dec.Decode(back); err != nil {
		t.Fatalf("body %q: adapted JSON %s does not decode back: %v", body, raw, err)
	}
	if !reflect.DeepEqual(v, back) {
		t.Fatalf("body %q: JSON %s decodes to\n%+v, want\n%+v", body, raw, *back, *v)
	}
}
