package token

import (
	"crypto/rand"
	"crypto/sha256"
	"errors"
	"fmt"
	"hash/crc32"
	"strings"
	"unsafe"
)

// DefaultPrefix is the token prefix used when none is given.
const DefaultPrefix = "caddytok"

// ErrInvalid: an argument is malformed, such as a prefix that ValidPrefix
// refuses; the message names it. tokenstore.ErrInvalid is the same value.
var ErrInvalid = errors.New("invalid input")

// Lengths of the parts of a token; see the package documentation.
const (
	IDLen     = 12 // the public id
	SecretLen = 43 // the secret

	maxPrefixLen = 16
	idLen        = IDLen
	secretLen    = SecretLen
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

// Key returns the 60 bits that a valid id (see ValidID) encodes, most
// significant character first, and whether id is one: 0, false for an id
// that Parse refuses (and 0, true for the id of twelve "a"s). It is a
// number to key what is kept per token by, in place of the id string.
func Key(id string) (key uint64, ok bool) {
	if len(id) != idLen || !idWord(load8(id, 0)) || !idWord(load8(id, idLen-8)) {
		return 0, false
	}
	for i := 0; i < idLen; i++ {
		// Worked out rather than looked up in idDigits (see idWord).
		c := id[i]
		d := uint64(c - 'a')
		if c < 'a' {
			d = uint64(c-'2') + 26
		}
		key = key<<5 | d
	}
	return key, true
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

// GenerateFor returns a token for an existing id with a fresh secret, for
// rotating a token while keeping its id. The token is the secret, as with
// Generate.
func GenerateFor(prefix, id string) (token string, err error) {
	if err := ValidPrefix(prefix); err != nil {
		return "", err
	}
	if !ValidID(id) {
		return "", fmt.Errorf("%w: %q is not a token id", ErrInvalid, id)
	}
	return newToken(prefix, id)
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
// exists; a store's look-up does. Parse does not allocate.
func Parse(token string) (id string, ok bool) {
	if id, ok = ParseShape(token); !ok || !ValidChecksum(token) {
		return "", false
	}
	return id, true
}

// ParseShape is Parse without the checksum: for a caller that goes on to
// a look-up by Hash at once (tokenstore's LookupID), which finds a token
// only if the SHA-256 of its whole string, checksum included, is a stored
// token's, so a token it finds has a valid checksum. If the look-up does
// not find it, ValidChecksum tells a malformed token from an unknown one.
// A gate that accepts a token pays for one hash, not two.
func ParseShape(token string) (id string, ok bool) {
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
	// The alphabets are checked eight bytes at a time, in words that
	// overlap at the ends of the id and of the body.
	if !idWord(load8(body, 0)) || !idWord(load8(body, idLen-8)) {
		return "", false
	}
	for i := idLen; i+8 <= bodyLen; i += 8 {
		if !base62Word(load8(body, i)) {
			return "", false
		}
	}
	if !base62Word(load8(body, bodyLen-8)) {
		return "", false
	}
	return body[:idLen], true
}

// ValidChecksum reports whether the last characters of token, which
// ParseShape accepted, are the checksum of the rest.
func ValidChecksum(token string) bool {
	var sum uint64
	for i := len(token) - checksumLen; i < len(token); i++ {
		sum = sum*62 + base62Value(token[i])
	}
	return sum == uint64(crc32String(token[:len(token)-checksumLen]))
}

// Word-at-a-time alphabet checks (SWAR): eight bytes in a uint64, with a
// byte's high bit as its verdict. They need no table, whose cache lines a
// request under load would find evicted, and take a few instructions for
// eight bytes. TestAlphabetWords holds them to idDigits and base62Digits
// for every byte at every position.
const (
	ones  = 0x0101010101010101
	highs = 0x8080808080808080
)

// load8 reads s[i:i+8] as a little-endian word.
func load8(s string, i int) uint64 {
	s = s[i : i+8]
	return uint64(s[0]) | uint64(s[1])<<8 | uint64(s[2])<<16 | uint64(s[3])<<24 |
		uint64(s[4])<<32 | uint64(s[5])<<40 | uint64(s[6])<<48 | uint64(s[7])<<56
}

// inRange sets the high bit of each byte of x that lies in [lo, hi], for x
// without high bits and 0x30 <= lo <= hi < 0x80: adding 0x80-lo sets a
// byte's high bit when it is at least lo, adding 0x7f-hi when it is above
// hi, and neither sum carries into the next byte.
func inRange(x uint64, lo, hi byte) uint64 {
	return (x + ones*uint64(0x80-lo)) &^ (x + ones*uint64(0x7f-hi)) & highs
}

// idWord reports whether all eight bytes of x are in idAlphabet.
func idWord(x uint64) bool {
	return x&highs == 0 && inRange(x, 'a', 'z')|inRange(x, '2', '7') == highs
}

// base62Word reports whether all eight bytes of x are in base62Alphabet.
func base62Word(x uint64) bool {
	return x&highs == 0 && inRange(x, '0', '9')|inRange(x, 'A', 'Z')|inRange(x, 'a', 'z') == highs
}

// base62Value is the value of a byte of base62Alphabet, worked out rather
// than looked up:
// '0' is 0, 'A' 10 and 'a' 36.
func base62Value(c byte) uint64 {
	v := uint64(c) - '0'
	if c >= 'A' {
		v -= 7
	}
	if c >= 'a' {
		v -= 6
	}
	return v
}

// crc32String is crc32.ChecksumIEEE for a string, without the copy that
// converting it to a []byte makes (and that would allocate: crc32
// dispatches through a function value, so even a stack copy escapes). It
// hands crc32 a read-only view of the string's bytes, which is sound as
// ChecksumIEEE neither writes nor keeps its argument. On amd64 and arm64
// that is the CPU's carry-less multiplication, with no tables to pull
// into the caches (BenchmarkCRC32String).
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
