package policy

import (
	"fmt"
	pathpkg "path"
	"strings"
	"unicode"
	"unicode/utf8"
)

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
