package policy

import (
	"bufio"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"unicode/utf8"
)

// corpusLine is one request-target from testdata/paths, with the rule
// group the line names (attack corpus) and where it came from.
type corpusLine struct {
	target string
	rule   PathRule
	line   int
}

// readPathCorpus reads testdata/paths/name: one request-target a line,
// "#" comments and blank lines skipped, an optional rule after a tab.
func readPathCorpus(tb testing.TB, name string) []corpusLine {
	tb.Helper()
	f, err := os.Open(filepath.Join("testdata", "paths", name))
	if err != nil {
		tb.Fatal(err)
	}
	defer f.Close()
	var out []corpusLine
	sc := bufio.NewScanner(f)
	for n := 1; sc.Scan(); n++ {
		line := sc.Text()
		if line == "" || line[0] == '#' {
			continue
		}
		target, rule, _ := strings.Cut(line, "\t")
		out = append(out, corpusLine{target: target, rule: PathRule(rule), line: n})
	}
	if err := sc.Err(); err != nil {
		tb.Fatal(err)
	}
	return out
}

func knownPathRule(r PathRule) bool {
	_, ok := ruleMaskOf(r)
	return ok || r == PathRuleDenyPattern
}

func TestInspectAttackCorpus(t *testing.T) {
	lines := readPathCorpus(t, "attack.txt")
	if len(lines) < 150 {
		t.Fatalf("attack corpus has %d lines, want at least 150", len(lines))
	}
	var rules PathRules
	for _, c := range lines {
		t.Run(fmt.Sprintf("line%d", c.line), func(t *testing.T) {
			if c.rule != PathRuleNone && !knownPathRule(c.rule) {
				t.Fatalf("attack.txt:%d names unknown rule %q", c.line, c.rule)
			}
			rule, reason := rules.Inspect(c.target)
			if reason != ReasonPathBlocked {
				t.Fatalf("Inspect(%q) = %q, %q; want blocked", c.target, rule, reason)
			}
			if c.rule != PathRuleNone && rule != c.rule {
				t.Errorf("Inspect(%q) rule = %q, want %q", c.target, rule, c.rule)
			}
		})
	}
}

func TestInspectBenignCorpus(t *testing.T) {
	lines := readPathCorpus(t, "benign.txt")
	if len(lines) < 150 {
		t.Fatalf("benign corpus has %d lines, want at least 150", len(lines))
	}
	var rules PathRules
	for _, c := range lines {
		t.Run(fmt.Sprintf("line%d", c.line), func(t *testing.T) {
			if rule, reason := rules.Inspect(c.target); reason != ReasonOK || rule != PathRuleNone {
				t.Errorf("Inspect(%q) = %q, %q; want ok", c.target, rule, reason)
			}
		})
	}
}

// TestInspectRawBytes covers what a text corpus cannot hold: raw control
// bytes and raw non-UTF-8 on the request line.
func TestInspectRawBytes(t *testing.T) {
	tests := []struct {
		name   string
		target string
		want   PathRule
	}{
		{"nul", "/index.jsp\x00.txt", PathRuleControlChar},
		{"crlf", "/a\r\nSet-Cookie: x=1", PathRuleControlChar},
		{"lf", "/a\nb", PathRuleControlChar},
		{"tab", "/a\tb", PathRuleControlChar},
		{"del", "/a\x7f", PathRuleControlChar},
		{"esc", "/a\x1b[0m", PathRuleControlChar},
		{"c1 nel", "/a\u0085b", PathRuleControlChar},
		{"dot nul dot", "/.\x00./etc/passwd", PathRuleControlChar},
		{"latin1", "/browse/caf\xe9", PathRuleInvalidUTF8},
		{"stray continuation", "/a\x80b", PathRuleInvalidUTF8},
		{"truncated", "/a\xe2\x9c", PathRuleInvalidUTF8},
		{"surrogate", "/a\xed\xa0\x80", PathRuleInvalidUTF8},
		{"raw overlong dots", "/\xc0\xae\xc0\xae/etc/passwd", PathRuleDotSegment},
		{"raw overlong slash", "/a\xc0\xafb", PathRuleOverlongUTF8},
		{"raw overlong nul", "/a\xc0\x80", PathRuleControlChar},
		{"raw fullwidth dots", "/\uff0e\uff0e/etc/passwd", PathRuleDotSegment},
		{"raw fullwidth solidus", "/..\uff0f..\uff0fetc", PathRuleDotSegment},
		{"raw dotless i", "/web-\u0131nf/web.xml", PathRuleServletInternal},
		{"raw dotted capital I", "/WEB-\u0130NF/web.xml", PathRuleServletInternal},
		{"raw fullwidth letters", "/\uff37\uff25\uff22-INF/web.xml", PathRuleServletInternal},
		{"raw zero-width space", "/WEB-\u200bINF/web.xml", PathRuleServletInternal},
	}
	var rules PathRules
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			rule, reason := rules.Inspect(tt.target)
			if rule != tt.want || reason != ReasonPathBlocked {
				t.Errorf("Inspect(%q) = %q, %q; want %q, %q", tt.target, rule, reason, tt.want, ReasonPathBlocked)
			}
		})
	}
	for _, ok := range []string{"/browse/\u2713", "/api/caf\u00e9", "/api/\U0001F680", "/display/JP/\u30ea\u30ea\u30fc\u30b9"} {
		if rule, reason := rules.Inspect(ok); reason != ReasonOK {
			t.Errorf("Inspect(%q) = %q, %q; want ok", ok, rule, reason)
		}
	}
}

func TestInspectNilRules(t *testing.T) {
	var p *PathRules
	if rule, reason := p.Inspect("/s/x/_/;/WEB-INF/web.xml"); rule != PathRuleServletInternal || reason != ReasonPathBlocked {
		t.Errorf("nil rules: got %q, %q; want servlet_internal", rule, reason)
	}
	if rule, reason := p.Inspect("/rest/api/2/search"); rule != PathRuleNone || reason != ReasonOK {
		t.Errorf("nil rules: got %q, %q; want ok", rule, reason)
	}
}

func mustCompile(t testing.TB, c PathConfig) *PathRules {
	t.Helper()
	p, err := CompilePathRules(c)
	if err != nil {
		t.Fatal(err)
	}
	return p
}

func TestInspectDisable(t *testing.T) {
	tests := []struct {
		name    string
		disable []PathRule
		target  string
		want    PathRule
	}{
		{"encoded slash allowed", []PathRule{PathRuleEncodedSlash}, "/rest/branch-utils/1.0/branches/feature%2Fx", PathRuleNone},
		{"encoded slash still no traversal", []PathRule{PathRuleEncodedSlash}, "/a/..%2fWEB-INF", PathRuleDotSegment},
		{"encoded slash still double-encoded dots", []PathRule{PathRuleEncodedSlash}, "/a%252f%252e%252e%252fb", PathRuleDotSegment},
		{"jsessionid allowed", []PathRule{PathRulePathParameter}, "/secure/Dashboard.jspa;jsessionid=ABC", PathRuleNone},
		{"params still no dot", []PathRule{PathRulePathParameter}, "/..;/WEB-INF/web.xml", PathRuleDotSegment},
		{"params still no servlet", []PathRule{PathRulePathParameter}, "/s/x/_/;/WEB-INF/web.xml", PathRuleServletInternal},
		{"servlet allowed", []PathRule{PathRuleServletInternal}, "/projects/P/repos/r/browse/src/main/webapp/WEB-INF/web.xml", PathRuleNone},
		{"backslash allowed", []PathRule{PathRuleBackslash}, `/rest/api/1.0/projects/P/repos/r/browse/dir\file`, PathRuleNone},
		{"backslash still splits", []PathRule{PathRuleBackslash}, `/a\..\b`, PathRuleDotSegment},
		{"invalid utf8 allowed", []PathRule{PathRuleInvalidUTF8}, "/browse/caf%e9", PathRuleNone},
		{"overlong falls to invalid utf8", []PathRule{PathRuleOverlongUTF8}, "/foo%c0%afbar", PathRuleInvalidUTF8},
		{"overlong and invalid off, dots still", []PathRule{PathRuleOverlongUTF8, PathRuleInvalidUTF8}, "/%c0%ae%c0%ae/x", PathRuleDotSegment},
		{"dot off, servlet still", []PathRule{PathRuleDotSegment}, "/../WEB-INF/web.xml", PathRuleServletInternal},
		{"dot off", []PathRule{PathRuleDotSegment}, "/a/../b", PathRuleNone},
		{"template allowed", []PathRule{PathRuleTemplateInjection}, "/display/ENG/%7B%7Bdouble%7D%7D", PathRuleNone},
		{"encoding off, depth still decoded", []PathRule{PathRuleInvalidEncoding}, "/%u002e%u002e/x", PathRuleDotSegment},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			p := mustCompile(t, PathConfig{Disable: tt.disable})
			rule, reason := p.Inspect(tt.target)
			wantReason := ReasonPathBlocked
			if tt.want == PathRuleNone {
				wantReason = ReasonOK
			}
			if rule != tt.want || reason != wantReason {
				t.Errorf("Inspect(%q) = %q, %q; want %q, %q", tt.target, rule, reason, tt.want, wantReason)
			}
		})
	}
}

func TestInspectExempt(t *testing.T) {
	p := mustCompile(t, PathConfig{
		Exempt: []string{"/rest/api/1.0/projects/*", "*/template-preview*", "/public/*"},
	})
	tests := []struct {
		name   string
		target string
		want   PathRule
	}{
		{"soft rule lifted", "/rest/api/1.0/projects/P/repos/r/browse/src/main/webapp/WEB-INF/web.xml", PathRuleNone},
		{"case-insensitive", "/REST/API/1.0/Projects/P/repos/r/raw/META-INF/MANIFEST.MF", PathRuleNone},
		{"encoded slash lifted", "/rest/api/1.0/projects/P/repos/r/branches/feature%2Fx", PathRuleNone},
		{"contains pattern", "/x/template-preview/%7B%7Bname%7D%7D", PathRuleNone},
		{"merged slashes", "//public//WEB-INF", PathRuleNone},
		{"params dropped before matching", "/public;x=1/a;b", PathRuleNone},
		{"hard: dot segment", "/rest/api/1.0/projects/../../../WEB-INF/web.xml", PathRuleDotSegment},
		{"hard: encoded dot segment", "/rest/api/1.0/projects/%252e%252e/x", PathRuleDotSegment},
		{"hard: control", "/rest/api/1.0/projects/P%00", PathRuleControlChar},
		{"hard: invalid utf8", "/rest/api/1.0/projects/%ff", PathRuleInvalidUTF8},
		{"hard: overlong", "/rest/api/1.0/projects/a%c0%afb", PathRuleOverlongUTF8},
		{"hard: bad escape", "/public/%zz", PathRuleInvalidEncoding},
		{"not exempt", "/WEB-INF/web.xml", PathRuleServletInternal},
		{"prefix must match whole", "/rest/api/1.0/projectsX/WEB-INF", PathRuleServletInternal},
		{"encoded prefix decoded once", "/rest/api/1.0/%70rojects/P/WEB-INF", PathRuleNone},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			rule, _ := p.Inspect(tt.target)
			if rule != tt.want {
				t.Errorf("Inspect(%q) = %q; want %q", tt.target, rule, tt.want)
			}
		})
	}

	// With dot_segment switched off, an exemption is judged on the path
	// after ".." is resolved: climbing out of /public/ is not exempt.
	noDots := mustCompile(t, PathConfig{Disable: []PathRule{PathRuleDotSegment}, Exempt: []string{"/public/*"}})
	if rule, _ := noDots.Inspect("/public/../WEB-INF/web.xml"); rule != PathRuleServletInternal {
		t.Errorf("climbing out of an exempt prefix: rule %q, want servlet_internal", rule)
	}
	if rule, _ := noDots.Inspect("/public/x/../WEB-INF/web.xml"); rule != PathRuleNone {
		t.Errorf("staying inside an exempt prefix: rule %q, want none", rule)
	}
}

func TestInspectDeny(t *testing.T) {
	p := mustCompile(t, PathConfig{
		Disable: []PathRule{PathRulePathParameter, PathRuleDotSegment},
		Deny: []string{
			"/template/aui/*",                     // CVE-2023-22527: POST /template/aui/text-inline.vm
			"*.vm",                                // Velocity templates are never fetched directly
			"/secure/QueryComponent!Default.jspa", // CVE-2020-14179
			"/setup/*",                            // CVE-2023-22515
			"*setup-restore*",                     // CVE-2023-22518: /json/setup-restore.action
			"/k\u212aelvin*",                      // folded like strings.ToLower
		},
		Exempt: []string{"/template/*"},
	})
	tests := []struct {
		target string
		want   PathRule
	}{
		{"/template/aui/text-inline.vm", PathRuleDenyPattern},
		{"/TEMPLATE/AUI/text-inline.vm", PathRuleDenyPattern},
		{"/template//aui/text-inline.vm", PathRuleDenyPattern},
		{"/template/x/../aui/text-inline.vm", PathRuleDenyPattern},
		{"/x/Y.VM", PathRuleDenyPattern},
		{"/secure/QueryComponent!Default.jspa", PathRuleDenyPattern},
		{"/secure/querycomponent!default.jspa", PathRuleDenyPattern},
		{"/secure/%51ueryComponent!Default.jspa", PathRuleDenyPattern},
		{"/secure/QueryComponent!Default.jspa;x=1", PathRuleDenyPattern},
		{"/secure\\QueryComponent!Default.jspa", PathRuleBackslash},
		{"/setup/setupadministrator.action", PathRuleDenyPattern},
		{"/json/setup-restore.action", PathRuleDenyPattern},
		{"/json/SETUP-RESTORE-local.action", PathRuleDenyPattern},
		{"/KKELVIN/x", PathRuleDenyPattern},
		{"/secure/QueryComponent!Default.jspa/x", PathRuleNone},
		{"/setup", PathRuleNone},
		{"/template/other", PathRuleNone},
		{"/rest/api/2/search", PathRuleNone},
	}
	for _, tt := range tests {
		t.Run(tt.target, func(t *testing.T) {
			rule, reason := p.Inspect(tt.target)
			if rule != tt.want || (reason == ReasonOK) != (tt.want == PathRuleNone) {
				t.Errorf("Inspect(%q) = %q, %q; want %q", tt.target, rule, reason, tt.want)
			}
		})
	}
}

func TestCompilePathRulesErrors(t *testing.T) {
	tests := []struct {
		name string
		c    PathConfig
		want string // substring of the error
	}{
		{"unknown group", PathConfig{Disable: []PathRule{"dotsegment"}}, `disable[0] "dotsegment": unknown rule group`},
		{"deny_pattern not a group", PathConfig{Disable: []PathRule{PathRuleDenyPattern}}, `disable[0] "deny_pattern": unknown`},
		{"empty group", PathConfig{Disable: []PathRule{""}}, `disable[0] "": unknown`},
		{"duplicate", PathConfig{Disable: []PathRule{"backslash", "backslash"}}, `disable[1] "backslash": listed twice`},
		{"empty pattern", PathConfig{Deny: []string{""}}, `deny[0] "": empty pattern`},
		{"relative", PathConfig{Deny: []string{"/ok", "rest/*"}}, `deny[1] "rest/*": must start with "/" or "*"`},
		{"three stars", PathConfig{Exempt: []string{"*a*b*"}}, `exempt[0] "*a*b*": a pattern starting with "*"`},
		{"two stars only", PathConfig{Exempt: []string{"**"}}, `exempt[0] "**": a pattern starting with "*"`},
		{"escape", PathConfig{Deny: []string{"/a%2fb"}}, `deny[0] "/a%2fb": unsupported character '%'`},
		{"placeholder", PathConfig{Deny: []string{"/{http.vars.x}"}}, `unsupported character '{'`},
		{"glob class", PathConfig{Deny: []string{"/a[bc]"}}, `unsupported character '['`},
		{"question mark", PathConfig{Deny: []string{"/a?b"}}, `unsupported character '?'`},
		{"backslash", PathConfig{Deny: []string{`/a\b`}}, `unsupported character '\\'`},
		{"control", PathConfig{Deny: []string{"/a\nb"}}, `control character`},
		{"invalid utf8", PathConfig{Deny: []string{"/a\xffb"}}, `not valid UTF-8`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			p, err := CompilePathRules(tt.c)
			if err == nil {
				t.Fatalf("CompilePathRules(%+v) = %v, nil; want error", tt.c, p)
			}
			if !strings.Contains(err.Error(), tt.want) || !strings.HasPrefix(err.Error(), "compiling path rules: ") {
				t.Errorf("error %q; want it to contain %q", err, tt.want)
			}
		})
	}

	ok := PathConfig{
		Disable: []PathRule{PathRuleEncodedSlash, PathRuleBackslash},
		Deny:    []string{"*", "/exact", "/prefix*", "*suffix", "*contains*", "/Ünïcode*"},
		Exempt:  []string{"/rest/*"},
	}
	if _, err := CompilePathRules(ok); err != nil {
		t.Errorf("CompilePathRules(%+v): %v", ok, err)
	}
}

func TestRequestTargetPath(t *testing.T) {
	tests := []struct{ target, want string }{
		{"/rest/api/2/issue/ABC-1?expand=x", "/rest/api/2/issue/ABC-1"},
		{"/a?b?c", "/a"},
		{"/?q=../..", "/"},
		{"", ""},
		{"*", ""},
		{"http://host/a/b?c", "/a/b"},
		{"HTTPS://host:8443/x", "/x"},
		{"svn+ssh://host/x", "/x"},
		{"http://host", ""},
		{"http://host?x=/..", ""},
		{`http://host\..\x`, `\..\x`},
		{"host:443", "host:443"},
		{`\..\x`, `\..\x`},
		{"..", ".."},
		{"1http://host/x", "1http://host/x"},
		{"c:/x", "c:/x"},
		{"//host/a", "//host/a"},
	}
	for _, tt := range tests {
		if got := requestTargetPath(tt.target); got != tt.want {
			t.Errorf("requestTargetPath(%q) = %q, want %q", tt.target, got, tt.want)
		}
	}
}

func TestNormalisePath(t *testing.T) {
	tests := []struct{ in, want string }{
		{"", "/"},
		{"/", "/"},
		{"/a/b", "/a/b"},
		{"/a/b/", "/a/b/"},
		{"//a///b", "/a/b"},
		{`/a\b\`, "/a/b/"},
		{"/a/./b", "/a/b"},
		{"/a/../b", "/b"},
		{"/../../a", "/a"},
		{"/a/b/..", "/a"},
		{"/a;x=1/b;jsessionid=2", "/a/b"},
		{"/..;/a", "/a"},
		{"/;/a", "/a"},
		{"a/b", "/a/b"},
		{"/A/B", "/A/B"},
		{"/a..b/...", "/a..b/..."},
	}
	for _, tt := range tests {
		if got := string(normalisePath(nil, tt.in)); got != tt.want {
			t.Errorf("normalisePath(%q) = %q, want %q", tt.in, got, tt.want)
		}
	}
}

func TestDecodePathOnce(t *testing.T) {
	tests := []struct{ in, want string }{
		{"/a%20b", "/a b"},
		{"%252e", "%2e"},
		{"%2E%2e", ".."},
		{"%u002e%U002E", ".."},
		{"%uD800", "\ufffd"},
		{"%zz%", "%zz%"},
		{"%%32%65", "%2e"},
		{"\xc0\xae", "."},
		{"%c0%ae", "\xc0\xae"},
		{"\xe0\x80\xaf", "/"},
		{"\xfc\x80\x80\x80\x80\xae", "."},
		{"\xf0\x82\x82\xac", "\u20ac"},
		{"\xff\xc3", "\xff\xc3"},
	}
	for _, tt := range tests {
		buf := make([]byte, len(tt.in))
		if got := string(buf[:decodePathOnce(buf, tt.in)]); got != tt.want {
			t.Errorf("decodePathOnce(%q) = %q, want %q", tt.in, got, tt.want)
		}
		// In place, as Inspect runs the second and later rounds.
		inPlace := []byte(tt.in)
		if got := string(inPlace[:decodePathOnce(inPlace, inPlace)]); got != tt.want {
			t.Errorf("decodePathOnce in place (%q) = %q, want %q", tt.in, got, tt.want)
		}
	}
}

// TestDecodeUTF8At checks the hand-written decoder against unicode/utf8:
// a sequence it calls valid is what utf8.DecodeRune decodes, and anything
// utf8 accepts it calls valid. It walks every 2-byte sequence and every
// 3- and 4-byte sequence over a spread of continuation bytes.
func TestDecodeUTF8At(t *testing.T) {
	conts := []byte{0x00, 0x2e, 0x7f, 0x80, 0x81, 0x8f, 0x90, 0x9f, 0xa0, 0xae, 0xaf, 0xbf, 0xc0, 0xff}
	var buf [4]byte
	check := func(b []byte) {
		r, n, kind := decodeUTF8At(b, 0)
		wr, wn := utf8.DecodeRune(b)
		valid := wr != utf8.RuneError || wn > 1
		switch {
		case valid && (kind != utf8SeqValid || r != wr || n != wn):
			t.Fatalf("% x: got %U/%d/kind %d, utf8 says %U/%d", b, r, n, kind, wr, wn)
		case !valid && kind == utf8SeqValid:
			t.Fatalf("% x: got valid %U/%d, utf8 says invalid", b, r, n)
		case kind == utf8SeqOverlong && n <= utf8.RuneLen(r):
			t.Fatalf("% x: overlong %U in %d bytes is not overlong", b, r, n)
		case kind == utf8SeqInvalid && n != 1:
			t.Fatalf("% x: invalid with length %d", b, n)
		}
	}
	for b0 := 0x80; b0 <= 0xff; b0++ {
		for b1 := 0; b1 <= 0xff; b1++ {
			buf[0], buf[1] = byte(b0), byte(b1)
			check(buf[:2])
			for _, buf[2] = range conts {
				check(buf[:3])
				for _, buf[3] = range conts {
					check(buf[:4])
				}
			}
		}
	}
}

// benignHotPaths are the shapes that dominate real traffic; Inspect must
// not allocate on them, with or without patterns configured.
var benignHotPaths = []string{
	"/rest/api/2/search?jql=project%20%3D%20PROJ",
	"/rest/api/latest/issue/PROJ-123/comment",
	"/browse/%E2%9C%93",
	"/wiki/spaces/ENG/pages/123/My+Page",
	"/download/attachments/123/report%20v2.pdf",
	"/s/d41d8cd98f00b204e9800998ecf8427e-CDN/-1234/abc/1.0/_/download/batch/com.atlassian.auiplugin:ajs/com.atlassian.auiplugin:ajs.js",
	"/rest/api/1.0/projects/PRJ/repos/repo/browse/src/main.go?at=refs%2Fheads%2Fmain",
}

func TestInspectAllocs(t *testing.T) {
	configs := map[string]*PathRules{
		"default":  nil,
		"patterns": mustCompile(t, PathConfig{Deny: []string{"/template/aui/*", "*.vm", "*setup-restore*"}, Exempt: []string{"/rest/api/1.0/projects/*"}}),
	}
	var targets []string
	targets = append(targets, benignHotPaths...)
	for _, c := range readPathCorpus(t, "benign.txt") {
		targets = append(targets, c.target)
	}
	for _, c := range readPathCorpus(t, "attack.txt") {
		targets = append(targets, c.target)
	}
	for name, p := range configs {
		for _, target := range targets {
			if n := testing.AllocsPerRun(20, func() { p.Inspect(target) }); n != 0 {
				t.Errorf("%s: Inspect(%q) allocates %v times, want 0", name, target, n)
			}
		}
	}
}

func BenchmarkInspect(b *testing.B) {
	long := "/s/d41d8cd98f00b204e9800998ecf8427e-CDN/en_US/-wx2x1n/820004/6411e0087192541a09d88223fb51a6a0/1.0/_/download/contextbatch/js/_super,atl.dashboard,jira.global,atl.general,-jira.view.issue,-com.atlassian.jira.projects.sidebar.init/batch.js?locale=en-US" +
		strings.Repeat("&x=y", 10)
	longPath := "/rest/api/1.0/projects/PRJ/repos/repo/browse/" + strings.Repeat("src/main/java/com/example/%E2%9C%93/", 12) + "App.java"
	patterns := mustCompile(b, PathConfig{Deny: []string{"/template/aui/*", "*.vm", "*setup-restore*"}, Exempt: []string{"/rest/api/1.0/projects/*"}})
	benches := []struct {
		name   string
		rules  *PathRules
		target string
	}{
		{"jira_rest_issue", nil, "/rest/api/2/issue/ABC-123?fields=summary"},
		{"jira_rest", nil, "/rest/api/2/issue/PROJ-123/comment?expand=renderedBody"},
		{"jira_rest_patterns", patterns, "/rest/api/2/issue/PROJ-123/comment?expand=renderedBody"},
		{"encoded_utf8", nil, "/browse/%E2%9C%93"},
		{"long_batch", nil, long},
		{"long_encoded", nil, longPath},
		{"long_encoded_patterns", patterns, longPath},
		{"attack_servlet", nil, "/s/cfx/_/;/WEB-INF/classes/seraph-config.xml"},
		{"attack_triple_encoded", nil, "/%25252e%25252e/%25252e%25252e/etc/passwd"},
		{"attack_ognl", nil, "/%24%7B%40java.lang.Runtime%40getRuntime%28%29.exec%28%22id%22%29%7D/"},
	}
	for _, bb := range benches {
		b.Run(bb.name, func(b *testing.B) {
			b.ReportAllocs()
			b.SetBytes(int64(len(bb.target)))
			for b.Loop() {
				bb.rules.Inspect(bb.target)
			}
		})
	}
}

func TestPlainPath(t *testing.T) {
	tests := []struct {
		path string
		want bool
	}{
		{"/", true},
		{"/rest/api/2/issue/ABC-123", true},
		{"/rest/api/2/issue/ABC-123/", true},
		{"/.well-known/security.txt", true},
		{"/a/b.c/d..e/...f", true},
		{"/x/WEB-INFO/y", true},
		{"/x/MEAT-INF", true},
		{"/s/abc/_/download/batch/x~y/z!$&'()*+,=@", true},
		{"", false},
		{"rest/api", false},
		{"//rest", false},
		{"/rest//api", false},
		{"/rest/api//", false},
		{"/.", false},
		{"/../etc/passwd", false},
		{"/a/.../b", false},
		{"/a/..", false},
		{"/WEB-INF/web.xml", false},
		{"/x/meta-inf", false},
		{"/x/Web-Inf./y", false},
		{"/x/WEB-IN~1", false},
		{"/a%2fb", false},
		{"/a;b", false},
		{`/a\b`, false},
		{"/a:b", false},
		{"/a b", false},
		{"/${x}", false},
		{"/caf\u00e9", false},
		{"/a\x00", false},
	}
	for _, tt := range tests {
		if got := plainPath(tt.path); got != tt.want {
			t.Errorf("plainPath(%q) = %v, want %v", tt.path, got, tt.want)
		}
	}

	// Every corpus target, plain or not, gets the same verdicts from
	// Inspect and MatchTarget as from their full paths.
	rules, sets := fastPathRules(t), fastPathSets(t)
	plain := 0
	corpus := append(readPathCorpus(t, "benign.txt"), readPathCorpus(t, "attack.txt")...)
	for _, c := range corpus {
		t.Run(c.target, func(t *testing.T) { checkFastPath(t, c.target, rules, sets) })
		if plainPath(requestTargetPath(c.target)) {
			plain++
		}
	}
	t.Logf("%d of %d corpus targets take the fast path", plain, len(corpus))
}

func TestMatchTargetAllocs(t *testing.T) {
	set, err := CompilePathSet("protect", []string{"/rest/*", "*.vm", "*setup*", "/plugins/servlet/*"})
	if err != nil {
		t.Fatal(err)
	}
	targets := append([]string{}, benignHotPaths...)
	for _, name := range []string{"benign.txt", "attack.txt"} {
		for _, c := range readPathCorpus(t, name) {
			targets = append(targets, c.target)
		}
	}
	for _, target := range targets {
		if n := testing.AllocsPerRun(20, func() { set.MatchTarget(target) }); n != 0 {
			t.Errorf("MatchTarget(%q) allocates %v times, want 0", target, n)
		}
	}
}

func TestTargetResolved(t *testing.T) {
	tests := []struct{ target, want string }{
		{"/rest/api/2/issue/ABC-1", "/rest/api/2/issue/ABC-1"},
		{"/rest/api/2/issue/ABC-1?fields=x", "/rest/api/2/issue/ABC-1"},
		{"/rest/api/..;/..;/secure/admin/users", "/secure/admin/users"},
		{"/rest/api;x=1/2", "/rest/api/2"},
		{"/rest/api/%2e%2e/%2e%2e/secure", "/secure"},
		{"/rest/api%2f..%2f..%2fsecure", "/secure"},
		{`/rest/api\..\secure`, "/rest/secure"},
		{"/rest//api/./x/", "/rest/api/x/"},
		{"/rest/api/user%20name", "/rest/api/user name"},
		{"http://h/a/../b?q", "/b"},
		{"/../../etc/passwd", "/etc/passwd"},
		{"", "/"},
	}
	for _, tt := range tests {
		if got := NewTarget(tt.target).Resolved(); got != tt.want {
			t.Errorf("NewTarget(%q).Resolved() = %q, want %q", tt.target, got, tt.want)
		}
	}

	// A pattern matched on Resolved (as a token's scope is) agrees with
	// the same pattern in a PathSet (as protect is), on every corpus target.
	sets := fastPathSets(t)
	corpus := append(readPathCorpus(t, "benign.txt"), readPathCorpus(t, "attack.txt")...)
	for _, c := range corpus {
		tg := NewTarget(c.target)
		for _, s := range sets {
			if got, want := matchPathPatterns(s.patterns, tg.Resolved()), s.MatchTargetPath(tg); got != want {
				t.Errorf("%q: patterns on Resolved %v, PathSet %v", c.target, got, want)
			}
		}
	}
}
