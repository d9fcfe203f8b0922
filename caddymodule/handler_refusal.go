package caddymodule

import (
	"errors"
	"net/http"
	"strconv"
	"strings"
	"time"

	"github.com/caddyserver/caddy/v2/modules/caddyhttp"

	"github.com/apitoken/caddy-apitoken/event"
	"github.com/apitoken/caddy-apitoken/policy"
	"github.com/apitoken/caddy-apitoken/token"
)

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
