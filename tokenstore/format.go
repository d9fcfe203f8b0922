package tokenstore

import (
	"crypto/rand"
	"crypto/sha256"
	"fmt"
	"hash/crc32"
	"strings"
	"unsafe"
)

// DefaultPrefix is the token prefix used when none is given.
const DefaultPrefix = "caddytok"

// Lengths of the parts of a token; see the package documentation.
const (
	maxPrefixLen = 16
	idLen        = 12
	secretLen    = 43
	checksumLen  = 6
	bodyLen      = idLen + secretLen + checksumLen
	minTokenLen  = 1 + 1 + bodyLen
	maxTokenLen  = maxPrefixLen + 1 + bodyLen
)

const (
	// idAlphabet is the lowercase RFC 4648 base32 alphabet: 5 bits a character.
	idAlphabet = "abcdefghijklmnopqrstuvwxyz234567"
	// base62Alphabet is used for the secret and the checksum.
	base62Alphabet = "0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz"
	// secretByteLimit is the largest multiple of 62 not above 256. Random
	// bytes at or above it are rejected, so byte%62 is uniform.
	secretByteLimit = 62 * (256 / 62)
)

// invalidDigit marks a byte that is not in an alphabet.
const invalidDigit = 0xff

// idDigits and base62Digits map a byte to its value in idAlphabet and
// base62Alphabet, or to invalidDigit.
var (
	idDigits     = digitTable(idAlphabet)
	base62Digits = digitTable(base62Alphabet)
)

func digitTable(alphabet string) [256]byte {
	var t [256]byte
	for i := range t {
		t[i] = invalidDigit
	}
	for i := 0; i < len(alphabet); i++ {
		t[alphabet[i]] = byte(i)
	}
	return t
}

// ValidPrefix reports whether prefix can start a token: 1 to 16 characters
// of a-z and 0-9, the first one a letter. The error wraps ErrInvalid and
// quotes the prefix.
func ValidPrefix(prefix string) error {
	if !validPrefix(prefix) {
		return fmt.Errorf("%w: prefix %q must be 1 to %d characters of a-z and 0-9, starting with a letter",
			ErrInvalid, prefix, maxPrefixLen)
	}
	return nil
}

func validPrefix(prefix string) bool {
	if len(prefix) < 1 || len(prefix) > maxPrefixLen || prefix[0] < 'a' || prefix[0] > 'z' {
		return false
	}
	for i := 1; i < len(prefix); i++ {
		c := prefix[i]
		if (c < 'a' || c > 'z') && (c < '0' || c > '9') {
			return false
		}
	}
	return true
}

// ValidID reports whether id has the shape of a token id: 12 characters of
// a-z and 2-7. It says nothing about whether such a token exists.
func ValidID(id string) bool {
	if len(id) != idLen {
		return false
	}
	for i := 0; i < len(id); i++ {
		if idDigits[id[i]] == invalidDigit {
			return false
		}
	}
	return true
}

// Generate returns a new random id and the full token string carrying it.
// The token is the secret: show it once and keep only Hash(token).
func Generate(prefix string) (id, token string, err error) {
	if err := ValidPrefix(prefix); err != nil {
		return "", "", err
	}
	id, err = newID()
	if err != nil {
		return "", "", err
	}
	token, err = newToken(prefix, id)
	if err != nil {
		return "", "", err
	}
	return id, token, nil
}

// newID returns 60 random bits as 12 base32 characters.
func newID() (string, error) {
	var b [idLen]byte
	if _, err := rand.Read(b[:]); err != nil {
		return "", fmt.Errorf("generating token id: %w", err)
	}
	for i := range b {
		b[i] = idAlphabet[b[i]&31] // 256 is a multiple of 32: no bias
	}
	return string(b[:]), nil
}

// newToken returns a token for id with a fresh secret.
func newToken(prefix, id string) (string, error) {
	var secret [secretLen]byte
	var random [64]byte
	for n := 0; n < secretLen; {
		if _, err := rand.Read(random[:]); err != nil {
			return "", fmt.Errorf("generating token secret: %w", err)
		}
		for _, c := range random {
			if c >= secretByteLimit {
				continue
			}
			secret[n] = base62Alphabet[c%62]
			n++
			if n == secretLen {
				break
			}
		}
	}
	return assemble(prefix, id, string(secret[:])), nil
}

// assemble joins the parts of a token and appends its checksum.
func assemble(prefix, id, secret string) string {
	b := make([]byte, 0, len(prefix)+1+bodyLen)
	b = append(b, prefix...)
	b = append(b, '_')
	b = append(b, id...)
	b = append(b, secret...)
	sum := crc32.ChecksumIEEE(b)
	var digits [checksumLen]byte
	for i := checksumLen - 1; i >= 0; i-- {
		digits[i] = base62Alphabet[sum%62]
		sum /= 62
	}
	return string(append(b, digits[:]...))
}

// Parse checks that token has the shape of a token (prefix, length,
// alphabets) and a correct checksum, and returns its id, a substring of
// token. It never touches a database, so it can't say whether the token
// exists; Store.Lookup does. Parse does not allocate.
func Parse(token string) (id string, ok bool) {
	if len(token) < minTokenLen || len(token) > maxTokenLen {
		return "", false
	}
	// The body is the last bodyLen bytes, after the prefix's '_'. Its
	// alphabets have no '_', so this is the token's last '_' exactly when
	// the body checks below pass; reading it in place spares scanning the
	// body backwards for it.
	sep := len(token) - bodyLen - 1
	if token[sep] != '_' || !validPrefix(token[:sep]) {
		return "", false
	}
	body := token[sep+1:]
	id = body[:idLen]
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
	if sum != uint64(crc32String(token[:len(token)-checksumLen])) {
		return "", false
	}
	return id, true
}

// crc32String is crc32.ChecksumIEEE for a string, without the copy that
// converting it to a []byte makes (and that would allocate: crc32
// dispatches through a function value, so even a stack copy escapes). It
// hands crc32 a read-only view of the string's bytes, which is sound as
// ChecksumIEEE neither writes nor keeps its argument. On amd64 and arm64
// that is the CPU's carry-less multiplication: about 10 ns for a token,
// with no tables to pull into the caches (BenchmarkCRC32String).
func crc32String(s string) uint32 {
	return crc32.ChecksumIEEE(unsafe.Slice(unsafe.StringData(s), len(s)))
}

// Hash returns the SHA-256 of the whole token string, the only form in which
// a token is stored. It does not allocate for strings up to the length of a
// token.
func Hash(token string) [32]byte {
	if len(token) > maxTokenLen {
		return sha256.Sum256([]byte(token))
	}
	// A []byte(token) conversion would be copied to the heap; a fixed
	// array stays on the stack.
	var buf [maxTokenLen]byte
	n := copy(buf[:], token)
	return sha256.Sum256(buf[:n])
}

// Hint returns a short, non-secret reminder of a token for listings: its
// prefix and last four characters (part of the checksum), as in
// "caddytok_…AbCd". For a string that is not a token it returns "…".
func Hint(token string) string {
	if _, ok := Parse(token); !ok {
		return "…"
	}
	sep := strings.LastIndexByte(token, '_')
	return token[:sep+1] + "…" + token[len(token)-4:]
}
