package caddymodule

import (
	"encoding/base64"
	"errors"
	"net/http"
	"net/netip"
	"net/url"
	"strings"
	"sync"

	"github.com/caddyserver/caddy/v2/modules/caddyhttp"

	"github.com/apitoken/caddy-apitoken/policy"
	"github.com/apitoken/caddy-apitoken/token"
)

// passPassword hands a password request on; if the backend answers 401,
// the failure counts against the client IP and user, so password guessing
// through the gate is throttled too.
func (h *Handler) passPassword(w http.ResponseWriter, r *http.Request, next caddyhttp.Handler, ip netip.Addr, user string) error {
	if h.throttle == nil {
		return next.ServeHTTP(w, r)
	}
	rec := &statusRecorder{ResponseWriterWrapper: &caddyhttp.ResponseWriterWrapper{ResponseWriter: w}}
	err := next.ServeHTTP(rec, r)
	var he caddyhttp.HandlerError
	if rec.status == http.StatusUnauthorized || (errors.As(err, &he) && he.StatusCode == http.StatusUnauthorized) {
		h.throttle.Fail(ip, user, h.app.now())
	}
	return err
}

// statusRecorder notes the status a backend answers with.
type statusRecorder struct {
	*caddyhttp.ResponseWriterWrapper
	status int
}

func (s *statusRecorder) WriteHeader(code int) {
	if s.status == 0 {
		s.status = code
	}
	s.ResponseWriterWrapper.WriteHeader(code)
}

// lookup reads the request's one credential into x.cred and, if it is a
// token, looks it up into x.entry; found says whether the store has it.
// The reason is ReasonOK for a token, found or not (CheckToken judges it),
// ReasonPasswordBlocked for a Basic password that is no token (which
// passwords pass may hand on instead), or why the credential is refused.
// x keeps the credential's scheme and, for Basic, its user name: never
// the secret, nor a user-id that holds a token.
func (h *Handler) lookup(x *exchange) (reason policy.Reason, found bool) {
	scheme, secret, err := h.credential(x.r)
	switch {
	case errors.Is(err, errAmbiguous):
		return policy.ReasonAmbiguousCredentials, false
	case err != nil:
		return policy.ReasonMalformedHeader, false
	case scheme == policy.SchemeNone:
		return policy.ReasonNoCredentials, false
	}
	x.cred.Scheme = scheme
	if scheme == policy.SchemeBasic {
		return h.lookupBasic(x, secret)
	}
	return h.lookupToken(x, secret)
}

// lookupToken looks secret up into x.entry. A secret without a token's
// shape, or with a token's shape but a wrong checksum (mistyped), is a
// malformed token. The checksum is checked only if the store does not
// know the token: one it finds has a valid checksum (token.ParseShape).
func (h *Handler) lookupToken(x *exchange, secret string) (reason policy.Reason, found bool) {
	id, shaped := token.ParseShape(secret)
	if !shaped {
		return policy.ReasonMalformedToken, false
	}
	if x.entry, found = h.app.store.LookupID(id, secret); found {
		return policy.ReasonOK, true
	}
	if !token.ValidChecksum(secret) {
		return policy.ReasonMalformedToken, false
	}
	return policy.ReasonOK, false // well-formed but unknown: CheckToken says so
}

// lookupBasic is lookup for a Basic credential, param still encoded. It
// decodes it into a buffer from basicBuffers (policy.DecodeBasic), which
// costs no allocation and reuses memory recently written, rather than a
// fresh heap object per request: BenchmarkServeHTTP/tokens=1000/valid_basic
// shows the difference. The buffer's contract (policy.BasicBuffer) holds
// here: nothing that shares it outlives the call, since x.cred.User is the
// token's own user name when the two are equal, else a copy; and it goes
// back to the pool cleared (releaseBasic), so that no credential lingers
// in it.
func (h *Handler) lookupBasic(x *exchange, param string) (reason policy.Reason, found bool) {
	buf := basicBuffers.Get().(*policy.BasicBuffer)
	user, secret, err := policy.DecodeBasic(buf, param)
	if err != nil {
		x.cred.Scheme = policy.SchemeNone
		reason = policy.ReasonMalformedHeader
	} else {
		reason, found = h.lookupBasicPair(x, user, secret)
	}
	releaseBasic(buf, param)
	return reason, found
}

// lookupBasicPair is lookupBasic for the decoded user-id and password.
func (h *Handler) lookupBasicPair(x *exchange, user, secret string) (reason policy.Reason, found bool) {
	switch h.basicHolds(user, secret) {
	case basicUserToken:
		x.cred.UserToken = true
		return h.lookupToken(x, user)
	case basicTwo:
		return policy.ReasonAmbiguousCredentials, false
	case basicToken:
		reason, found = h.lookupToken(x, secret)
		if found && user == x.entry.User {
			x.cred.User = x.entry.User
		} else {
			x.cred.User = strings.Clone(user)
		}
		return reason, found
	case basicNoPassword:
		x.cred.User = strings.Clone(user)
		return policy.ReasonNoCredentials, false
	}
	x.cred.User = strings.Clone(user)
	return policy.ReasonPasswordBlocked, false
}

// basicContent says what a decoded Basic credential holds.
type basicContent uint8

const (
	// basicPassword: a user-id and a password that is no token.
	basicPassword basicContent = iota
	// basicNoPassword: a user-id and an empty password, which is no
	// credential yet: git sends it first, and asks for the password only
	// after a 401.
	basicNoPassword
	// basicToken: a token (or something like one) as the password.
	basicToken
	// basicUserToken: a token (or something like one) as the user-id, and
	// an empty password or oauthBasic: GitHub's convention, taken as a
	// bare token.
	basicUserToken
	// basicTwo: a token as the user-id and something else as the
	// password (another token, a password, a user name): refused as
	// ambiguous.
	basicTwo
)

// oauthBasic is the password that GitHub's convention puts beside a token
// given as the user-id.
const oauthBasic = "x-oauth-basic"

// basicHolds tells what a decoded Basic credential holds. Beside an empty
// password or oauthBasic, a user-id is a token if it looks like one
// (looksLikeToken); beside another password only if it has a token's full
// shape, so that a user named after the token prefix (jira_bot) still
// signs in with a password.
func (h *Handler) basicHolds(user, secret string) basicContent {
	switch {
	case h.looksLikeToken(secret):
		if hasTokenShape(user) {
			return basicTwo
		}
		return basicToken
	case secret == "" || secret == oauthBasic:
		if h.looksLikeToken(user) {
			return basicUserToken
		}
		if secret == "" {
			return basicNoPassword
		}
	case hasTokenShape(user):
		return basicTwo
	}
	return basicPassword
}

// looksLikeToken reports whether s is a token or looks like one: it has a
// token's shape (with any prefix, so tokens made before a change of
// token_prefix count too), or it begins with the token prefix and "_" (a
// token cut short or run on). The gate judges such a secret as a token,
// so that a mistyped token is never taken for a password.
func (h *Handler) looksLikeToken(s string) bool {
	if p := h.app.TokenPrefix; p != "" && len(s) > len(p) && s[len(p)] == '_' && s[:len(p)] == p {
		return true
	}
	return hasTokenShape(s)
}

// hasTokenShape reports whether s has a token's shape (token.ParseShape).
func hasTokenShape(s string) bool {
	_, ok := token.ParseShape(s)
	return ok
}

// mentionsToken reports whether s, a credential the gate cannot parse,
// looks like a token or holds the token prefix and "_" anywhere: such as
// "Authorization: Token <token>".
func (h *Handler) mentionsToken(s string) bool {
	return h.looksLikeToken(s) || (h.app.TokenPrefix != "" && strings.Contains(s, h.app.TokenPrefix+"_"))
}

// releaseBasic clears buf of all that decoding param can have written
// (nothing, for a parameter too long for it: that is decoded elsewhere)
// and puts it back into basicBuffers.
func releaseBasic(buf *policy.BasicBuffer, param string) {
	if n := base64.StdEncoding.DecodedLen(len(param)); n <= len(buf) {
		clear(buf[:n])
	}
	basicBuffers.Put(buf)
}

// basicBuffers holds the buffers lookupBasic decodes credentials into.
var basicBuffers = sync.Pool{New: func() any { return new(policy.BasicBuffer) }}

// errAmbiguous is credential's error for a request with more than one
// credential.
var errAmbiguous = errors.New("more than one credential")

// credential reads the request's credential (a Basic parameter left
// encoded) from the one carrier that holds it: the Authorization header,
// the configured header or the query parameter. A value in more than one
// carrier, or one carrier given twice (even empty), is errAmbiguous: the
// backend might read another one than the gate did.
func (h *Handler) credential(r *http.Request) (policy.Scheme, string, error) {
	authz := r.Header["Authorization"]
	var header []string
	if h.headerKey != "" {
		header = r.Header[h.headerKey]
	}
	var query string
	if h.Query != "" && r.URL.RawQuery != "" {
		var n int
		var err error
		if query, n, err = queryParam(r.URL.RawQuery, h.Query); err != nil {
			return policy.SchemeNone, "", err
		} else if n > 1 {
			return policy.SchemeNone, "", errAmbiguous
		}
	}
	hasAuthz := len(authz) == 1 && authz[0] != ""
	hasHeader := len(header) == 1 && header[0] != ""
	if len(authz) > 1 || len(header) > 1 || (hasAuthz && hasHeader) || (query != "" && (hasAuthz || hasHeader)) {
		return policy.SchemeNone, "", errAmbiguous
	}
	switch {
	case hasAuthz:
		return policy.SplitAuthorization(authz[0])
	case hasHeader:
		c, err := policy.BareToken(policy.SchemeHeader, header[0])
		return c.Scheme, c.Secret, err
	case query != "":
		c, err := policy.BareToken(policy.SchemeQuery, query)
		return c.Scheme, c.Secret, err
	}
	return policy.SchemeNone, "", nil
}

// carriesToken reports whether any carrier the gate reads holds a token
// or something like one, alone or beside other credentials. On a path
// that protect leaves open, the gate judges only such a request.
func (h *Handler) carriesToken(r *http.Request) bool {
	for _, v := range r.Header["Authorization"] {
		if h.authorizationCarriesToken(v) {
			return true
		}
	}
	if h.headerKey != "" {
		for _, v := range r.Header[h.headerKey] {
			if h.mentionsToken(v) {
				return true
			}
		}
	}
	if h.Query != "" && r.URL.RawQuery != "" {
		for part := range strings.SplitSeq(r.URL.RawQuery, "&") {
			key, v, _ := strings.Cut(part, "=")
			if k, err := url.QueryUnescape(key); err == nil && k == h.Query && h.mentionsToken(v) {
				return true // v still escaped: a token needs no escapes
			}
		}
	}
	return false
}

// authorizationCarriesToken is carriesToken for one Authorization value.
func (h *Handler) authorizationCarriesToken(v string) bool {
	scheme, param, err := policy.SplitAuthorization(v)
	switch {
	case err != nil:
		return h.mentionsToken(v)
	case scheme == policy.SchemeBearer:
		return h.looksLikeToken(param)
	case scheme != policy.SchemeBasic:
		return false
	}
	buf := basicBuffers.Get().(*policy.BasicBuffer)
	user, secret, err := policy.DecodeBasic(buf, param)
	holds := basicPassword
	if err == nil {
		holds = h.basicHolds(user, secret)
	}
	releaseBasic(buf, param)
	if err != nil {
		// Malformed, as with a control character: look for a token in
		// whatever it decodes to.
		raw, err := base64.StdEncoding.DecodeString(param)
		return err == nil && h.mentionsToken(string(raw))
	}
	return holds != basicPassword && holds != basicNoPassword
}

// queryParam finds name in a raw query string as url.ParseQuery reads it
// (keys and values unescaped, "+" a space), and returns its first value
// and how many times it occurs. A value that does not unescape is an
// error.
func queryParam(raw, name string) (value string, n int, err error) {
	for part := range strings.SplitSeq(raw, "&") {
		key, v, _ := strings.Cut(part, "=")
		if k, err := url.QueryUnescape(key); err != nil || k != name {
			continue
		}
		if n++; n == 1 {
			if value, err = url.QueryUnescape(v); err != nil {
				return "", n, err
			}
		}
	}
	return value, n, nil
}
