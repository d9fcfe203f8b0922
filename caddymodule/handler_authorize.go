package caddymodule

import (
	"net/http"
	"net/netip"
	"strings"
	"time"

	"github.com/apitoken/caddy-apitoken/policy"
	"github.com/apitoken/caddy-apitoken/storage"
)

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
