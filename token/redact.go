package token

import "strings"

// Redacted replaces the secret of a token-like string in Redact.
const Redacted = "[redacted]"

// minRedactRun is how many letters and digits after a '_' make a string
// token-like for Redact: the public id and a few characters of a secret,
// so that a token cut short, mistyped or run into other text is caught as
// well as a whole one.
const minRedactRun = idLen + 8

// Redact returns s with every token-like string in it replaced, for text
// that a client typed and that is going to be recorded (a user name, a
// path, a host). A token-like string is a '_' followed by at least 20 ASCII
// letters and digits, with the letters and digits right before the '_':
// every string that ParseShape accepts, whatever its prefix or checksum,
// and the near misses of one (a character short or long, mistyped, the
// prefix in capitals). It becomes its prefix, if that is a valid token
// prefix (or none), and "_[redacted]": "caddytok_[redacted]"; otherwise
// "[redacted]" replaces the prefix and the '_' too. Redact returns s
// itself, not a copy, when it has nothing to replace.
func Redact(s string) string {
	if strings.IndexByte(s, '_') < 0 {
		return s
	}
	var b strings.Builder
	done := 0 // s[:done] is written or redacted
	for i := 0; i < len(s); i++ {
		if s[i] != '_' {
			continue
		}
		end := i + 1
		for end < len(s) && base62Digits[s[end]] != invalidDigit {
			end++
		}
		if end-(i+1) < minRedactRun {
			continue
		}
		start := i
		for start > done && base62Digits[s[start-1]] != invalidDigit {
			start--
		}
		b.WriteString(s[done:start])
		if start == i || validPrefix(s[start:i]) {
			b.WriteString(s[start : i+1])
		}
		b.WriteString(Redacted)
		done, i = end, end-1
	}
	if done == 0 {
		return s
	}
	b.WriteString(s[done:])
	return b.String()
}
