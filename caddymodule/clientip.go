package caddymodule

import (
	"net"
	"net/http"
	"net/netip"
	"strings"
	"sync/atomic"

	"github.com/caddyserver/caddy/v2/modules/caddyhttp"
	"go.uber.org/zap"
)

// viaTrustedProxy looks at a request that Caddy took from a trusted proxy
// (vars[caddyhttp.TrustedProxyVarKey]), whose client IP ip Caddy read from
// the server's client IP headers (X-Forwarded-For by default). It reports
// whether that address is known: not when Caddy fell back to the proxy's
// own address because the header did not parse (see unreadChain). The
// first such request in the default, non-strict mode also gets the
// spoofing warning (warnSpoofable).
func (h *Handler) viaTrustedProxy(r *http.Request, ip netip.Addr) (known bool) {
	srv, _ := r.Context().Value(caddyhttp.ServerCtxKey).(*caddyhttp.Server)
	if srv == nil {
		return true
	}
	if srv.TrustedProxiesStrict == 0 && atomic.LoadInt32(&h.warnedSpoofable) == 0 && atomic.CompareAndSwapInt32(&h.warnedSpoofable, 0, 1) {
		h.warnSpoofable(srv)
	}
	return !unreadChain(r, srv.ClientIPHeaders, ip)
}

// unreadChain reports whether Caddy's client IP ip for a request from a
// trusted proxy is the proxy's own address standing in for a client IP
// header it could not read. Caddy (determineTrustedProxy in
// modules/caddyhttp/server.go) takes the header's left-most address that
// parses, or in strict mode the right-most one that parses and is not a
// trusted proxy, and falls back to the proxy's own address when there is
// none. So when ip is the proxy's address and the header is present but
// some part of it is no address (garbage, an empty value, "unknown"), the
// client's address is not known: the proxy's must not stand in for it in
// an IP limit. A header that is absent (the proxy itself is the client) or
// that holds only trusted addresses (strict mode) keeps Caddy's answer.
func unreadChain(r *http.Request, headers []string, ip netip.Addr) bool {
	peer, _, err := net.SplitHostPort(r.RemoteAddr)
	if err != nil {
		return false // not an IP peer: Caddy's client IP is no address either
	}
	peer, _, _ = strings.Cut(peer, "%")
	if p, err := netip.ParseAddr(peer); err != nil || p.Unmap() != ip {
		return false
	}
	for _, name := range headers {
		for _, v := range r.Header.Values(name) {
			for part := range strings.SplitSeq(v, ",") {
				if !forwardedAddr(part) {
					return true
				}
			}
		}
	}
	return false
}

// forwardedAddr reports whether Caddy reads an address from one part of a
// client IP header: an IP with an optional port and zone, spaces trimmed.
func forwardedAddr(part string) bool {
	host, _, err := net.SplitHostPort(part)
	if err != nil {
		host = part
	}
	host, _, _ = strings.Cut(strings.TrimSpace(host), "%")
	_, err = netip.ParseAddr(host)
	return err == nil
}

// warnSpoofable warns, once per handler, that the handler's IP limits
// judge an address a client can choose: behind trusted proxies in Caddy's
// default mode, the client IP is the left-most address of the client IP
// header, and a client that sends its own header puts any address there.
func (h *Handler) warnSpoofable(srv *caddyhttp.Server) {
	var limits []string
	if len(h.allowIPs) > 0 {
		limits = append(limits, "allow_ips")
	}
	if len(h.passFrom) > 0 {
		limits = append(limits, "passwords pass_from")
	}
	limits = append(limits, "tokens' allowed_ips")
	h.logger.Warn("client IP limits can be bypassed: the server trusts proxies without trusted_proxies_strict, so the client IP is the left-most address of a header the client can forge",
		zap.String("server", srv.Name()),
		zap.Strings("limits", limits),
		zap.Strings("client_ip_headers", srv.ClientIPHeaders),
		zap.String("fix", "set trusted_proxies_strict in the server's options"))
}
