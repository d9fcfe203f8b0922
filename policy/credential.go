package policy

import (
	"bytes"
	"encoding/base64"
	"errors"
	"strings"
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
// names compare case-insensitively (RFC 7235 §2.1), and one or more spaces
// may separate the scheme from its parameter. An empty value yields
// SchemeNone and no error. Other schemes (Digest, Negotiate, …) give
// ErrUnsupportedScheme: the gate does not pass credentials it cannot check.
func ParseAuthorization(v string) (Credential, error) {
	if v == "" {
		return Credential{}, nil
	}
	if len(v) > MaxCredentialLength {
		return Credential{}, ErrCredentialTooLong
	}
	scheme, param, _ := strings.Cut(v, " ")
	param = strings.TrimLeft(param, " ")
	switch {
	case strings.EqualFold(scheme, "Basic"):
		return parseBasic(param)
	case strings.EqualFold(scheme, "Bearer"):
		// Two IndexByte calls are SIMD scans; ContainsAny goes byte by byte.
		if param == "" || strings.IndexByte(param, ' ') >= 0 || strings.IndexByte(param, '\t') >= 0 {
			return Credential{}, ErrEmptyBearer
		}
		return Credential{Scheme: SchemeBearer, Secret: param}, nil
	}
	return Credential{}, ErrUnsupportedScheme
}

// basicStackLen is the size of parseBasic's stack buffer. It holds
// base64.StdEncoding.DecodedLen of the parameter, so Basic credentials of
// up to 510 bytes (680 base64 characters) need no heap buffer: a user
// name and a token take about 100, and pass-through passwords seldom a few
// hundred.
const basicStackLen = 512

// parseBasic decodes the parameter of a Basic credential as
// base64.StdEncoding.DecodeString does (padding required, CR and LF
// ignored), into a stack buffer when it fits, and splits it at the first
// colon. A credential that fits costs one allocation, the string User and
// Secret are both cut from; a longer one costs a second, for its buffer.
func parseBasic(param string) (Credential, error) {
	var stack [basicStackLen]byte
	buf := stack[:]
	if n := base64.StdEncoding.DecodedLen(len(param)); n > len(buf) {
		buf = make([]byte, n)
	}
	n, err := base64.StdEncoding.Decode(buf, []byte(param))
	if err != nil {
		return Credential{}, ErrMalformedBasic
	}
	colon := bytes.IndexByte(buf[:n], ':')
	if colon < 0 {
		return Credential{}, ErrMalformedBasic
	}
	raw := string(buf[:n])
	return Credential{Scheme: SchemeBasic, User: raw[:colon], Secret: raw[colon+1:]}, nil
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
