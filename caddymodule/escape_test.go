package caddymodule

import (
	"encoding/json"
	"errors"
	"net/http"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
	"time"
	"unicode"
	"unicode/utf8"

	"github.com/spf13/cobra"

	"github.com/apitoken/caddy-apitoken/event"
	"github.com/apitoken/caddy-apitoken/token"
)

func TestEscapeText(t *testing.T) {
	tests := []struct {
		name, in, want string
	}{
		{"plain", "/rest/api/2/myself", "/rest/api/2/myself"},
		{"empty", "", ""},
		{"printable non-ASCII", "Zoë 日本", "Zoë 日本"},
		{"an OSC title sequence", "/\x1b]0;x\x07", `/\x1b]0;x\a`},
		{"a line break forging a row", "/a\n2026-01-01 00:00:00  auth_succeeded", `/a\n2026-01-01 00:00:00  auth_succeeded`},
		{"carriage return and tab", "a\rb\tc", `a\rb\tc`},
		{"DEL and a C1 control", "a\x7fb\u0085c", `a\x7fb\u0085c`},
		{"a bidi override", "alice\u202eecila", `alice\u202eecila`},
		{"bidi isolates", "\u2066x\u2069", `\u2066x\u2069`},
		{"zero width space and BOM", "a\u200bb\ufeff", `a\u200bb\ufeff`},
		{"soft hyphen", "a\u00adb", `a\u00adb`},
		{"line separator", "a\u2028b", `a\u2028b`},
		{"invalid UTF-8", "a\xffb", `a\xffb`},
		{"a backslash", `a\nb`, `a\\nb`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := escapeText(tt.in); got != tt.want {
				t.Errorf("escapeText(%q) = %q, want %q", tt.in, got, tt.want)
			}
		})
	}
}

// hostile is attacker text with everything that could act on a terminal
// or forge output: an OSC title sequence, a CSI clear, a bidi override, a
// zero width space, a line break with a fake row, a tab and a bad byte.
const hostile = "\x1b]0;pwned\x07\x1b[2J\u202etxt.exe\u200b\n2026-01-01 00:00:00\tauth_succeeded\xff"

// hostileEscaped is hostile as escapeText shows it.
const hostileEscaped = `\x1b]0;pwned\a\x1b[2J\u202etxt.exe\u200b\n2026-01-01 00:00:00\tauth_succeeded\xff`

// checkTerminalSafe fails unless out has only printable runes, spaces and
// line breaks, exactly lines lines, and hostile escaped.
func checkTerminalSafe(t *testing.T, what, out string, lines int) {
	t.Helper()
	if !utf8.ValidString(out) {
		t.Errorf("%s: not UTF-8:\n%q", what, out)
	}
	for _, r := range out {
		if r != '\n' && (!unicode.IsPrint(r) || unicode.Is(unicode.Cf, r)) {
			t.Errorf("%s prints %U:\n%q", what, r, out)
			break
		}
	}
	if n := strings.Count(out, "\n"); n != lines {
		t.Errorf("%s: %d lines, want %d:\n%s", what, n, lines, out)
	}
	if !strings.Contains(out, hostileEscaped) {
		t.Errorf("%s does not show the hostile text escaped:\n%s", what, out)
	}
}

// TestCLIHumanOutputEscaped prints hostile text in every field of the
// human output of the CLI: each line stays one line, nothing acts on the
// terminal, and the text is still there to read, escaped.
func TestCLIHumanOutputEscaped(t *testing.T) {
	now := time.Date(2026, 11, 22, 12, 0, 0, 0, time.UTC)
	tok := tokenJSON{ID: hostile, User: hostile, Name: hostile, Description: hostile, Hint: hostile, State: hostile,
		CreatedAt: now, LastUsedAt: &now, LastUsedIP: hostile, UseCount: 1, Token: hostile,
		AllowedIPs: []string{hostile}, Methods: []string{hostile}, Paths: []string{hostile}, Hosts: []string{hostile},
		RateLimit: hostile, RecentIPs: []event.IPSeen{{IP: hostile, LastSeen: now}}}
	ev := eventJSON{Time: now, Type: hostile, Outcome: hostile, Reason: hostile, User: hostile, ClaimedUser: hostile,
		TokenID: hostile, ClientIP: hostile, Method: hostile, Host: hostile, Path: hostile, Status: 400}
	summary := eventJSON{Time: now, Type: string(event.TypeAuthFailed), Outcome: "failure", Reason: "unknown_token", Count: 7,
		Path: hostile, TopClients: []event.Tally{{Value: hostile, Count: 4}}, TopUsers: []event.Tally{{Value: hostile, Count: 7}}}

	var list strings.Builder
	if err := printTable(&list, []tokenJSON{tok}); err != nil {
		t.Fatal(err)
	}
	checkTerminalSafe(t, "list", list.String(), 2)

	var show strings.Builder
	printDetails(&show, tok)
	checkTerminalSafe(t, "show", show.String(), 16)

	var events strings.Builder
	if err := printEvents(&events, auditPageJSON{Events: []eventJSON{ev, summary}, NextCursor: hostile}); err != nil {
		t.Fatal(err)
	}
	checkTerminalSafe(t, "audit", events.String(), 5)
	if n := strings.Count(events.String(), hostileEscaped); n != 14 {
		t.Errorf("audit shows the hostile text %d times, want 14 (every field):\n%s", n, events.String())
	}

	cmd := &cobra.Command{}
	var secret strings.Builder
	cmd.SetOut(&secret)
	if err := printSecret(cmd, nil, tok, "Created"); err != nil {
		t.Fatal(err)
	}
	checkTerminalSafe(t, "create", secret.String(), 5)

	t.Run("an admin API error", func(t *testing.T) {
		body, err := json.Marshal(map[string]string{"error": "user " + hostile})
		if err != nil {
			t.Fatal(err)
		}
		msg := adminError(errors.New("caddy responded with error: HTTP 400: " + string(body))).Error()
		if strings.ContainsAny(msg, "\x1b\x07\n\u202e") || !strings.Contains(msg, `user \x1b]0;pwned\a`) {
			t.Errorf("error message %q", msg)
		}
	})
}

// TestCLIAuditEscapesRequestText is the terminal attack end to end: an
// anonymous request whose path carries an OSC sequence or a line break
// with a fake row, refused by the gate, then `caddy api-token audit`.
func TestCLIAuditEscapesRequestText(t *testing.T) {
	db := filepath.Join(t.TempDir(), "tokens.db")
	tester := startGate(t, gateConfig(db, "", ""))
	paths := map[string]string{
		"/rest/%1b]0;x%07": "/rest/\x1b]0;x\x07",
		"/rest/a%0a2026-01-01%2000:00:00%20auth_succeeded": "/rest/a\n2026-01-01 00:00:00 auth_succeeded",
		"/rest/%e2%80%aeexe.txt":                           "/rest/\u202eexe.txt",
		"/rest/%1b%5b2J%1b%5bH":                            "/rest/\x1b[2J\x1b[H",
	}
	for p := range paths {
		do(t, tester, http.MethodGet, siteURL+p, "")
	}
	var out string
	deadline := time.Now().Add(10 * time.Second)
	for {
		var err error
		if out, err = runCLI(t, "audit", "--json"); err != nil {
			t.Fatalf("audit --json: %v\n%s", err, out)
		}
		var page auditPageJSON
		if err := json.Unmarshal([]byte(out), &page); err != nil {
			t.Fatalf("audit --json: %v\n%s", err, out)
		}
		stored := map[string]bool{}
		for _, e := range page.Events {
			stored[e.Path] = true
		}
		missing := 0
		for _, want := range paths {
			if !stored[want] {
				missing++ // --json is exact: the path as the gate saw it
			}
		}
		if missing == 0 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("%d paths not stored exactly:\n%s", missing, out)
		}
		time.Sleep(100 * time.Millisecond)
	}
	human, err := runCLI(t, "audit")
	if err != nil {
		t.Fatalf("audit: %v\n%s", err, human)
	}
	for _, r := range human {
		if r != '\n' && (!unicode.IsPrint(r) || unicode.Is(unicode.Cf, r)) {
			t.Fatalf("audit prints %U:\n%q", r, human)
		}
	}
	if n := strings.Count(human, "\n"); n != 1+len(paths) {
		t.Errorf("audit printed %d lines for %d events:\n%s", n, len(paths), human)
	}
	for _, esc := range []string{`/rest/\x1b]0;x\a`, `/rest/a\n2026-01-01 00:00:00 auth_succeeded`, `/rest/\u202eexe.txt`, `/rest/\x1b[2J\x1b[H`} {
		if !strings.Contains(human, esc) {
			t.Errorf("audit does not show %s:\n%s", esc, human)
		}
	}
}

// TestAdminRefusesControlAndFormatInNames checks that the admin API
// refuses user, group and token names with control or format characters
// (bidi overrides, zero width spaces), or that look like a token, with a
// 400 that names the field and never echoes a token, and writes nothing.
func TestAdminRefusesControlAndFormatInNames(t *testing.T) {
	f := newAdminFixture(t, t.TempDir())
	res := f.create([]byte(`{"user":"alice","name":"ci"}`))
	if res.status != http.StatusCreated {
		t.Fatalf("create: %d %s", res.status, res.body)
	}
	var tok tokenJSON
	if err := json.Unmarshal(res.body, &tok); err != nil {
		t.Fatal(err)
	}
	_, secret, err := token.Generate(token.DefaultPrefix)
	if err != nil {
		t.Fatal(err)
	}
	addMember := func(group, user string) adminResult {
		return f.do(http.MethodPut, "/api_tokens/groups/x/members/y", nil, func(w http.ResponseWriter, r *http.Request) error {
			return f.api.addMember(w, r, f.app, group, user)
		})
	}
	jsonBody := func(fields map[string]string) []byte {
		b, err := json.Marshal(fields)
		if err != nil {
			t.Fatal(err)
		}
		return b
	}
	tests := []struct {
		name  string
		call  func() adminResult
		field string
	}{
		{"a control character in a user", func() adminResult {
			return f.create(jsonBody(map[string]string{"user": "bob\x1b[2J", "name": "ci"}))
		}, "user"},
		{"a bidi override in a user", func() adminResult {
			return f.create(jsonBody(map[string]string{"user": "al\u202eecila", "name": "ci"}))
		}, "user"},
		{"a zero width space in a user", func() adminResult {
			return f.create(jsonBody(map[string]string{"user": "\u200balice", "name": "ci"}))
		}, "user"},
		{"a token as the user", func() adminResult {
			return f.create(jsonBody(map[string]string{"user": secret, "name": "ci"}))
		}, "user"},
		{"a bidi isolate in a name", func() adminResult {
			return f.create(jsonBody(map[string]string{"user": "alice", "name": "ci\u2066"}))
		}, "name"},
		{"a soft hyphen in a new name", func() adminResult {
			return f.update(tok.ID, jsonBody(map[string]string{"name": "c\u00adi"}))
		}, "name"},
		{"a token as a new name", func() adminResult {
			return f.update(tok.ID, jsonBody(map[string]string{"name": secret}))
		}, "name"},
		{"a line break in a new name", func() adminResult {
			return f.update(tok.ID, jsonBody(map[string]string{"name": "ci\nforged"}))
		}, "name"},
		{"a bidi override in a member", func() adminResult { return addMember("ops", "carol\u202e") }, "user"},
		{"a BOM in a member", func() adminResult { return addMember("ops", "\ufeffcarol") }, "user"},
		{"a token as a member", func() adminResult { return addMember("ops", secret) }, "user"},
		{"a bidi override in a group", func() adminResult { return addMember("ops\u202e", "carol") }, "group"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			before := f.state(t)
			res := tt.call()
			if res.status != http.StatusBadRequest || !strings.Contains(res.err, tt.field) {
				t.Errorf("answered %d %q, want 400 naming the %s", res.status, res.err, tt.field)
			}
			if strings.Contains(res.err, secret[len(token.DefaultPrefix)+1:]) {
				t.Errorf("the answer echoes the token: %q", res.err)
			}
			if strings.IndexFunc(res.err, func(r rune) bool { return unicode.IsControl(r) || unicode.Is(unicode.Cf, r) }) >= 0 {
				t.Errorf("the answer carries the character raw: %q", res.err)
			}
			if after := f.state(t); !reflect.DeepEqual(before, after) {
				t.Errorf("a refused call changed the store: %d tokens and event %d, then %d and %d",
					len(before.tokens), before.lastEvent, len(after.tokens), after.lastEvent)
			}
		})
	}
	t.Run("names of every script still pass", func(t *testing.T) {
		res := f.create(jsonBody(map[string]string{"user": "Zoë_Ørsted-日本", "name": "ci (نسخة) 2"}))
		if res.status != http.StatusCreated {
			t.Errorf("create: %d %s", res.status, res.body)
		}
	})
}
