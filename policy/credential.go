package policy

import (
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
		raw, err := base64.StdEncoding.DecodeString(param)
		if err != nil {
			return Credential{}, ErrMalformedBasic
		}
		user, secret, ok := strings.Cut(string(raw), ":")
		if !ok {
			return Credential{}, ErrMalformedBasic
		}
		return Credential{Scheme: SchemeBasic, User: user, Secret: secret}, nil
	case strings.EqualFold(scheme, "Bearer"):
		if param == "" || strings.ContainsAny(param, " \t") {
			return Credential{}, ErrEmptyBearer
		}
		return Credential{Scheme: SchemeBearer, Secret: param}, nil
	}
	return Credential{}, ErrUnsupportedScheme
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
