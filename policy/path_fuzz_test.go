package policy

import (
	"net/url"
	pathpkg "path"
	"strings"
	"testing"
	"unicode"
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

// fastPathRules are the configurations FuzzPlainPath and TestPlainPath
// hold the fast path to: no patterns, and Deny and Exempt patterns of
// every kind.
func fastPathRules(tb testing.TB) []*PathRules {
	tb.Helper()
	return []*PathRules{
		nil,
		mustCompile(tb, PathConfig{
			Deny:   []string{"/secure/admin*", "*.vm", "/rest/api/*/user", "*setup*", "/exact/path/"},
			Exempt: []string{"/rest/*", "*/public/*"},
		}),
		mustCompile(tb, PathConfig{Disable: []PathRule{PathRuleServletInternal}, Deny: []string{"*"}}),
	}
}

// fastPathSets are the protect sets FuzzPlainPath holds MatchTarget to.
func fastPathSets(tb testing.TB) []PathSet {
	tb.Helper()
	var sets []PathSet
	for _, items := range [][]string{
		{"/rest/*"},
		{"/REST/API/2/issue"},
		{"*.json", "*attach*", "/a/*/c"},
		{"/\u212a*", "*\u00e9", "*\u0130*"}, // Kelvin sign, é, dotted capital I: non-ASCII pattern text
		{"/rest/api/*/issue/*", "/"},
	} {
		s, err := CompilePathSet("protect", items)
		if err != nil {
			tb.Fatal(err)
		}
		sets = append(sets, s)
	}
	return sets
}

// checkFastPath fails t when the fast path (plainPath) and the full one
// disagree on target: Inspect against inspect for every configuration,
// MatchTarget against matchResolved for every set; and when a plain path
// is not left alone by decoding and normalisation, or has a rule fire.
func checkFastPath(t *testing.T, target string, rules []*PathRules, sets []PathSet) {
	t.Helper()
	path := requestTargetPath(target)
	plain := plainPath(path)
	for i, p := range rules {
		full := p
		if full == nil {
			full = &defaultPathRules
		}
		gotRule, gotReason := p.Inspect(target)
		wantRule, wantReason := full.inspect(path)
		if gotRule != wantRule || gotReason != wantReason {
			t.Fatalf("rules %d: Inspect(%q) = %q, %q; full inspection says %q, %q (plain %v)",
				i, target, gotRule, gotReason, wantRule, wantReason, plain)
		}
	}
	for i, s := range sets {
		if got, want := s.MatchTarget(target), s.matchResolved(path); got != want {
			t.Fatalf("set %d: MatchTarget(%q) = %v, full match says %v (plain %v)", i, target, got, want, plain)
		}
	}
	if !plain {
		return
	}
	if fired, more := scanLevel(path, true); fired != 0 || more {
		t.Fatalf("plain path %q: scanLevel = %b, %v", path, fired, more)
	}
	buf := make([]byte, len(path))
	if got := string(buf[:decodePathOnce(buf, path)]); got != path {
		t.Fatalf("plain path %q decodes to %q", path, got)
	}
	if got := string(normalisePath(nil, path)); got != path {
		t.Fatalf("plain path %q normalises to %q", path, got)
	}
}

// FuzzPlainPath holds the fast path of Inspect and MatchTarget to their
// full path on any request-target: same verdicts for several rule sets and
// protect sets; and a path the fast path takes is one no rule fires on and
// decoding and normalisation leave alone. It also checks that the
// generic pattern matcher agrees on string and []byte paths and with the
// []byte matcher it replaced, and decodeRuneAt and decodeLastRune with
// package utf8.
func FuzzPlainPath(f *testing.F) {
	for _, name := range []string{"attack.txt", "benign.txt"} {
		for _, c := range readPathCorpus(f, name) {
			f.Add(c.target)
		}
	}
	f.Add("")                      // no path
	f.Add("/")                     // root: its own normalised form
	f.Add("//")                    // empty segment
	f.Add("/a//b")                 // empty segment inside
	f.Add("/a/")                   // trailing slash
	f.Add("/.well-known/x")        // a dot that starts a name
	f.Add("/a/.../b")              // dots only
	f.Add("/a/.")                  // a last dot segment
	f.Add("/WEB-INF/web.xml")      // servlet directory, plain bytes only
	f.Add("/x/Meta-Inf.")          // with a trailing dot Windows drops
	f.Add("/x/web-in~1/y")         // 8.3 name
	f.Add("/x/WEB-INFO/y")         // longer name: not a servlet directory
	f.Add("http://h/rest/x?q")     // absolute form
	f.Add("*")                     // asterisk form
	f.Add("rest/x")                // no leading slash
	f.Add("/rest/\u212a")          // non-ASCII: not plain
	f.Add("/caf\xc3")              // truncated UTF-8
	f.Add("/x\xe2\x84")            // truncated at the end, for decodeLastRune
	f.Add("/x\U0001F600")          // a 4-byte rune at the end, for decodeLastRune
	f.Add("/rest/api/2/issue/X-1") // the common case
	rules := fastPathRules(f)
	sets := fastPathSets(f)
	patterns := []string{"/rest/*", "/rest*", "*.json", "*attach*", "/rest/api/*/issue", "*", "/\u212a*", "*\u00e9", "*\u0130*", "/caf\u00e9", "*x\u2126"}
	var compiled []PathPattern
	for _, s := range patterns {
		pp, err := ParsePathPattern(s)
		if err != nil {
			f.Fatal(err)
		}
		compiled = append(compiled, pp)
	}
	f.Fuzz(func(t *testing.T, target string) {
		checkFastPath(t, target, rules, sets)
		for _, pp := range compiled {
			want := refMatchPathPattern(pp, []byte(target))
			if got := matchPathPattern(&pp, target); got != want {
				t.Fatalf("pattern %q on string %q: %v, old matcher %v", pp.text, target, got, want)
			}
			if got := matchPathPattern(&pp, []byte(target)); got != want {
				t.Fatalf("pattern %q on []byte %q: %v, old matcher %v", pp.text, target, got, want)
			}
		}
		for i := range len(target) {
			wr, wn := utf8.DecodeRuneInString(target[i:])
			if r, n := decodeRuneAt(target, i); r != wr || n != wn {
				t.Fatalf("decodeRuneAt(%q, %d) = %U, %d; utf8 says %U, %d", target, i, r, n, wr, wn)
			}
			wr, wn = utf8.DecodeLastRuneInString(target[:i+1])
			if r, n := decodeLastRune(target[:i+1]); r != wr || n != wn {
				t.Fatalf("decodeLastRune(%q) = %U, %d; utf8 says %U, %d", target[:i+1], r, n, wr, wn)
			}
		}
	})
}

// refMatchPathPattern is the []byte pattern matcher matchPathPattern
// replaced, kept as FuzzPlainPath's reference.
func refMatchPathPattern(pp PathPattern, path []byte) bool {
	foldPrefix := func(path []byte, text string) (int, bool) {
		i := 0
		for _, want := range text {
			if i >= len(path) {
				return 0, false
			}
			r, n := rune(path[i]), 1
			if r >= utf8.RuneSelf {
				r, n = utf8.DecodeRune(path[i:])
			}
			if unicode.ToLower(r) != want {
				return 0, false
			}
			i += n
		}
		return i, true
	}
	switch pp.kind {
	case pathPatAll:
		return true
	case pathPatExact:
		n, ok := foldPrefix(path, pp.text)
		return ok && n == len(path)
	case pathPatPrefix:
		_, ok := foldPrefix(path, pp.text)
		return ok
	case pathPatSuffix:
		i, j := len(path), len(pp.text)
		for j > 0 {
			if i == 0 {
				return false
			}
			want, wn := utf8.DecodeLastRuneInString(pp.text[:j])
			r, n := utf8.DecodeLastRune(path[:i])
			if unicode.ToLower(r) != want {
				return false
			}
			i -= n
			j -= wn
		}
		return true
	case pathPatGlob:
		ok, _ := pathpkg.Match(pp.text, strings.ToLower(string(path)))
		return ok
	case pathPatContains:
		for i := 0; i < len(path); {
			if _, ok := foldPrefix(path[i:], pp.text); ok {
				return true
			}
			_, n := utf8.DecodeRune(path[i:])
			i += n
		}
	}
	return false
}
