package policy

import (
	"unicode/utf8"
)

func normalisedPathBuf(stack *[stackPathLen]byte, n int) []byte {
	if n+1 > len(stack) {
		return make([]byte, 0, n+1)
	}
	return stack[:0]
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
