package policy

import (
	"encoding/binary"
	"math"
	"math/bits"
	"math/rand/v2"
	"net/netip"
	"sync"
	"sync/atomic"
	"time"

	"github.com/apitoken/caddy-apitoken/internal/keytable"
)

// ReasonThrottled: the client's address failed authentication too often
// and is refused (429 with Retry-After) until its cool-down ends.
const ReasonThrottled Reason = "throttled"

// Defaults for a zero ThrottleConfig field.
const (
	DefaultThrottleMaxFailures = 10
	DefaultThrottleWindow      = time.Minute
	DefaultThrottleCooldown    = 5 * time.Minute
	DefaultThrottleMaxTracked  = 100_000
)

// ThrottleConfig holds the rules for refusing clients that keep failing
// authentication. A zero field takes its default.
type ThrottleConfig struct {
	// MaxFailures is the number of failures within Window that blocks a
	// client: the MaxFailures-th failure is the one that blocks. A negative
	// value disables the throttle. Default: 10.
	MaxFailures int
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
// Clients are keyed by network, not by address: an IPv4 address (also in
// its IPv4-mapped IPv6 form, which is unmapped first) by its /32, an IPv6
// address by its /64 prefix, because whoever holds one IPv6 address
// usually holds the whole /64 and could otherwise rotate through 2^64
// fresh keys. The flip side is that clients sharing a /64 (a campus LAN
// using SLAAC, say) share a count, as clients behind one IPv4 NAT do.
// Zones are ignored. All invalid addresses (the zero netip.Addr, which is
// what a caller that could not work out a client address has) share one
// key of their own, so such clients are throttled together rather than
// not at all.
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
// MaxFailures failures each. An entry takes 84 bytes including the index,
// before and after long churn (measured at the default bound; 77 to 112
// with Go maps), so the default bound costs under 10 MB.
type Throttle struct {
	maxFailures int32 // < 0: disabled
	window      int64 // nanoseconds
	cooldown    int64 // nanoseconds
	seed        uint64
	shards      []throttleShard
}

// throttleKey is the network a client address counts against. IPv6
// networks have lo == 0; IPv4 keys are the IPv4-mapped address (hi == 0,
// lo == 0xffff<<32 | v4); the invalid key is {0, 1}. No two kinds collide.
type throttleKey struct{ hi, lo uint64 }

var invalidThrottleKey = throttleKey{lo: 1}

func throttleKeyOf(ip netip.Addr) throttleKey {
	if !ip.IsValid() {
		return invalidThrottleKey
	}
	ip = ip.Unmap()
	if ip.Is4() {
		a := ip.As4()
		return throttleKey{lo: 0xffff<<32 | uint64(binary.BigEndian.Uint32(a[:]))}
	}
	a := ip.As16()
	return throttleKey{hi: binary.BigEndian.Uint64(a[:8])}
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
	t := &Throttle{
		maxFailures: int32(min(max(c.MaxFailures, -1), math.MaxInt32)),
		window:      int64(c.Window),
		cooldown:    int64(c.Cooldown),
		seed:        rand.Uint64(),
	}
	limits := shardLimits(c.MaxTracked)
	t.shards = make([]throttleShard, len(limits))
	for i, n := range limits {
		t.shards[i] = throttleShard{index: throttleIndex{seed: t.seed}, limit: n}
	}
	return t
}

// Blocked reports whether ip is blocked at now and, if so, how long until
// it may try again (round it up to whole seconds for a Retry-After
// header). It is meant to run before a token is checked, so it is cheap
// and does not allocate: one atomic load when no client in ip's shard is
// blocked, else one shard lock and one map lookup.
func (t *Throttle) Blocked(ip netip.Addr, now time.Time) (retryAfter time.Duration, blocked bool) {
	if t.maxFailures < 0 {
		return 0, false
	}
	k := throttleKeyOf(ip)
	s := t.shard(k)
	n := now.UnixNano()
	if n >= s.lastUnblock.Load() {
		return 0, false
	}
	var until int64
	s.mu.Lock()
	if i, ok := s.index.get(k); ok {
		until = s.entries[i].blockedUntil
	}
	s.mu.Unlock()
	if n < until {
		return time.Duration(until - n), true
	}
	return 0, false
}

// Fail records a failed authentication from ip at now. It reports whether
// ip is blocked after this failure and for how long: the failure that
// reaches MaxFailures within the window blocks for Cooldown. A failure
// recorded while ip is already blocked (callers normally refuse blocked
// clients with Blocked before they can fail again) neither counts nor
// extends the block, and reports the time left. So a caller that saw
// Blocked false and now gets blocked true knows this failure tipped it.
func (t *Throttle) Fail(ip netip.Addr, now time.Time) (retryAfter time.Duration, blocked bool) {
	if t.maxFailures < 0 {
		return 0, false
	}
	k := throttleKeyOf(ip)
	s := t.shard(k)
	n := now.UnixNano()

	s.mu.Lock()
	defer s.mu.Unlock()
	i, ok := s.index.get(k)
	if !ok {
		i = s.insert(k, n, t.window)
	}
	e := &s.entries[i]
	if n < e.blockedUntil {
		return time.Duration(e.blockedUntil - n), true
	}
	if e.blockedUntil != 0 || n-e.windowStart >= t.window {
		*e = throttleEntry{key: k, windowStart: n}
	}
	e.failures++
	if e.failures >= t.maxFailures {
		e.blockedUntil = addSat(n, t.cooldown)
		if e.blockedUntil > s.lastUnblock.Load() {
			s.lastUnblock.Store(e.blockedUntil)
		}
		return time.Duration(e.blockedUntil - n), true
	}
	return 0, false
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
	// first of rank 0. It wraps by comparison rather than %: a division
	// per entry was a fifth of the cost of a new client in a flood.
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
// Go map's four allocations). IPv4 and invalid keys, whose lo is never 0,
// are kept by lo, and IPv6 keys, whose lo is 0, by hi. Clients choose
// their addresses, so keys are scrambled with the throttle's random seed
// by a bijection before they are hashed: no one can aim many keys at one
// probe sequence without knowing the seed.
type throttleIndex struct {
	seed       uint64
	byLo, byHi keytable.Table[int32]
}

// table returns the table that holds k and k's key in it.
func (x *throttleIndex) table(k throttleKey) (*keytable.Table[int32], uint64) {
	t, v := &x.byHi, k.hi
	if k.lo != 0 {
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
func (x *throttleIndex) len() int { return x.byLo.Len() + x.byHi.Len() }

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

// addSat returns a+b (b >= 0), saturating at the largest int64.
func addSat(a, b int64) int64 {
	if a > math.MaxInt64-b {
		return math.MaxInt64
	}
	return a + b
}

// maxShards bounds the number of shards of a Throttle or RateLimiter:
// enough that requests on different cores rarely meet on one lock.
// minShardEntries keeps small bounds in few shards, so that the clock
// hand has a choice of victims.
const (
	maxShards       = 64
	minShardEntries = 64
)

// shardLimits splits a bound of total entries over a power-of-two number
// of shards, at most maxShards and each of at least minShardEntries
// unless total is smaller; the limits add up to exactly total.
func shardLimits(total int) []int {
	n := maxShards
	for n > 1 && total/n < minShardEntries {
		n /= 2
	}
	limits := make([]int, n)
	for i := range limits {
		limits[i] = total / n
		if i < total%n {
			limits[i]++
		}
	}
	return limits
}
