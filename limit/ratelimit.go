package limit

import (
	"math/bits"
	"sync"
	"time"

	"github.com/apitoken/caddy-apitoken/internal/keytable"
	"github.com/apitoken/caddy-apitoken/policy"
)

// DefaultRateLimiterMaxKeys is the key bound of NewRateLimiter(0).
const DefaultRateLimiterMaxKeys = 1_000_000

// RateLimiter enforces a policy.Rate per key (a number standing for a
// token, such as storage.Entry.Key) with the generic cell rate
// algorithm: each key holds one theoretical arrival time (TAT), the
// time at which it would be idle again. A request at now is allowed if
// TAT - Per + Per/Events <= now, which lets an idle key send a burst of
// Events requests and then one every Per/Events; an allowed request moves
// TAT on by Per/Events, a refused one changes nothing. Because the state
// is a single time, the Rate may change between calls (a token's limit
// edited) and takes effect at once.
//
// It is safe for concurrent use, keeps no clock and starts no goroutines.
// Keys live in shards with their own locks and share of the key bound.
// When a new key arrives at a full shard, a clock hand inspects a few keys
// and replaces the first idle one (TAT not after now, which is the same
// as never seen, so forgetting it loses nothing), else the one closest to
// idle, which then gets a fresh burst. A key takes 16 bytes in its shard's
// table, which is between three eighths and three quarters full, and 8 in
// the list of keys, so a full default limiter holds a few tens of MB. The bound is for
// safety: call Allow only for authenticated tokens, so that clients cannot
// make up keys.
type RateLimiter struct {
	shift  uint // 64 - log2(len(shards))
	shards []rateShard
}

// A shard maps each key to its TAT directly: keys are numbers, not
// strings, and the TAT is in the table's slot, so that a request reads the
// shard and one place in one array (see keytable), which matters when
// traffic is spread over more keys than the CPU caches hold, and after
// every system call where those flush the TLB. keys lists them for the
// clock hand.
type rateShard struct {
	mu    sync.Mutex
	tats  keytable.Table[int64] // key → TAT in Unix nanoseconds
	keys  []uint64
	limit int
	hand  int
	_     [64]byte // keep neighbouring shards' locks off one cache line
}

// NewRateLimiter returns a RateLimiter that holds at most maxKeys keys; a
// value <= 0 means DefaultRateLimiterMaxKeys.
func NewRateLimiter(maxKeys int) *RateLimiter {
	if maxKeys <= 0 {
		maxKeys = DefaultRateLimiterMaxKeys
	}
	limits := shardLimits(maxKeys)
	l := &RateLimiter{shift: uint(64 - bits.TrailingZeros(uint(len(limits))))}
	l.shards = make([]rateShard, len(limits))
	for i, n := range limits {
		l.shards[i] = rateShard{limit: n}
	}
	return l
}

// shard returns key's shard. Fibonacci hashing spreads any keys, random
// or counted up, over the shards by the key's bits.
func (l *RateLimiter) shard(key uint64) *rateShard {
	return &l.shards[keytable.Hash(key)>>l.shift&uint64(len(l.shards)-1)]
}

// Allow reports whether a request for key at now fits the rate r and, if
// not, how long until one would (round it up to whole seconds for a
// Retry-After header). An unlimited r allows everything and records
// nothing. It does not allocate for a key already held.
func (l *RateLimiter) Allow(key uint64, r policy.Rate, now time.Time) (retryAfter time.Duration, ok bool) {
	if r.IsZero() {
		return 0, true
	}
	interval := max(int64(r.Per)/int64(r.Events), 1)
	n := now.UnixNano()
	s := l.shard(key)

	// Unlocked by hand, not deferred: this runs on every request.
	s.mu.Lock()
	p := s.tats.Ptr(key)
	tat := int64(0)
	if p != nil {
		tat = *p
	}
	next := addSat(max(tat, n), interval)
	// allowAt = next - Per; compared as next-n > Per so nothing overflows.
	if wait := next - n - int64(r.Per); wait > 0 {
		s.mu.Unlock()
		return time.Duration(wait), false
	}
	if p != nil {
		*p = next
	} else {
		s.insert(key, n)
		s.tats.Put(key, next)
	}
	s.mu.Unlock()
	return 0, true
}

// Len returns the number of keys held, idle ones awaiting reuse included.
// It never exceeds the bound given to NewRateLimiter.
func (l *RateLimiter) Len() int {
	total := 0
	for i := range l.shards {
		s := &l.shards[i]
		s.mu.Lock()
		total += len(s.keys)
		s.mu.Unlock()
	}
	return total
}

// rateScan is how many keys the clock hand inspects for a victim.
const rateScan = 8

// insert makes room for key, which the caller then gives its TAT,
// replacing a key chosen by the clock hand if the shard is full. s.mu is
// held.
func (s *rateShard) insert(key uint64, now int64) {
	if len(s.keys) < s.limit {
		s.keys = append(s.keys, key)
		return
	}
	victim, scanned := -1, 0
	var oldest int64
	for scanned < min(rateScan, len(s.keys)) {
		i := (s.hand + scanned) % len(s.keys)
		scanned++
		if tat, _ := s.tats.Get(s.keys[i]); victim < 0 || tat < oldest {
			victim, oldest = i, tat
		}
		if oldest <= now {
			break
		}
	}
	s.hand = (s.hand + scanned) % len(s.keys)
	s.tats.Delete(s.keys[victim])
	s.keys[victim] = key
}
