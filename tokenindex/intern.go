package tokenindex

import (
	"encoding/binary"
	"net/netip"
	"strings"

	"github.com/apitoken/caddy-apitoken/policy"
	"github.com/apitoken/caddy-apitoken/storage"
)

// Tokens with the same owner and rules share one value for them in the
// index, and tokens with the same rules share one compiled rule set: a
// store of a million tokens held by a hundred users with a few rule sets
// keeps a few hundred of these, small enough to stay in the CPU caches,
// where one per token would be a cache miss or two on every request spread
// over many tokens. Both kinds are reference-counted by the index, under its
// write lock, and dropped when the last token using them changes: the
// tables never hold more values than there are tokens.

// shared is what the index's tokens with the same owner, revocation and
// rules have in common: an Entry without ID, Name and ExpiresAt. It never
// changes once made, but for refs.
type shared struct {
	storage.Entry
	key  sharedKey
	refs int // index entries pointing here
}

type sharedKey struct {
	user    string // as written: Entry.User keeps its case
	revoked bool
	rules   *ruleSet
}

// ruleSet is one compiled rule set, shared by every shared value whose
// rules compile the same.
type ruleSet struct {
	prefixes []netip.Prefix
	scope    *policy.CompiledScope
	rate     policy.Rate
	key      string // its key in interned.rules; see appendRulesKey
	refs     int    // shared values pointing here
}

// interned holds the index's shared values and rule sets.
type interned struct {
	shared map[sharedKey]*shared
	rules  map[string]*ruleSet
	keyBuf []byte // scratch for rule keys
}

// intern returns the shared value for c's owner, revocation and rules,
// counting one more reference to it; release takes it back.
func (in *interned) intern(c *Change) *shared {
	if in.shared == nil {
		in.shared = make(map[sharedKey]*shared)
		in.rules = make(map[string]*ruleSet)
	}
	in.keyBuf = appendRulesKey(in.keyBuf[:0], c)
	rs := in.rules[string(in.keyBuf)]
	if rs == nil {
		rs = &ruleSet{prefixes: c.AllowedIPs, scope: c.CompiledScope, rate: c.RateLimit, key: string(in.keyBuf)}
		in.rules[rs.key] = rs
	}
	k := sharedKey{user: c.User, revoked: c.Revoked, rules: rs}
	sh := in.shared[k]
	if sh == nil {
		sh = &shared{
			Entry: storage.Entry{
				User:       c.User,
				UserKey:    strings.ToLower(c.User),
				Revoked:    k.revoked,
				AllowedIPs: rs.prefixes,
				Scope:      rs.scope,
				RateLimit:  rs.rate,
			},
			key: k,
		}
		in.shared[k] = sh
		rs.refs++
	}
	sh.refs++
	return sh
}

// release drops a reference that intern returned, and the shared value and
// its rule set once nothing uses them.
func (in *interned) release(sh *shared) {
	sh.refs--
	if sh.refs > 0 {
		return
	}
	delete(in.shared, sh.key)
	rs := sh.key.rules
	rs.refs--
	if rs.refs == 0 {
		delete(in.rules, rs.key)
	}
}

// appendRulesKey appends a key for c's compiled rules: two changes with the
// same key have rules that compile to the same values. The prefixes and the
// rate are encoded from their compiled form; the scope from its canonical
// form, which policy.CompileScope turns into the compiled one (it depends on
// nothing else). Every list is counted and every string length-prefixed, so
// no two rule sets encode alike.
func appendRulesKey(b []byte, c *Change) []byte {
	b = binary.AppendUvarint(b, uint64(len(c.AllowedIPs)))
	for _, p := range c.AllowedIPs {
		b = appendPrefix(b, p)
	}
	sc := c.Scope
	b = append(b, boolByte(c.CompiledScope != nil), boolByte(sc.ReadOnly))
	for _, list := range [][]string{sc.Methods, sc.Paths, sc.Hosts} {
		b = binary.AppendUvarint(b, uint64(len(list)))
		for _, s := range list {
			b = binary.AppendUvarint(b, uint64(len(s)))
			b = append(b, s...)
		}
	}
	b = binary.AppendVarint(b, int64(c.RateLimit.Events))
	return binary.AppendVarint(b, int64(c.RateLimit.Per))
}

// appendPrefix appends p in a fixed 18 bytes: the address as 16 bytes, then
// whether it is IPv4 and the prefix length.
func appendPrefix(b []byte, p netip.Prefix) []byte {
	a := p.Addr().As16()
	b = append(b, a[:]...)
	return append(b, boolByte(p.Addr().Is4()), byte(p.Bits()))
}

func boolByte(v bool) byte {
	if v {
		return 1
	}
	return 0
}

// RulesKey returns the key under which the index shares c's compiled
// rules: changes with the same key get one copy of them, so two changes
// whose rules differ must have different keys (tokenstore's TestRulesKey).
func RulesKey(c *Change) string { return string(appendRulesKey(nil, c)) }
