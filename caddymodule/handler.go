package caddymodule

import (
	"errors"
	"fmt"
	"net"
	"net/http"
	"net/netip"
	"strings"
	"time"

	"github.com/caddyserver/caddy/v2"
	"github.com/caddyserver/caddy/v2/modules/caddyhttp"
	"go.uber.org/zap"
	"golang.org/x/net/http/httpguts"

	"github.com/apitoken/caddy-apitoken/event"
	"github.com/apitoken/caddy-apitoken/limit"
	"github.com/apitoken/caddy-apitoken/policy"
	"github.com/apitoken/caddy-apitoken/storage"
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
