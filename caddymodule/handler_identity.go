package caddymodule

import (
	"net/http"
	"net/url"
	"strings"
	"sync/atomic"

	"github.com/caddyserver/caddy/v2"

	"github.com/apitoken/caddy-apitoken/internal/keytable"
	"github.com/apitoken/caddy-apitoken/policy"
	"github.com/apitoken/caddy-apitoken/storage"
)

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
