package token

import (
	"crypto/sha256"
	"errors"
	"hash/crc32"
	"math/rand/v2"
	"regexp"
	"strings"
	"testing"
)

// scannerRE is the pattern documented for secret scanners in doc.go.
var scannerRE = regexp.MustCompile(`^[a-z][a-z0-9]{0,15}_[a-z2-7]{12}[0-9A-Za-z]{49}$`)

// fixedToken builds a deterministic, well-formed token.
func fixedToken(t testing.TB, prefix string) string {
	t.Helper()
	token := assemble(prefix, "abcdefgh2345", "0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefg")
	if _, ok := Parse(token); !ok {
		t.Fatalf("fixed token %q does not parse", token)
	}
	return token
}

func mustGenerate(t testing.TB, prefix string) (id, token string) {
	t.Helper()
	id, token, err := Generate(prefix)
	if err != nil {
		t.Fatalf("Generate(%q): %v", prefix, err)
	}
	return id, token
}

func TestGenerateParse(t *testing.T) {
	for _, prefix := range []string{"a", "caddytok", "acme2", "z123456789abcdef"} {
		t.Run(prefix, func(t *testing.T) {
			id, token := mustGenerate(t, prefix)
			if want := len(prefix) + 1 + bodyLen; len(token) != want {
				t.Errorf("len(token) = %d, want %d", len(token), want)
			}
			if !strings.HasPrefix(token, prefix+"_") {
				t.Errorf("token %q does not start with %q", token, prefix+"_")
			}
			if !scannerRE.MatchString(token) {
				t.Errorf("token %q does not match the documented pattern", token)
			}
			if !ValidID(id) {
				t.Errorf("ValidID(%q) = false", id)
			}
			got, ok := Parse(token)
			if !ok || got != id {
				t.Errorf("Parse(token) = %q, %v; want %q, true", got, ok, id)
			}
		})
	}
}

func TestGenerateInvalidPrefix(t *testing.T) {
	_, _, err := Generate("Bad")
	if !errors.Is(err, ErrInvalid) {
		t.Fatalf("Generate(\"Bad\") error = %v, want ErrInvalid", err)
	}
}

func TestValidPrefix(t *testing.T) {
	tests := []struct {
		prefix string
		ok     bool
	}{
		{"a", true},
		{"caddytok", true},
		{"ab12", true},
		{"abcdefghijklmnop", true}, // 16
		{"", false},
		{"abcdefghijklmnopq", false}, // 17
		{"1abc", false},              // starts with a digit
		{"Caddytok", false},
		{"caddy_tok", false},
		{"caddy-tok", false},
		{"caddytok ", false},
		{"cäddy", false},
	}
	for _, tt := range tests {
		t.Run(tt.prefix, func(t *testing.T) {
			err := ValidPrefix(tt.prefix)
			if (err == nil) != tt.ok {
				t.Fatalf("ValidPrefix(%q) = %v, want ok=%v", tt.prefix, err, tt.ok)
			}
			if err != nil {
				if !errors.Is(err, ErrInvalid) {
					t.Errorf("error %v does not wrap ErrInvalid", err)
				}
				if !strings.Contains(err.Error(), `"`+tt.prefix+`"`) {
					t.Errorf("error %q does not quote the prefix", err)
				}
			}
		})
	}
}

func TestValidID(t *testing.T) {
	tests := []struct {
		name, id string
		ok       bool
	}{
		{"ok", "abcdefgh2345", true},
		{"all digits allowed", "234567234567", true},
		{"short", "abcdefgh234", false},
		{"long", "abcdefgh23456", false},
		{"empty", "", false},
		{"upper", "Abcdefgh2345", false},
		{"digit 1", "abcdefgh1345", false},
		{"digit 8", "abcdefgh8345", false},
		{"digit 0", "abcdefgh0345", false},
		{"underscore", "abcdefgh_345", false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := ValidID(tt.id); got != tt.ok {
				t.Errorf("ValidID(%q) = %v, want %v", tt.id, got, tt.ok)
			}
		})
	}
}

func TestParseRejects(t *testing.T) {
	good := fixedToken(t, "caddytok")
	body := good[len("caddytok_"):]
	withSecretChar := func(c byte) string {
		b := []byte(good)
		b[len("caddytok_")+idLen+3] = c
		return string(b)
	}
	tests := []struct {
		name, token string
	}{
		{"empty", ""},
		{"prefix only", "caddytok_"},
		{"no separator", "caddytok" + body},
		{"empty prefix", "_" + body},
		{"upper-case prefix", "Caddytok_" + body},
		{"prefix too long", "abcdefghijklmnopq_" + body},
		{"prefix with digit first", "1addytok_" + body},
		{"two separators", "caddy_tok_" + body},
		{"body one short", good[:len(good)-1]},
		{"body one long", good + "0"},
		{"leading space", " " + good},
		{"trailing newline", good + "\n"},
		{"bad secret character", withSecretChar('-')},
		{"non-ASCII secret character", withSecretChar(0xc3)},
		{"swapped case", strings.ToUpper(good[:1]) + good[1:]},
		{"way too long", strings.Repeat("a", 10000)},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if id, ok := Parse(tt.token); ok {
				t.Errorf("Parse(%q) = %q, true; want false", tt.token, id)
			}
		})
	}
}

// TestParseRejectsSingleChanges: the checksum catches every one-character
// substitution (CRC-32 detects every burst of up to 32 bits), and the fixed
// layout catches deletions, insertions and swaps of neighbours.
func TestParseRejectsSingleChanges(t *testing.T) {
	_, random := mustGenerate(t, DefaultPrefix)
	tokens := map[string]string{
		"fixed":        fixedToken(t, DefaultPrefix),
		"short prefix": fixedToken(t, "a"),
		"long prefix":  fixedToken(t, "abcdefghijklmnop"),
		"random":       random,
	}
	for name, token := range tokens {
		t.Run(name, func(t *testing.T) {
			reject := func(change, changed string) {
				t.Helper()
				if changed == token {
					return
				}
				if id, ok := Parse(changed); ok {
					t.Errorf("%s: Parse(%q) = %q, true; want false", change, changed, id)
				}
			}
			for i := 0; i < len(token); i++ {
				for c := 0; c < 256; c++ {
					reject("substitution", token[:i]+string([]byte{byte(c)})+token[i+1:])
					reject("insertion", token[:i]+string([]byte{byte(c)})+token[i:])
				}
				reject("deletion", token[:i]+token[i+1:])
				if i+1 < len(token) {
					reject("swap", token[:i]+token[i+1:i+2]+token[i:i+1]+token[i+2:])
				}
			}
		})
	}
}

// TestSecretDistribution checks the alphabets and that characters are
// uniform: plain byte%62 would make the first 8 base62 digits 25% likelier.
func TestSecretDistribution(t *testing.T) {
	const n = 2000
	var secretCounts [256]int
	var idCounts [256]int
	seenIDs := make(map[string]bool, n)
	seenSecrets := make(map[string]bool, n)
	for range n {
		id, token := mustGenerate(t, DefaultPrefix)
		body := token[len(DefaultPrefix)+1:]
		secret := body[idLen : idLen+secretLen]
		if seenIDs[id] || seenSecrets[secret] {
			t.Fatalf("repeated id %q or secret", id)
		}
		seenIDs[id], seenSecrets[secret] = true, true
		for i := 0; i < len(id); i++ {
			idCounts[id[i]]++
		}
		for i := 0; i < len(secret); i++ {
			secretCounts[secret[i]]++
		}
	}

	checkUniform := func(name, alphabet string, counts *[256]int, total int) {
		t.Helper()
		want := float64(total) / float64(len(alphabet))
		inAlphabet := 0
		for i := 0; i < len(alphabet); i++ {
			got := float64(counts[alphabet[i]])
			inAlphabet += counts[alphabet[i]]
			if got < want*0.8 || got > want*1.2 {
				t.Errorf("%s: %q appears %v times, want about %v", name, alphabet[i], got, want)
			}
		}
		if inAlphabet != total {
			t.Errorf("%s: %d of %d characters outside the alphabet", name, total-inAlphabet, total)
		}
	}
	checkUniform("id", idAlphabet, &idCounts, n*idLen)
	checkUniform("secret", base62Alphabet, &secretCounts, n*secretLen)

	var low, high int
	for i := 0; i < len(base62Alphabet); i++ {
		if i < 256%62 {
			low += secretCounts[base62Alphabet[i]]
		} else {
			high += secretCounts[base62Alphabet[i]]
		}
	}
	lowMean, highMean := float64(low)/float64(256%62), float64(high)/float64(62-256%62)
	if r := lowMean / highMean; r < 0.95 || r > 1.05 {
		t.Errorf("digits 0-7 appear %.3f times as often as the others: modulo bias", r)
	}
}

// TestCRC32String compares crc32String with hash/crc32 on a copy, on
// random strings of every length up to a few blocks of 16, each starting
// at every offset of a buffer (so that no alignment is assumed), and on
// tokens: the view of the string's bytes must be exactly its bytes.
func TestCRC32String(t *testing.T) {
	r := rand.New(rand.NewPCG(1, 2))
	buf := make([]byte, 200+16)
	for n := range 200 {
		for off := range 16 {
			b := buf[off : off+n]
			for i := range b {
				b[i] = byte(r.Uint32())
			}
			if got, want := crc32String(string(b)), crc32.ChecksumIEEE(b); got != want {
				t.Fatalf("crc32String(%x) = %08x, want %08x", b, got, want)
			}
		}
	}
	for _, prefix := range []string{"a", DefaultPrefix, "abcdefghijklmnop"} {
		_, token := mustGenerate(t, prefix)
		s := token[:len(token)-checksumLen]
		if got, want := crc32String(s), crc32.ChecksumIEEE([]byte(s)); got != want {
			t.Errorf("crc32String(%q) = %08x, want %08x", s, got, want)
		}
	}
}

func TestHash(t *testing.T) {
	tests := []struct{ name, in string }{
		{"empty", ""},
		{"token", fixedToken(t, DefaultPrefix)},
		{"longest token", fixedToken(t, "abcdefghijklmnop")},
		{"longer than a token", strings.Repeat("x", maxTokenLen+1)},
		{"long", strings.Repeat("xyz", 1000)},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got, want := Hash(tt.in), sha256.Sum256([]byte(tt.in)); got != want {
				t.Errorf("Hash = %x, want %x", got, want)
			}
		})
	}
}

func TestHint(t *testing.T) {
	token := fixedToken(t, "acme")
	want := "acme_…" + token[len(token)-4:]
	if got := Hint(token); got != want {
		t.Errorf("Hint(%q) = %q, want %q", token, got, want)
	}
	if got := Hint("not a token"); got != "…" {
		t.Errorf("Hint(not a token) = %q, want \"…\"", got)
	}
}

func TestFormatAllocs(t *testing.T) {
	token := fixedToken(t, "abcdefghijklmnop") // the longest token
	bad := token[:len(token)-1] + "x"
	tests := []struct {
		name string
		f    func()
	}{
		{"Parse", func() { Parse(token) }},
		{"Parse malformed", func() { Parse(bad) }},
		{"crc32String", func() { crc32String(token) }},
		{"Hash", func() { Hash(token) }},
		{"ValidID", func() { ValidID("abcdefgh2345") }},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if n := testing.AllocsPerRun(100, tt.f); n != 0 {
				t.Errorf("%v allocations, want 0", n)
			}
		})
	}
}

// TestAlphabetWords holds the word-at-a-time alphabet checks to the digit
// tables: every byte value at every position of a word of valid bytes,
// and words of random valid bytes.
func TestAlphabetWords(t *testing.T) {
	word := func(fill byte, p int, c byte) uint64 {
		b := []byte(strings.Repeat(string(fill), 8))
		b[p] = c
		return load8(string(b), 0)
	}
	for _, fill := range []byte{'a', 'z', '2', '7'} {
		for p := range 8 {
			for c := range 256 {
				if got, want := idWord(word(fill, p, byte(c))), idDigits[c] != invalidDigit; got != want {
					t.Errorf("idWord with %q at %d among %q: %v, want %v", byte(c), p, fill, got, want)
				}
			}
		}
	}
	for _, fill := range []byte{'0', '9', 'A', 'Z', 'a', 'z'} {
		for p := range 8 {
			for c := range 256 {
				if got, want := base62Word(word(fill, p, byte(c))), base62Digits[c] != invalidDigit; got != want {
					t.Errorf("base62Word with %q at %d among %q: %v, want %v", byte(c), p, fill, got, want)
				}
			}
		}
	}
	for range 1000 {
		var id, b62 [8]byte
		for i := range 8 {
			id[i] = idAlphabet[rand.IntN(len(idAlphabet))]
			b62[i] = base62Alphabet[rand.IntN(len(base62Alphabet))]
		}
		if !idWord(load8(string(id[:]), 0)) || !base62Word(load8(string(b62[:]), 0)) {
			t.Fatalf("valid words refused: %q %q", id, b62)
		}
	}
	for c := range 256 {
		if d := base62Digits[c]; d != invalidDigit && base62Value(byte(c)) != uint64(d) {
			t.Errorf("base62Value(%q) = %d, want %d", byte(c), base62Value(byte(c)), d)
		}
	}
}

func TestGenerateFor(t *testing.T) {
	id, _ := mustGenerate(t, DefaultPrefix)
	token, err := GenerateFor("acme", id)
	if err != nil {
		t.Fatalf("GenerateFor: %v", err)
	}
	if got, ok := Parse(token); !ok || got != id || !strings.HasPrefix(token, "acme_") {
		t.Errorf("GenerateFor(acme, %q) = %q, which parses to %q, %v", id, token, got, ok)
	}
	for _, tt := range []struct{ name, prefix, id string }{
		{"bad prefix", "Acme", id},
		{"bad id", "acme", "abcdefgh1345"},
	} {
		t.Run(tt.name, func(t *testing.T) {
			if tok, err := GenerateFor(tt.prefix, tt.id); !errors.Is(err, ErrInvalid) || tok != "" {
				t.Errorf("GenerateFor(%q, %q) = %q, %v; want ErrInvalid", tt.prefix, tt.id, tok, err)
			}
		})
	}
}
