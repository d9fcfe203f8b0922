package caddymodule

import (
	"encoding/base64"
	"errors"
	"fmt"
	"net"
	"net/http"
	"net/netip"
	"net/url"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/caddyserver/caddy/v2"
	"github.com/caddyserver/caddy/v2/modules/caddyhttp"
	"go.uber.org/zap"
	"golang.org/x/net/http/httpguts"

	"github.com/apitoken/caddy-apitoken/event"
	"github.com/apitoken/caddy-apitoken/internal/keytable"
	"github.com/apitoken/caddy-apitoken/limit"
	"github.com/apitoken/caddy-apitoken/policy"
	"github.com/apitoken/caddy-apitoken/storage"
	"github.com/apitoken/caddy-apitoken/token"
)

func init() {
	caddy.RegisterModule(Handler{})
}

// PasswordMode says what the gate does with an HTTP Basic credential whose
// password is not an API token, nor shaped like one.
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
// names compare case-insensitively), as Basic `token:` or
// `token:x-oauth-basic` (GitHub's convention), as `Authorization: Bearer
// <token>`, or, when configured, in a request header or query parameter;
// and only if the request passes the gate's and the token's policy. On a
// path that protect leaves open, a request without anything shaped like a
// token goes on untouched; one with a token is judged as anywhere else.
// In order:
//
//	425  TLS early data (0-RTT): the client IP is not yet verified
//	400  the request-target fails path inspection (before authentication)
//	429  the client IP, as the user it claims, or the client IP alone
//	     failed authentication too often (Retry-After)
//	503  the token store could not be read for longer than the app's
//	     stale_after, so a change made elsewhere might not have reached
//	     this server (every request that needs a token)
//	401  no credentials (a Basic user-id with an empty password among
//	     them), a malformed one, more than one (or one carrier twice), a
//	     malformed, mistyped, unknown, expired or revoked token, a token
//	     presented with another user's name, or a password while
//	     passwords are blocked (or come from outside pass_from); always
//	     with WWW-Authenticate
//	403  a valid token used from outside allow_ips or its allowed_ips, by
//	     an owner no longer among the holders, or outside its scope
//	429  the token's rate limit is exceeded (Retry-After)
//
// Both 429s carry Jira Data Center's rate-limit headers as well
// (X-RateLimit-Limit, -Remaining, -FillRate, -Interval-Seconds), which
// some Jira clients cannot do without. The body is a short fixed text;
// the precise reason goes to the audit log (logger `api_tokens.audit`),
// never to the client. Only a client that presents the secret of an
// expired or revoked token is told that (in the text, and for Bearer in
// the challenge's error_description); every other 401 says the same. Refusals are returned as
// handler errors, so `handle_errors` routes see `{err.status_code}` and can
// replace the response; a server without `handle_errors` routes gets the
// short text from the gate itself. With report_only, every refusal but 425
// is only logged (as would_deny) and the request goes on; a request that
// fails authentication goes on without an identity.
//
// On success it sets these placeholders, and nothing on failure:
//
//	Placeholder                     Value
//	{http.auth.user.id}             the token's owner (also the access log's user_id)
//	{http.auth.user.token_id}       the token's public id
//	{http.auth.user.token_name}     the token's name
//
// With user_header, the user also goes to the backend in that header, which
// the gate removes from every request it did not authenticate.
type Handler struct {
	// Realm sent in the WWW-Authenticate challenge.
	// Default: `restricted`.
	Realm string `json:"realm,omitempty"`

	// What to do with a Basic credential whose password is not a token:
	// `block` answers 401 saying that password authentication is
	// disabled; `pass` hands the request on untouched for the backend to
	// check. A password with a token's shape, or beginning with the token
	// prefix and "_", is judged as a (mistyped) token, never passed on.
	// Default: `block`.
	Passwords PasswordMode `json:"passwords,omitempty"`

	// With passwords `pass`, password Basic auth goes on only from these
	// client IP ranges (CIDRs, IPs, or `private_ranges`) and is blocked
	// elsewhere. Default: from anywhere.
	PasswordsFrom []string `json:"passwords_from,omitempty"`

	// Name of a request header that may carry a bare token, as in
	// `X-API-Token: <token>`. Default: none.
	Header string `json:"header,omitempty"`

	// Name of a query parameter that may carry a bare token. Query strings
	// end up in access logs: prefer a header. Default: none.
	Query string `json:"query,omitempty"`

	// On an accepted request, remove every carrier of credentials the
	// gate reads (all Authorization values, the configured header, every
	// occurrence of the query parameter) before it goes on, so the
	// backend never sees the token. Default: false.
	StripCredentials bool `json:"strip_credentials,omitempty"`

	// Name of a request header that carries the authenticated user to the
	// backend, such as X-Remote-User. The gate removes it from every
	// request it sees and sets it only after accepting a token, so a
	// client can never choose its own identity. That holds only where
	// the handler runs: put it on a route without matchers and choose
	// the requests that need a token with Protect (the Caddyfile refuses
	// user_header with a matcher; the handler cannot see its route's).
	// Default: none.
	UserHeader string `json:"user_header,omitempty"`

	// How user_header carries the user name: `raw` (as it is, UTF-8: right
	// for Go backends), `percent` (non-ASCII bytes, "%" and "+"
	// percent-encoded: for Java servlet containers such as Jira,
	// Confluence and Bitbucket, and Python WSGI, which read header values
	// as ISO-8859-1; the backend percent-decodes the value as UTF-8) or
	// `rfc8187` (UTF-8'' and the percent-encoded name, as an RFC 8187
	// ext-value). See UserEncoding. Default: `raw`.
	UserHeaderEncoding UserEncoding `json:"user_header_encoding,omitempty"`

	// Only requests whose path matches one of these patterns need a token;
	// the others are inspected (block_paths) and go on untouched, unless
	// they carry a token (or something shaped like one), which is judged
	// on every path, so that it never reaches the backend. Patterns
	// are in Caddy's path-matcher syntax but matched on the path as the
	// backend resolves it (decoded, ";params" dropped, dot-segments
	// resolved), so no path trick reaches a protected path unchecked,
	// unlike a route matcher. Default: every request needs a token.
	Protect []string `json:"protect,omitempty"`

	// Tokens are accepted only from these client IP ranges (CIDRs, IPs, or
	// `private_ranges`), in addition to each token's own allowed_ips. The
	// client IP is Caddy's, so the server's trusted_proxies apply.
	// Default: from anywhere.
	AllowIPs []string `json:"allow_ips,omitempty"`

	// Path inspection of every request the handler sees, before
	// authentication. Default: on, with every rule group.
	BlockPaths *PathsConfig `json:"block_paths,omitempty"`

	// Throttling of client IPs that fail authentication.
	// Default: 10 failures within 1m block the IP for 5m.
	Throttle *ThrottleConfig `json:"throttle,omitempty"`

	// Request rate allowed per token when the token sets none, as
	// `<requests>/<duration>` (600/1m). Default: unlimited.
	RateLimit string `json:"rate_limit,omitempty"`

	// The POST requests that only read, which read-only tokens may make:
	// path patterns matched on the path as the backend resolves it (as
	// protect's). `default` stands for the built-in list of Jira,
	// Confluence and Bitbucket (policy.DefaultReadPosts: Jira's issue
	// search, git fetch over smart HTTP, …), and `off` alone for none.
	// Default: `default`.
	ReadPosts []string `json:"read_posts,omitempty"`

	// Run every check and log every refusal it would make (as would_deny),
	// but let requests through. Default: false.
	ReportOnly bool `json:"report_only,omitempty"`

	app             *App
	ctx             caddy.Context // the origin of Caddy events this handler emits
	logger          *zap.Logger
	allowIPs        []netip.Prefix
	passFrom        []netip.Prefix
	paths           *policy.PathRules
	protect         policy.PathSet
	throttle        *limit.Throttle
	throttleKey     string
	limiter         *limit.RateLimiter
	rate            policy.Rate
	reads           policy.Reads
	throttleRate    rateHeaders // the throttle's 429 headers, built in Provision
	provisioned     bool
	basicChallenge  string // WWW-Authenticate values, built in Provision
	bearerChallenge string
	bearerExpired   string // bearerChallenge with an error_description
	bearerRevoked   string
	userHeaderKey   string // UserHeader in canonical form
	headerKey       string // Header in canonical form
	warnedSpoofable int32  // atomic; an int32, as a Handler is copied by value (CaddyModule)
}

// PathsConfig configures path inspection.
type PathsConfig struct {
	// Off turns path inspection off. Default: false.
	Off bool `json:"off,omitempty"`
	// Rule groups to switch off, e.g. `encoded_slash` for a backend that
	// needs encoded slashes. Default: none.
	Allow []string `json:"allow,omitempty"`
	// Extra path patterns to refuse (Caddy path-matcher syntax, matched
	// case-insensitively on the normalised path). Default: none.
	Deny []string `json:"deny,omitempty"`
	// Path patterns exempt from inspection. Default: none.
	Exempt []string `json:"exempt,omitempty"`
}

// ThrottleConfig configures throttling of failed authentication.
type ThrottleConfig struct {
	// Off turns throttling off. Default: false.
	Off bool `json:"off,omitempty"`
	// Failures from one client IP as one user name (or without one, as
	// with a Bearer token) within Window that block that pair; five times
	// as many from the client IP, whatever the user names, block the IP.
	// A client whose IP did not parse is counted by user name alone, and
	// not at all without one. Default: 10.
	MaxFailures int `json:"max_failures,omitempty"`
	// The window failures are counted in. Default: 1m.
	Window caddy.Duration `json:"window,omitempty"`
	// How long a blocked IP stays blocked. Default: 5m.
	Cooldown caddy.Duration `json:"cooldown,omitempty"`
}

// Throttle defaults.
const (
	DefaultMaxFailures = 10
	DefaultWindow      = time.Minute
	DefaultCooldown    = 5 * time.Minute
)

// CaddyModule returns the Caddy module information.
func (Handler) CaddyModule() caddy.ModuleInfo {
	return caddy.ModuleInfo{
		ID:  "http.handlers.api_token",
		New: func() caddy.Module { return new(Handler) },
	}
}

// throttles and limiters keep throttling and rate-limit state across
// config reloads and share it between handlers with the same settings.
var (
	throttles = caddy.NewUsagePool()
	limiters  = caddy.NewUsagePool()
)

type throttleHandle struct{ *limit.Throttle }

func (throttleHandle) Destruct() error { return nil }

type limiterHandle struct{ *limit.RateLimiter }

func (limiterHandle) Destruct() error { return nil }

// limiterKey names the one rate limiter all handlers share; it is keyed by
// token id, and each call passes the rate that applies.
const limiterKey = "api_token_rate_limits"

// Provision parses the handler's options and gets the api_tokens app,
// loading it with its defaults if the config does not set it up.
func (h *Handler) Provision(ctx caddy.Context) error {
	h.ctx = ctx
	h.logger = ctx.Logger()
	if h.Realm == "" {
		h.Realm = "restricted"
	}
	if h.Passwords == "" {
		h.Passwords = PasswordsBlock
	}
	h.buildChallenges()
	// The gate indexes the header map by canonical keys itself: Get, Set
	// and Del would canonicalise them again on every request.
	h.userHeaderKey = http.CanonicalHeaderKey(h.UserHeader)
	h.headerKey = http.CanonicalHeaderKey(h.Header)
	var err error
	if h.allowIPs, err = policy.ParsePrefixes(h.AllowIPs); err != nil {
		return fmt.Errorf("allow_ips: %w", err)
	}
	if h.passFrom, err = policy.ParsePrefixes(h.PasswordsFrom); err != nil {
		return fmt.Errorf("passwords pass_from: %w", err)
	}
	if h.BlockPaths == nil || !h.BlockPaths.Off {
		pc := policy.PathConfig{}
		if h.BlockPaths != nil {
			for _, r := range h.BlockPaths.Allow {
				pc.Disable = append(pc.Disable, policy.PathRule(r))
			}
			pc.Deny, pc.Exempt = h.BlockPaths.Deny, h.BlockPaths.Exempt
		}
		if h.paths, err = policy.CompilePathRules(pc); err != nil {
			return fmt.Errorf("block_paths: %w", err)
		}
	}
	if h.protect, err = policy.CompilePathSet("protect", h.Protect); err != nil {
		return err
	}
	if h.RateLimit != "" {
		if h.rate, err = policy.ParseRate(h.RateLimit); err != nil {
			return fmt.Errorf("rate_limit: %w", err)
		}
	}
	if h.reads, err = policy.CompileReads(h.ReadPosts); err != nil {
		return err
	}

	if h.Throttle == nil || !h.Throttle.Off {
		tc := limit.ThrottleConfig{MaxFailures: DefaultMaxFailures, Window: DefaultWindow, Cooldown: DefaultCooldown}
		if h.Throttle != nil {
			if h.Throttle.MaxFailures != 0 {
				tc.MaxFailures = h.Throttle.MaxFailures
			}
			if h.Throttle.Window != 0 {
				tc.Window = time.Duration(h.Throttle.Window)
			}
			if h.Throttle.Cooldown != 0 {
				tc.Cooldown = time.Duration(h.Throttle.Cooldown)
			}
		}
		h.throttleKey = fmt.Sprintf("throttle/%d/%s/%s", tc.MaxFailures, tc.Window, tc.Cooldown)
		// Described as a bucket of max_failures failures, refilled every
		// window; Retry-After says when the block ends.
		window := max(int64((tc.Window+time.Second-1)/time.Second), 1)
		h.throttleRate = newRateHeaders(int64(tc.MaxFailures), int64(tc.MaxFailures), window)
		v, _, err := throttles.LoadOrNew(h.throttleKey, func() (caddy.Destructor, error) {
			return throttleHandle{limit.NewThrottle(tc)}, nil
		})
		if err != nil {
			return err
		}
		h.throttle = v.(throttleHandle).Throttle
	}
	v, _, err := limiters.LoadOrNew(limiterKey, func() (caddy.Destructor, error) {
		return limiterHandle{limit.NewRateLimiter(0)}, nil
	})
	if err != nil {
		return err
	}
	h.limiter = v.(limiterHandle).RateLimiter
	h.provisioned = true

	app, err := ctx.App("api_tokens")
	if err != nil {
		return fmt.Errorf("getting api_tokens app: %w", err)
	}
	h.app = app.(*App)
	return nil
}

// buildChallenges builds the WWW-Authenticate values from the realm.
func (h *Handler) buildChallenges() {
	h.basicChallenge = `Basic realm="` + h.Realm + `", charset="UTF-8"`
	h.bearerChallenge = `Bearer realm="` + h.Realm + `", error="invalid_token"`
	h.bearerExpired = h.bearerChallenge + `, error_description="` + msgExpired + `"`
	h.bearerRevoked = h.bearerChallenge + `, error_description="` + msgRevoked + `"`
}

// Validate checks the handler's options.
func (h *Handler) Validate() error {
	if h.Passwords != PasswordsBlock && h.Passwords != PasswordsPass {
		return fmt.Errorf("passwords %q: must be %q or %q", h.Passwords, PasswordsBlock, PasswordsPass)
	}
	if len(h.PasswordsFrom) > 0 && h.Passwords != PasswordsPass {
		return fmt.Errorf("passwords_from needs passwords %q", PasswordsPass)
	}
	if strings.ContainsAny(h.Realm, "\"\\\r\n") {
		return fmt.Errorf("realm %q: must not contain quotes, backslashes or line breaks", h.Realm)
	}
	if h.Header != "" {
		if !httpguts.ValidHeaderFieldName(h.Header) {
			return fmt.Errorf("header %q: not a valid header field name", h.Header)
		}
		if strings.EqualFold(h.Header, "Authorization") {
			return fmt.Errorf("header %q: Authorization is always read; name another header", h.Header)
		}
	}
	if h.UserHeader != "" {
		if !httpguts.ValidHeaderFieldName(h.UserHeader) {
			return fmt.Errorf("user_header %q: not a valid header field name", h.UserHeader)
		}
		if strings.EqualFold(h.UserHeader, "Authorization") || strings.EqualFold(h.UserHeader, h.Header) {
			return fmt.Errorf("user_header %q: must differ from the headers that carry credentials", h.UserHeader)
		}
	}
	if !h.UserHeaderEncoding.valid() {
		return fmt.Errorf("user_header_encoding %q: must be %q, %q or %q", h.UserHeaderEncoding, UserEncodingRaw, UserEncodingPercent, UserEncodingRFC8187)
	}
	if h.UserHeaderEncoding != "" && h.UserHeader == "" {
		return fmt.Errorf("user_header_encoding %q needs user_header", h.UserHeaderEncoding)
	}
	if h.Query != "" && strings.ContainsAny(h.Query, "&=#? ") {
		return fmt.Errorf("query %q: not a valid parameter name", h.Query)
	}
	if t := h.Throttle; t != nil && !t.Off {
		if t.MaxFailures < 0 || t.Window < 0 || t.Cooldown < 0 {
			return errors.New("throttle: max_failures, window and cooldown must be positive")
		}
	}
	return nil
}

// Cleanup releases the shared throttling and rate-limit state.
func (h *Handler) Cleanup() error {
	if !h.provisioned {
		return nil
	}
	h.provisioned = false
	if h.throttle != nil {
		if _, err := throttles.Delete(h.throttleKey); err != nil {
			return err
		}
	}
	_, err := limiters.Delete(limiterKey)
	return err
}

// Short texts for the client. They are fixed: the precise reason is only
// ever in the audit log. msgExpired and msgRevoked go only to a client
// that presented the token's secret.
const (
	msgUnauthorized    = "a valid API token is required"
	msgExpired         = "this API token has expired"
	msgRevoked         = "this API token has been revoked"
	msgPasswordBlocked = "password authentication is disabled: use an API token instead of your password"
	msgPathBlocked     = "request refused: the request path is not allowed"
	msgForbidden       = "access denied: this token may not be used for this request"
	msgTooMany         = "too many requests: try again later"
	msgStoreStale      = "service unavailable: the token store is unavailable, try again later"
)

// refusal is a decision to refuse a request.
type refusal struct {
	status     int
	reason     policy.Reason
	rule       policy.PathRule
	retryAfter time.Duration
	rate       policy.Rate // the rate a rate_limited refusal exceeded
}

// ServeHTTP implements caddyhttp.MiddlewareHandler.
func (h *Handler) ServeHTTP(w http.ResponseWriter, r *http.Request, next caddyhttp.Handler) error {
	if r.TLS != nil && !r.TLS.HandshakeComplete {
		// As Caddy's client_ip matcher: early data may be replayed and its
		// client IP is not verified yet.
		return caddyhttp.Error(http.StatusTooEarly, errors.New("TLS handshake not complete, remote IP cannot be verified"))
	}
	if h.userHeaderKey != "" {
		delete(r.Header, h.userHeaderKey) // nobody chooses their own identity
	}
	vars, _ := r.Context().Value(caddyhttp.VarsCtxKey).(map[string]any)
	x := exchange{w: w, r: r, next: next, now: h.requestTime(vars)}
	x.clientIP, _ = vars[caddyhttp.ClientIPVarKey].(string)

	t := targets(r)
	if h.paths != nil {
		if rule, reason := h.inspectPath(t); reason != policy.ReasonOK {
			if err, stop := h.refuse(&x, refusal{status: http.StatusBadRequest, reason: reason, rule: rule}); stop {
				return err
			}
		}
	}

	if !h.protect.IsZero() && !h.protects(t) && !h.carriesToken(r) {
		// protect decides only whether a request without a token may
		// pass: a token is judged wherever it appears, so that it never
		// reaches the backend, which would take it for a password.
		return next.ServeHTTP(w, r)
	}

	x.ip, x.ipOK = policy.ParseClientIP(x.clientIP)
	if viaProxy, _ := vars[caddyhttp.TrustedProxyVarKey].(bool); viaProxy {
		x.ipOK = h.viaTrustedProxy(r, x.ip) && x.ipOK
	}
	// The throttle is asked twice: about the address before the
	// credential is read, so that a blocked address costs no lookup, and
	// about the address and the user name the credential claims after.
	addrBlocked := false
	if h.throttle != nil {
		var retry time.Duration
		if retry, addrBlocked = h.throttle.BlockedAddress(x.ip, x.now); addrBlocked {
			if err, stop := h.refuse(&x, refusal{status: http.StatusTooManyRequests, reason: policy.ReasonThrottled, retryAfter: retry}); stop {
				return err
			}
		}
	}

	if reason := h.app.storeFreshness(x.now); reason != policy.ReasonOK {
		if err, stop := h.refuse(&x, refusal{status: http.StatusServiceUnavailable, reason: reason}); stop {
			return err
		}
	}

	reason, found := h.lookup(&x)
	if h.throttle != nil && !addrBlocked {
		if retry, blocked := h.throttle.BlockedUser(x.ip, x.cred.User, x.now); blocked {
			if err, stop := h.refuse(&x, refusal{status: http.StatusTooManyRequests, reason: policy.ReasonThrottled, retryAfter: retry}); stop {
				return err
			}
		}
	}
	switch {
	case reason == policy.ReasonPasswordBlocked && h.Passwords == PasswordsPass && (len(h.passFrom) == 0 || policy.CheckIP(x.ip, x.ipOK, h.passFrom) == policy.ReasonOK):
		h.record(&x, event.TypePasswordPassedOn, event.OutcomePassed, policy.ReasonPasswordPassed, 0, "")
		return h.passPassword(w, r, next, x.ip, x.cred.User)
	case reason != policy.ReasonOK:
		return h.authFailed(&x, reason)
	}

	facts := policy.TokenFacts{Found: found, Revoked: x.entry.Revoked, Owner: x.entry.User, ExpiresAt: x.entry.ExpiresAt}
	if reason := policy.CheckToken(x.now, facts, x.cred); reason != policy.ReasonOK {
		return h.authFailed(&x, reason)
	}

	// The token is authentic: the rest is authorisation.
	for _, ref := range h.authorize(r, &t, x.entry, x.ip, x.ipOK, x.now) {
		if err, stop := h.refuse(&x, ref); stop {
			return err
		}
	}

	identify(r, &x.entry)
	if h.StripCredentials || h.userHeaderKey != "" {
		h.forward(r, x.cred.Scheme, x.entry.User)
	}
	h.app.used(x.entry.Key, x.entry.ID, x.ip, x.now) // x.ip is the zero Addr if !x.ipOK
	h.record(&x, event.TypeAuthSucceeded, event.OutcomeSuccess, policy.ReasonOK, 0, "")
	return next.ServeHTTP(w, r)
}

// requestTime is the time the gate judges a request at: when Caddy took
// it in (the start_time var Caddy sets on every request, from the clock
// the gate would read), or the app's clock when a test sets one.
func (h *Handler) requestTime(vars map[string]any) time.Time {
	if h.app.realClock {
		if t, ok := vars["start_time"].(time.Time); ok && !t.IsZero() {
			return t
		}
	}
	return h.app.now()
}

// exchange is one request on its way through the gate: what the handler
// has learnt of it so far, handed to the helpers that refuse and record.
type exchange struct {
	w        http.ResponseWriter
	r        *http.Request
	next     caddyhttp.Handler
	now      time.Time
	clientIP string     // Caddy's client IP (trusted_proxies applied)
	ip       netip.Addr // clientIP parsed; ipOK false if it did not parse or is a trusted proxy's own address standing in for a client IP header it could not read (unreadChain)
	ipOK     bool
	cred     policy.Credential // its scheme and, for Basic, user: never the secret
	entry    storage.Entry     // the token, once looked up
}

// identify sets the token's identity placeholders. One provider serves
// all three, rather than a locked map write and an allocation per
// placeholder; Caddy consults values set with Replacer.Set (such as by the
// vars handler) before it, so those still override the gate's. The
// provider is made once per token and kept in identities, so that
// accepting a request allocates nothing (TestServeHTTPAllocs): under load,
// allocation and the collector's work it brings are among the larger
// costs of a request (BenchmarkServeHTTPParallel).
func identify(r *http.Request, e *storage.Entry) {
	repl, ok := r.Context().Value(caddy.ReplacerCtxKey).(*caddy.Replacer)
	if !ok {
		return
	}
	repl.Map(identities.provider(e))
}

// identities is the process's cache of identity providers.
var identities identityCache

// identityCacheLen is how many tokens' providers identities holds: the
// tokens in use at once on a busy gateway. It is direct-mapped: two
// tokens that share a slot and alternate cost an allocation each time,
// as every request did without the cache.
const (
	identityCacheBits = 12
	identityCacheLen  = 1 << identityCacheBits
)

// identityCache maps tokens to their identity providers. A provider may
// be read by Caddy long after its request ends (an access log at the end
// of a long download), so it is immutable and never reused for another
// identity: a slot only ever points to a new one.
type identityCache struct {
	slots [identityCacheLen]atomic.Pointer[identity]
}

// identity is a token's identity as its placeholders show it, and the
// provider that serves them.
type identity struct {
	user, id, name string
	provide        caddy.ReplacerFunc
}

// provider returns the provider of e's identity: the cached one if its
// strings equal e's (compared in full, so a renamed token or one given to
// another owner gets a new one; the same strings, as the index hands
// out, compare by pointer), else a new one that replaces it.
func (c *identityCache) provider(e *storage.Entry) caddy.ReplacerFunc {
	slot := &c.slots[keytable.Hash(e.Key)>>(64-identityCacheBits)]
	if p := slot.Load(); p != nil && p.id == e.ID && p.name == e.Name && p.user == e.User {
		return p.provide
	}
	p := &identity{user: e.User, id: e.ID, name: e.Name}
	p.provide = func(key string) (any, bool) {
		switch key {
		case "http.auth.user.id":
			return p.user, true
		case "http.auth.user.token_id":
			return p.id, true
		case "http.auth.user.token_name":
			return p.name, true
		}
		return nil, false
	}
	slot.Store(p)
	return p.provide
}

// requestPaths are the paths the gate judges a request by: its raw
// request-target, and the path the backend will get if an earlier handler
// (rewrite, uri) changed it. Each is read once (policy.Target) for path
// inspection, protect and the token's scope, which all judge the path as
// the backend resolves it.
type requestPaths struct {
	raw       policy.Target
	rewritten policy.Target // if rewrote
	rewrote   bool
}

// targets returns the request's paths.
func targets(r *http.Request) requestPaths {
	raw := r.RequestURI
	if raw == "" {
		raw = r.URL.RequestURI()
	}
	t := requestPaths{raw: policy.NewTarget(raw)}
	if p := r.URL.EscapedPath(); p != "" && (!strings.HasPrefix(raw, p) || (len(raw) > len(p) && raw[len(p)] != '?')) {
		t.rewritten, t.rewrote = policy.NewTarget(p), true
	}
	return t
}

// inspectPath judges the raw request-target, and the rewritten path if any.
func (h *Handler) inspectPath(t requestPaths) (policy.PathRule, policy.Reason) {
	if rule, reason := h.paths.InspectTarget(t.raw); reason != policy.ReasonOK || !t.rewrote {
		return rule, reason
	}
	return h.paths.InspectTarget(t.rewritten)
}

// protects reports whether the request needs a token under protect: if
// either the raw target or the rewritten path resolves to a protected path.
func (h *Handler) protects(t requestPaths) bool {
	return h.protect.MatchTargetPath(t.raw) || (t.rewrote && h.protect.MatchTargetPath(t.rewritten))
}

// authorize runs the checks a valid token must pass and returns every
// refusal in order (only the first matters unless report_only).
func (h *Handler) authorize(r *http.Request, t *requestPaths, e storage.Entry, ip netip.Addr, ipOK bool, now time.Time) []refusal {
	var out []refusal
	forbid := func(reason policy.Reason) {
		out = append(out, refusal{status: http.StatusForbidden, reason: reason})
	}
	if reason := policy.CheckIP(ip, ipOK, h.allowIPs); reason != policy.ReasonOK {
		forbid(reason)
	}
	if reason := policy.CheckIP(ip, ipOK, e.AllowedIPs); reason != policy.ReasonOK {
		forbid(reason)
	}
	if h.app.holders.Restricted() {
		if reason := h.app.holders.Check(e.UserKey, h.app.store.GroupsOf(e.UserKey)); reason != policy.ReasonOK {
			forbid(reason)
		}
	}
	if e.Scope != nil {
		if reason := h.checkScope(r, t, e.Scope); reason != policy.ReasonOK {
			forbid(reason)
		}
	}
	if len(out) > 0 && !h.ReportOnly {
		return out // a refused request does not use up the token's rate
	}
	rate := e.RateLimit
	if rate == (policy.Rate{}) {
		rate = h.rate
	}
	if rate != (policy.Rate{}) {
		if retry, ok := h.limiter.Allow(e.Key, rate, now); !ok {
			out = append(out, refusal{status: http.StatusTooManyRequests, reason: policy.ReasonRateLimited, retryAfter: retry, rate: rate})
		}
	}
	return out
}

// checkScope judges a request against a token's scope: on its method, and
// on every method a method override header names (policy.
// MethodOverrideHeaders), since a backend that honours one runs the
// request as that method. Every verdict must pass, so a read-only token's
// GET with `X-HTTP-Method-Override: DELETE` is refused; the headers go on
// untouched for a token allowed both.
//
// The path judged is the path as the backend resolves it
// (policy.Target.Resolved, the value protect and the path rules see), not
// Caddy's cleaned path, which keeps ";params" and "\": those let
// /rest/api/..;/..;/secure pass a /rest/api/* scope. If an earlier handler
// changed the URL's path but not the request-target (see targets), both
// must be in scope.
func (h *Handler) checkScope(r *http.Request, t *requestPaths, s *policy.CompiledScope) policy.Reason {
	host, raw, rewritten := hostOnly(r.Host), t.raw.Resolved(), ""
	if t.rewrote {
		rewritten = t.rewritten.Resolved()
	}
	judge := func(method string) policy.Reason {
		read := h.read(s, r, t, method)
		if reason := s.Check(method, host, raw, read); reason != policy.ReasonOK || !t.rewrote {
			return reason
		}
		return s.Check(method, host, rewritten, read)
	}
	reason := judge(r.Method)
	for _, key := range policy.MethodOverrideHeaders {
		for _, v := range r.Header[key] {
			if reason != policy.ReasonOK {
				return reason
			}
			reason = judge(policy.OverriddenMethod(v))
		}
	}
	return reason
}

// read reports whether the request, run as method, only reads
// (policy.Reads), judged on the path and query the backend will get. Only
// a read-only scope asks: for any other it is false and costs nothing.
func (h *Handler) read(s *policy.CompiledScope, r *http.Request, t *requestPaths, method string) bool {
	if !s.ReadOnly() {
		return false
	}
	target := t.raw
	if t.rewrote {
		target = t.rewritten
	}
	return h.reads.Read(method, target, r.URL.RawQuery)
}

// authFailed handles a request whose credential did not authenticate: it
// counts the failure against the client IP and claimed user and refuses with 401 (or, with
// report_only, lets the request go on without an identity).
func (h *Handler) authFailed(x *exchange, reason policy.Reason) error {
	if h.throttle != nil && reason != policy.ReasonNoCredentials {
		h.throttle.Fail(x.ip, x.cred.User, x.now)
	}
	err, stop := h.refuse(x, refusal{status: http.StatusUnauthorized, reason: reason})
	if stop {
		return err
	}
	return x.next.ServeHTTP(x.w, x.r)
}

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

// refuse records a refusal and answers it, unless report_only lets the
// request go on: then it records a would_deny event and stop is false.
func (h *Handler) refuse(x *exchange, ref refusal) (err error, stop bool) {
	if h.ReportOnly {
		h.record(x, event.TypeWouldDeny, event.OutcomeReported, ref.reason, ref.status, ref.rule)
		return nil, false
	}
	typ, outcome := event.TypeDenied, event.OutcomeDenied
	if ref.status == http.StatusUnauthorized {
		typ, outcome = event.TypeAuthFailed, event.OutcomeFailure
	}
	h.record(x, typ, outcome, ref.reason, ref.status, ref.rule)

	text := &textForbidden
	hdr := x.w.Header()
	n := 5 // the most a refusal sets: two challenges and respond's three
	if ref.status == http.StatusTooManyRequests {
		n = 8 // Retry-After, the four rate-limit headers, respond's three
	}
	hv := headerValues{buf: make([]string, 0, n)}
	switch ref.status {
	case http.StatusUnauthorized:
		// Expired and revoked are only ever the reason when the secret
		// matched (policy.CheckToken): the client holds the token.
		text = &textUnauthorized
		bearer := h.bearerChallenge
		switch ref.reason {
		case policy.ReasonPasswordBlocked:
			text = &textPasswordBlocked
		case policy.ReasonExpired:
			text, bearer = &textExpired, h.bearerExpired
		case policy.ReasonRevoked:
			text, bearer = &textRevoked, h.bearerRevoked
		}
		if x.cred.Scheme == policy.SchemeBearer {
			hv.set(hdr, "Www-Authenticate", h.basicChallenge, bearer)
		} else {
			hv.set(hdr, "Www-Authenticate", h.basicChallenge)
		}
	case http.StatusBadRequest:
		text = &textPathBlocked
	case http.StatusServiceUnavailable:
		text = &textStoreStale
	case http.StatusTooManyRequests:
		text = &textTooMany
		secs := int((ref.retryAfter + time.Second - 1) / time.Second)
		hv.set(hdr, "Retry-After", strconv.Itoa(max(secs, 1)))
		rh := h.throttleRate
		if ref.reason == policy.ReasonRateLimited {
			rh = newRateHeaders(ref.rate.Bucket())
		}
		if rh.limit != "" {
			hv.set(hdr, "X-Ratelimit-Limit", rh.limit)
			hv.set(hdr, "X-Ratelimit-Remaining", "0")
			hv.set(hdr, "X-Ratelimit-Fillrate", rh.fillRate)
			hv.set(hdr, "X-Ratelimit-Interval-Seconds", rh.interval)
		}
	}
	return respond(x.w, x.r, ref.status, text, &hv), true
}

// rateHeaders are the values of Jira Data Center's rate-limit headers on
// a 429: X-RateLimit-Limit (the most requests at once), -FillRate (how
// many more every -Interval-Seconds), and -Remaining, always 0 here.
// python3-jira reads all of them on every 429 and fails without them.
type rateHeaders struct{ limit, fillRate, interval string }

func newRateHeaders(limit, fillRate, interval int64) rateHeaders {
	return rateHeaders{
		limit:    strconv.FormatInt(limit, 10),
		fillRate: strconv.FormatInt(fillRate, 10),
		interval: strconv.FormatInt(interval, 10),
	}
}

// headerValues gives the header values of one refusal a single
// allocation, where Header.Set makes one per header. Keys are given in
// canonical form, as Set would make them. Each slice is capped at its own
// length, so a later handler that appends to one (Header.Add) copies it
// rather than overwrite the next.
type headerValues struct{ buf []string }

// set sets the header key to the values vs.
func (hv *headerValues) set(hdr http.Header, key string, vs ...string) {
	start := len(hv.buf)
	hv.buf = append(hv.buf, vs...)
	hdr[key] = hv.buf[start:len(hv.buf):len(hv.buf)]
}

// refusalText is a refusal's fixed answer, built once: the client only
// ever gets one of these, never the precise reason.
type refusalText struct {
	err    error
	body   []byte
	length string
}

func newRefusalText(msg string) refusalText {
	body := []byte(msg + "\n")
	return refusalText{err: errors.New(msg), body: body, length: strconv.Itoa(len(body))}
}

var (
	textUnauthorized    = newRefusalText(msgUnauthorized)
	textExpired         = newRefusalText(msgExpired)
	textRevoked         = newRefusalText(msgRevoked)
	textPasswordBlocked = newRefusalText(msgPasswordBlocked)
	textPathBlocked     = newRefusalText(msgPathBlocked)
	textForbidden       = newRefusalText(msgForbidden)
	textTooMany         = newRefusalText(msgTooMany)
	textStoreStale      = newRefusalText(msgStoreStale)
)

// respond answers a refusal: as a handler error when the server has
// handle_errors routes to render it, otherwise with the short text.
func respond(w http.ResponseWriter, r *http.Request, status int, text *refusalText, hv *headerValues) error {
	if hasErrorRoutes(r) {
		return caddyhttp.Error(status, text.err)
	}
	hdr := w.Header()
	hv.set(hdr, "Content-Type", "text/plain; charset=utf-8")
	hv.set(hdr, "Content-Length", text.length)
	hv.set(hdr, "X-Content-Type-Options", "nosniff")
	w.WriteHeader(status)
	_, _ = w.Write(text.body)
	return nil
}

// hasErrorRoutes reports whether the request's server has handle_errors
// routes that should render the error response.
func hasErrorRoutes(r *http.Request) bool {
	srv, ok := r.Context().Value(caddyhttp.ServerCtxKey).(*caddyhttp.Server)
	return ok && srv != nil && srv.Errors != nil && len(srv.Errors.Routes) > 0
}

// record counts a decision and hands its audit event to the app's sink.
// The event is built here once, for every sink: the zap log, the database
// (and the summaries of a flood) and the api_token_denied Caddy event. What
// the client typed (the user name, the method, the host, the path) goes in
// with any token in it redacted (token.Redact), and the client
// IP unmapped.
func (h *Handler) record(x *exchange, typ event.Type, outcome event.Outcome, reason policy.Reason, status int, rule policy.PathRule) {
	requestCounter(outcome, reason).Inc()
	if typ == event.TypeAuthSucceeded && h.app.skipSuccess {
		return // the bulk of the traffic, and nobody to tell
	}
	r, e := x.r, &x.entry
	user, claimed := e.User, ""
	switch {
	case user == "":
		user = x.cred.User
	case x.cred.User != "" && !strings.EqualFold(x.cred.User, user):
		claimed = x.cred.User // as policy.CheckToken compares them
	}
	ev := event.Event{
		Time:        x.now,
		Type:        typ,
		Outcome:     outcome,
		Reason:      string(reason),
		User:        token.Redact(user),
		ClaimedUser: token.Redact(claimed),
		TokenID:     e.ID,
		Scheme:      x.cred.Scheme.String(),
		ClientIP:    event.UnmapIP(x.clientIP),
		Method:      token.Redact(r.Method),
		Host:        token.Redact(r.Host),
		Path:        token.Redact(r.URL.Path),
		Status:      status,
		Rule:        string(rule),
	}
	if (typ == event.TypeDenied || typ == event.TypeAuthFailed) && h.app.auditState.wants(eventDenied) {
		// Only built when someone listens: a denial flood must stay cheap.
		data := map[string]any{
			"reason": ev.Reason, "status": ev.Status, "user": ev.User, "token_id": ev.TokenID,
			"client_ip": ev.ClientIP, "method": ev.Method, "host": ev.Host, "path": ev.Path,
		}
		if ev.ClaimedUser != "" {
			data["claimed_user"] = ev.ClaimedUser
		}
		h.app.auditState.emit(h.ctx, eventDenied, data)
	}
	h.app.audit.Record(ev)
}

// forward readies an accepted request for the backend: with
// strip_credentials, every carrier of credentials removed (stripCarriers);
// with user_header, the user set. The user header takes the value slice of the credential header it
// replaces, if there is one (the request's own, and no longer anyone's),
// and goes in before that header comes out: an insert into a request's
// small header map right after a delete from it waits for the delete's
// writes to complete, and the other order does not wait
// (BenchmarkServeHTTP/…/valid_basic_stripped runs this path).
func (h *Handler) forward(r *http.Request, scheme policy.Scheme, user string) {
	var key string // the header that held the token, whose values the user header takes
	var spare []string
	if h.StripCredentials {
		switch scheme {
		case policy.SchemeBasic, policy.SchemeBearer:
			key = "Authorization"
		case policy.SchemeHeader:
			key = h.headerKey
		}
		if key != "" {
			spare = r.Header[key]
		}
	}
	if h.userHeaderKey != "" { // never key: Validate sees to that
		user = h.UserHeaderEncoding.encode(user)
		if len(spare) == 0 {
			r.Header[h.userHeaderKey] = []string{user}
		} else {
			spare[0] = user
			r.Header[h.userHeaderKey] = spare[:1:1]
		}
	}
	if h.StripCredentials {
		h.stripCarriers(r)
	}
}

// stripCarriers removes every carrier of credentials the gate reads: all
// Authorization values, the configured header and every occurrence of the
// query parameter. Only the one that held the token can have a value
// (credential refuses more), but the backend need see none of them.
func (h *Handler) stripCarriers(r *http.Request) {
	for _, key := range [...]string{"Authorization", h.headerKey} {
		if _, sent := r.Header[key]; sent && key != "" {
			delete(r.Header, key)
		}
	}
	if h.Query != "" && r.URL.RawQuery != "" {
		if _, n, _ := queryParam(r.URL.RawQuery, h.Query); n > 0 {
			r.URL.RawQuery = removeQueryParam(r.URL.RawQuery, h.Query)
		}
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

// hostOnly strips a port from a Host header value.
func hostOnly(hostport string) string {
	if !strings.Contains(hostport, ":") {
		return hostport // no port; and SplitHostPort allocates its error
	}
	if host, _, err := net.SplitHostPort(hostport); err == nil {
		return host
	}
	return hostport
}

// Interface guards
var (
	_ caddy.Provisioner           = (*Handler)(nil)
	_ caddy.Validator             = (*Handler)(nil)
	_ caddy.CleanerUpper          = (*Handler)(nil)
	_ caddyhttp.MiddlewareHandler = (*Handler)(nil)
)
