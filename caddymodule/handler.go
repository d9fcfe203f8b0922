package caddymodule

import (
	"errors"
	"fmt"
	"net/http"
	"net/url"
	"strconv"
	"strings"

	"github.com/caddyserver/caddy/v2"
	"github.com/caddyserver/caddy/v2/modules/caddyhttp"
	"go.uber.org/zap"

	"github.com/apitoken/caddy-apitoken/audit"
	"github.com/apitoken/caddy-apitoken/policy"
	"github.com/apitoken/caddy-apitoken/tokenstore"
)

func init() {
	caddy.RegisterModule(Handler{})
}

// PasswordMode says what the gate does with an HTTP Basic credential whose
// password is not an API token.
type PasswordMode string

// Password modes.
const (
	// PasswordsBlock refuses such requests with 401.
	PasswordsBlock PasswordMode = "block"
	// PasswordsPass hands such requests on untouched, so the backend checks
	// the password (for a migration period).
	PasswordsPass PasswordMode = "pass"
)

// Handler is the api_token gate. It lets a request through only if it
// carries a valid, unexpired, unrevoked API token of the api_tokens app,
// presented as HTTP Basic `user:token` (the user must own the token; user
// names compare case-insensitively), as `Authorization: Bearer <token>`, or,
// when configured, in a request header or query parameter.
//
// It answers:
//
//	401  no credentials, a malformed one, an unknown, expired or revoked
//	     token, a token presented with another user's name, or a password
//	     while passwords are blocked; always with WWW-Authenticate
//
// The body is a short fixed text; the precise reason goes to the audit log
// (logger `api_tokens.audit`), never to the client. Denials are returned as
// handler errors, so `handle_errors` routes see `{err.status_code}` and can
// replace the response; a server without `handle_errors` routes gets the
// short text from the gate itself.
//
// On success it sets these placeholders, and nothing on failure:
//
//	Placeholder                     Value
//	{http.auth.user.id}             the token's owner (also the access log's user_id)
//	{http.auth.user.token_id}       the token's public id
//	{http.auth.user.token_name}     the token's name
type Handler struct {
	// Realm sent in the WWW-Authenticate challenge.
	// Default: `restricted`.
	Realm string `json:"realm,omitempty"`

	// What to do with a Basic credential whose password is not a token:
	// `block` answers 401 saying that password authentication is
	// disabled; `pass` hands the request on untouched for the backend to
	// check. Default: `block`.
	Passwords PasswordMode `json:"passwords,omitempty"`

	// Name of a request header that may carry a bare token, as in
	// `X-API-Token: <token>`. Default: none.
	Header string `json:"header,omitempty"`

	// Name of a query parameter that may carry a bare token. Query strings
	// end up in access logs: prefer a header. Default: none.
	Query string `json:"query,omitempty"`

	// Remove the credential (the Authorization header, or the configured
	// header or query parameter) from the request before it goes on, so
	// the backend never sees the token. Default: false.
	StripCredentials bool `json:"strip_credentials,omitempty"`

	app    *App
	logger *zap.Logger
}

// CaddyModule returns the Caddy module information.
func (Handler) CaddyModule() caddy.ModuleInfo {
	return caddy.ModuleInfo{
		ID:  "http.handlers.api_token",
		New: func() caddy.Module { return new(Handler) },
	}
}

// Provision gets the api_tokens app, loading it with its defaults if the
// config does not set it up.
func (h *Handler) Provision(ctx caddy.Context) error {
	h.logger = ctx.Logger()
	if h.Realm == "" {
		h.Realm = "restricted"
	}
	if h.Passwords == "" {
		h.Passwords = PasswordsBlock
	}
	app, err := ctx.App("api_tokens")
	if err != nil {
		return fmt.Errorf("getting api_tokens app: %w", err)
	}
	h.app = app.(*App)
	return nil
}

// Validate checks the handler's options.
func (h *Handler) Validate() error {
	if h.Passwords != PasswordsBlock && h.Passwords != PasswordsPass {
		return fmt.Errorf("passwords %q: must be %q or %q", h.Passwords, PasswordsBlock, PasswordsPass)
	}
	if strings.ContainsAny(h.Realm, "\"\\\r\n") {
		return fmt.Errorf("realm %q: must not contain quotes, backslashes or line breaks", h.Realm)
	}
	if h.Header != "" {
		if !validHeaderName(h.Header) {
			return fmt.Errorf("header %q: not a valid header field name", h.Header)
		}
		if strings.EqualFold(h.Header, "Authorization") {
			return fmt.Errorf("header %q: Authorization is always read; name another header", h.Header)
		}
	}
	if h.Query != "" && strings.ContainsAny(h.Query, "&=#? ") {
		return fmt.Errorf("query %q: not a valid parameter name", h.Query)
	}
	return nil
}

// Short texts for the client. They are fixed: the precise reason is only
// ever in the audit log.
const (
	msgUnauthorized    = "a valid API token is required"
	msgPasswordBlocked = "password authentication is disabled: use an API token instead of your password"
)

var (
	errUnauthorized    = errors.New(msgUnauthorized)
	errPasswordBlocked = errors.New(msgPasswordBlocked)
)

// ServeHTTP implements caddyhttp.MiddlewareHandler.
func (h *Handler) ServeHTTP(w http.ResponseWriter, r *http.Request, next caddyhttp.Handler) error {
	cred, err := h.credential(r)
	switch {
	case err != nil:
		return h.deny(w, r, cred, policy.ReasonMalformedHeader, tokenstore.Entry{})
	case cred.Scheme == policy.SchemeNone:
		return h.deny(w, r, cred, policy.ReasonNoCredentials, tokenstore.Entry{})
	}

	if _, ok := tokenstore.Parse(cred.Secret); !ok {
		if cred.Scheme != policy.SchemeBasic {
			return h.deny(w, r, cred, policy.ReasonMalformedToken, tokenstore.Entry{})
		}
		if h.Passwords == PasswordsPass {
			h.record(r, audit.TypePasswordPassedOn, audit.OutcomePassed, policy.ReasonPasswordPassed, cred, tokenstore.Entry{}, 0)
			return next.ServeHTTP(w, r)
		}
		return h.deny(w, r, cred, policy.ReasonPasswordBlocked, tokenstore.Entry{})
	}

	entry, found := h.app.store.Lookup(cred.Secret)
	facts := policy.TokenFacts{Found: found, Revoked: entry.Revoked, Owner: entry.User, ExpiresAt: entry.ExpiresAt}
	if reason := policy.CheckToken(h.app.now(), facts, cred); reason != policy.ReasonOK {
		return h.deny(w, r, cred, reason, entry)
	}

	repl := r.Context().Value(caddy.ReplacerCtxKey).(*caddy.Replacer)
	repl.Set("http.auth.user.id", entry.User)
	repl.Set("http.auth.user.token_id", entry.ID)
	repl.Set("http.auth.user.token_name", entry.Name)
	if h.StripCredentials {
		h.strip(r, cred.Scheme)
	}
	h.record(r, audit.TypeAuthSucceeded, audit.OutcomeSuccess, policy.ReasonOK, cred, entry, 0)
	return next.ServeHTTP(w, r)
}

// credential reads the request's credential: the Authorization header
// first, then the configured header and query parameter.
func (h *Handler) credential(r *http.Request) (policy.Credential, error) {
	if v := r.Header.Get("Authorization"); v != "" {
		return policy.ParseAuthorization(v)
	}
	if h.Header != "" {
		if v := r.Header.Get(h.Header); v != "" {
			return policy.BareToken(policy.SchemeHeader, v)
		}
	}
	if h.Query != "" && r.URL.RawQuery != "" {
		if v := r.URL.Query().Get(h.Query); v != "" {
			return policy.BareToken(policy.SchemeQuery, v)
		}
	}
	return policy.Credential{}, nil
}

// deny records the refusal and answers 401 with a challenge.
func (h *Handler) deny(w http.ResponseWriter, r *http.Request, cred policy.Credential, reason policy.Reason, e tokenstore.Entry) error {
	status := http.StatusUnauthorized
	h.record(r, audit.TypeAuthFailed, audit.OutcomeFailure, reason, cred, e, status)

	w.Header().Set("WWW-Authenticate", `Basic realm="`+h.Realm+`", charset="UTF-8"`)
	if cred.Scheme == policy.SchemeBearer {
		w.Header().Add("WWW-Authenticate", `Bearer realm="`+h.Realm+`", error="invalid_token"`)
	}
	err := errUnauthorized
	if reason == policy.ReasonPasswordBlocked {
		err = errPasswordBlocked
	}
	if hasErrorRoutes(r) {
		return caddyhttp.Error(status, err)
	}
	w.Header().Set("Content-Type", "text/plain; charset=utf-8")
	w.Header().Set("Content-Length", strconv.Itoa(len(err.Error())+1))
	w.Header().Set("X-Content-Type-Options", "nosniff")
	w.WriteHeader(status)
	_, _ = w.Write([]byte(err.Error() + "\n"))
	return nil
}

// hasErrorRoutes reports whether the request's server has handle_errors
// routes that should render the error response.
func hasErrorRoutes(r *http.Request) bool {
	srv, ok := r.Context().Value(caddyhttp.ServerCtxKey).(*caddyhttp.Server)
	return ok && srv != nil && srv.Errors != nil && len(srv.Errors.Routes) > 0
}

// record hands an audit event to the app's sink.
func (h *Handler) record(r *http.Request, typ audit.Type, outcome audit.Outcome, reason policy.Reason, cred policy.Credential, e tokenstore.Entry, status int) {
	user := e.User
	if user == "" {
		user = cred.User
	}
	clientIP, _ := caddyhttp.GetVar(r.Context(), caddyhttp.ClientIPVarKey).(string)
	h.app.audit.Record(audit.Event{
		Time:     h.app.now(),
		Type:     typ,
		Outcome:  outcome,
		Reason:   string(reason),
		User:     user,
		TokenID:  e.ID,
		Scheme:   cred.Scheme.String(),
		ClientIP: clientIP,
		Method:   r.Method,
		Host:     r.Host,
		Path:     r.URL.Path,
		Status:   status,
	})
}

// strip removes the credential from the request before it goes on.
func (h *Handler) strip(r *http.Request, scheme policy.Scheme) {
	switch scheme {
	case policy.SchemeBasic, policy.SchemeBearer:
		r.Header.Del("Authorization")
	case policy.SchemeHeader:
		r.Header.Del(h.Header)
	case policy.SchemeQuery:
		r.URL.RawQuery = removeQueryParam(r.URL.RawQuery, h.Query)
	}
}

// removeQueryParam drops every occurrence of name from a raw query string,
// keeping the other parameters in their order and encoding.
func removeQueryParam(raw, name string) string {
	var b strings.Builder
	for part := range strings.SplitSeq(raw, "&") {
		key, _, _ := strings.Cut(part, "=")
		if k, err := url.QueryUnescape(key); err == nil && k == name {
			continue
		}
		if b.Len() > 0 {
			b.WriteByte('&')
		}
		b.WriteString(part)
	}
	return b.String()
}

// validHeaderName reports whether s is an RFC 9110 field name (a token).
func validHeaderName(s string) bool {
	for i := 0; i < len(s); i++ {
		c := s[i]
		switch {
		case 'a' <= c && c <= 'z', 'A' <= c && c <= 'Z', '0' <= c && c <= '9':
		case strings.IndexByte("!#$%&'*+-.^_`|~", c) >= 0:
		default:
			return false
		}
	}
	return s != ""
}

// Interface guards
var (
	_ caddy.Provisioner           = (*Handler)(nil)
	_ caddy.Validator             = (*Handler)(nil)
	_ caddyhttp.MiddlewareHandler = (*Handler)(nil)
)
