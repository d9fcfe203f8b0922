package policy

import (
	"net/netip"
	"slices"
	"strings"
	"testing"
)

func prefixStrings(ps []netip.Prefix) []string {
	out := make([]string, len(ps))
	for i, p := range ps {
		out[i] = p.String()
	}
	return out
}

func TestParsePrefixes(t *testing.T) {
	tests := []struct {
		name  string
		items []string
		want  []string
	}{
		{"nil", nil, []string{}},
		{"cidr v4", []string{"10.0.0.0/8"}, []string{"10.0.0.0/8"}},
		{"masked v4", []string{"10.1.2.3/8"}, []string{"10.0.0.0/8"}},
		{"bare v4", []string{"192.0.2.7"}, []string{"192.0.2.7/32"}},
		{"cidr v6", []string{"2001:db8::/32"}, []string{"2001:db8::/32"}},
		{"masked v6", []string{"2001:db8::1/32"}, []string{"2001:db8::/32"}},
		{"bare v6", []string{"2001:db8::1"}, []string{"2001:db8::1/128"}},
		{"link-local v6", []string{"fe80::/10"}, []string{"fe80::/10"}},
		{"mapped bare", []string{"::ffff:10.1.2.3"}, []string{"10.1.2.3/32"}},
		{"mapped /104", []string{"::ffff:10.0.0.0/104"}, []string{"10.0.0.0/8"}},
		{"mapped /96 is all of v4", []string{"::ffff:0:0/96"}, []string{"0.0.0.0/0"}},
		{"mapped shorter than /96 stays v6", []string{"::ffff:10.0.0.0/80"}, []string{"::/80"}},
		{"everything", []string{"0.0.0.0/0", "::/0"}, []string{"0.0.0.0/0", "::/0"}},
		{"private ranges", []string{PrivateRanges}, []string{
			"192.168.0.0/16", "172.16.0.0/12", "10.0.0.0/8", "127.0.0.0/8", "fd00::/8", "::1/128",
		}},
		{"private ranges and more", []string{"203.0.113.0/24", PrivateRanges}, []string{
			"203.0.113.0/24", "192.168.0.0/16", "172.16.0.0/12", "10.0.0.0/8", "127.0.0.0/8", "fd00::/8", "::1/128",
		}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := ParsePrefixes(tt.items)
			if err != nil {
				t.Fatalf("ParsePrefixes(%q): %v", tt.items, err)
			}
			if s := prefixStrings(got); !slices.Equal(s, tt.want) {
				t.Errorf("ParsePrefixes(%q) = %q, want %q", tt.items, s, tt.want)
			}
		})
	}
}

func TestParsePrefixesErrors(t *testing.T) {
	tests := []struct {
		name  string
		items []string
		want  string // the error starts with this
	}{
		{"bits out of range", []string{"10.0.0.0/33"}, `parsing CIDR "10.0.0.0/33": `},
		{"v6 bits out of range", []string{"2001:db8::/129"}, `parsing CIDR "2001:db8::/129": `},
		{"empty", []string{"10.0.0.0/8", ""}, `parsing CIDR "": empty`},
		{"junk", []string{"localhost"}, `parsing CIDR "localhost": `},
		{"zone", []string{"fe80::1%eth0"}, `parsing CIDR "fe80::1%eth0": an address with a zone`},
		{"zoned prefix", []string{"fe80::1%eth0/64"}, `parsing CIDR "fe80::1%eth0/64": `},
		{"port", []string{"10.0.0.1:80"}, `parsing CIDR "10.0.0.1:80": `},
		{"space", []string{" 10.0.0.0/8"}, `parsing CIDR " 10.0.0.0/8": `},
		{"no bits", []string{"10.0.0.0/"}, `parsing CIDR "10.0.0.0/": `},
		{"wrong case shorthand", []string{"Private_Ranges"}, `parsing CIDR "Private_Ranges": `},
		{"v4 octet", []string{"256.0.0.0/8"}, `parsing CIDR "256.0.0.0/8": `},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := ParsePrefixes(tt.items)
			if err == nil {
				t.Fatalf("ParsePrefixes(%q) = %v, nil; want error", tt.items, got)
			}
			if !strings.HasPrefix(err.Error(), tt.want) {
				t.Errorf("ParsePrefixes(%q) error %q, want prefix %q", tt.items, err, tt.want)
			}
		})
	}
}

func TestParseClientIP(t *testing.T) {
	tests := []struct {
		in   string
		want string // "" means not ok
	}{
		{"10.1.2.3", "10.1.2.3"},
		{"10.1.2.3:8080", "10.1.2.3"},
		{"2001:db8::1", "2001:db8::1"},
		{"[2001:db8::1]:443", "2001:db8::1"},
		{"[2001:db8::1]", "2001:db8::1"},
		{"::ffff:10.1.2.3", "10.1.2.3"},
		{"[::ffff:10.1.2.3]:80", "10.1.2.3"},
		{"fe80::1%eth0", "fe80::1"},
		{"[fe80::1%eth0]:80", "fe80::1"},
		{"::1", "::1"},
		{"", ""},
		{"@", ""},
		{"localhost", ""},
		{"localhost:80", ""},
		{"10.1.2.3:", ""},
		{"10.1.2.3:99999", ""},
		{"[10.1.2.3]", ""},
		{"[]", ""},
		{"10.1.2", ""},
		{" 10.1.2.3", ""},
		{"10.1.2.3/32", ""},
	}
	for _, tt := range tests {
		t.Run(tt.in, func(t *testing.T) {
			got, ok := ParseClientIP(tt.in)
			switch {
			case tt.want == "" && ok:
				t.Errorf("ParseClientIP(%q) = %v, true; want false", tt.in, got)
			case tt.want != "" && (!ok || got != netip.MustParseAddr(tt.want)):
				t.Errorf("ParseClientIP(%q) = %v, %v; want %s, true", tt.in, got, ok, tt.want)
			}
		})
	}
}

func TestCheckIP(t *testing.T) {
	mustPrefixes := func(items ...string) []netip.Prefix {
		t.Helper()
		p, err := ParsePrefixes(items)
		if err != nil {
			t.Fatal(err)
		}
		return p
	}
	tenNet := mustPrefixes("10.0.0.0/8")
	mixed := mustPrefixes("10.0.0.0/8", "2001:db8::/32", "fe80::/10")
	private := mustPrefixes(PrivateRanges)
	mapped := mustPrefixes("::ffff:10.0.0.0/104")
	allV6 := mustPrefixes("::/0")

	tests := []struct {
		name     string
		client   string // passed through ParseClientIP
		prefixes []netip.Prefix
		want     Reason
	}{
		{"no list, known client", "203.0.113.9", nil, ReasonOK},
		{"no list, unknown client", "", nil, ReasonOK},
		{"no list, junk client", "@", []netip.Prefix{}, ReasonOK},
		{"list, unknown client", "", tenNet, ReasonIPUnparsable},
		{"list, junk client", "not-an-ip", tenNet, ReasonIPUnparsable},
		{"inside", "10.1.2.3", tenNet, ReasonOK},
		{"inside with port", "10.1.2.3:51234", tenNet, ReasonOK},
		{"outside", "11.0.0.1", tenNet, ReasonIPNotAllowed},
		{"edge low", "10.0.0.0", tenNet, ReasonOK},
		{"edge high", "10.255.255.255", tenNet, ReasonOK},
		{"mapped client vs v4 list", "::ffff:10.1.2.3", tenNet, ReasonOK},
		{"mapped client outside", "::ffff:11.1.2.3", tenNet, ReasonIPNotAllowed},
		{"v4 client vs mapped list", "10.1.2.3", mapped, ReasonOK},
		{"v6 inside", "2001:db8:1::5", mixed, ReasonOK},
		{"v6 outside", "2001:db9::1", mixed, ReasonIPNotAllowed},
		{"zoned client", "fe80::1%eth0", mixed, ReasonOK},
		{"zoned client with port", "[fe80::1%eth0]:80", mixed, ReasonOK},
		{"v4 client vs ::/0", "10.1.2.3", allV6, ReasonIPNotAllowed},
		{"private loopback", "127.0.0.1", private, ReasonOK},
		{"private v6 loopback", "::1", private, ReasonOK},
		{"private ula", "fd12:3456::1", private, ReasonOK},
		{"private 172.31", "172.31.255.1", private, ReasonOK},
		{"public 172.32", "172.32.0.1", private, ReasonIPNotAllowed},
		{"public v6", "2001:db8::1", private, ReasonIPNotAllowed},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			addr, ok := ParseClientIP(tt.client)
			if got := CheckIP(addr, ok, tt.prefixes); got != tt.want {
				t.Errorf("CheckIP(%q via ParseClientIP, %v) = %q, want %q", tt.client, prefixStrings(tt.prefixes), got, tt.want)
			}
		})
	}

	// Addresses built elsewhere are unmapped and unzoned by CheckIP itself.
	raw := netip.MustParseAddr("::ffff:10.1.2.3")
	if got := CheckIP(raw, true, tenNet); got != ReasonOK {
		t.Errorf("CheckIP(%v) = %q, want ok", raw, got)
	}
	zoned := netip.MustParseAddr("fe80::1%eth0")
	if got := CheckIP(zoned, true, mixed); got != ReasonOK {
		t.Errorf("CheckIP(%v) = %q, want ok", zoned, got)
	}
	if got := CheckIP(netip.Addr{}, true, tenNet); got != ReasonIPUnparsable {
		t.Errorf("CheckIP(zero Addr, true) = %q, want %q", got, ReasonIPUnparsable)
	}
}

func TestIPRule(t *testing.T) {
	r, err := ParseIPRule([]string{"10.0.0.0/8", "2001:db8::1"})
	if err != nil {
		t.Fatal(err)
	}
	if got := prefixStrings(r.Prefixes()); !slices.Equal(got, []string{"10.0.0.0/8", "2001:db8::1/128"}) {
		t.Errorf("Prefixes() = %q", got)
	}
	for client, want := range map[string]Reason{"10.9.9.9": ReasonOK, "2001:db8::1": ReasonOK, "2001:db8::2": ReasonIPNotAllowed, "": ReasonIPUnparsable} {
		addr, ok := ParseClientIP(client)
		if got := r.Check(addr, ok); got != want {
			t.Errorf("Check(%q) = %q, want %q", client, got, want)
		}
	}
	var zero IPRule
	if got := zero.Check(netip.Addr{}, false); got != ReasonOK {
		t.Errorf("zero IPRule Check = %q, want ok", got)
	}
	if _, err := ParseIPRule([]string{"10.0.0.0/33"}); err == nil || !strings.HasPrefix(err.Error(), `parsing CIDR "10.0.0.0/33"`) {
		t.Errorf("ParseIPRule error %v", err)
	}
}

func TestCheckIPAllocs(t *testing.T) {
	prefixes, err := ParsePrefixes([]string{PrivateRanges, "2001:db8::/32", "203.0.113.0/24"})
	if err != nil {
		t.Fatal(err)
	}
	for _, a := range []netip.Addr{
		netip.MustParseAddr("203.0.113.9"),
		netip.MustParseAddr("198.51.100.1"),
		netip.MustParseAddr("::ffff:10.1.2.3"),
		netip.MustParseAddr("fe80::1%eth0"),
		netip.MustParseAddr("2001:db8::1"),
	} {
		if n := testing.AllocsPerRun(100, func() { CheckIP(a, true, prefixes) }); n != 0 {
			t.Errorf("CheckIP(%v) allocates %v times, want 0", a, n)
		}
	}
}

func BenchmarkCheckIP(b *testing.B) {
	prefixes, err := ParsePrefixes([]string{PrivateRanges, "2001:db8::/32", "203.0.113.0/24"})
	if err != nil {
		b.Fatal(err)
	}
	for _, bb := range []struct{ name, addr string }{
		{"v4_last", "203.0.113.9"},
		{"v4_miss", "198.51.100.1"},
		{"v6_hit", "2001:db8::1"},
	} {
		a := netip.MustParseAddr(bb.addr)
		b.Run(bb.name, func(b *testing.B) {
			b.ReportAllocs()
			for b.Loop() {
				CheckIP(a, true, prefixes)
			}
		})
	}
}

// FuzzParsePrefixes checks that whatever ParsePrefixes accepts is in the
// canonical form CheckIP relies on: valid, masked, unzoned, IPv4 not
// mapped into IPv6, containing its own address, and printed as a string
// that parses back to the same prefix.
func FuzzParsePrefixes(f *testing.F) {
	for _, seed := range []string{
		"10.0.0.0/8",          // plain IPv4 CIDR
		"10.1.2.3/8",          // host bits set: masked
		"192.0.2.7",           // bare IPv4: /32
		"2001:db8::/32",       // IPv6 CIDR
		"2001:db8::1",         // bare IPv6: /128
		"::ffff:10.0.0.0/104", // IPv4-mapped: unmapped to 10.0.0.0/8
		"::ffff:0:0/96",       // all mapped IPv4: 0.0.0.0/0
		"::ffff:10.0.0.0/80",  // mapped but wider than /96: stays IPv6
		"::ffff:1.2.3.4",      // bare mapped: 1.2.3.4/32
		"0.0.0.0/0",           // everything IPv4
		"::/0",                // everything IPv6
		"private_ranges",      // the shorthand
		"fe80::1%eth0",        // zone: refused
		"fe80::1%eth0/64",     // zoned prefix: refused by netip
		"10.0.0.0/33",         // too many bits
		"10.0.0.0/08",         // leading zero in bits
		"",                    // empty
		"1.2.3.4:80",          // a port is not a prefix
		"[::1]/128",           // brackets
		"1.2.3.4/-1",          // negative bits
	} {
		f.Add(seed)
	}
	f.Fuzz(func(t *testing.T, item string) {
		ps, err := ParsePrefixes([]string{item})
		if err != nil {
			if !strings.HasPrefix(err.Error(), "parsing CIDR ") {
				t.Fatalf("ParsePrefixes(%q): error %q does not name the operation", item, err)
			}
			return
		}
		if item != PrivateRanges && len(ps) != 1 {
			t.Fatalf("ParsePrefixes(%q) = %v, want one prefix", item, ps)
		}
		for _, p := range ps {
			a := p.Addr()
			switch {
			case !p.IsValid():
				t.Fatalf("ParsePrefixes(%q) gave invalid %v", item, p)
			case p != p.Masked():
				t.Fatalf("ParsePrefixes(%q) gave unmasked %v", item, p)
			case a.Zone() != "":
				t.Fatalf("ParsePrefixes(%q) gave zoned %v", item, p)
			case a.Is4In6():
				t.Fatalf("ParsePrefixes(%q) gave mapped %v", item, p)
			case !p.Contains(a):
				t.Fatalf("ParsePrefixes(%q): %v does not contain its own address", item, p)
			case CheckIP(a, true, ps) != ReasonOK:
				t.Fatalf("ParsePrefixes(%q): CheckIP refuses %v's own address", item, p)
			}
			again, err := ParsePrefixes([]string{p.String()})
			if err != nil || len(again) != 1 || again[0] != p {
				t.Fatalf("ParsePrefixes(%q) = %v; round trip through %q gives %v, %v", item, p, p.String(), again, err)
			}
		}
	})
}
