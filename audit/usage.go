package audit

import (
	"context"
	"fmt"
	"net/netip"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"go.uber.org/zap"

	"github.com/apitoken/caddy-apitoken/event"
	"github.com/apitoken/caddy-apitoken/internal/keytable"
)

// Usage tracker defaults.
const (
	DefaultMaxTokens       = 1000000
	DefaultUsageFlushEvery = 10 * time.Second
)

// usageShards is the number of independently locked parts of the tracker,
// 1<<usageShardBits.
const (
	usageShardBits = 6
	usageShards    = 1 << usageShardBits
)

// UsageTracker gathers token use in memory, so that a request costs a map
// update rather than a database write, and flushes the deltas in batches.
//
// It is keyed by a number that stands for the token id (tokenstore's
// Entry.Key), and holds client IPs as netip.Addr: a use of a pending token
// reads nothing but the shard's map and the token's own record, and never
// the bytes of the id or of an IP string. Strings are made only for
// an event.Usage, when flushing or showing one.
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
	max      int64
	size     atomic.Int64 // pending tokens, over all shards
	overflow atomic.Uint64
	kick     chan struct{} // asks Run for an early flush when full
	shards   [usageShards]usageShard

	flushMu sync.Mutex // one flush at a time
	// inflightMu guards inflight, the shards' tables being flushed. It
	// is taken before a shard's lock, never after.
	inflightMu sync.Mutex
	inflight   [usageShards]keytable.Table[*tracked]
}

// usageShard is one locked part of the tracker: a cache line
// (TestUsageShardLayout), with the table's header in it, so that a use
// reads the shard, one place in the table's array (see keytable) and the
// token's record.
type usageShard struct {
	mu sync.Mutex
	m  keytable.Table[*tracked]
}

// NewUsageTracker builds a tracker holding at most maxTokens pending
// tokens (0 or less: DefaultMaxTokens).
func NewUsageTracker(maxTokens int) *UsageTracker {
	if maxTokens <= 0 {
		maxTokens = DefaultMaxTokens
	}
	return &UsageTracker{max: int64(maxTokens), kick: make(chan struct{}, 1)}
}

// shard returns the index of key's shard: the top bits of its hash, so
// that keys counting up spread too.
func shard(key uint64) int {
	return int(keytable.Hash(key) >> (64 - usageShardBits))
}

// Used records one use at now of the token tokenID, which key stands for
// (tokenstore's Entry.Key: distinct tokens must have distinct keys), from
// the client IP ip (the zero Addr if unknown, which is counted but not
// listed). It is called on every authenticated request: for a token
// already pending, seen from an IP already in its list, it does not
// allocate. It keeps tokenID, for the flush, when the token is not yet
// pending, and otherwise neither reads nor compares it.
func (u *UsageTracker) Used(key uint64, tokenID string, ip netip.Addr, now time.Time) {
	s := &u.shards[shard(key)]
	s.mu.Lock()
	p, _ := s.m.Get(key)
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
		p = &tracked{id: tokenID}
		s.m.Put(key, p)
	}
	p.use(ip, now)
	s.mu.Unlock()
}

// Overflow is the number of uses not recorded because the tracker was full.
func (u *UsageTracker) Overflow() uint64 {
	return u.overflow.Load()
}

// Pending returns the use of the token that key stands for not yet stored
// (pending, or being flushed), for showing live usage with MergeUsage
// before the next flush. Its TokenID is the id Used was given with key.
func (u *UsageTracker) Pending(key uint64) (event.Usage, bool) {
	i := shard(key)
	u.inflightMu.Lock()
	defer u.inflightMu.Unlock()
	var p tracked
	found := false
	s := &u.shards[i]
	s.mu.Lock()
	if q, _ := s.m.Get(key); q != nil {
		p, found = *q, true
	}
	s.mu.Unlock()
	if q, _ := u.inflight[i].Get(key); q != nil {
		p.merge(q)
		found = true
	}
	if !found {
		return event.Usage{}, false
	}
	return p.usage(), true
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
		if n := s.m.Len(); n > 0 {
			u.inflight[i] = s.m
			s.m = keytable.Make[*tracked](n)
			taken += n
		}
		s.mu.Unlock()
	}
	u.inflightMu.Unlock()
	if taken == 0 {
		return nil
	}
	u.size.Add(-int64(taken))

	deltas := make([]event.Usage, 0, taken)
	for i := range u.inflight {
		for _, p := range u.inflight[i].All {
			deltas = append(deltas, p.usage())
		}
	}
	slices.SortFunc(deltas, func(a, b event.Usage) int { return strings.Compare(a.TokenID, b.TokenID) })
	err := w.FlushUsage(ctx, deltas)

	u.inflightMu.Lock()
	defer u.inflightMu.Unlock()
	for i := range u.inflight {
		if err != nil && u.inflight[i].Len() > 0 {
			u.putBack(&u.shards[i], &u.inflight[i])
		}
		u.inflight[i] = keytable.Table[*tracked]{}
	}
	if err != nil {
		return fmt.Errorf("flushing usage of %d tokens: %w", taken, err)
	}
	return nil
}

// putBack merges deltas whose write failed into a shard.
func (u *UsageTracker) putBack(s *usageShard, m *keytable.Table[*tracked]) {
	s.mu.Lock()
	defer s.mu.Unlock()
	for key, p := range m.All {
		if q, _ := s.m.Get(key); q != nil {
			q.merge(p)
			continue
		}
		s.m.Put(key, p)
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
// once with its latest time, most recent first, at most
// event.MaxRecentIPs. The IPs are merged as the strings they are, whether
// they parse or not.
func MergeUsage(stored, delta event.Usage) event.Usage {
	var p pending[string]
	add := func(x event.Usage) {
		p.add(x.Count, x.LastUsedAt, x.LastIP)
		for _, s := range x.RecentIPs {
			p.seen(s.IP, s.LastSeen)
		}
	}
	add(stored)
	add(delta)
	id := stored.TokenID
	if id == "" {
		id = delta.TokenID
	}
	return p.usage(id, func(ip string) string { return ip })
}

// tracked is a pending use in the tracker: of the token id, from client
// IPs held as netip.Addr.
type tracked struct {
	pending[netip.Addr]
	id string
}

// merge adds o into t.
func (t *tracked) merge(o *tracked) {
	if t.id == "" {
		t.id = o.id
	}
	t.pending.merge(&o.pending)
}

// usage returns t as an event.Usage.
func (t *tracked) usage() event.Usage {
	return t.pending.usage(t.id, addrString)
}

// addrString is ip as an event.Usage holds it: "" for the zero Addr, which
// netip.Addr.String would show as "invalid IP".
func addrString(ip netip.Addr) string {
	if !ip.IsValid() {
		return ""
	}
	return ip.String()
}

// pending is one token's use gathered since the last flush, or a merge of
// event.Usage values. The tracker holds IPs as netip.Addr, MergeUsage as the
// strings it is given; the zero IP is an unknown one.
type pending[IP comparable] struct {
	lastUsed time.Time
	lastIP   IP
	count    int64
	n        int // used entries of ips
	// ips are the recent distinct IPs, latest first.
	ips [event.MaxRecentIPs]ipSeen[IP]
}

// ipSeen is an IP and when it was last seen.
type ipSeen[IP comparable] struct {
	ip IP
	at time.Time
}

// use records one use.
func (p *pending[IP]) use(ip IP, now time.Time) {
	var unknown IP
	p.count++
	if !now.Before(p.lastUsed) {
		p.lastUsed = now
		if ip != unknown {
			p.lastIP = ip
		}
	}
	p.seen(ip, now)
}

// seen notes ip as seen at t, keeping ips ordered by time, each IP once.
func (p *pending[IP]) seen(ip IP, t time.Time) {
	var unknown IP
	if ip == unknown {
		return
	}
	i := 0
	for i < p.n && p.ips[i].ip != ip {
		i++
	}
	switch {
	case i < p.n: // known: move it up if t is later
		if !t.After(p.ips[i].at) {
			return
		}
	case p.n < len(p.ips): // new, with room
		p.n++
	default: // new, full: it replaces the oldest, if it is later
		i = p.n - 1
		if !t.After(p.ips[i].at) {
			return
		}
	}
	// Slot i is free; shift the older entries down into it.
	for i > 0 && p.ips[i-1].at.Before(t) {
		p.ips[i] = p.ips[i-1]
		i--
	}
	p.ips[i] = ipSeen[IP]{ip: ip, at: t}
}

// add merges another record's count and last use into p; its IPs go
// through seen.
func (p *pending[IP]) add(count int64, lastUsed time.Time, lastIP IP) {
	var unknown IP
	p.count += count
	if lastUsed.After(p.lastUsed) {
		p.lastUsed = lastUsed
		if lastIP != unknown {
			p.lastIP = lastIP
		}
	} else if p.lastIP == unknown {
		p.lastIP = lastIP
	}
}

// merge adds o into p.
func (p *pending[IP]) merge(o *pending[IP]) {
	p.add(o.count, o.lastUsed, o.lastIP)
	for _, s := range o.ips[:o.n] {
		p.seen(s.ip, s.at)
	}
}

// usage returns p as an event.Usage of tokenID, with str making its IPs strings.
func (p *pending[IP]) usage(tokenID string, str func(IP) string) event.Usage {
	u := event.Usage{TokenID: tokenID, LastUsedAt: p.lastUsed, LastIP: str(p.lastIP), Count: p.count}
	if p.n > 0 {
		u.RecentIPs = make([]event.IPSeen, p.n)
		for i, s := range p.ips[:p.n] {
			u.RecentIPs[i] = event.IPSeen{IP: str(s.ip), LastSeen: s.at}
		}
	}
	return u
}
