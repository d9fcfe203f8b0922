package policy

import (
	"fmt"
	"math/bits"
	"strings"
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
