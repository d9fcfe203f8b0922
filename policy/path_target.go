package policy

import (
	"strings"
)

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

// plainPathByte marks the ASCII bytes no rule looks at: scanLevel only
// notes that the segment name holds something besides dots.
var plainPathByte = func() (t [256]bool) {
	for c := 0x21; c < 0x7f; c++ {
		t[c] = !strings.ContainsRune(`%{/\.;:?#`, rune(c))
	}
	return t
}()

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
