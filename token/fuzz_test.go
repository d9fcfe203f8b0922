package token

import (
	"hash/crc32"
	"strings"
	"testing"
)

// FuzzParse checks that Parse never panics and that whatever it accepts is a
// token this package could have produced: a valid prefix, a valid id that is
// the substring right after the last '_', alphabets and checksum that
// re-assemble to the very same string.
func FuzzParse(f *testing.F) {
	good := assemble("caddytok", "abcdefgh2345", "0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefg")
	seeds := []string{
		good, // well-formed
		assemble("a", "234567234567", strings.Repeat("z", secretLen)),                // shortest prefix
		assemble("abcdefghijklmnop", "zzzzzzzzzzzz", strings.Repeat("0", secretLen)), // longest prefix
		good[:len(good)-1] + "0",            // checksum off by one digit
		good[:len(good)-1],                  // one character short
		good + "0",                          // one character long
		"caddy_" + good,                     // an extra '_' before the prefix
		strings.Replace(good, "_", "-", 1),  // no separator
		"Caddytok" + good[len("caddytok"):], // upper-case prefix
		"",                                  // empty
		"_",                                 // separator only
		"caddytok_",                         // prefix only
		"caddytok_" + strings.Repeat("\xff", bodyLen), // bytes outside every alphabet
		"caddytok_" + strings.Repeat("é", bodyLen/2),  // multi-byte UTF-8
		"Bearer " + good, // a header value, not a token
	}
	for _, s := range seeds {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		id, ok := Parse(s)
		if rid, rok := refParse(s); id != rid || ok != rok {
			t.Fatalf("Parse(%q) = %q, %v; the reference says %q, %v", s, id, ok, rid, rok)
		}
		// Parse is ParseShape and then ValidChecksum.
		if sid, shaped := ParseShape(s); shaped && ValidChecksum(s) != ok || shaped && ok && sid != id || !shaped && ok {
			t.Fatalf("Parse(%q) = %q, %v; but ParseShape = %q, %v", s, id, ok, sid, shaped)
		}
		if !ok {
			if id != "" {
				t.Fatalf("Parse(%q) = %q, false; want an empty id", s, id)
			}
			return
		}
		sep := strings.LastIndexByte(s, '_')
		if sep < 0 {
			t.Fatalf("Parse(%q) accepted a string without '_'", s)
		}
		prefix, body := s[:sep], s[sep+1:]
		if err := ValidPrefix(prefix); err != nil {
			t.Fatalf("Parse(%q) accepted prefix: %v", s, err)
		}
		if len(body) != bodyLen || id != body[:idLen] {
			t.Fatalf("Parse(%q) = %q, which is not the start of the body %q", s, id, body)
		}
		if !ValidID(id) {
			t.Fatalf("Parse(%q) = %q, not a valid id", s, id)
		}
		if again := assemble(prefix, id, body[idLen:idLen+secretLen]); again != s {
			t.Fatalf("Parse(%q) accepted it, but re-assembling gives %q", s, again)
		}
		if !scannerRE.MatchString(s) {
			t.Fatalf("Parse(%q) accepted a string the documented pattern rejects", s)
		}
		if h := Hint(s); !strings.HasPrefix(h, prefix+"_…") {
			t.Fatalf("Hint(%q) = %q", s, h)
		}
	})
}

// refParse is Parse as first written, a byte at a time with the digit
// tables: the reference FuzzParse holds the word-at-a-time checks to.
func refParse(token string) (string, bool) {
	if len(token) < minTokenLen || len(token) > maxTokenLen {
		return "", false
	}
	sep := strings.LastIndexByte(token, '_')
	if sep < 0 || len(token)-sep-1 != bodyLen || !validPrefix(token[:sep]) {
		return "", false
	}
	body := token[sep+1:]
	id := body[:idLen]
	if !ValidID(id) {
		return "", false
	}
	for i := idLen; i < idLen+secretLen; i++ {
		if base62Digits[body[i]] == invalidDigit {
			return "", false
		}
	}
	var sum uint64
	for i := idLen + secretLen; i < bodyLen; i++ {
		d := base62Digits[body[i]]
		if d == invalidDigit {
			return "", false
		}
		sum = sum*62 + uint64(d)
	}
	if sum != uint64(crc32.ChecksumIEEE([]byte(token[:len(token)-checksumLen]))) {
		return "", false
	}
	return id, true
}
