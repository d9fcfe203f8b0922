package policy

import (
	"unicode"
	"unicode/utf8"
)

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
