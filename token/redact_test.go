package token

import (
	"strings"
	"testing"
)

func TestRedact(t *testing.T) {
	tok := assemble("caddytok", "abcdefgh2345", "0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefg")
	body := tok[len("caddytok_"):]
	tests := []struct {
		name, in, want string
	}{
		{"empty", "", ""},
		{"no underscore", "/rest/api/2/myself", "/rest/api/2/myself"},
		{"a user name", "alice_smith", "alice_smith"},
		{"a short run", "/rest/x_0123456789abcdefghi", "/rest/x_0123456789abcdefghi"}, // 19 after '_'
		{"a token", tok, "caddytok_[redacted]"},
		{"a token in a path", "/rest/" + tok + "/x", "/rest/caddytok_[redacted]/x"},
		{"a bad checksum", tok[:len(tok)-1] + "0", "caddytok_[redacted]"},
		{"one short", tok[:len(tok)-1], "caddytok_[redacted]"},
		{"one long", tok + "Q", "caddytok_[redacted]"},
		{"the id and 8 more", "caddytok_" + body[:20], "caddytok_[redacted]"},
		{"another prefix", "jira_" + body, "jira_[redacted]"},
		{"capitals in the prefix", "CADDYTOK_" + body, "[redacted]"},
		{"a prefix too long", "abcdefghijklmnopq_" + body, "[redacted]"},
		{"no prefix", "_" + body, "_[redacted]"},
		{"glued to a word", "x" + tok + "-y", "xcaddytok_[redacted]-y"},
		{"two tokens glued", tok + tok, "caddytok_[redacted]_[redacted]"},
		{"two tokens", tok + ":" + tok, "caddytok_[redacted]:caddytok_[redacted]"},
		{"a user field", tok + ":x-oauth-basic", "caddytok_[redacted]:x-oauth-basic"},
		{"already redacted", "caddytok_[redacted]", "caddytok_[redacted]"},
		{"non-ASCII around", "é" + tok + "é", "écaddytok_[redacted]é"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := Redact(tt.in); got != tt.want {
				t.Errorf("Redact(%q) = %q, want %q", tt.in, got, tt.want)
			}
		})
	}
	t.Run("no allocation without a token", func(t *testing.T) {
		s := "/rest/api/2/issue_link/PROJ-123"
		if n := testing.AllocsPerRun(100, func() { _ = Redact(s) }); n != 0 {
			t.Errorf("%v allocations", n)
		}
	})
}

// FuzzRedact checks that Redact leaves no token-like run (a '_'
// and minRedactRun letters and digits) and so no string ParseShape accepts,
// that it changes nothing else, and that it is idempotent.
func FuzzRedact(f *testing.F) {
	tok := assemble("caddytok", "abcdefgh2345", "0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefg")
	for _, s := range []string{
		"",
		tok,
		"/rest/" + tok + "/x",                // in a path
		tok + tok,                            // glued
		"x_" + strings.Repeat("a", 19),       // one short of a run
		"CADDYTOK_" + tok[len("caddytok_"):], // capitals
		"caddytok_[redacted]",                // already redacted
	} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		got := Redact(s)
		if hasTokenRun(s) == (got == s) {
			t.Fatalf("Redact(%q) = %q: changed %v, token-like %v", s, got, got != s, hasTokenRun(s))
		}
		if hasTokenRun(got) {
			t.Fatalf("Redact(%q) = %q leaves a token-like run", s, got)
		}
		for i := 0; i+minTokenLen <= len(got); i++ {
			for j := i + minTokenLen; j <= len(got) && j <= i+maxTokenLen; j++ {
				if _, ok := ParseShape(got[i:j]); ok {
					t.Fatalf("Redact(%q) = %q leaves a token shape %q", s, got, got[i:j])
				}
			}
		}
		if again := Redact(got); again != got {
			t.Fatalf("Redact is not idempotent: %q, then %q", got, again)
		}
	})
}

// hasTokenRun reports whether s has a '_' followed by minRedactRun ASCII
// letters and digits: written plainly, as a reference for Redact.
func hasTokenRun(s string) bool {
	for i := 0; i < len(s); i++ {
		if s[i] != '_' {
			continue
		}
		n := 0
		for j := i + 1; j < len(s) && strings.IndexByte(base62Alphabet, s[j]) >= 0; j++ {
			n++
		}
		if n >= minRedactRun {
			return true
		}
	}
	return false
}
