package policy

import (
	"net/url"
	"strings"
	"testing"
	"unicode/utf8"
)

// FuzzInspect checks, for any request-target:
//
//   - Inspect does not panic and answers a known rule with the matching
//     reason;
//   - whatever it allows is clean once decoded the way Go, Caddy and most
//     backends decode it (url.PathUnescape, when that succeeds): no "." or
//     ".." segment when split on "/" and "\", no ";", no NUL, CR or LF,
//     valid UTF-8, no WEB-INF or META-INF segment, no "${";
//   - one round of decodePathOnce agrees with url.PathUnescape on ASCII;
//   - Exempt only ever lifts soft rules, and Deny only ever adds blocks.
func FuzzInspect(f *testing.F) {
	for _, name := range []string{"attack.txt", "benign.txt"} {
		for _, c := range readPathCorpus(f, name) {
			f.Add(c.target)
		}
	}
	// What the text corpora cannot hold: raw controls and raw non-UTF-8.
	f.Add("/a\x00b")
	f.Add("/a\r\nb")
	f.Add("/\xc0\xae\xc0\xae/x")
	f.Add("/caf\xe9")
	f.Add("/\xed\xa0\x80")
	f.Add("/\uff0e\uff0e/x")
	f.Add("/" + strings.Repeat("%25", 8) + "2e")
	f.Add("/" + strings.Repeat("a/", stackPathLen))

	patterned := mustCompile(f, PathConfig{
		Deny:   []string{"/secure/admin*", "*.vm"},
		Exempt: []string{"/rest/*", "*/public/*"},
	})

	f.Fuzz(func(t *testing.T, target string) {
		var rules PathRules
		rule, reason := rules.Inspect(target)
		switch {
		case reason == ReasonOK && rule != PathRuleNone,
			reason == ReasonPathBlocked && !knownPathRule(rule),
			reason != ReasonOK && reason != ReasonPathBlocked:
			t.Fatalf("Inspect(%q) = %q, %q", target, rule, reason)
		case rule == PathRuleDenyPattern:
			t.Fatalf("Inspect(%q) = deny_pattern with no deny patterns", target)
		}

		path := requestTargetPath(target)
		dec, err := url.PathUnescape(path)
		if reason == ReasonOK && err == nil {
			checkDecodedClean(t, target, dec)
		}
		if err == nil && !hasNonASCII(path) {
			buf := make([]byte, len(path))
			if got := string(buf[:decodePathOnce(buf, path)]); got != dec {
				t.Fatalf("decodePathOnce(%q) = %q, url.PathUnescape says %q", path, got, dec)
			}
		}

		prule, preason := patterned.Inspect(target)
		switch {
		case rule != PathRuleNone && maskOfRule(rule)&maskHard != 0 && prule != rule:
			t.Fatalf("Inspect(%q): hard rule %q without patterns, %q with", target, rule, prule)
		case rule == PathRuleNone && preason == ReasonOK:
		case rule == PathRuleNone && prule != PathRuleDenyPattern:
			t.Fatalf("Inspect(%q): ok without patterns, %q with", target, prule)
		case rule != PathRuleNone && prule != rule && prule != PathRuleNone && prule != PathRuleDenyPattern:
			t.Fatalf("Inspect(%q): soft rule %q without patterns, %q with", target, rule, prule)
		}
	})
}

func maskOfRule(r PathRule) pathRuleMask {
	m, _ := ruleMaskOf(r)
	return m
}

func hasNonASCII(s string) bool {
	for i := 0; i < len(s); i++ {
		if s[i] >= utf8.RuneSelf {
			return true
		}
	}
	return false
}

// checkDecodedClean fails t when a path Inspect allowed, decoded once,
// still holds something a rule group exists to stop.
func checkDecodedClean(t *testing.T, target, dec string) {
	t.Helper()
	if strings.ContainsAny(dec, "\x00\r\n;") {
		t.Fatalf("Inspect allowed %q: decoded %q holds NUL, CR, LF or ';'", target, dec)
	}
	if !utf8.ValidString(dec) {
		t.Fatalf("Inspect allowed %q: decoded %q is not UTF-8", target, dec)
	}
	if strings.Contains(dec, "${") {
		t.Fatalf("Inspect allowed %q: decoded %q holds ${", target, dec)
	}
	for _, seg := range strings.FieldsFunc(dec, func(r rune) bool { return r == '/' || r == '\\' }) {
		switch {
		case seg == "." || seg == "..":
			t.Fatalf("Inspect allowed %q: decoded %q has a %q segment", target, dec, seg)
		case strings.EqualFold(seg, "WEB-INF") || strings.EqualFold(seg, "META-INF"):
			t.Fatalf("Inspect allowed %q: decoded %q has a %q segment", target, dec, seg)
		}
	}
}
