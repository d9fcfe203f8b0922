package policy

import (
	"bytes"
	"encoding/base64"
	"errors"
	"strings"
	"unsafe"
)

// Scheme says where a credential came from.
type Scheme uint8

// The credential schemes the gate reads.
const (
	// SchemeNone: no credential.
	SchemeNone Scheme = iota
	// SchemeBasic: Authorization: Basic base64(user ":" secret), RFC 7617.
	SchemeBasic
	// SchemeBearer: Authorization: Bearer <token>, RFC 6750.
	SchemeBearer
	// SchemeHeader: a bare token in a configured request header.
	SchemeHeader
	// SchemeQuery: a bare token in a configured query parameter.
	SchemeQuery
)

// String returns the scheme's lowercase name as audit records carry it.
func (s Scheme) String() string {
	switch s {
	case SchemeBasic:
		return "basic"
	case SchemeBearer:
		return "bearer"
	case SchemeHeader:
		return "header"
	case SchemeQuery:
		return "query"
	}
	return "none"
}

// Credential is what a request presents. For SchemeBasic, User is the
// user-id and Secret the password (which may or may not be a token); for the
// other schemes User is empty and Secret is the bare token.
type Credential struct {
	Scheme Scheme
	User   string
	Secret string
	// UserToken is set for a Basic credential whose user-id is the token
	// (GitHub's convention: "<token>:" or "<token>:x-oauth-basic"). It
	// names no user, and the token is judged as a bare one: User is
	// empty, and never the token.
	UserToken bool
}

// MaxCredentialLength bounds an Authorization value (or a bare token) the
// gate will look at; anything longer is malformed. Tokens are under 100
// bytes; the bound leaves room for long Basic user names and passwords.
const MaxCredentialLength = 4096

// Errors from ParseAuthorization. They name what is wrong and never carry
// any part of the credential.
var (
	ErrCredentialTooLong = errors.New("credential too long")
	ErrUnsupportedScheme = errors.New("unsupported authorization scheme")
	ErrMalformedBasic    = errors.New("malformed basic credentials")
	ErrEmptyBearer       = errors.New("empty bearer token")
)

// ParseAuthorization parses the value of an Authorization header. Scheme
// names compare case-insensitively (RFC 7235 §2.1) in ASCII only, so that
// no other letter stands for an ASCII one ("Baſic"), and one or more spaces
// may separate the scheme from its parameter. An empty value yields
// SchemeNone and no error. Other schemes (Digest, Negotiate, …) give
// ErrUnsupportedScheme: the gate does not pass credentials it cannot check.
// A Basic credential costs one allocation, the string User and Secret are
// both cut from.
func ParseAuthorization(v string) (Credential, error) {
	scheme, param, err := SplitAuthorization(v)
	if scheme != SchemeBasic {
		return Credential{Scheme: scheme, Secret: param}, err
	}
	var buf BasicBuffer
	user, secret, err := DecodeBasic(&buf, param)
	if err != nil {
		return Credential{}, err
	}
	// user and secret are views of buf: one copy of both, so buf stays
	// on the stack.
	raw := user + ":" + secret
	return Credential{Scheme: SchemeBasic, User: raw[:len(user)], Secret: raw[len(user)+1:]}, nil
}

// SplitAuthorization reads an Authorization value as ParseAuthorization
// does, but leaves a Basic parameter encoded, for DecodeBasic. For Bearer
// it returns the token; on error, SchemeNone.
func SplitAuthorization(v string) (Scheme, string, error) {
	if v == "" {
		return SchemeNone, "", nil
	}
	if len(v) > MaxCredentialLength {
		return SchemeNone, "", ErrCredentialTooLong
	}
	scheme, param, _ := strings.Cut(v, " ")
	param = strings.TrimLeft(param, " ")
	switch {
	case equalFoldASCII(scheme, "Basic"):
		return SchemeBasic, param, nil
	case equalFoldASCII(scheme, "Bearer"):
		// Two IndexByte calls are SIMD scans; ContainsAny goes byte by byte.
		if param == "" || strings.IndexByte(param, ' ') >= 0 || strings.IndexByte(param, '\t') >= 0 {
			return SchemeNone, "", ErrEmptyBearer
		}
		return SchemeBearer, param, nil
	}
	return SchemeNone, "", ErrUnsupportedScheme
}

// basicBufferLen is the size of a BasicBuffer: base64.StdEncoding.DecodedLen
// of Basic parameters of up to 680 characters, 510 decoded bytes. A user
// name and a token take about 100, and pass-through passwords seldom a few
// hundred.
const basicBufferLen = 512

// BasicBuffer is room for a decoded Basic credential, for DecodeBasic.
//
// Contract: the user and secret strings DecodeBasic returns are views of
// the buffer, not copies (unsafe.String). They are valid only until the
// buffer is next written, cleared or handed to anyone else (put back in a
// pool); whoever holds the buffer owns them, and must copy
// (strings.Clone) any part it keeps longer, and must not let them reach
// anything that outlives its use of the buffer: a log field, an audit
// event, a map, another goroutine. The secret is in the buffer: clear
// what DecodeBasic wrote before the buffer is reused or dropped.
// DecodeBasic with a stack buffer in one function's frame is the simple
// safe case (ParseAuthorization); a pooled buffer is what the gate uses,
// as an allocation per request costs it more
// (BenchmarkServeHTTP/tokens=1000/valid_basic).
type BasicBuffer [basicBufferLen]byte

// DecodeBasic decodes the parameter of a Basic credential as
// base64.StdEncoding.DecodeString does (padding required, CR and LF
// ignored) into buf, and splits it at the first colon. A credential with a
// control character is malformed (RFC 7617 §2: RFC 5198's CC, that is C0,
// DEL and, in UTF-8, C1): a user-id with a line break or an escape code
// would reach logs and terminals. It allocates
// nothing: user and secret share buf's memory, and hold only as long as
// buf is neither written nor reused, so a caller copies (strings.Clone)
// what it keeps longer. (Kept in a function's frame, buf stays on the
// stack for as long as neither string escapes: Go's escape analysis sees
// where they come from.) A parameter too long for buf is decoded into a
// buffer of its own, on the heap.
func DecodeBasic(buf *BasicBuffer, param string) (user, secret string, err error) {
	b := buf[:]
	if n := base64.StdEncoding.DecodedLen(len(param)); n > len(b) {
		b = make([]byte, n)
	}
	n, err := base64.StdEncoding.Decode(b, []byte(param))
	if err != nil {
		return "", "", ErrMalformedBasic
	}
	colon := bytes.IndexByte(b[:n], ':')
	if colon < 0 || hasControl(b[:n]) {
		return "", "", ErrMalformedBasic
	}
	return view(b[:colon]), view(b[colon+1 : n]), nil
}

// hasControl reports whether b holds a control character: a C0 control
// (below 0x20), DEL, or a C1 control (U+0080 to U+009F) in UTF-8, which
// encodes them as 0xC2 0x80 to 0xC2 0x9F. Other bytes from 0x80 to 0x9F
// are continuation bytes of other characters.
func hasControl(b []byte) bool {
	for i, c := range b {
		if c < 0x20 || c == 0x7f || (c == 0xc2 && i+1 < len(b) && 0x80 <= b[i+1] && b[i+1] < 0xa0) {
			return true
		}
	}
	return false
}

// view returns b's bytes as a string without copying them: b must not be
// written while the string is in use.
func view(b []byte) string {
	if len(b) == 0 {
		return ""
	}
	return unsafe.String(&b[0], len(b))
}

// BareToken wraps a token taken from a configured header or query
// parameter. An empty value yields SchemeNone; an over-long one an error.
func BareToken(scheme Scheme, v string) (Credential, error) {
	if v == "" {
		return Credential{}, nil
	}
	if len(v) > MaxCredentialLength {
		return Credential{}, ErrCredentialTooLong
	}
	return Credential{Scheme: scheme, Secret: v}, nil
}
