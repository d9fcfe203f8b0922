package audit

import (
	"context"
	"fmt"
	"hash/maphash"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"go.uber.org/zap"
)

// Usage tracker defaults.
const (
	DefaultMaxTokens       = 1000000
	DefaultUsageFlushEvery = 10 * time.Second
)

// usageShards is the number of independently locked parts of the tracker
// (a power of two).
const usageShards = 64

// UsageTracker gathers token use in memory, so that a request costs a map
// update rather than a database write, and flushes the deltas in batches.
//
// It keeps at most MaxTokens tokens pending between two flushes. A use of a
// token that is not pending when the tracker is full is not recorded at
// all: it is counted in Overflow, and Run is asked to flush at once to make
// room. (Keeping a count without its token would be worthless; and only
// valid tokens are used, so the bound is a safety net, not a working
// limit.) A failed flush puts its deltas back even past the bound, since
// they are already counted.
//
// Use NewUsageTracker; the zero value is not usable.
type UsageTracker struct {
	seed     maphash.Seed
	max      int64
	size     atomic.Int64 // pending tokens, over all shards
	overflow atomic.Uint64
	kick     chan struct{} // asks Run for an early flush when full
	shards   [usageShards]usageShard

	flushMu sync.Mutex // one flush at a time
	// inflightMu guards inflight, the shards' maps being flushed. It is
	// taken before a shard's lock, never after.
	inflightMu sync.Mutex
	inflight   [usageShards]map[string]*pending
}

// usageShard is one locked part of the tracker, padded to a cache line.
type usageShard struct {
	mu sync.Mutex
	m  map[string]*pending
	_  [48]byte
}

// NewUsageTracker builds a tracker holding at most maxTokens pending
// tokens (0 or less: DefaultMaxTokens).
func NewUsageTracker(maxTokens int) *UsageTracker {
	if maxTokens <= 0 {
		maxTokens = DefaultMaxTokens
	}
	u := &UsageTracker{seed: maphash.MakeSeed(), max: int64(maxTokens), kick: make(chan struct{}, 1)}
	for i := range u.shards {
		u.shards[i].m = make(map[string]*pending)
	}
	return u
}

// shard returns the index of tokenID's shard.
func (u *UsageTracker) shard(tokenID string) int {
	return int(maphash.String(u.seed, tokenID) & (usageShards - 1))
}

// Used records one use of a token from a client IP (empty if unknown) at
// now. It is called on every authenticated request: for a token already
// pending, seen from an IP already in its list, it does not allocate. It
// keeps both strings.
func (u *UsageTracker) Used(tokenID, clientIP string, now time.Time) {
	s := &u.shards[u.shard(tokenID)]
	s.mu.Lock()
	p := s.m[tokenID]
	if p == nil {
		if u.size.Add(1) > u.max {
			u.size.Add(-1)
			s.mu.Unlock()
			u.overflow.Add(1)
			select {
			case u.kick <- struct{}{}:
			default:
			}
			return
		}
		p = new(pending)
		s.m[tokenID] = p
	}
	p.use(clientIP, now)
	s.mu.Unlock()
}

// Overflow is the number of uses not recorded because the tracker was full.
func (u *UsageTracker) Overflow() uint64 {
	return u.overflow.Load()
}

// Pending returns the use of a token not yet stored (pending, or being
// flushed), for showing live usage with MergeUsage before the next flush.
func (u *UsageTracker) Pending(tokenID string) (Usage, bool) {
	i := u.shard(tokenID)
	u.inflightMu.Lock()
	defer u.inflightMu.Unlock()
	var p pending
	found := false
	s := &u.shards[i]
	s.mu.Lock()
	if q := s.m[tokenID]; q != nil {
		p, found = *q, true
	}
	s.mu.Unlock()
	if q := u.inflight[i][tokenID]; q != nil {
		p.merge(q)
		found = true
	}
	if !found {
		return Usage{}, false
	}
	return p.usage(tokenID), true
}

// Flush takes the pending deltas, leaving the tracker empty for the uses
// that go on meanwhile, and writes them in one call, ordered by token id.
// If the write fails they are put back (merged with the uses recorded
// since), so that nothing is lost, and the error is returned.
func (u *UsageTracker) Flush(ctx context.Context, w UsageWriter) error {
	u.flushMu.Lock()
	defer u.flushMu.Unlock()

	taken := 0
	u.inflightMu.Lock()
	for i := range u.shards {
		s := &u.shards[i]
		s.mu.Lock()
		if n := len(s.m); n > 0 {
			u.inflight[i] = s.m
			s.m = make(map[string]*pending, n)
			taken += n
		}
		s.mu.Unlock()
	}
	u.inflightMu.Unlock()
	if taken == 0 {
		return nil
	}
	u.size.Add(-int64(taken))

	deltas := make([]Usage, 0, taken)
	for _, m := range u.inflight {
		for id, p := range m {
			deltas = append(deltas, p.usage(id))
		}
	}
	slices.SortFunc(deltas, func(a, b Usage) int { return strings.Compare(a.TokenID, b.TokenID) })
	err := w.FlushUsage(ctx, deltas)

	u.inflightMu.Lock()
	defer u.inflightMu.Unlock()
	for i, m := range u.inflight {
		if err != nil && len(m) > 0 {
			u.putBack(&u.shards[i], m)
		}
		u.inflight[i] = nil
	}
	if err != nil {
		return fmt.Errorf("flushing usage of %d tokens: %w", taken, err)
	}
	return nil
}

// putBack merges deltas whose write failed into a shard.
func (u *UsageTracker) putBack(s *usageShard, m map[string]*pending) {
	s.mu.Lock()
	defer s.mu.Unlock()
	for id, p := range m {
		if q := s.m[id]; q != nil {
			q.merge(p)
			continue
		}
		s.m[id] = p
		u.size.Add(1)
	}
}

// Run flushes to w every `every` (0 or less: DefaultUsageFlushEvery), early
// when the tracker is full, and once more when ctx is done, then returns.
// Errors are logged; the deltas stay pending until a flush succeeds.
func (u *UsageTracker) Run(ctx context.Context, w UsageWriter, every time.Duration, logger *zap.Logger) {
	if every <= 0 {
		every = DefaultUsageFlushEvery
	}
	if logger == nil {
		logger = zap.NewNop()
	}
	tick := time.NewTicker(every)
	defer tick.Stop()
	var reported uint64
	kick := u.kick
	flush := func() {
		wctx, cancel := writeContext(ctx)
		defer cancel()
		err := u.Flush(wctx, w)
		if err != nil {
			logger.Warn("flushing token usage failed", zap.Error(err))
			kick = nil // no early flushes until one succeeds
		} else {
			kick = u.kick
		}
		if o := u.overflow.Load(); o > reported {
			logger.Warn("token usage not recorded: tracker full",
				zap.Uint64("uses", o-reported),
				zap.Int64("max_tokens", u.max))
			reported = o
		}
	}
	for {
		select {
		case <-ctx.Done():
			flush()
			return
		case <-tick.C:
			flush()
		case <-kick:
			flush()
		}
	}
}

// MergeUsage combines a stored usage with a pending delta, for display:
// counts add up, the later last use wins (the stored one on a tie, and the
// other's IP if the winner has none), and the recent IPs merge, each IP
// once with its latest time, most recent first, at most MaxRecentIPs.
func MergeUsage(stored, delta Usage) Usage {
	var p pending
	p.add(stored.Count, stored.LastUsedAt, stored.LastIP, stored.RecentIPs)
	p.add(delta.Count, delta.LastUsedAt, delta.LastIP, delta.RecentIPs)
	id := stored.TokenID
	if id == "" {
		id = delta.TokenID
	}
	return p.usage(id)
}

// pending is one token's use gathered since the last flush.
type pending struct {
	lastUsed time.Time
	lastIP   string
	count    int64
	n        int // used entries of ips
	// ips are the recent distinct IPs, latest first.
	ips [MaxRecentIPs]IPSeen
}

// use records one use.
func (p *pending) use(ip string, now time.Time) {
	p.count++
	if !now.Before(p.lastUsed) {
		p.lastUsed = now
		if ip != "" {
			p.lastIP = ip
		}
	}
	p.seen(ip, now)
}

// seen notes ip as seen at t, keeping ips ordered by time, each IP once.
func (p *pending) seen(ip string, t time.Time) {
	if ip == "" {
		return
	}
	i := 0
	for i < p.n && p.ips[i].IP != ip {
		i++
	}
	switch {
	case i < p.n: // known: move it up if t is later
		if !t.After(p.ips[i].LastSeen) {
			return
		}
	case p.n < len(p.ips): // new, with room
		p.n++
	default: // new, full: it replaces the oldest, if it is later
		i = p.n - 1
		if !t.After(p.ips[i].LastSeen) {
			return
		}
	}
	// Slot i is free; shift the older entries down into it.
	for i > 0 && p.ips[i-1].LastSeen.Before(t) {
		p.ips[i] = p.ips[i-1]
		i--
	}
	p.ips[i] = IPSeen{IP: ip, LastSeen: t}
}

// add merges another record of use into p.
func (p *pending) add(count int64, lastUsed time.Time, lastIP string, ips []IPSeen) {
	p.count += count
	if lastUsed.After(p.lastUsed) {
		p.lastUsed = lastUsed
		if lastIP != "" {
			p.lastIP = lastIP
		}
	} else if p.lastIP == "" {
		p.lastIP = lastIP
	}
	for _, s := range ips {
		p.seen(s.IP, s.LastSeen)
	}
}

// merge adds o into p.
func (p *pending) merge(o *pending) {
	p.add(o.count, o.lastUsed, o.lastIP, o.ips[:o.n])
}

// usage returns p as a Usage of tokenID.
func (p *pending) usage(tokenID string) Usage {
	u := Usage{TokenID: tokenID, LastUsedAt: p.lastUsed, LastIP: p.lastIP, Count: p.count}
	if p.n > 0 {
		u.RecentIPs = slices.Clone(p.ips[:p.n])
	}
	return u
}
