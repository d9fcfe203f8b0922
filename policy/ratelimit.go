package policy

import (
	"errors"
	"fmt"
	"math"
	"math/bits"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/apitoken/caddy-apitoken/internal/keytable"
)

// ReasonRateLimited: the token has used up its request rate and is refused
// (429 with Retry-After) until the next request fits.
const ReasonRateLimited Reason = "rate_limited"

// Rate is a number of events per period, such as 600 per minute. The zero
// Rate (or any Rate with Events or Per not positive) means unlimited.
type Rate struct {
	Events int
	Per    time.Duration
}

// IsZero reports whether r is unlimited.
func (r Rate) IsZero() bool { return r.Events <= 0 || r.Per <= 0 }

// ParseRate parses "<events>/<period>": a positive decimal number of
// events, a slash, and a positive period in time.ParseDuration syntax, in
// which a bare unit counts as one of it. For example "600/1m", "10/s",
// "100/1h", "5/30s". The period divided by the events must be at least a
// nanosecond.
func ParseRate(s string) (Rate, error) {
	ev, per, ok := strings.Cut(s, "/")
	if !ok || ev == "" || per == "" {
		return Rate{}, fmt.Errorf("rate %q: want <events>/<period>, such as 600/1m", s)
	}
	for _, c := range []byte(ev) {
		if c < '0' || c > '9' {
			return Rate{}, fmt.Errorf("rate %q: events %q is not a decimal number", s, ev)
		}
	}
	n, err := strconv.Atoi(ev)
	if err != nil {
		return Rate{}, fmt.Errorf("rate %q: events: %w", s, errors.Unwrap(err))
	}
	if n == 0 {
		return Rate{}, fmt.Errorf("rate %q: events must be positive", s)
	}
	if c := per[0]; c != '.' && (c < '0' || c > '9') {
		if c == '+' || c == '-' {
			return Rate{}, fmt.Errorf("rate %q: period %q must be an unsigned duration", s, per)
		}
		per = "1" + per // a bare unit: "s" is "1s"
	}
	d, err := time.ParseDuration(per)
	if err != nil {
		return Rate{}, fmt.Errorf("rate %q: period: %w", s, err)
	}
	if d <= 0 {
		return Rate{}, fmt.Errorf("rate %q: period must be positive", s)
	}
	if int64(d) < int64(n) {
		return Rate{}, fmt.Errorf("rate %q: more than one event per nanosecond", s)
	}
	return Rate{Events: n, Per: d}, nil
}

// String formats r as ParseRate reads it, with the period in its largest
// whole unit ("600/1m", "10/1s", "90/90s"). An unlimited Rate formats as
// "unlimited", which ParseRate does not accept.
func (r Rate) String() string {
	if r.IsZero() {
		return "unlimited"
	}
	units := []struct {
		d    time.Duration
		name string
	}{
		{time.Hour, "h"}, {time.Minute, "m"}, {time.Second, "s"},
		{time.Millisecond, "ms"}, {time.Microsecond, "us"}, {time.Nanosecond, "ns"},
	}
	for _, u := range units {
		if r.Per%u.d == 0 {
			return strconv.Itoa(r.Events) + "/" + strconv.FormatInt(int64(r.Per/u.d), 10) + u.name
		}
	}
	panic("unreachable")
}

// DefaultRateLimiterMaxKeys is the key bound of NewRateLimiter(0).
const DefaultRateLimiterMaxKeys = 1_000_000

// RateLimiter enforces a Rate per key (a number standing for a token, such
// as tokenstore.Entry.Key) with the generic cell
// rate algorithm: each key holds one theoretical arrival time (TAT), the
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
// the list of keys: 42 bytes in all, measured at a million (46 with Go
// maps), so a full default limiter holds some 42 MB. The bound is for
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
func (l *RateLimiter) Allow(key uint64, r Rate, now time.Time) (retryAfter time.Duration, ok bool) {
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

// Bucket describes r the way Jira Data Center's rate-limit headers
// describe a token bucket, for clients that read them: at most limit
// requests at once (the burst, Events), and fillRate more every interval
// seconds. Both are at least 1 (clients divide by them) and as small as
// the rate allows: 600/1m is 10 every second, 100/1h one every 36 seconds.
// A period that is not a whole number of seconds is rounded so that the
// rate described is never above r. An unlimited r gives zeros.
func (r Rate) Bucket() (limit, fillRate, interval int64) {
	if r.IsZero() {
		return 0, 0, 0
	}
	limit = int64(r.Events)
	if r.Per%time.Second == 0 {
		secs := int64(r.Per / time.Second)
		g := gcd(limit, secs)
		return limit, limit / g, secs / g
	}
	perSecond := float64(r.Events) / r.Per.Seconds()
	if perSecond >= 1 {
		return limit, int64(perSecond), 1
	}
	return limit, 1, int64(math.Ceil(1 / perSecond))
}

// gcd returns the greatest common divisor of two positive numbers.
func gcd(a, b int64) int64 {
	for b != 0 {
		a, b = b, a%b
	}
	return a
}
