package limit

import (
	"encoding/binary"
	"hash/maphash"
	"math"
	"math/bits"
	"math/rand/v2"
	"net/netip"
	"sync"
	"sync/atomic"
	"time"
	"unicode"
	"unicode/utf8"

	"github.com/apitoken/caddy-apitoken/internal/keytable"
)

// Defaults for a zero ThrottleConfig field.
const (
	DefaultThrottleMaxFailures = 10
	DefaultThrottleWindow      = time.Minute
	DefaultThrottleCooldown    = 5 * time.Minute
	DefaultThrottleMaxTracked  = 100_000
	// DefaultThrottleAddressFactor times MaxFailures is the default
	// ceiling of one address over all the user names it tries.
	DefaultThrottleAddressFactor = 5
)

// ThrottleConfig holds the rules for refusing clients that keep failing
// authentication. A zero field takes its default.
type ThrottleConfig struct {
	// MaxFailures is the number of failures within Window that blocks a
	// client, that is an address and the user name it claims: the
	// MaxFailures-th failure is the one that blocks. A negative value
	// disables the throttle. Default: 10.
	MaxFailures int
	// MaxFailuresPerAddress is the number of failures within Window that
	// blocks an address whatever user names it claims, so that one broken
	// client behind a NAT does not lock out the others behind it, while a
	// guesser who rotates user names is still stopped. A value <= 0, or
	// one below MaxFailures, takes the default. Default:
	// DefaultThrottleAddressFactor * MaxFailures.
	MaxFailuresPerAddress int
	// Window is how long failures are counted. It opens with the first
	// failure of a client and lasts Window; the first failure after it has
	// closed opens a new one, counting from one. So MaxFailures failures
	// within Window of a first one always block, while a client that
	// straddles two windows may fit up to 2*MaxFailures-2 failures into
	// one Window unblocked: the price of one counter per client. A value
	// <= 0 takes the default. Default: 1m.
	Window time.Duration
	// Cooldown is how long a blocked client stays blocked. A value <= 0
	// takes the default. Default: 5m.
	Cooldown time.Duration
	// MaxTracked bounds the number of client entries kept in memory. A
	// value <= 0 takes the default. Default: 100000.
	MaxTracked int
}

// Throttle counts failed authentication attempts per client and blocks
// clients that fail too often. It is safe for concurrent use, keeps no
// clock (every method takes now, compared as Unix nanoseconds) and starts
// no goroutines.
//
// Each failure counts twice: against the client's address and the user
// name it claimed (MaxFailures), and against the address alone
// (MaxFailuresPerAddress, a higher ceiling); either blocks. So a client
// that keeps failing as one user blocks only that user from that address,
// not everyone behind the same NAT. A credential without a user name (a
// Bearer token, a token header or query parameter) claims the empty name:
// such failures from one address share one count. User names compare
// case-insensitively, as token owners do, and are hashed with a random
// seed, so the names a client chooses cannot aim at one key. A client
// whose address is invalid (the zero netip.Addr: the caller could not
// work out an address, as behind a unix socket proxy that Caddy does not
// trust) is keyed by its user name alone, and not throttled at all
// without one: all such clients sharing one key would let one lock out
// all of them, and a token cannot be guessed anyway.
//
// Addresses are keyed by network, not by address: an IPv4 address (also in
// its IPv4-mapped IPv6 form, which is unmapped first) by its /32, an IPv6
// address by its /64 prefix, because whoever holds one IPv6 address
// usually holds the whole /64 and could otherwise rotate through 2^64
// fresh keys. The flip side is that clients sharing a /64 (a campus LAN
// using SLAAC, say) share a count, as clients behind one IPv4 NAT do.
// Zones are ignored.
//
// Memory is bounded by MaxTracked. Entries live in shards, each with its
// own lock and its own share of MaxTracked; entries are not removed when
// they expire, but reused. When a new client arrives at a full shard, a
// clock hand inspects a few entries and replaces the cheapest to forget:
// first one that is neither blocked nor inside its window (forgetting it
// loses nothing), else the unblocked one with the fewest failures (the
// oldest on a tie), and only if every inspected entry is blocked, the one
// whose cool-down ends first. To unblock a client by eviction an attacker
// must therefore first get a shard's worth of other networks blocked,
// MaxFailures failures each. An entry and its place in the index take
// under a hundred bytes, before and after long churn, so the default bound
// costs under 10 MB.
type Throttle struct {
	maxFailures int32 // per address and user; < 0: disabled
	maxPerAddr  int32 // per address
	window      int64 // nanoseconds
	cooldown    int64 // nanoseconds
	seed        uint64
	userSeed    maphash.Seed
	shards      []throttleShard
	// lastUserUnblock is the latest blockedUntil ever set on a user key.
	// While now is past it, no user key is blocked and Blocked does not
	// hash the user name.
	lastUserUnblock atomic.Int64
}

// throttleKey is what a failure counts against. An address key is the
// network: IPv6 networks have lo == 0, IPv4 keys are the IPv4-mapped
// address (hi == 0, lo == 0xffff<<32 | v4). A user key (an address and a
// user name, or a user name alone) has lo == userKeyLo and hi a seeded
// hash of both. No two kinds collide.
type throttleKey struct{ hi, lo uint64 }

const userKeyLo = 2

// addrKey returns ip's address key; ok is false for an invalid ip.
func addrKey(ip netip.Addr) (k throttleKey, ok bool) {
	if !ip.IsValid() {
		return throttleKey{}, false
	}
	ip = ip.Unmap()
	if ip.Is4() {
		a := ip.As4()
		return throttleKey{lo: 0xffff<<32 | uint64(binary.BigEndian.Uint32(a[:]))}, true
	}
	a := ip.As16()
	return throttleKey{hi: binary.BigEndian.Uint64(a[:8])}, true
}

// userKey returns the key of user claimed from the address key a (or
// from no address, if !hasAddr): a hash under the throttle's random seed
// of both, the user name folded to lower case rune by rune as
// strings.ToLower does. It does not allocate: the input is built on the
// stack, and only a name too long for it is hashed as a stream.
func (t *Throttle) userKey(a throttleKey, hasAddr bool, user string) throttleKey {
	var buf [userKeyBuf]byte
	b := buf[:17]
	if hasAddr {
		b[0] = 1
		binary.LittleEndian.PutUint64(b[1:], a.hi)
		binary.LittleEndian.PutUint64(b[9:], a.lo)
	}
	if len(b)+len(user)*utf8.UTFMax <= len(buf) {
		b = appendFolded(b, user)
		return throttleKey{hi: maphash.Bytes(t.userSeed, b), lo: userKeyLo}
	}
	var h maphash.Hash // the same hash as maphash.Bytes of the whole input
	h.SetSeed(t.userSeed)
	h.Write(b)
	for _, r := range user {
		h.Write(appendFolded(buf[:0], string(r)))
	}
	return throttleKey{hi: h.Sum64(), lo: userKeyLo}
}

// userKeyBuf is the stack buffer userKey builds its input in.
const userKeyBuf = 17 + 64*utf8.UTFMax

// appendFolded appends s folded to lower case rune by rune, as
// strings.ToLower folds it (invalid UTF-8 reads as U+FFFD).
func appendFolded(b []byte, s string) []byte {
	for _, r := range s {
		if r < utf8.RuneSelf {
			if 'A' <= r && r <= 'Z' {
				r += 'a' - 'A'
			}
			b = append(b, byte(r))
			continue
		}
		b = utf8.AppendRune(b, unicode.ToLower(r))
	}
	return b
}

// keys returns the keys a failure from ip claiming user counts against:
// the address key and the user key, each if it applies.
func (t *Throttle) keys(ip netip.Addr, user string) (addr, usr throttleKey, hasAddr, hasUser bool) {
	addr, hasAddr = addrKey(ip)
	if hasAddr || user != "" {
		usr, hasUser = t.userKey(addr, hasAddr, user), true
	}
	return addr, usr, hasAddr, hasUser
}

type throttleEntry struct {
	key          throttleKey
	windowStart  int64 // Unix nanoseconds of the failure that opened the window
	blockedUntil int64 // Unix nanoseconds; blocked while now < blockedUntil
	failures     int32
}

type throttleShard struct {
	// lastUnblock is the latest blockedUntil ever set in the shard. While
	// now is past it, nothing in the shard is blocked and Blocked answers
	// without the lock. Written under mu.
	lastUnblock atomic.Int64

	mu      sync.Mutex
	index   throttleIndex
	entries []throttleEntry
	limit   int
	hand    int
	_       [64]byte // keep neighbouring shards' locks off one cache line
}

// NewThrottle returns a Throttle with the rules c, zero fields replaced by
// their defaults.
func NewThrottle(c ThrottleConfig) *Throttle {
	if c.MaxFailures == 0 {
		c.MaxFailures = DefaultThrottleMaxFailures
	}
	if c.Window <= 0 {
		c.Window = DefaultThrottleWindow
	}
	if c.Cooldown <= 0 {
		c.Cooldown = DefaultThrottleCooldown
	}
	if c.MaxTracked <= 0 {
		c.MaxTracked = DefaultThrottleMaxTracked
	}
	if c.MaxFailuresPerAddress <= 0 || c.MaxFailuresPerAddress < c.MaxFailures {
		c.MaxFailuresPerAddress = min(c.MaxFailures, math.MaxInt32/DefaultThrottleAddressFactor) * DefaultThrottleAddressFactor
	}
	t := &Throttle{
		maxFailures: int32(min(max(c.MaxFailures, -1), math.MaxInt32)),
		maxPerAddr:  int32(min(c.MaxFailuresPerAddress, math.MaxInt32)),
		window:      int64(c.Window),
		cooldown:    int64(c.Cooldown),
		seed:        rand.Uint64(),
		userSeed:    maphash.MakeSeed(),
	}
	limits := shardLimits(c.MaxTracked)
	t.shards = make([]throttleShard, len(limits))
	for i, n := range limits {
		t.shards[i] = throttleShard{index: throttleIndex{seed: t.seed}, limit: n}
	}
	return t
}

// Blocked reports whether ip, claiming user ("" for none), is blocked at
// now and, if so, how long until it may try again (round it up to whole
// seconds for a Retry-After header): if its address is (BlockedAddress),
// or its address with that user name (BlockedUser). Neither allocates.
func (t *Throttle) Blocked(ip netip.Addr, user string, now time.Time) (retryAfter time.Duration, blocked bool) {
	a, _ := t.BlockedAddress(ip, now)
	u, _ := t.BlockedUser(ip, user, now)
	return max(a, u), a > 0 || u > 0
}

// BlockedAddress is Blocked for ip's address alone, whatever the user
// name: a caller can refuse a blocked address before it reads the
// credential. It costs one atomic load when nothing in the address's
// shard is blocked, else one shard lock and one lookup.
func (t *Throttle) BlockedAddress(ip netip.Addr, now time.Time) (retryAfter time.Duration, blocked bool) {
	addr, ok := addrKey(ip)
	if t.maxFailures < 0 || !ok {
		return 0, false
	}
	n := now.UnixNano()
	if until := t.blockedUntil(addr, n); n < until {
		return time.Duration(until - n), true
	}
	return 0, false
}

// BlockedUser is Blocked for ip's address with user alone (or user alone,
// for an invalid ip). It costs one atomic load when no user key is
// blocked at all, else a hash of the name, and, if the key's shard holds
// a block, one shard lock and one lookup.
func (t *Throttle) BlockedUser(ip netip.Addr, user string, now time.Time) (retryAfter time.Duration, blocked bool) {
	n := now.UnixNano()
	if t.maxFailures < 0 || n >= t.lastUserUnblock.Load() {
		return 0, false
	}
	addr, hasAddr := addrKey(ip)
	if !hasAddr && user == "" {
		return 0, false
	}
	if until := t.blockedUntil(t.userKey(addr, hasAddr, user), n); n < until {
		return time.Duration(until - n), true
	}
	return 0, false
}

// blockedUntil returns the end of k's block, or 0 if nothing in its shard
// is blocked at n.
func (t *Throttle) blockedUntil(k throttleKey, n int64) int64 {
	s := t.shard(k)
	if n >= s.lastUnblock.Load() {
		return 0
	}
	var until int64
	s.mu.Lock()
	if i, ok := s.index.get(k); ok {
		until = s.entries[i].blockedUntil
	}
	s.mu.Unlock()
	return until
}

// Fail records a failed authentication from ip, claiming user ("" for
// none), at now. It reports whether the client is blocked after this
// failure and for how long: the failure that reaches MaxFailures for the
// address and user, or MaxFailuresPerAddress for the address, within the
// window blocks that key for Cooldown. A failure recorded while a key is
// already blocked (callers normally refuse blocked clients with Blocked
// before they can fail again) neither counts against that key nor extends
// its block, and reports the time left. So a caller that saw Blocked
// false and now gets blocked true knows this failure tipped it.
func (t *Throttle) Fail(ip netip.Addr, user string, now time.Time) (retryAfter time.Duration, blocked bool) {
	if t.maxFailures < 0 {
		return 0, false
	}
	addr, usr, hasAddr, hasUser := t.keys(ip, user)
	n := now.UnixNano()
	var until int64
	if hasAddr {
		until = t.fail(addr, t.maxPerAddr, n)
	}
	if hasUser {
		until = max(until, t.fail(usr, t.maxFailures, n))
	}
	if n < until {
		return time.Duration(until - n), true
	}
	return 0, false
}

// fail counts a failure at n against k, which limit failures block, and
// returns the end of k's block (0 if it is not blocked).
func (t *Throttle) fail(k throttleKey, limit int32, n int64) int64 {
	s := t.shard(k)
	s.mu.Lock()
	defer s.mu.Unlock()
	i, ok := s.index.get(k)
	if !ok {
		i = s.insert(k, n, t.window)
	}
	e := &s.entries[i]
	if n < e.blockedUntil {
		return e.blockedUntil
	}
	if e.blockedUntil != 0 || n-e.windowStart >= t.window {
		*e = throttleEntry{key: k, windowStart: n}
	}
	e.failures++
	if e.failures >= limit {
		e.blockedUntil = addSat(n, t.cooldown)
		if e.blockedUntil > s.lastUnblock.Load() {
			s.lastUnblock.Store(e.blockedUntil)
		}
		if k.lo == userKeyLo {
			for old := t.lastUserUnblock.Load(); e.blockedUntil > old && !t.lastUserUnblock.CompareAndSwap(old, e.blockedUntil); {
				old = t.lastUserUnblock.Load()
			}
		}
		return e.blockedUntil
	}
	return 0
}

// Len returns the number of client entries held, expired ones awaiting
// reuse included. It never exceeds MaxTracked.
func (t *Throttle) Len() int {
	total := 0
	for i := range t.shards {
		s := &t.shards[i]
		s.mu.Lock()
		total += len(s.entries)
		s.mu.Unlock()
	}
	return total
}

func (t *Throttle) shard(k throttleKey) *throttleShard {
	hi, lo := bits.Mul64(k.hi^t.seed, k.lo^0x9e3779b97f4a7c15)
	return &t.shards[(hi^lo)&uint64(len(t.shards)-1)]
}

// throttleScan is how many entries the clock hand inspects for a victim.
const throttleScan = 8

// insert adds a fresh entry for k and returns its index, replacing an
// entry chosen by the clock hand if the shard is full. s.mu is held.
func (s *throttleShard) insert(k throttleKey, now, window int64) int32 {
	e := throttleEntry{key: k, windowStart: now}
	if len(s.entries) < s.limit {
		s.entries = append(s.entries, e)
		i := int32(len(s.entries) - 1)
		s.index.put(k, i)
		return i
	}
	// The clock hand inspects entries from s.hand on, stopping at the
	// first of rank 0. It wraps by comparison rather than %, which would
	// divide once per entry inspected (BenchmarkThrottleFailFlood).
	victim, vrank := s.hand, s.entries[s.hand].rank(now, window)
	i, scanned := s.hand, 1
	for ; vrank != 0 && scanned < min(throttleScan, len(s.entries)); scanned++ {
		if i++; i == len(s.entries) {
			i = 0
		}
		e := &s.entries[i]
		if r := e.rank(now, window); r < vrank || r == vrank && e.cheaperInRank(&s.entries[victim], r) {
			victim, vrank = i, r
		}
	}
	if s.hand += scanned; s.hand >= len(s.entries) {
		s.hand -= len(s.entries)
	}
	s.index.delete(s.entries[victim].key)
	s.entries[victim] = e
	s.index.put(k, int32(victim))
	return int32(victim)
}

// throttleIndex maps a shard's keys to their entries, in flat tables (see
// keytable: a failure from a new client in a flood reads one array, not a
// Go map's four allocations). IPv4 keys, whose lo is never 0, are kept by
// lo, IPv6 keys, whose lo is 0, by hi, and user keys by their hash, hi.
// Clients choose their addresses, so keys are scrambled with the
// throttle's random seed by a bijection before they are hashed: no one can
// aim many keys at one probe sequence without knowing the seed. (User keys
// are seeded hashes already: two that collide, which no one can arrange
// without the seed, would share an entry.)
type throttleIndex struct {
	seed               uint64
	byLo, byHi, byUser keytable.Table[int32]
}

// table returns the table that holds k and k's key in it.
func (x *throttleIndex) table(k throttleKey) (*keytable.Table[int32], uint64) {
	t, v := &x.byHi, k.hi
	switch k.lo {
	case 0:
	case userKeyLo:
		t = &x.byUser
	default:
		t, v = &x.byLo, k.lo
	}
	// splitmix64's finaliser, after the seed: each step is invertible.
	v ^= x.seed
	v = (v ^ v>>30) * 0xbf58476d1ce4e5b9
	v = (v ^ v>>27) * 0x94d049bb133111eb
	return t, v ^ v>>31
}

func (x *throttleIndex) get(k throttleKey) (int32, bool) {
	t, v := x.table(k)
	return t.Get(v)
}

func (x *throttleIndex) put(k throttleKey, i int32) {
	t, v := x.table(k)
	t.Put(v, i)
}

func (x *throttleIndex) delete(k throttleKey) {
	t, v := x.table(k)
	t.Delete(v)
}

// len returns the number of keys held.
func (x *throttleIndex) len() int { return x.byLo.Len() + x.byHi.Len() + x.byUser.Len() }

// rank sorts eviction candidates into three classes: 0 if forgetting e
// loses nothing (no block in force and no open window: the next failure
// would start afresh anyway), 1 if e is counting failures in an open
// window, 2 if e is blocked.
func (e *throttleEntry) rank(now, window int64) int {
	switch {
	case now < e.blockedUntil:
		return 2
	case e.blockedUntil != 0 || now-e.windowStart >= window:
		return 0
	}
	return 1
}

// cheaperInRank reports whether e is cheaper to forget than o, both of
// rank r: when blocked, the earlier end of the cool-down; in an open
// window, fewer failures, then the older window.
func (e *throttleEntry) cheaperInRank(o *throttleEntry, r int) bool {
	switch {
	case r == 2:
		return e.blockedUntil < o.blockedUntil
	case e.failures != o.failures:
		return e.failures < o.failures
	}
	return e.windowStart < o.windowStart
}
