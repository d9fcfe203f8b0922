package policy

import (
	"fmt"
	"math/bits"
	pathpkg "path"
	"strings"
	"unicode"
	"unicode/utf8"
)

// ReasonPathBlocked: the request-target's path was refused by a path rule
// before authentication. The PathRule returned with it says which one.
const ReasonPathBlocked Reason = "path_blocked"

// PathRule names a group of path checks. The set is closed: Inspect returns
// one of the constants below, the audit trail records it, and operators name
// the groups in PathConfig.Disable to switch one off.
type PathRule string

// Path rule groups, in the order Inspect reports them when several fire.
// control_char through invalid_utf8 are hard rules: an exempt path is still
// held to them. The rest are soft: PathConfig.Exempt lifts them.
const (
	// PathRuleNone is what Inspect returns with ReasonOK.
	PathRuleNone PathRule = ""

	// PathRuleControlChar: a C0 control (NUL, TAB, CR, LF, …), DEL or C1
	// control, raw or percent-encoded at any depth (%00, %250a, %c0%80).
	PathRuleControlChar PathRule = "control_char"
	// PathRuleDotSegment: a segment made only of dots (".", "..", "..."),
	// in any encoding: %2e, %252e, %u002e, overlong UTF-8 (%c0%ae),
	// fullwidth or one-dot-leader dots (%ef%bc%8e, %e2%80%a4), with trailing
	// spaces, NULs or path parameters ("..;/", ".. /", "..::$DATA"), split on
	// "/", "\" and their encoded and look-alike forms. Dots inside a name
	// ("a..b.txt", "foo..", "..foo") are not dot-segments.
	PathRuleDotSegment PathRule = "dot_segment"
	// PathRuleOverlongUTF8: an overlong UTF-8 sequence (%c0%ae, %e0%80%af,
	// 5- and 6-byte forms), which old decoders turned into "." or "/".
	PathRuleOverlongUTF8 PathRule = "overlong_utf8"
	// PathRuleInvalidEncoding: a "%" not followed by two hex digits in the
	// raw target (%zz, %2, %%32%65, IIS-style %u002e), or a path still
	// percent-encoded after maxDecodeDepth rounds of decoding.
	PathRuleInvalidEncoding PathRule = "invalid_encoding"
	// PathRuleInvalidUTF8: bytes that are not UTF-8 once decoded (Latin-1
	// %e9, stray continuation bytes, surrogates, truncated sequences).
	PathRuleInvalidUTF8 PathRule = "invalid_utf8"

	// PathRuleServletInternal: a WEB-INF or META-INF segment in any case,
	// encoding or look-alike (WEB%2dINF, web-ınf, WEB-INF., WEB-INF::$DATA,
	// the 8.3 name WEB-IN~1). The /s/…/_/ resource rewrite in Jira and
	// Confluence forwards to such paths (CVE-2019-8442, CVE-2021-26085,
	// CVE-2021-26086).
	PathRuleServletInternal PathRule = "servlet_internal"
	// PathRuleTemplateInjection: an expression opener in the decoded path:
	// "${", "#{", "%{", "*{", "@{", "~{", "{{" or "$!{" (OGNL, EL, SpEL,
	// Velocity, Thymeleaf; Confluence CVE-2022-26134 is /%24%7B…%7D/).
	PathRuleTemplateInjection PathRule = "template_injection"
	// PathRulePathParameter: a ";" in the path, raw or encoded. Tomcat strips
	// ";…" from each segment while filters such as Seraph see the raw URI,
	// so "/..;/", "/;/" and "x.jspa;" bypass checks (CVE-2021-26086,
	// CVE-2022-0540). ";jsessionid=" is no exception: see Inspect. %3b is
	// refused too, as Spring Security's StrictHttpFirewall does, since a
	// proxy that decodes turns it into a parameter; an attachment whose name
	// holds ";" then needs this group disabled or its path exempted.
	PathRulePathParameter PathRule = "path_parameter"
	// PathRuleEncodedSlash: a "/" produced by decoding (%2f, %252f,
	// %u002f). Tomcat rejects it by default; proxies and Spring disagree
	// about it. Disable it for a backend that needs encoded slashes.
	PathRuleEncodedSlash PathRule = "encoded_slash"
	// PathRuleBackslash: a "\" raw or encoded (%5c, %255c), a separator
	// on Windows and to some Java and proxy normalisers.
	PathRuleBackslash PathRule = "backslash"

	// PathRuleDenyPattern: the normalised path matched a PathConfig.Deny
	// pattern. It is not a rule group and cannot be disabled.
	PathRuleDenyPattern PathRule = "deny_pattern"
)

// pathRuleOrder lists the rule groups by bit: bit i of a pathRuleMask is
// pathRuleOrder[i], and the lowest set bit is the one reported.
var pathRuleOrder = [...]PathRule{
	PathRuleControlChar,
	PathRuleDotSegment,
	PathRuleOverlongUTF8,
	PathRuleInvalidEncoding,
	PathRuleInvalidUTF8,
	PathRuleServletInternal,
	PathRuleTemplateInjection,
	PathRulePathParameter,
	PathRuleEncodedSlash,
	PathRuleBackslash,
}

type pathRuleMask uint16

const (
	maskControlChar pathRuleMask = 1 << iota
	maskDotSegment
	maskOverlongUTF8
	maskInvalidEncoding
	maskInvalidUTF8
	maskServletInternal
	maskTemplateInjection
	maskPathParameter
	maskEncodedSlash
	maskBackslash

	// maskHard are the groups an exemption does not lift: they are what
	// makes the normalised path, on which exemptions are judged, mean what
	// the backend will see.
	maskHard = maskControlChar | maskDotSegment | maskOverlongUTF8 | maskInvalidUTF8 | maskInvalidEncoding
)

func (m pathRuleMask) first() PathRule {
	if m == 0 {
		return PathRuleNone
	}
	return pathRuleOrder[bits.TrailingZeros16(uint16(m))]
}

// maxDecodeDepth is how many rounds of percent-decoding Inspect applies.
// Four rounds undo %2525252e; a path that still holds an escape after that
// is refused as invalid_encoding rather than judged half-decoded.
const maxDecodeDepth = 4

// stackPathLen is the longest path Inspect decodes without allocating.
const stackPathLen = 1024

// PathConfig is the operator's view of the path rules, compiled once by
// CompilePathRules.
type PathConfig struct {
	// Disable switches rule groups off everywhere, by name (dot_segment,
	// encoded_slash, …). PathRuleDenyPattern cannot be disabled.
	// Default: every group on.
	Disable []PathRule
	// Deny lists extra path patterns to refuse, in the syntax of Caddy's
	// path matcher: "/exact", "/prefix*", "*suffix", "*contains*" or "*".
	// Matching is case-insensitive and runs on the normalised path (decoded
	// once, ";params" dropped, "\" read as "/", slashes merged, "." and ".."
	// resolved), so /secure/admin* also catches /secure//Admin;x=1.
	// Deny applies to exempt paths too. Default: none.
	Deny []string
	// Exempt lists path patterns (same syntax, same normalised path) that
	// skip the soft rule groups: servlet_internal, template_injection,
	// path_parameter, encoded_slash and backslash. The hard groups
	// (control_char, dot_segment, overlong_utf8, invalid_encoding,
	// invalid_utf8) and Deny still apply: no backend path needs them,
	// and without them the normalised path an exemption is judged on could
	// differ from the one the backend resolves. Default: none.
	Exempt []string
}

// PathRules is a compiled PathConfig. The zero value, and a nil pointer,
// enable every rule group with no Deny or Exempt patterns. It is read-only
// after CompilePathRules and safe for concurrent use.
type PathRules struct {
	disabled pathRuleMask
	deny     []PathPattern
	exempt   []PathPattern
}

// CompilePathRules checks and compiles c. Errors name the bad item and its
// value.
func CompilePathRules(c PathConfig) (*PathRules, error) {
	p := new(PathRules)
	for i, name := range c.Disable {
		m, ok := ruleMaskOf(name)
		if !ok {
			return nil, fmt.Errorf("compiling path rules: disable[%d] %q: unknown rule group, want one of %s",
				i, name, pathRuleNames())
		}
		if p.disabled&m != 0 {
			return nil, fmt.Errorf("compiling path rules: disable[%d] %q: listed twice", i, name)
		}
		p.disabled |= m
	}
	var err error
	if p.deny, err = compilePathPatterns("deny", c.Deny); err != nil {
		return nil, fmt.Errorf("compiling path rules: %w", err)
	}
	if p.exempt, err = compilePathPatterns("exempt", c.Exempt); err != nil {
		return nil, fmt.Errorf("compiling path rules: %w", err)
	}
	return p, nil
}

func ruleMaskOf(r PathRule) (pathRuleMask, bool) {
	for i, name := range pathRuleOrder {
		if name == r {
			return 1 << i, true
		}
	}
	return 0, false
}

func pathRuleNames() string {
	names := make([]string, len(pathRuleOrder))
	for i, r := range pathRuleOrder {
		names[i] = string(r)
	}
	return strings.Join(names, ", ")
}

var defaultPathRules PathRules

// Inspect judges a raw request-target (r.RequestURI: "/rest/api/2/issue/X-1?
// expand=y", or the absolute form "http://host/path", or "*") as the backend
// will see it, before any decoding Caddy does. The query is never judged.
// It returns the first rule group that fired, in the order of the PathRule
// constants, with ReasonPathBlocked; or PathRuleNone and ReasonOK.
//
// The path is scanned raw and then after each round of lenient decoding
// (%XX, IIS-style %uXXXX, overlong UTF-8 folded to its character), up to
// maxDecodeDepth rounds, and every rule runs at every depth: a backend
// that decodes twice is judged as fairly as one that decodes once.
//
// Path parameters are refused, ";jsessionid=" included: Jira, Confluence and
// Bitbucket track sessions by cookie, a token client never needs one, and
// any ";param" reopens the getRequestURI/servlet-path mismatch behind
// CVE-2022-0540. Disable path_parameter (or exempt a path) for a backend
// that relies on URL session tracking or matrix parameters.
//
// Inspect allocates nothing for paths up to 1 KiB. A plain path (see
// plainPath), the common case, is judged in one scan.
func (p *PathRules) Inspect(requestTarget string) (PathRule, Reason) {
	return p.InspectTarget(NewTarget(requestTarget))
}

// Target is the path of a request-target, read once (its query cut off,
// whether it is plain worked out) for InspectTarget and
// PathSet.MatchTargetPath, which then need not read it again.
type Target struct {
	path  string
	plain bool
}

// NewTarget reads a raw request-target.
func NewTarget(requestTarget string) Target {
	path := requestTargetPath(requestTarget)
	return Target{path: path, plain: plainPath(path)}
}

// InspectTarget is Inspect for a Target.
func (p *PathRules) InspectTarget(t Target) (PathRule, Reason) {
	if p == nil {
		p = &defaultPathRules
	}
	path := t.path
	if t.plain {
		// No rule fires at any depth and path is its own normalised
		// form: only Deny is left to judge, and Exempt has nothing to lift.
		if matchPathPatterns(p.deny, path) {
			return PathRuleDenyPattern, ReasonPathBlocked
		}
		return PathRuleNone, ReasonOK
	}
	return p.inspect(path)
}

// inspect is Inspect's full inspection of the path of a request-target,
// for any path.
func (p *PathRules) inspect(path string) (PathRule, Reason) {
	patterns := len(p.deny) > 0 || len(p.exempt) > 0

	// The stack buffers are declared inside the branches that need them,
	// so the common case (nothing to decode, no patterns) does not pay to
	// zero them.
	var norm []byte
	fired, more := scanLevel(path, true)
	if more {
		var decStack [stackPathLen]byte
		buf := decStack[:]
		if len(path) > len(buf) {
			buf = make([]byte, len(path))
		}
		buf = buf[:decodePathOnce(buf, path)]
		if patterns {
			// Patterns are judged once decoded, as Caddy's path matcher
			// does, so norm is taken before later rounds reuse buf.
			var normStack [stackPathLen]byte
			norm = normalisePath(normalisedPathBuf(&normStack, len(buf)), buf)
		}
		f, m := scanLevel(buf, false)
		fired |= f
		for depth := 2; m; depth++ {
			if depth > maxDecodeDepth {
				fired |= maskInvalidEncoding
				break
			}
			buf = buf[:decodePathOnce(buf, buf)]
			f, m = scanLevel(buf, false)
			fired |= f
		}
	} else if patterns {
		var normStack [stackPathLen]byte
		norm = normalisePath(normalisedPathBuf(&normStack, len(path)), path)
	}

	fired &^= p.disabled
	if hard := fired & maskHard; hard != 0 {
		return hard.first(), ReasonPathBlocked
	}
	if fired != 0 && !matchPathPatterns(p.exempt, norm) {
		return fired.first(), ReasonPathBlocked
	}
	if matchPathPatterns(p.deny, norm) {
		return PathRuleDenyPattern, ReasonPathBlocked
	}
	return PathRuleNone, ReasonOK
}

// plainPath reports whether Inspect and MatchTarget may take path as it is:
// it starts with "/" and holds only "/", "." and the bytes plainPathByte
// marks (so nothing to decode: no "%", no non-ASCII byte; and no ";",
// "\", ":", "{", controls or spaces), and each of its segments is
// plainSegment but for an empty last one (a trailing slash). Then
// scanLevel finds nothing on it, decodePathOnce leaves it alone and
// normalisePath returns it unchanged. TestPlainPath and FuzzPlainPath hold
// the fast path to the full one.
func plainPath(path string) bool {
	if len(path) == 0 || path[0] != '/' {
		return false
	}
	start := 1 // the segment's first byte
	for i := 1; i < len(path); i++ {
		c := path[i]
		if plainSegmentByte[c] {
			continue
		}
		if c != '/' || !plainSegment(path[start:i]) {
			return false
		}
		start = i + 1
	}
	return start == len(path) || plainSegment(path[start:])
}

// plainSegmentByte is plainPathByte and ".".
var plainSegmentByte = func() [256]bool {
	t := plainPathByte
	t['.'] = true
	return t
}()

// plainSegment reports whether a segment of a path made of
// plainSegmentByte bytes and "/" is one no rule fires on and normalisePath
// keeps as it is: not empty, not dots only, and not WEB-INF or META-INF.
// The first tests of isServletName are inlined: an ASCII name shorter than
// 7 bytes, or not starting with "w" or "m", is none.
func plainSegment(seg string) bool {
	switch {
	case len(seg) == 0:
		return false
	case seg[0] == '.' && strings.Trim(seg, ".") == "":
		return false
	case len(seg) >= 7 && (seg[0]|0x20 == 'w' || seg[0]|0x20 == 'm'):
		return !isServletName(seg)
	}
	return true
}

func normalisedPathBuf(stack *[stackPathLen]byte, n int) []byte {
	if n+1 > len(stack) {
		return make([]byte, 0, n+1)
	}
	return stack[:0]
}

// requestTargetPath returns the path of a request-target: the query is cut off,
// an absolute-form target loses its scheme and authority (which ends at the
// first "/" or "\"), and the asterisk-form "*" has no path. Anything else
// (origin form, authority form, junk) is judged whole.
func requestTargetPath(target string) string {
	if i := strings.IndexByte(target, '?'); i >= 0 {
		target = target[:i]
	}
	if target == "" || target[0] == '/' {
		return target
	}
	if target == "*" {
		return ""
	}
	if rest, ok := cutURIScheme(target); ok {
		if i := strings.IndexAny(rest, `/\`); i >= 0 {
			return rest[i:]
		}
		return ""
	}
	return target
}

// cutURIScheme cuts `scheme "://"` (RFC 3986 scheme syntax) off the front of s.
func cutURIScheme(s string) (string, bool) {
	for i := 0; i < len(s); i++ {
		c := s[i]
		switch {
		case 'a' <= c && c <= 'z', 'A' <= c && c <= 'Z':
		case i > 0 && ('0' <= c && c <= '9' || c == '+' || c == '-' || c == '.'):
		case i > 0 && c == ':':
			if strings.HasPrefix(s[i:], "://") {
				return s[i+3:], true
			}
			return "", false
		default:
			return "", false
		}
	}
	return "", false
}

// pathText is a raw target (string) or a decoded level ([]byte).
type pathText interface{ ~string | ~[]byte }

// pathSegment is the state of one path segment during scanLevel. The "name" of
// a segment is what precedes its first ';', ':', '?' or '#': Tomcat drops
// ";params", Windows drops "::$DATA" streams, and a decoded '?' or '#' ends
// the path for a backend that decodes before splitting.
type pathSegment struct {
	start int  // index of the segment's first byte
	cut   int  // index of the end of its name, or -1
	dots  int  // dots in the name
	other bool // the name holds something besides dots, spaces, controls and invalid bytes
}

// scanLevel runs every rule over one level of the path (raw when raw is
// true, else decoded) and reports which fired, and whether the level holds
// anything another round of decoding would change.
func scanLevel[S pathText](s S, raw bool) (fired pathRuleMask, more bool) {
	seg := pathSegment{cut: -1}
	endSegment := func(end, next int) {
		nameEnd := end
		if seg.cut >= 0 {
			nameEnd = seg.cut
		}
		if seg.dots > 0 && !seg.other {
			fired |= maskDotSegment
		}
		if isServletName(s[seg.start:nameEnd]) {
			fired |= maskServletInternal
		}
		seg = pathSegment{start: next, cut: -1}
	}
	// ascii handles a 7-bit character c found at i, spanning n bytes (more
	// than one when it came from an overlong sequence).
	ascii := func(c byte, i, n int) {
		switch {
		case c == '/':
			endSegment(i, i+n)
		case c == '\\':
			fired |= maskBackslash
			endSegment(i, i+n)
		case c < 0x20 || c == 0x7f:
			fired |= maskControlChar
		case c == '.':
			if seg.cut < 0 {
				seg.dots++
			}
		case c == ' ':
		case c == ';':
			fired |= maskPathParameter
			if seg.cut < 0 {
				seg.cut = i
			}
		case c == ':' || c == '?' || c == '#':
			if seg.cut < 0 {
				seg.cut = i
			}
		default:
			if seg.cut < 0 {
				seg.other = true
			}
		}
	}

	for i := 0; i < len(s); {
		c := s[i]
		if plainPathByte[c] {
			if seg.cut < 0 {
				seg.other = true
			}
			i++
			continue
		}
		if c < utf8.RuneSelf {
			switch c {
			case '%':
				v, n, wide := unescapeAt(s, i)
				switch {
				case n == 0:
					if raw {
						fired |= maskInvalidEncoding
					}
				default:
					more = true
					if raw && wide {
						fired |= maskInvalidEncoding
					}
					switch v {
					case '/':
						fired |= maskEncodedSlash
					case '\\':
						fired |= maskBackslash
					}
				}
				ascii(c, i, 1)
			case '{':
				if isTemplateOpener(s, i) {
					fired |= maskTemplateInjection
				}
				ascii(c, i, 1)
			default:
				ascii(c, i, 1)
			}
			i++
			continue
		}

		r, n, kind := decodeUTF8At(s, i)
		switch kind {
		case utf8SeqInvalid:
			fired |= maskInvalidUTF8
		case utf8SeqOverlong:
			// Overlong is invalid UTF-8 too: switching overlong_utf8 off
			// leaves invalid_utf8 to refuse it.
			fired |= maskOverlongUTF8 | maskInvalidUTF8
			more = true
			if r < utf8.RuneSelf {
				if r == '/' {
					fired |= maskEncodedSlash
				}
				ascii(byte(r), i, n)
				i += n
				continue
			}
		}
		switch {
		case kind == utf8SeqInvalid, isIgnorableRune(r):
		case 0x80 <= r && r <= 0x9f:
			fired |= maskControlChar
		case isDotRune(r):
			if seg.cut < 0 {
				seg.dots++
			}
		case isSeparatorRune(r):
			endSegment(i, i+n)
		default:
			if seg.cut < 0 {
				seg.other = true
			}
		}
		i += n
	}
	endSegment(len(s), len(s))
	return fired, more
}

// plainPathByte marks the ASCII bytes no rule looks at: scanLevel only
// notes that the segment name holds something besides dots.
var plainPathByte = func() (t [256]bool) {
	for c := 0x21; c < 0x7f; c++ {
		t[c] = !strings.ContainsRune(`%{/\.;:?#`, rune(c))
	}
	return t
}()

// isTemplateOpener reports whether the '{' at s[i] opens an expression:
// "${", "#{", "%{", "*{", "@{", "~{", "{{" or "$!{".
func isTemplateOpener[S pathText](s S, i int) bool {
	if i == 0 {
		return false
	}
	switch s[i-1] {
	case '$', '#', '%', '*', '@', '~', '{':
		return true
	case '!':
		return i >= 2 && s[i-2] == '$'
	}
	return false
}

// isDotRune reports whether r is read as "." by some normaliser: fullwidth
// full stop, one dot leader, small full stop (IIS best-fit, NFKC).
func isDotRune(r rune) bool {
	return r == '\uff0e' || r == '\u2024' || r == '\ufe52'
}

// isSeparatorRune reports whether r is read as "/" or "\" by some
// normaliser: fullwidth and small solidi, division slash, set minus,
// fraction slash, big solidi, and the private-use code points IIS mapped
// to "/" (OWASP CRS 930100 lists %u2215, %u2216, %uEFC8, %uF025).
func isSeparatorRune(r rune) bool {
	switch r {
	case '\uff0f', '\uff3c', '\u2215', '\u2216', '\u2044', '\u29f8', '\u29f9',
		'\ufe68', '\uefc8', '\uf025':
		return true
	}
	return false
}

// isIgnorableRune reports whether r is invisible and dropped by some
// normalisers: soft hyphen, zero-width space, joiners, word joiner, BOM.
func isIgnorableRune(r rune) bool {
	switch r {
	case '\u00ad', '\u200b', '\u200c', '\u200d', '\u2060', '\ufeff':
		return true
	}
	return false
}

// servletNames are the protected servlet directories and their 8.3 names.
var servletNames = [...]string{"web-inf", "meta-inf", "web-in~1", "meta-i~1"}

// isServletName reports whether a segment name is WEB-INF or META-INF,
// ignoring case (Unicode, and Java's dotless i),
// fullwidth forms, invisible characters and the trailing dots and spaces
// Windows drops.
func isServletName[S pathText](name S) bool {
	end := len(name)
	for end > 0 && (name[end-1] == '.' || name[end-1] == ' ') {
		end--
	}
	// The shortest name is 7 ASCII bytes; look-alikes take at most 3 bytes
	// a character and an invisible character or two.
	if end < 7 || end > 40 {
		return false
	}
	if c := name[0]; c < utf8.RuneSelf && c|0x20 != 'w' && c|0x20 != 'm' {
		return false
	}
	for _, want := range servletNames {
		if foldsTo(name[:end], want) {
			return true
		}
	}
	return false
}

// foldsTo reports whether s, folded rune by rune, spells the lower-case
// ASCII string want.
func foldsTo[S pathText](s S, want string) bool {
	j := 0
	for i := 0; i < len(s); {
		r, n := rune(s[i]), 1
		if r >= utf8.RuneSelf {
			var kind int
			r, n, kind = decodeUTF8At(s, i)
			if kind != utf8SeqValid {
				return false
			}
		}
		i += n
		if isIgnorableRune(r) {
			continue
		}
		if j >= len(want) || servletFold(r) != rune(want[j]) {
			return false
		}
		j++
	}
	return j == len(want)
}

func servletFold(r rune) rune {
	switch {
	case 'A' <= r && r <= 'Z':
		return r + 'a' - 'A'
	case r < utf8.RuneSelf:
		return r
	case r == '\u0131' || r == '\u0130': // dotless i (Java upper-cases it to I), dotted capital I
		return 'i'
	case '\uff01' <= r && r <= '\uff5e': // fullwidth ASCII
		return servletFold(r - 0xfee0)
	}
	return unicode.ToLower(r)
}

// unescapeAt decodes the escape at s[i] (s[i] == '%') leniently: %XX gives
// a byte, %uXXXX (IIS) a code point (wide). n is 0 when there is no escape.
func unescapeAt[S pathText](s S, i int) (v rune, n int, wide bool) {
	if i+2 < len(s) && isHexDigit(s[i+1]) && isHexDigit(s[i+2]) {
		return rune(hexValue(s[i+1])<<4 | hexValue(s[i+2])), 3, false
	}
	if i+5 < len(s) && (s[i+1] == 'u' || s[i+1] == 'U') &&
		isHexDigit(s[i+2]) && isHexDigit(s[i+3]) && isHexDigit(s[i+4]) && isHexDigit(s[i+5]) {
		v = rune(hexValue(s[i+2]))<<12 | rune(hexValue(s[i+3]))<<8 | rune(hexValue(s[i+4]))<<4 | rune(hexValue(s[i+5]))
		return v, 6, true
	}
	return 0, 0, false
}

func isHexDigit(c byte) bool {
	return '0' <= c && c <= '9' || 'a' <= c && c <= 'f' || 'A' <= c && c <= 'F'
}

func hexValue(c byte) byte {
	switch {
	case c <= '9':
		return c - '0'
	case c <= 'F':
		return c - 'A' + 10
	}
	return c - 'a' + 10
}

// decodePathOnce writes one round of lenient decoding of src into dst and
// returns its length: escapes are decoded (%XX to a byte, %uXXXX to UTF-8),
// overlong sequences are folded to their shortest form, everything else is
// copied. The result is never longer than src, and dst may be src itself:
// no write overtakes a read.
func decodePathOnce[S pathText](dst []byte, src S) int {
	w := 0
	for i := 0; i < len(src); {
		c := src[i]
		if c == '%' {
			if v, n, wide := unescapeAt(src, i); n > 0 {
				if wide {
					w += utf8.EncodeRune(dst[w:], v)
				} else {
					dst[w] = byte(v)
					w++
				}
				i += n
				continue
			}
		}
		if c >= utf8.RuneSelf {
			if r, n, kind := decodeUTF8At(src, i); kind == utf8SeqOverlong {
				w += utf8.EncodeRune(dst[w:], r)
				i += n
				continue
			}
		}
		dst[w] = c
		w++
		i++
	}
	return w
}

// UTF-8 sequence kinds reported by decodeUTF8At.
const (
	utf8SeqValid = iota
	utf8SeqOverlong
	utf8SeqInvalid
)

// decodeUTF8At decodes the sequence that starts with the non-ASCII byte
// s[i]. A valid sequence gives its rune and length, as utf8.DecodeRune
// does. An overlong one (including the 5- and 6-byte forms) gives the rune
// it encodes and its full length. Anything else is utf8SeqInvalid with length 1.
func decodeUTF8At[S pathText](s S, i int) (r rune, n int, kind int) {
	b := s[i]
	var need int
	var min rune
	switch {
	case b < 0xc0:
		return utf8.RuneError, 1, utf8SeqInvalid
	case b < 0xe0:
		need, r, min = 1, rune(b&0x1f), 0x80
	case b < 0xf0:
		need, r, min = 2, rune(b&0x0f), 0x800
	case b < 0xf8:
		need, r, min = 3, rune(b&0x07), 0x10000
	case b < 0xfc:
		need, r, min = 4, rune(b&0x03), 0x110000
	case b < 0xfe:
		need, r, min = 5, rune(b&0x01), 0x110000
	default:
		return utf8.RuneError, 1, utf8SeqInvalid
	}
	if i+need >= len(s) {
		return utf8.RuneError, 1, utf8SeqInvalid
	}
	for k := 1; k <= need; k++ {
		c := s[i+k]
		if c&0xc0 != 0x80 {
			return utf8.RuneError, 1, utf8SeqInvalid
		}
		r = r<<6 | rune(c&0x3f)
	}
	switch {
	case r > utf8.MaxRune:
		return utf8.RuneError, 1, utf8SeqInvalid
	case r < min || need > 3:
		return r, need + 1, utf8SeqOverlong
	case 0xd800 <= r && r <= 0xdfff:
		return utf8.RuneError, 1, utf8SeqInvalid
	}
	return r, need + 1, utf8SeqValid
}

// decodeRuneAt decodes the rune at s[i] as utf8.DecodeRune(s[i:]) does:
// an invalid, overlong or surrogate sequence is utf8.RuneError, 1 byte
// long. It serves patterns matched against both strings and []byte.
func decodeRuneAt[S pathText](s S, i int) (rune, int) {
	if s[i] < utf8.RuneSelf {
		return rune(s[i]), 1
	}
	r, n, kind := decodeUTF8At(s, i)
	if kind != utf8SeqValid {
		return utf8.RuneError, 1
	}
	return r, n
}

// decodeLastRune decodes the last rune of a non-empty s as
// utf8.DecodeLastRune does.
func decodeLastRune[S pathText](s S) (rune, int) {
	end := len(s)
	start := end - 1
	if s[start] < utf8.RuneSelf {
		return rune(s[start]), 1
	}
	lim := max(end-utf8.UTFMax, 0)
	for start--; start >= lim; start-- {
		if utf8.RuneStart(s[start]) {
			break
		}
	}
	start = max(start, 0)
	r, n := decodeRuneAt(s[:end], start)
	if start+n != end {
		return utf8.RuneError, 1
	}
	return r, n
}

// normalisePath appends to dst the path Deny and Exempt patterns are judged
// on, from a once-decoded path s: "/" and "\" separate segments, empty and
// "." segments are dropped, ".." drops the segment before it, ";params" are
// cut from each segment, and a trailing separator is kept. Case is left
// alone; patterns fold it.
func normalisePath[S pathText](dst []byte, s S) []byte {
	i := 0
	for i < len(s) {
		if s[i] == '/' || s[i] == '\\' {
			i++
			continue
		}
		j := i
		for j < len(s) && s[j] != '/' && s[j] != '\\' {
			j++
		}
		name := s[i:j]
		for k := 0; k < len(name); k++ {
			if name[k] == ';' {
				name = name[:k]
				break
			}
		}
		switch {
		case len(name) == 0 || len(name) == 1 && name[0] == '.':
		case len(name) == 2 && name[0] == '.' && name[1] == '.':
			k := len(dst) - 1
			for k >= 0 && dst[k] != '/' {
				k--
			}
			if k >= 0 {
				dst = dst[:k]
			}
		default:
			dst = append(dst, '/')
			dst = append(dst, name...)
		}
		i = j
	}
	if len(dst) == 0 || len(s) > 0 && (s[len(s)-1] == '/' || s[len(s)-1] == '\\') {
		dst = append(dst, '/')
	}
	return dst
}

type pathPatternKind uint8

const (
	pathPatExact pathPatternKind = iota
	pathPatPrefix
	pathPatSuffix
	pathPatContains
	pathPatAll
	pathPatGlob
)

// PathPattern is a compiled Caddy-style path pattern, matched
// case-insensitively against a normalised path:
//
//	/exact        the path itself
//	/prefix/*     paths starting with /prefix/
//	*.suffix      paths ending in .suffix
//	*contains*    paths containing the text
//	/a/*/b        a glob: each * matches within one segment
//	*             every path
//
// Its text is lower-case and stripped of the wildcards that select the
// kind (a glob keeps them).
type PathPattern struct {
	kind pathPatternKind
	text string
}

// ParsePathPattern compiles one pattern; the error names it.
func ParsePathPattern(s string) (PathPattern, error) {
	pp, err := compilePathPattern(s)
	if err != nil {
		return PathPattern{}, fmt.Errorf("path pattern %q: %w", s, err)
	}
	return pp, nil
}

// Match reports whether the cleaned path matches. It does not allocate,
// but for a glob pattern on a path with upper-case letters.
func (pp PathPattern) Match(cleanPath string) bool {
	return matchPathPattern(&pp, cleanPath)
}

func compilePathPatterns(field string, items []string) ([]PathPattern, error) {
	if len(items) == 0 {
		return nil, nil
	}
	out := make([]PathPattern, len(items))
	for i, s := range items {
		pp, err := compilePathPattern(s)
		if err != nil {
			return nil, fmt.Errorf("%s[%d] %q: %w", field, i, s, err)
		}
		out[i] = pp
	}
	return out, nil
}

func compilePathPattern(s string) (PathPattern, error) {
	if s == "" {
		return PathPattern{}, fmt.Errorf("empty pattern")
	}
	if s == "*" {
		return PathPattern{kind: pathPatAll}, nil
	}
	if !utf8.ValidString(s) {
		return PathPattern{}, fmt.Errorf("not valid UTF-8")
	}
	for _, r := range s {
		if r < 0x20 || r == 0x7f {
			return PathPattern{}, fmt.Errorf("control character %q", r)
		}
	}
	if i := strings.IndexAny(s, `%{}?[]\`); i >= 0 {
		return PathPattern{}, fmt.Errorf("unsupported character %q: write the decoded path, without placeholders, escapes or glob classes", s[i])
	}
	lead, trail := s[0] == '*', s[len(s)-1] == '*'
	var pp PathPattern
	switch stars := strings.Count(s, "*"); {
	case stars == 0:
		pp = PathPattern{kind: pathPatExact, text: s}
	case stars == 1 && trail:
		pp = PathPattern{kind: pathPatPrefix, text: s[:len(s)-1]}
	case stars == 1 && lead:
		pp = PathPattern{kind: pathPatSuffix, text: s[1:]}
	case stars == 2 && lead && trail && len(s) > 2:
		pp = PathPattern{kind: pathPatContains, text: s[1 : len(s)-1]}
	case !lead:
		pp = PathPattern{kind: pathPatGlob, text: s}
	default:
		return PathPattern{}, fmt.Errorf(`a pattern starting with "*" may have another "*" only at its end`)
	}
	if !lead && pp.text[0] != '/' {
		return PathPattern{}, fmt.Errorf(`must start with "/" or "*"`)
	}
	pp.text = strings.ToLower(pp.text)
	return pp, nil
}

func matchPathPatterns[S pathText](patterns []PathPattern, path S) bool {
	for i := range patterns {
		if matchPathPattern(&patterns[i], path) {
			return true
		}
	}
	return false
}

func matchPathPattern[S pathText](pp *PathPattern, path S) bool {
	switch pp.kind {
	case pathPatAll:
		return true
	case pathPatExact:
		n, ok := foldPathPrefix(path, pp.text)
		return ok && n == len(path)
	case pathPatPrefix:
		_, ok := foldPathPrefix(path, pp.text)
		return ok
	case pathPatSuffix:
		return foldPathSuffix(path, pp.text)
	case pathPatGlob:
		ok, _ := pathpkg.Match(pp.text, strings.ToLower(string(path)))
		return ok
	case pathPatContains:
		first := pp.text[0]
		for i := 0; i < len(path); {
			c := path[i]
			if c < utf8.RuneSelf {
				if 'A' <= c && c <= 'Z' {
					c += 'a' - 'A'
				}
				if first < utf8.RuneSelf && c != first {
					i++
					continue
				}
			}
			if _, ok := foldPathPrefix(path[i:], pp.text); ok {
				return true
			}
			n := 1
			if c >= utf8.RuneSelf {
				_, n = decodeRuneAt(path, i)
			}
			i += n
		}
	}
	return false
}

// foldPathPrefix reports whether path starts with the lower-case pattern text
// when each of its runes is lower-cased as strings.ToLower does, and how
// many bytes of path that prefix spans.
func foldPathPrefix[S pathText](path S, text string) (int, bool) {
	i := 0
	for j := 0; j < len(text); {
		if i >= len(path) {
			return 0, false
		}
		c, w := path[i], text[j]
		if c < utf8.RuneSelf && w < utf8.RuneSelf {
			// unicode.ToLower, for ASCII.
			if 'A' <= c && c <= 'Z' {
				c += 'a' - 'A'
			}
			if c != w {
				return 0, false
			}
			i++
			j++
			continue
		}
		want, wn := utf8.DecodeRuneInString(text[j:])
		r, n := rune(c), 1
		if c >= utf8.RuneSelf {
			r, n = decodeRuneAt(path, i)
		}
		if unicode.ToLower(r) != want {
			return 0, false
		}
		i += n
		j += wn
	}
	return i, true
}

func foldPathSuffix[S pathText](path S, text string) bool {
	i, j := len(path), len(text)
	for j > 0 {
		if i == 0 {
			return false
		}
		want, wn := utf8.DecodeLastRuneInString(text[:j])
		r, n := decodeLastRune(path[:i])
		if unicode.ToLower(r) != want {
			return false
		}
		i -= n
		j -= wn
	}
	return true
}

// PathSet is a list of path patterns matched against a request-target the
// way a backend resolves it: the query cut off, decoded once, ";params"
// dropped, "\" read as "/", slashes merged, "." and ".." resolved. So
// /rest/* also covers /x/..;/rest/api and /REST//api, which Caddy's own
// path matcher (it cleans the decoded path but knows nothing of ";")
// would miss. The zero PathSet matches nothing.
type PathSet struct {
	patterns []PathPattern
}

// CompilePathSet compiles patterns; errors name the field, the item and
// its value.
func CompilePathSet(field string, items []string) (PathSet, error) {
	p, err := compilePathPatterns(field, items)
	return PathSet{patterns: p}, err
}

// IsZero reports whether the set has no patterns.
func (s PathSet) IsZero() bool { return len(s.patterns) == 0 }

// MatchTarget reports whether the resolved path of a raw request-target
// matches a pattern. It allocates nothing for paths up to 1 KiB, and
// matches a plain path (see plainPath), the common case, as it is.
func (s PathSet) MatchTarget(requestTarget string) bool {
	if len(s.patterns) == 0 {
		return false
	}
	return s.MatchTargetPath(NewTarget(requestTarget))
}

// MatchTargetPath is MatchTarget for a Target.
func (s PathSet) MatchTargetPath(t Target) bool {
	if len(s.patterns) == 0 {
		return false
	}
	if t.plain {
		return matchPathPatterns(s.patterns, t.path)
	}
	return s.matchResolved(t.path)
}

// matchResolved is MatchTarget for any path: decoded once, then normalised.
func (s PathSet) matchResolved(path string) bool {
	var decStack, normStack [stackPathLen]byte
	return matchPathPatterns(s.patterns, resolvePath(&decStack, &normStack, path))
}

// Resolved returns the path as the backend resolves it, the one PathSet
// and the Deny and Exempt patterns are matched on: decoded once,
// ";params" dropped, "\" read as "/", slashes merged, "." and ".."
// resolved; a plain path (see plainPath) as it is. Every decision on a
// request's path (path rules, protect, a token's scope) is made on this
// value, so that none judges a path the others never see. It allocates
// only for a path that is not plain.
func (t Target) Resolved() string {
	if t.plain {
		return t.path
	}
	var decStack, normStack [stackPathLen]byte
	return string(resolvePath(&decStack, &normStack, t.path))
}

// resolvePath decodes path once into decStack and normalises it into
// normStack (or into heap buffers if path is too long for them).
func resolvePath(decStack, normStack *[stackPathLen]byte, path string) []byte {
	buf := decStack[:]
	if len(path) > len(buf) {
		buf = make([]byte, len(path))
	}
	buf = buf[:decodePathOnce(buf, path)]
	return normalisePath(normalisedPathBuf(normStack, len(buf)), buf)
}
