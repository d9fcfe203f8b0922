package caddymodule

import (
	"encoding/json"
	"errors"
	"strings"
	"testing"
	"time"
	"unicode"
	"unicode/utf8"

	"github.com/spf13/cobra"

	"github.com/apitoken/caddy-apitoken/audit"
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
		RateLimit: hostile, RecentIPs: []audit.IPSeen{{IP: hostile, LastSeen: now}}}
	ev := eventJSON{Time: now, Type: hostile, Outcome: hostile, Reason: hostile, User: hostile, ClaimedUser: hostile,
		TokenID: hostile, ClientIP: hostile, Method: hostile, Host: hostile, Path: hostile, Status: 400}
	summary := eventJSON{Time: now, Type: string(audit.TypeAuthFailed), Outcome: "failure", Reason: "unknown_token", Count: 7,
		Path: hostile, TopClients: []audit.Tally{{Value: hostile, Count: 4}}, TopUsers: []audit.Tally{{Value: hostile, Count: 7}}}

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
