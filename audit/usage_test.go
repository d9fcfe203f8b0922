package audit

import (
	"context"
	"math/rand/v2"
	"net/netip"
	"reflect"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"go.uber.org/zap/zapcore"

	"github.com/apitoken/caddy-apitoken/event"
)

// fakeUsage is a UsageWriter that keeps the deltas it is given, and can be
// told to fail or to run a hook inside the write.
type fakeUsage struct {
	mu     sync.Mutex
	calls  [][]event.Usage
	fail   int                 // the next fail calls fail
	failIf func(call int) bool // or fail when this says so
	during func()              // runs inside FlushUsage
	n      int
}

func (f *fakeUsage) FlushUsage(ctx context.Context, deltas []event.Usage) error {
	if f.during != nil {
		f.during()
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	f.n++
	if f.fail > 0 || (f.failIf != nil && f.failIf(f.n)) {
		if f.fail > 0 {
			f.fail--
		}
		return errFake
	}
	f.calls = append(f.calls, deltas)
	return nil
}

func (f *fakeUsage) written() [][]event.Usage {
	f.mu.Lock()
	defer f.mu.Unlock()
	return append([][]event.Usage(nil), f.calls...)
}

// totals sums the written counts per token.
func (f *fakeUsage) totals() map[string]int64 {
	out := map[string]int64{}
	for _, call := range f.written() {
		for _, d := range call {
			out[d.TokenID] += d.Count
		}
	}
	return out
}

// at is t0 plus s seconds.
func at(s int) time.Time { return t0.Add(time.Duration(s) * time.Second) }

// ip is the documentation address 192.0.2.n, as a Usage shows it.
func ip(n int) string { return "192.0.2." + strconv.Itoa(n) }

// addr is ip(n) as Used takes it; 0 is the zero Addr, an unknown IP.
func addr(n int) netip.Addr {
	if n == 0 {
		return netip.Addr{}
	}
	return netip.MustParseAddr(ip(n))
}

// tok is the token id that the key k stands for in these tests.
func tok(k uint64) string { return "tok_" + strconv.FormatUint(k, 10) }

// seen builds a recent-IP list from pairs of ip(n) and a second.
func seen(pairs ...int) []event.IPSeen {
	var out []event.IPSeen
	for i := 0; i < len(pairs); i += 2 {
		out = append(out, event.IPSeen{IP: ip(pairs[i]), LastSeen: at(pairs[i+1])})
	}
	return out
}

// use is one use of the token key from addr(ip) at at(sec).
type use struct {
	key     uint64
	ip, sec int
}

func TestUsageUsed(t *testing.T) {
	tests := []struct {
		name string
		uses []use
		want map[uint64]event.Usage // by key; absent keys must not be pending
	}{
		{
			name: "one use",
			uses: []use{{1, 1, 1}},
			want: map[uint64]event.Usage{1: {TokenID: "tok_1", LastUsedAt: at(1), LastIP: ip(1), Count: 1, RecentIPs: seen(1, 1)}},
		},
		{
			name: "same IP again: one entry, latest time",
			uses: []use{{1, 1, 1}, {1, 1, 5}, {1, 1, 9}},
			want: map[uint64]event.Usage{1: {TokenID: "tok_1", LastUsedAt: at(9), LastIP: ip(1), Count: 3, RecentIPs: seen(1, 9)}},
		},
		{
			name: "most recent first, a returning IP moves up",
			uses: []use{{1, 1, 1}, {1, 2, 2}, {1, 3, 3}, {1, 1, 4}},
			want: map[uint64]event.Usage{1: {TokenID: "tok_1", LastUsedAt: at(4), LastIP: ip(1), Count: 4, RecentIPs: seen(1, 4, 3, 3, 2, 2)}},
		},
		{
			name: "capped at MaxRecentIPs",
			uses: []use{{1, 1, 1}, {1, 2, 2}, {1, 3, 3}, {1, 4, 4}, {1, 5, 5}, {1, 6, 6}, {1, 7, 7}},
			want: map[uint64]event.Usage{1: {TokenID: "tok_1", LastUsedAt: at(7), LastIP: ip(7), Count: 7, RecentIPs: seen(7, 7, 6, 6, 5, 5, 4, 4, 3, 3)}},
		},
		{
			name: "out of order: the later use stays last",
			uses: []use{{1, 1, 10}, {1, 2, 5}, {1, 1, 3}},
			want: map[uint64]event.Usage{1: {TokenID: "tok_1", LastUsedAt: at(10), LastIP: ip(1), Count: 3, RecentIPs: seen(1, 10, 2, 5)}},
		},
		{
			name: "out of order into a full list: older than all kept is not kept",
			uses: []use{{1, 1, 11}, {1, 2, 12}, {1, 3, 13}, {1, 4, 14}, {1, 5, 15}, {1, 6, 10}, {1, 7, 12}},
			want: map[uint64]event.Usage{1: {TokenID: "tok_1", LastUsedAt: at(15), LastIP: ip(5), Count: 7, RecentIPs: seen(5, 15, 4, 14, 3, 13, 2, 12, 7, 12)}},
		},
		{
			name: "unknown IP: counted, not listed, last IP kept",
			uses: []use{{1, 1, 1}, {1, 0, 2}},
			want: map[uint64]event.Usage{1: {TokenID: "tok_1", LastUsedAt: at(2), LastIP: ip(1), Count: 2, RecentIPs: seen(1, 1)}},
		},
		{
			name: "only unknown IPs: counted, no IP shown",
			uses: []use{{1, 0, 1}, {1, 0, 2}},
			want: map[uint64]event.Usage{1: {TokenID: "tok_1", LastUsedAt: at(2), Count: 2}},
		},
		{
			name: "tokens are apart",
			uses: []use{{1, 1, 1}, {2, 2, 2}, {1, 3, 3}},
			want: map[uint64]event.Usage{
				1: {TokenID: "tok_1", LastUsedAt: at(3), LastIP: ip(3), Count: 2, RecentIPs: seen(3, 3, 1, 1)},
				2: {TokenID: "tok_2", LastUsedAt: at(2), LastIP: ip(2), Count: 1, RecentIPs: seen(2, 2)},
			},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			u := NewUsageTracker(0)
			for _, x := range tt.uses {
				u.Used(x.key, tok(x.key), addr(x.ip), at(x.sec))
			}
			for _, key := range []uint64{1, 2, 3} {
				got, ok := u.Pending(key)
				want, wantOK := tt.want[key]
				if ok != wantOK {
					t.Fatalf("Pending(%d) found = %v, want %v", key, ok, wantOK)
				}
				if !reflect.DeepEqual(got, want) {
					t.Errorf("Pending(%d) =\n%+v\nwant\n%+v", key, got, want)
				}
			}
		})
	}
}

func TestUsageIPs(t *testing.T) {
	tests := []struct {
		name string
		ip   netip.Addr
		want string
	}{
		{"IPv4", netip.MustParseAddr("198.51.100.7"), "198.51.100.7"},
		{"IPv6", netip.MustParseAddr("2001:DB8:0:0::1"), "2001:db8::1"},
		{"IPv4-mapped IPv6 stays as given", netip.MustParseAddr("::ffff:198.51.100.7"), "::ffff:198.51.100.7"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			u := NewUsageTracker(0)
			u.Used(1, "tok_1", tt.ip, at(1))
			u.Used(1, "tok_1", tt.ip, at(2))
			want := event.Usage{TokenID: "tok_1", LastUsedAt: at(2), LastIP: tt.want, Count: 2, RecentIPs: []event.IPSeen{{IP: tt.want, LastSeen: at(2)}}}
			if got, _ := u.Pending(1); !reflect.DeepEqual(got, want) {
				t.Errorf("Pending(1) = %+v, want %+v", got, want)
			}
		})
	}
	t.Run("an address and its IPv4-mapped form are two IPs", func(t *testing.T) {
		u := NewUsageTracker(0)
		u.Used(1, "tok_1", netip.MustParseAddr("198.51.100.7"), at(1))
		u.Used(1, "tok_1", netip.MustParseAddr("::ffff:198.51.100.7"), at(2))
		if got, _ := u.Pending(1); len(got.RecentIPs) != 2 {
			t.Errorf("RecentIPs = %+v, want both forms (the handler unmaps, not the tracker)", got.RecentIPs)
		}
	})
}

func TestUsageKeys(t *testing.T) {
	t.Run("two keys in one shard stay apart, and flush by id", func(t *testing.T) {
		// Two keys in one shard, whose ids sort the other way round.
		k1 := uint64(1)
		k2 := k1 + 1
		for shard(k2) != shard(k1) {
			k2++
		}
		u := NewUsageTracker(0)
		u.Used(k2, "tok_a", addr(1), at(1))
		u.Used(k1, "tok_b", addr(2), at(2))
		u.Used(k2, "tok_a", addr(3), at(3))
		wantA := event.Usage{TokenID: "tok_a", LastUsedAt: at(3), LastIP: ip(3), Count: 2, RecentIPs: seen(3, 3, 1, 1)}
		wantB := event.Usage{TokenID: "tok_b", LastUsedAt: at(2), LastIP: ip(2), Count: 1, RecentIPs: seen(2, 2)}
		if got, _ := u.Pending(k2); !reflect.DeepEqual(got, wantA) {
			t.Errorf("Pending(%d) = %+v, want %+v", k2, got, wantA)
		}
		if got, _ := u.Pending(k1); !reflect.DeepEqual(got, wantB) {
			t.Errorf("Pending(%d) = %+v, want %+v", k1, got, wantB)
		}
		w := &fakeUsage{}
		if err := u.Flush(context.Background(), w); err != nil {
			t.Fatal(err)
		}
		want := []event.Usage{wantA, wantB}
		if calls := w.written(); len(calls) != 1 || !reflect.DeepEqual(calls[0], want) {
			t.Errorf("wrote %+v, want %+v", calls, want)
		}
	})
	t.Run("keys that count up spread over the shards", func(t *testing.T) {
		// Fibonacci hashing, not the low or high bits of the key.
		for _, stride := range []uint64{1, usageShards, 1 << 54} {
			var n [usageShards]int
			for i := range uint64(16 * usageShards) {
				n[shard(i*stride)]++
			}
			if lo, hi := slices.Min(n[:]), slices.Max(n[:]); lo < 8 || hi > 24 {
				t.Errorf("keys 0, %d, ... %d shards: %d to %d a shard, want about 16", stride, usageShards, lo, hi)
			}
		}
	})
}

func TestUsageFlush(t *testing.T) {
	ctx := context.Background()
	t.Run("swaps out every delta in one call, by token id", func(t *testing.T) {
		u := NewUsageTracker(0)
		w := &fakeUsage{}
		for i := 9; i >= 0; i-- {
			key := uint64(i)
			u.Used(key, tok(key), addr(1), at(i))
			u.Used(key, tok(key), addr(2), at(i+1))
		}
		if err := u.Flush(ctx, w); err != nil {
			t.Fatal(err)
		}
		calls := w.written()
		if len(calls) != 1 || len(calls[0]) != 10 {
			t.Fatalf("wrote %v, want one call of 10 deltas", calls)
		}
		for i, d := range calls[0] {
			want := event.Usage{TokenID: tok(uint64(i)), LastUsedAt: at(i + 1), LastIP: ip(2), Count: 2,
				RecentIPs: seen(2, i+1, 1, i)}
			if !reflect.DeepEqual(d, want) {
				t.Errorf("delta %d = %+v, want %+v", i, d, want)
			}
		}
		if _, ok := u.Pending(3); ok {
			t.Error("still pending after a flush")
		}
		if err := u.Flush(ctx, w); err != nil {
			t.Fatal(err)
		}
		if len(w.written()) != 1 {
			t.Error("an empty flush called the writer")
		}
	})
	t.Run("a failed flush merges back", func(t *testing.T) {
		u := NewUsageTracker(0)
		w := &fakeUsage{fail: 1}
		u.Used(1, "tok_1", addr(1), at(1))
		u.Used(1, "tok_1", addr(2), at(2))
		before, _ := u.Pending(1)
		if err := u.Flush(ctx, w); err == nil || err.Error() != "flushing usage of 1 tokens: disk on fire" {
			t.Fatalf("Flush() = %v, want the wrapped failure", err)
		}
		if got, ok := u.Pending(1); !ok || !reflect.DeepEqual(got, before) {
			t.Fatalf("after the failure Pending = %+v, want %+v", got, before)
		}
		u.Used(1, "tok_1", addr(3), at(3))
		if err := u.Flush(ctx, w); err != nil {
			t.Fatal(err)
		}
		want := []event.Usage{{TokenID: "tok_1", LastUsedAt: at(3), LastIP: ip(3), Count: 3, RecentIPs: seen(3, 3, 2, 2, 1, 1)}}
		if calls := w.written(); len(calls) != 1 || !reflect.DeepEqual(calls[0], want) {
			t.Errorf("wrote %+v, want %+v", calls, want)
		}
	})
	t.Run("uses during a failing flush are merged with it", func(t *testing.T) {
		u := NewUsageTracker(0)
		w := &fakeUsage{fail: 1}
		var during event.Usage
		w.during = func() {
			u.Used(1, "tok_1", addr(2), at(5)) // a request while the write runs
			during, _ = u.Pending(1)
		}
		u.Used(1, "tok_1", addr(1), at(1))
		if err := u.Flush(ctx, w); err == nil {
			t.Fatal("Flush() succeeded, want the failure")
		}
		want := event.Usage{TokenID: "tok_1", LastUsedAt: at(5), LastIP: ip(2), Count: 2, RecentIPs: seen(2, 5, 1, 1)}
		if !reflect.DeepEqual(during, want) {
			t.Errorf("Pending during the flush = %+v, want %+v (in flight and new)", during, want)
		}
		if got, _ := u.Pending(1); !reflect.DeepEqual(got, want) {
			t.Errorf("Pending after = %+v, want %+v", got, want)
		}
	})
	t.Run("a token only in flight is pending under its id", func(t *testing.T) {
		u := NewUsageTracker(0)
		w := &fakeUsage{}
		var during event.Usage
		var found bool
		w.during = func() { during, found = u.Pending(1) }
		u.Used(1, "tok_1", addr(1), at(1))
		if err := u.Flush(ctx, w); err != nil {
			t.Fatal(err)
		}
		want := event.Usage{TokenID: "tok_1", LastUsedAt: at(1), LastIP: ip(1), Count: 1, RecentIPs: seen(1, 1)}
		if !found || !reflect.DeepEqual(during, want) {
			t.Errorf("Pending during the flush = %+v, %v, want %+v", during, found, want)
		}
	})
	t.Run("uses during a successful flush stay pending", func(t *testing.T) {
		u := NewUsageTracker(0)
		w := &fakeUsage{}
		w.during = func() { u.Used(1, "tok_1", addr(2), at(5)) }
		u.Used(1, "tok_1", addr(1), at(1))
		if err := u.Flush(ctx, w); err != nil {
			t.Fatal(err)
		}
		want := event.Usage{TokenID: "tok_1", LastUsedAt: at(5), LastIP: ip(2), Count: 1, RecentIPs: seen(2, 5)}
		if got, _ := u.Pending(1); !reflect.DeepEqual(got, want) {
			t.Errorf("Pending after = %+v, want %+v", got, want)
		}
	})
}

func TestUsageConcurrentFlush(t *testing.T) {
	const (
		workers = 8
		uses    = 4800 // a multiple of tokens
		tokens  = 16
	)
	u := NewUsageTracker(0)
	w := &fakeUsage{failIf: func(call int) bool { return call%3 == 0 }}
	stop := make(chan struct{})
	flusherDone := make(chan struct{})
	go func() {
		defer close(flusherDone)
		for {
			select {
			case <-stop:
				return
			default:
				_ = u.Flush(context.Background(), w) // failures merge back
				u.Pending(0)
			}
		}
	}()
	var wg sync.WaitGroup
	for g := range workers {
		wg.Go(func() {
			for i := range uses {
				key := uint64(i % tokens)
				u.Used(key, tok(key), netip.AddrFrom4([4]byte{10, 0, byte(g), byte(i % 7)}), at(i))
			}
		})
	}
	wg.Wait()
	close(stop)
	<-flusherDone
	w.failIf = nil
	if err := u.Flush(context.Background(), w); err != nil {
		t.Fatal(err)
	}
	got := w.totals()
	var sum int64
	for i := range uint64(tokens) {
		id := tok(i)
		if got[id] != workers*uses/tokens {
			t.Errorf("%s counted %d uses, want %d", id, got[id], workers*uses/tokens)
		}
		sum += got[id]
	}
	if sum != workers*uses {
		t.Errorf("counted %d uses in all, want %d", sum, workers*uses)
	}
	if u.size.Load() != 0 {
		t.Errorf("size = %d after the last flush, want 0", u.size.Load())
	}
}

func TestUsageBound(t *testing.T) {
	u := NewUsageTracker(2)
	u.Used(1, "tok_1", addr(1), at(1))
	u.Used(2, "tok_2", addr(1), at(1))
	u.Used(3, "tok_3", addr(1), at(1)) // full: not recorded
	u.Used(1, "tok_1", addr(1), at(2)) // pending already: recorded
	if _, ok := u.Pending(3); ok {
		t.Error("tok_3 pending past the bound")
	}
	if got, _ := u.Pending(1); got.Count != 2 {
		t.Errorf("tok_1 counted %d, want 2", got.Count)
	}
	if u.Overflow() != 1 {
		t.Errorf("Overflow() = %d, want 1", u.Overflow())
	}
	select {
	case <-u.kick:
	default:
		t.Error("a full tracker did not ask for an early flush")
	}
	if err := u.Flush(context.Background(), &fakeUsage{}); err != nil {
		t.Fatal(err)
	}
	u.Used(3, "tok_3", addr(1), at(3))
	if _, ok := u.Pending(3); !ok {
		t.Error("tok_3 not pending after a flush made room")
	}
	t.Run("a failed flush puts back past the bound", func(t *testing.T) {
		u := NewUsageTracker(1)
		u.Used(1, "tok_1", addr(1), at(1))
		w := &fakeUsage{fail: 1}
		w.during = func() { u.Used(2, "tok_2", addr(1), at(2)) } // takes the one free place
		if err := u.Flush(context.Background(), w); err == nil {
			t.Fatal("Flush() succeeded, want the failure")
		}
		for _, key := range []uint64{1, 2} {
			if _, ok := u.Pending(key); !ok {
				t.Errorf("%s lost", tok(key))
			}
		}
	})
}

func TestUsageRun(t *testing.T) {
	t.Run("flushes on cancel", func(t *testing.T) {
		u := NewUsageTracker(0)
		w := &fakeUsage{}
		stop := running(t, func(ctx context.Context) { u.Run(ctx, w, time.Hour, nil) })
		u.Used(1, "tok_1", addr(1), at(1))
		stop()
		if got := w.totals(); got["tok_1"] != 1 {
			t.Errorf("wrote %v, want tok_1: 1", got)
		}
	})
	t.Run("flushes every period", func(t *testing.T) {
		u := NewUsageTracker(0)
		w := &fakeUsage{}
		running(t, func(ctx context.Context) { u.Run(ctx, w, time.Millisecond, nil) })
		u.Used(1, "tok_1", addr(1), at(1))
		eventually(t, "a flush", func() bool { return w.totals()["tok_1"] == 1 })
	})
	t.Run("flushes early when full, and says what it missed", func(t *testing.T) {
		u := NewUsageTracker(1)
		w := &fakeUsage{}
		logger, logs := observed(zapcore.WarnLevel)
		running(t, func(ctx context.Context) { u.Run(ctx, w, time.Hour, logger) })
		u.Used(1, "tok_1", addr(1), at(1))
		u.Used(2, "tok_2", addr(1), at(1)) // full
		eventually(t, "the early flush", func() bool { return w.totals()["tok_1"] == 1 })
		eventually(t, "the warning", func() bool { return logs.FilterMessage("token usage not recorded: tracker full").Len() == 1 })
		if got := logs.All()[0].ContextMap()["uses"]; got != uint64(1) {
			t.Errorf("uses = %v, want 1", got)
		}
	})
	t.Run("logs failures and keeps the deltas", func(t *testing.T) {
		u := NewUsageTracker(0)
		w := &fakeUsage{fail: 1}
		logger, logs := observed(zapcore.WarnLevel)
		stop := running(t, func(ctx context.Context) { u.Run(ctx, w, time.Hour, logger) })
		u.Used(1, "tok_1", addr(1), at(1))
		stop()
		if logs.FilterMessage("flushing token usage failed").Len() != 1 {
			t.Errorf("logged %v, want the failure", logs.All())
		}
		if got, _ := u.Pending(1); got.Count != 1 {
			t.Errorf("pending %+v after the failure, want tok_1's use kept", got)
		}
	})
}

func TestUsageUsedAllocs(t *testing.T) {
	u := NewUsageTracker(0)
	for i := range event.MaxRecentIPs {
		u.Used(1, "tok_1", addr(i+1), at(i))
	}
	now := at(100)
	tests := []struct {
		name string
		ip   netip.Addr
	}{
		{"IP first in the list", addr(event.MaxRecentIPs)},
		{"IP last in the list", addr(1)},
		{"unknown IP", netip.Addr{}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if n := testing.AllocsPerRun(1000, func() { u.Used(1, "tok_1", tt.ip, now) }); n != 0 {
				t.Errorf("Used allocates %v times, want 0", n)
			}
		})
	}
	if got, _ := u.Pending(1); got.Count != event.MaxRecentIPs+3*1001 {
		t.Errorf("counted %d uses, want %d", got.Count, event.MaxRecentIPs+3*1001)
	}
}

func TestMergeUsage(t *testing.T) {
	tests := []struct {
		name          string
		stored, delta event.Usage
		want          event.Usage
	}{
		{
			name: "both empty",
		},
		{
			name:   "nothing pending",
			stored: event.Usage{TokenID: "a", LastUsedAt: at(5), LastIP: ip(1), Count: 10, RecentIPs: seen(1, 5)},
			want:   event.Usage{TokenID: "a", LastUsedAt: at(5), LastIP: ip(1), Count: 10, RecentIPs: seen(1, 5)},
		},
		{
			name:  "never stored",
			delta: event.Usage{TokenID: "a", LastUsedAt: at(5), LastIP: ip(1), Count: 2, RecentIPs: seen(1, 5)},
			want:  event.Usage{TokenID: "a", LastUsedAt: at(5), LastIP: ip(1), Count: 2, RecentIPs: seen(1, 5)},
		},
		{
			name:   "counts add, the later use wins",
			stored: event.Usage{TokenID: "a", LastUsedAt: at(5), LastIP: ip(1), Count: 10, RecentIPs: seen(1, 5)},
			delta:  event.Usage{TokenID: "a", LastUsedAt: at(9), LastIP: ip(2), Count: 3, RecentIPs: seen(2, 9)},
			want:   event.Usage{TokenID: "a", LastUsedAt: at(9), LastIP: ip(2), Count: 13, RecentIPs: seen(2, 9, 1, 5)},
		},
		{
			name:   "an older delta does not win",
			stored: event.Usage{TokenID: "a", LastUsedAt: at(9), LastIP: ip(1), Count: 1, RecentIPs: seen(1, 9)},
			delta:  event.Usage{TokenID: "a", LastUsedAt: at(5), LastIP: ip(2), Count: 1, RecentIPs: seen(2, 5)},
			want:   event.Usage{TokenID: "a", LastUsedAt: at(9), LastIP: ip(1), Count: 2, RecentIPs: seen(1, 9, 2, 5)},
		},
		{
			name:   "a tie goes to the stored use",
			stored: event.Usage{TokenID: "a", LastUsedAt: at(9), LastIP: ip(1), Count: 1, RecentIPs: seen(1, 9)},
			delta:  event.Usage{TokenID: "a", LastUsedAt: at(9), LastIP: ip(2), Count: 1, RecentIPs: seen(2, 9)},
			want:   event.Usage{TokenID: "a", LastUsedAt: at(9), LastIP: ip(1), Count: 2, RecentIPs: seen(1, 9, 2, 9)},
		},
		{
			name:   "the later use without an IP keeps the other's",
			stored: event.Usage{TokenID: "a", LastUsedAt: at(5), LastIP: ip(1), Count: 1, RecentIPs: seen(1, 5)},
			delta:  event.Usage{TokenID: "a", LastUsedAt: at(9), Count: 1},
			want:   event.Usage{TokenID: "a", LastUsedAt: at(9), LastIP: ip(1), Count: 2, RecentIPs: seen(1, 5)},
		},
		{
			name:   "the same IP once, at its latest",
			stored: event.Usage{TokenID: "a", LastUsedAt: at(5), LastIP: ip(1), Count: 2, RecentIPs: seen(1, 5, 2, 4)},
			delta:  event.Usage{TokenID: "a", LastUsedAt: at(7), LastIP: ip(2), Count: 1, RecentIPs: seen(2, 7)},
			want:   event.Usage{TokenID: "a", LastUsedAt: at(7), LastIP: ip(2), Count: 3, RecentIPs: seen(2, 7, 1, 5)},
		},
		{
			name:   "a stale delta IP does not move back",
			stored: event.Usage{TokenID: "a", LastUsedAt: at(9), LastIP: ip(1), Count: 2, RecentIPs: seen(1, 9, 2, 8)},
			delta:  event.Usage{TokenID: "a", LastUsedAt: at(3), LastIP: ip(1), Count: 1, RecentIPs: seen(1, 3)},
			want:   event.Usage{TokenID: "a", LastUsedAt: at(9), LastIP: ip(1), Count: 3, RecentIPs: seen(1, 9, 2, 8)},
		},
		{
			name:   "interleaved and capped",
			stored: event.Usage{TokenID: "a", LastUsedAt: at(9), LastIP: ip(9), Count: 5, RecentIPs: seen(9, 9, 7, 7, 5, 5, 3, 3, 1, 1)},
			delta:  event.Usage{TokenID: "a", LastUsedAt: at(10), LastIP: ip(10), Count: 4, RecentIPs: seen(10, 10, 8, 8, 6, 6, 2, 2)},
			want:   event.Usage{TokenID: "a", LastUsedAt: at(10), LastIP: ip(10), Count: 9, RecentIPs: seen(10, 10, 9, 9, 8, 8, 7, 7, 6, 6)},
		},
		{
			name:   "IPs that do not parse are kept as they are",
			stored: event.Usage{TokenID: "a", LastUsedAt: at(5), LastIP: "@", Count: 1, RecentIPs: []event.IPSeen{{IP: "@", LastSeen: at(5)}}},
			delta:  event.Usage{TokenID: "a", LastUsedAt: at(4), LastIP: ip(1), Count: 1, RecentIPs: seen(1, 4)},
			want:   event.Usage{TokenID: "a", LastUsedAt: at(5), LastIP: "@", Count: 2, RecentIPs: []event.IPSeen{{IP: "@", LastSeen: at(5)}, {IP: ip(1), LastSeen: at(4)}}},
		},
		{
			name:   "an unsorted, overlong stored list is put right",
			stored: event.Usage{TokenID: "a", Count: 0, RecentIPs: seen(1, 1, 6, 6, 2, 2, 5, 5, 3, 3, 4, 4)},
			want:   event.Usage{TokenID: "a", RecentIPs: seen(6, 6, 5, 5, 4, 4, 3, 3, 2, 2)},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			storedIPs := append([]event.IPSeen(nil), tt.stored.RecentIPs...)
			got := MergeUsage(tt.stored, tt.delta)
			if !reflect.DeepEqual(got, tt.want) {
				t.Errorf("MergeUsage() =\n%+v\nwant\n%+v", got, tt.want)
			}
			if !reflect.DeepEqual(tt.stored.RecentIPs, storedIPs) {
				t.Error("MergeUsage changed its input")
			}
		})
	}
}

func BenchmarkUsageUsed(b *testing.B) {
	u := NewUsageTracker(0)
	now := t0
	for i := range event.MaxRecentIPs {
		u.Used(1, "tok_1", addr(i+1), now)
	}
	ip := addr(event.MaxRecentIPs)
	b.ReportAllocs()
	for b.Loop() {
		u.Used(1, "tok_1", ip, now)
	}
}

func BenchmarkUsageUsedParallel(b *testing.B) {
	u := NewUsageTracker(0)
	ids := make([]string, 1024)
	ip := addr(1)
	for i := range ids {
		ids[i] = tok(uint64(i))
		u.Used(uint64(i), ids[i], ip, t0)
	}
	var next atomic.Uint32
	b.ReportAllocs()
	b.RunParallel(func(pb *testing.PB) {
		i := int(next.Add(1) * 97)
		for pb.Next() {
			k := i % len(ids)
			u.Used(uint64(k), ids[k], ip, t0)
			i++
		}
	})
}

// BenchmarkUsageUsedSpread is Used with uses spread over many pending
// tokens with random keys, in a random order, each from one of the IPs it
// was already seen from: mostly cache misses, as with a large store.
func BenchmarkUsageUsedSpread(b *testing.B) {
	for _, tokens := range []int{16384, 262144} {
		b.Run(strconv.Itoa(tokens), func(b *testing.B) {
			r := rand.New(rand.NewPCG(1, 2))
			u := NewUsageTracker(0)
			keys := make([]uint64, tokens)
			ids := make([]string, tokens)
			ips := make([][event.MaxRecentIPs]netip.Addr, tokens)
			var keep [][]byte
			for i := range ids {
				// An id inside a larger allocation, as in the token index.
				keep = append(keep, make([]byte, 192))
				keys[i] = r.Uint64() >> 4
				ids[i] = strings.Clone("tok_" + strconv.Itoa(r.IntN(1<<30)))
				for j := range event.MaxRecentIPs {
					ips[i][j] = netip.AddrFrom4([4]byte{10, byte(i >> 16), byte(i >> 8), byte(i&255*5 + j)})
					u.Used(keys[i], ids[i], ips[i][j], at(j))
				}
			}
			runtime.KeepAlive(keep)
			order := r.Perm(tokens)
			now := at(100)
			b.ReportAllocs()
			i := 0
			for b.Loop() {
				t := order[i%tokens]
				u.Used(keys[t], ids[t], ips[t][i%event.MaxRecentIPs], now)
				i++
			}
		})
	}
}

// TestUsageShardLayout: a shard, its lock and its table's header, is one
// cache line, so neighbouring shards' locks don't share one.
func TestUsageShardLayout(t *testing.T) {
	if size := reflect.TypeFor[usageShard]().Size(); size != 64 {
		t.Errorf("usageShard is %d bytes, want 64", size)
	}
}
