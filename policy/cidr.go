package policy

import (
	"errors"
	"fmt"
	"net/netip"
	"strings"
)

// Reasons for client address decisions.
const (
	// ReasonIPNotAllowed: the client address lies outside every allowed
	// prefix.
	ReasonIPNotAllowed Reason = "ip_not_allowed"
	// ReasonIPUnparsable: an allow list applies but the client address
	// could not be read, so the request is refused (fail closed).
	ReasonIPUnparsable Reason = "ip_unparsable"
)

// PrivateRanges is the shorthand ParsePrefixes expands to the private and
// loopback ranges, the same list as Caddy's "private_ranges"
// (caddyhttp.PrivateRangesCIDR).
const PrivateRanges = "private_ranges"

// privateRangesCIDR is Caddy's list, verbatim; ParsePrefixes masks
// 127.0.0.1/8 to 127.0.0.0/8 and reads ::1 as ::1/128.
var privateRangesCIDR = [...]string{
	"192.168.0.0/16",
	"172.16.0.0/12",
	"10.0.0.0/8",
	"127.0.0.1/8",
	"fd00::/8",
	"::1",
}

// ParsePrefixes parses an allow list once, at provision time. Each item is
// a CIDR ("10.0.0.0/8", "2001:db8::/32"), a bare address (read as /32 or
// /128) or PrivateRanges. Prefixes are masked ("10.1.2.3/8" is 10.0.0.0/8)
// and IPv4-mapped IPv6 prefixes of 96 bits or more are unmapped
// ("::ffff:10.0.0.0/104" is 10.0.0.0/8), so they match the unmapped client
// addresses ParseClientIP returns. An IPv6 prefix never matches an IPv4
// client: "::/0" admits every IPv6 client and no IPv4 one.
//
// An empty item, an address with a zone ("fe80::1%eth0") or anything
// netip cannot parse is an error naming the item. An empty list gives a nil
// slice: no limit.
func ParsePrefixes(items []string) ([]netip.Prefix, error) {
	var out []netip.Prefix
	for _, item := range items {
		if item == PrivateRanges {
			for _, r := range privateRangesCIDR {
				p, err := parsePrefix(r)
				if err != nil {
					return nil, fmt.Errorf("parsing CIDR %q: expanding %s: %w", item, PrivateRanges, err)
				}
				out = append(out, p)
			}
			continue
		}
		p, err := parsePrefix(item)
		if err != nil {
			return nil, fmt.Errorf("parsing CIDR %q: %w", item, err)
		}
		out = append(out, p)
	}
	return out, nil
}

var (
	errEmptyPrefix = errors.New("empty")
	errZonedPrefix = errors.New("an address with a zone cannot be allowed")
)

func parsePrefix(s string) (netip.Prefix, error) {
	if s == "" {
		return netip.Prefix{}, errEmptyPrefix
	}
	var p netip.Prefix
	if strings.Contains(s, "/") {
		var err error
		if p, err = netip.ParsePrefix(s); err != nil {
			return netip.Prefix{}, err
		}
	} else {
		a, err := netip.ParseAddr(s)
		if err != nil {
			return netip.Prefix{}, err
		}
		if a.Zone() != "" {
			return netip.Prefix{}, errZonedPrefix
		}
		p = netip.PrefixFrom(a, a.BitLen())
	}
	p = p.Masked()
	if a := p.Addr(); a.Is4In6() && p.Bits() >= 96 {
		p = netip.PrefixFrom(a.Unmap(), p.Bits()-96)
	}
	return p, nil
}

// ParseClientIP reads the client address as Caddy's client_ip variable
// (caddyhttp.ClientIPVarKey) holds it, so trusted_proxies has already been
// applied. It accepts a bare address or one with a port ("1.2.3.4:80",
// "[::1]:443", "[::1]"), drops any zone ("fe80::1%eth0") and unmaps
// IPv4-mapped IPv6 ("::ffff:10.1.2.3" is 10.1.2.3), as net/netip says to
// before Prefix.Contains. "", "@" (a Unix socket peer) and anything else
// unreadable give false.
func ParseClientIP(s string) (netip.Addr, bool) {
	if s == "" {
		return netip.Addr{}, false
	}
	a, err := netip.ParseAddr(s)
	if err != nil {
		ap, perr := netip.ParseAddrPort(s)
		switch {
		case perr == nil:
			a = ap.Addr()
		case len(s) > 2 && s[0] == '[' && s[len(s)-1] == ']':
			// Brackets belong to IPv6 only, as in ParseAddrPort.
			if a, err = netip.ParseAddr(s[1 : len(s)-1]); err != nil || !a.Is6() {
				return netip.Addr{}, false
			}
		default:
			return netip.Addr{}, false
		}
	}
	return a.WithZone("").Unmap(), true
}

// IPRule is an allow list of client address prefixes, parsed once by
// ParseIPRule. The zero value has no prefixes and allows every client.
type IPRule struct {
	prefixes []netip.Prefix
}

// ParseIPRule parses items as ParsePrefixes does.
func ParseIPRule(items []string) (IPRule, error) {
	p, err := ParsePrefixes(items)
	if err != nil {
		return IPRule{}, err
	}
	return IPRule{prefixes: p}, nil
}

// Prefixes returns the parsed prefixes; callers must not modify them.
func (r IPRule) Prefixes() []netip.Prefix { return r.prefixes }

// Check is CheckIP over r's prefixes.
func (r IPRule) Check(addr netip.Addr, ok bool) Reason {
	return CheckIP(addr, ok, r.prefixes)
}

// CheckIP decides whether a client address (from ParseClientIP: addr and
// whether it parsed) is allowed by prefixes (from ParsePrefixes).
//
//   - An empty list is no limit: ReasonOK, even when the address is unknown.
//   - A non-empty list with no readable address: ReasonIPUnparsable.
//   - An address inside any prefix: ReasonOK; outside all: ReasonIPNotAllowed.
//
// The address is unmapped and stripped of its zone first, so an
// "::ffff:10.1.2.3" built elsewhere still matches 10.0.0.0/8. CheckIP does
// not allocate.
func CheckIP(addr netip.Addr, ok bool, prefixes []netip.Prefix) Reason {
	if len(prefixes) == 0 {
		return ReasonOK
	}
	if !ok || !addr.IsValid() {
		return ReasonIPUnparsable
	}
	addr = addr.WithZone("").Unmap()
	for _, p := range prefixes {
		if p.Contains(addr) {
			return ReasonOK
		}
	}
	return ReasonIPNotAllowed
}
