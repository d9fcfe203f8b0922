package audit

import (
	"context"
	"fmt"
	"reflect"
	"strconv"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"go.uber.org/zap/zapcore"
)

// fakeUsage is a UsageWriter that keeps the deltas it is given, and can be
// told to fail or to run a hook inside the write.
type fakeUsage struct {
	mu     sync.Mutex
	calls  [][]Usage
	fail   int                 // the next fail calls fail
	failIf func(call int) bool // or fail when this says so
	during func()              // runs inside FlushUsage
	n      int
}

func (f *fakeUsage) FlushUsage(ctx context.Context, deltas []Usage) error {
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

func (f *fakeUsage) written() [][]Usage {
	f.mu.Lock()
	defer f.mu.Unlock()
	return append([][]Usage(nil), f.calls...)
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

// seen builds a recent-IP list from ip, second pairs.
func seen(pairs ...any) []IPSeen {
	var out []IPSeen
	for i := 0; i < len(pairs); i += 2 {
		out = append(out, IPSeen{IP: pairs[i].(string), LastSeen: at(pairs[i+1].(int))})
	}
	return out
}

type use struct {
	token, ip string
	sec       int
}

func TestUsageUsed(t *testing.T) {
	tests := []struct {
		name string
		uses []use
		want map[string]Usage // by token; absent tokens must not be pending
	}{
		{
			name: "one use",
			uses: []use{{"a", "192.0.2.1", 1}},
			want: map[string]Usage{"a": {TokenID: "a", LastUsedAt: at(1), LastIP: "192.0.2.1", Count: 1, RecentIPs: seen("192.0.2.1", 1)}},
		},
		{
			name: "same IP again: one entry, latest time",
			uses: []use{{"a", "192.0.2.1", 1}, {"a", "192.0.2.1", 5}, {"a", "192.0.2.1", 9}},
			want: map[string]Usage{"a": {TokenID: "a", LastUsedAt: at(9), LastIP: "192.0.2.1", Count: 3, RecentIPs: seen("192.0.2.1", 9)}},
		},
		{
			name: "most recent first, a returning IP moves up",
			uses: []use{{"a", "1", 1}, {"a", "2", 2}, {"a", "3", 3}, {"a", "1", 4}},
			want: map[string]Usage{"a": {TokenID: "a", LastUsedAt: at(4), LastIP: "1", Count: 4, RecentIPs: seen("1", 4, "3", 3, "2", 2)}},
		},
		{
			name: "capped at MaxRecentIPs",
			uses: []use{{"a", "1", 1}, {"a", "2", 2}, {"a", "3", 3}, {"a", "4", 4}, {"a", "5", 5}, {"a", "6", 6}, {"a", "7", 7}},
			want: map[string]Usage{"a": {TokenID: "a", LastUsedAt: at(7), LastIP: "7", Count: 7, RecentIPs: seen("7", 7, "6", 6, "5", 5, "4", 4, "3", 3)}},
		},
		{
			name: "out of order: the later use stays last",
			uses: []use{{"a", "1", 10}, {"a", "2", 5}, {"a", "1", 3}},
			want: map[string]Usage{"a": {TokenID: "a", LastUsedAt: at(10), LastIP: "1", Count: 3, RecentIPs: seen("1", 10, "2", 5)}},
		},
		{
			name: "out of order into a full list: older than all kept is not kept",
			uses: []use{{"a", "1", 11}, {"a", "2", 12}, {"a", "3", 13}, {"a", "4", 14}, {"a", "5", 15}, {"a", "6", 10}, {"a", "7", 12}},
			want: map[string]Usage{"a": {TokenID: "a", LastUsedAt: at(15), LastIP: "5", Count: 7, RecentIPs: seen("5", 15, "4", 14, "3", 13, "2", 12, "7", 12)}},
		},
		{
			name: "unknown IP: counted, not listed, last IP kept",
			uses: []use{{"a", "1", 1}, {"a", "", 2}},
			want: map[string]Usage{"a": {TokenID: "a", LastUsedAt: at(2), LastIP: "1", Count: 2, RecentIPs: seen("1", 1)}},
		},
		{
			name: "tokens are apart",
			uses: []use{{"a", "1", 1}, {"b", "2", 2}, {"a", "3", 3}},
			want: map[string]Usage{
				"a": {TokenID: "a", LastUsedAt: at(3), LastIP: "3", Count: 2, RecentIPs: seen("3", 3, "1", 1)},
				"b": {TokenID: "b", LastUsedAt: at(2), LastIP: "2", Count: 1, RecentIPs: seen("2", 2)},
			},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			u := NewUsageTracker(0)
			for _, x := range tt.uses {
				u.Used(x.token, x.ip, at(x.sec))
			}
			for _, id := range []string{"a", "b", "c"} {
				got, ok := u.Pending(id)
				want, wantOK := tt.want[id]
				if ok != wantOK {
					t.Fatalf("Pending(%s) found = %v, want %v", id, ok, wantOK)
				}
				if !reflect.DeepEqual(got, want) {
					t.Errorf("Pending(%s) =\n%+v\nwant\n%+v", id, got, want)
				}
			}
		})
	}
}

func TestUsageFlush(t *testing.T) {
	ctx := context.Background()
	t.Run("swaps out every delta in one call, by token id", func(t *testing.T) {
		u := NewUsageTracker(0)
		w := &fakeUsage{}
		for i := 9; i >= 0; i-- {
			id := "tok_" + strconv.Itoa(i)
			u.Used(id, "192.0.2.1", at(i))
			u.Used(id, "192.0.2.2", at(i+1))
		}
		if err := u.Flush(ctx, w); err != nil {
			t.Fatal(err)
		}
		calls := w.written()
		if len(calls) != 1 || len(calls[0]) != 10 {
			t.Fatalf("wrote %v, want one call of 10 deltas", calls)
		}
		for i, d := range calls[0] {
			want := Usage{TokenID: "tok_" + strconv.Itoa(i), LastUsedAt: at(i + 1), LastIP: "192.0.2.2", Count: 2,
				RecentIPs: seen("192.0.2.2", i+1, "192.0.2.1", i)}
			if !reflect.DeepEqual(d, want) {
				t.Errorf("delta %d = %+v, want %+v", i, d, want)
			}
		}
		if _, ok := u.Pending("tok_3"); ok {
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
		u.Used("a", "1", at(1))
		u.Used("a", "2", at(2))
		before, _ := u.Pending("a")
		if err := u.Flush(ctx, w); err == nil || err.Error() != "flushing usage of 1 tokens: disk on fire" {
			t.Fatalf("Flush() = %v, want the wrapped failure", err)
		}
		if got, ok := u.Pending("a"); !ok || !reflect.DeepEqual(got, before) {
			t.Fatalf("after the failure Pending = %+v, want %+v", got, before)
		}
		u.Used("a", "3", at(3))
		if err := u.Flush(ctx, w); err != nil {
			t.Fatal(err)
		}
		want := []Usage{{TokenID: "a", LastUsedAt: at(3), LastIP: "3", Count: 3, RecentIPs: seen("3", 3, "2", 2, "1", 1)}}
		if calls := w.written(); len(calls) != 1 || !reflect.DeepEqual(calls[0], want) {
			t.Errorf("wrote %+v, want %+v", calls, want)
		}
	})
	t.Run("uses during a failing flush are merged with it", func(t *testing.T) {
		u := NewUsageTracker(0)
		w := &fakeUsage{fail: 1}
		var during Usage
		w.during = func() {
			u.Used("a", "2", at(5)) // a request while the write runs
			during, _ = u.Pending("a")
		}
		u.Used("a", "1", at(1))
		if err := u.Flush(ctx, w); err == nil {
			t.Fatal("Flush() succeeded, want the failure")
		}
		want := Usage{TokenID: "a", LastUsedAt: at(5), LastIP: "2", Count: 2, RecentIPs: seen("2", 5, "1", 1)}
		if !reflect.DeepEqual(during, want) {
			t.Errorf("Pending during the flush = %+v, want %+v (in flight and new)", during, want)
		}
		if got, _ := u.Pending("a"); !reflect.DeepEqual(got, want) {
			t.Errorf("Pending after = %+v, want %+v", got, want)
		}
	})
	t.Run("uses during a successful flush stay pending", func(t *testing.T) {
		u := NewUsageTracker(0)
		w := &fakeUsage{}
		w.during = func() { u.Used("a", "2", at(5)) }
		u.Used("a", "1", at(1))
		if err := u.Flush(ctx, w); err != nil {
			t.Fatal(err)
		}
		want := Usage{TokenID: "a", LastUsedAt: at(5), LastIP: "2", Count: 1, RecentIPs: seen("2", 5)}
		if got, _ := u.Pending("a"); !reflect.DeepEqual(got, want) {
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
				u.Pending("tok_0")
			}
		}
	}()
	var wg sync.WaitGroup
	for g := range workers {
		wg.Go(func() {
			for i := range uses {
				u.Used("tok_"+strconv.Itoa(i%tokens), fmt.Sprintf("10.0.%d.%d", g, i%7), at(i))
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
	for i := range tokens {
		id := "tok_" + strconv.Itoa(i)
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
	u.Used("a", "1", at(1))
	u.Used("b", "1", at(1))
	u.Used("c", "1", at(1)) // full: not recorded
	u.Used("a", "1", at(2)) // pending already: recorded
	if _, ok := u.Pending("c"); ok {
		t.Error("c pending past the bound")
	}
	if got, _ := u.Pending("a"); got.Count != 2 {
		t.Errorf("a counted %d, want 2", got.Count)
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
	u.Used("c", "1", at(3))
	if _, ok := u.Pending("c"); !ok {
		t.Error("c not pending after a flush made room")
	}
	t.Run("a failed flush puts back past the bound", func(t *testing.T) {
		u := NewUsageTracker(1)
		u.Used("a", "1", at(1))
		w := &fakeUsage{fail: 1}
		w.during = func() { u.Used("b", "1", at(2)) } // takes the one free place
		if err := u.Flush(context.Background(), w); err == nil {
			t.Fatal("Flush() succeeded, want the failure")
		}
		for _, id := range []string{"a", "b"} {
			if _, ok := u.Pending(id); !ok {
				t.Errorf("%s lost", id)
			}
		}
	})
}

func TestUsageRun(t *testing.T) {
	t.Run("flushes on cancel", func(t *testing.T) {
		u := NewUsageTracker(0)
		w := &fakeUsage{}
		stop := running(t, func(ctx context.Context) { u.Run(ctx, w, time.Hour, nil) })
		u.Used("a", "1", at(1))
		stop()
		if got := w.totals(); got["a"] != 1 {
			t.Errorf("wrote %v, want a: 1", got)
		}
	})
	t.Run("flushes every period", func(t *testing.T) {
		u := NewUsageTracker(0)
		w := &fakeUsage{}
		running(t, func(ctx context.Context) { u.Run(ctx, w, time.Millisecond, nil) })
		u.Used("a", "1", at(1))
		eventually(t, "a flush", func() bool { return w.totals()["a"] == 1 })
	})
	t.Run("flushes early when full, and says what it missed", func(t *testing.T) {
		u := NewUsageTracker(1)
		w := &fakeUsage{}
		logger, logs := observed(zapcore.WarnLevel)
		running(t, func(ctx context.Context) { u.Run(ctx, w, time.Hour, logger) })
		u.Used("a", "1", at(1))
		u.Used("b", "1", at(1)) // full
		eventually(t, "the early flush", func() bool { return w.totals()["a"] == 1 })
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
		u.Used("a", "1", at(1))
		stop()
		if logs.FilterMessage("flushing token usage failed").Len() != 1 {
			t.Errorf("logged %v, want the failure", logs.All())
		}
		if got, _ := u.Pending("a"); got.Count != 1 {
			t.Errorf("pending %+v after the failure, want a's use kept", got)
		}
	})
}

func TestUsageUsedAllocs(t *testing.T) {
	u := NewUsageTracker(0)
	for i := range MaxRecentIPs {
		u.Used("tok_a", "192.0.2."+strconv.Itoa(i), at(i))
	}
	now := at(100)
	tests := []struct {
		name string
		ip   string
	}{
		{"IP first in the list", "192.0.2.4"},
		{"IP last in the list", "192.0.2.0"},
		{"unknown IP", ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if n := testing.AllocsPerRun(1000, func() { u.Used("tok_a", tt.ip, now) }); n != 0 {
				t.Errorf("Used allocates %v times, want 0", n)
			}
		})
	}
}

func TestMergeUsage(t *testing.T) {
	tests := []struct {
		name          string
		stored, delta Usage
		want          Usage
	}{
		{
			name: "both empty",
		},
		{
			name:   "nothing pending",
			stored: Usage{TokenID: "a", LastUsedAt: at(5), LastIP: "1", Count: 10, RecentIPs: seen("1", 5)},
			want:   Usage{TokenID: "a", LastUsedAt: at(5), LastIP: "1", Count: 10, RecentIPs: seen("1", 5)},
		},
		{
			name:  "never stored",
			delta: Usage{TokenID: "a", LastUsedAt: at(5), LastIP: "1", Count: 2, RecentIPs: seen("1", 5)},
			want:  Usage{TokenID: "a", LastUsedAt: at(5), LastIP: "1", Count: 2, RecentIPs: seen("1", 5)},
		},
		{
			name:   "counts add, the later use wins",
			stored: Usage{TokenID: "a", LastUsedAt: at(5), LastIP: "1", Count: 10, RecentIPs: seen("1", 5)},
			delta:  Usage{TokenID: "a", LastUsedAt: at(9), LastIP: "2", Count: 3, RecentIPs: seen("2", 9)},
			want:   Usage{TokenID: "a", LastUsedAt: at(9), LastIP: "2", Count: 13, RecentIPs: seen("2", 9, "1", 5)},
		},
		{
			name:   "an older delta does not win",
			stored: Usage{TokenID: "a", LastUsedAt: at(9), LastIP: "1", Count: 1, RecentIPs: seen("1", 9)},
			delta:  Usage{TokenID: "a", LastUsedAt: at(5), LastIP: "2", Count: 1, RecentIPs: seen("2", 5)},
			want:   Usage{TokenID: "a", LastUsedAt: at(9), LastIP: "1", Count: 2, RecentIPs: seen("1", 9, "2", 5)},
		},
		{
			name:   "a tie goes to the stored use",
			stored: Usage{TokenID: "a", LastUsedAt: at(9), LastIP: "1", Count: 1, RecentIPs: seen("1", 9)},
			delta:  Usage{TokenID: "a", LastUsedAt: at(9), LastIP: "2", Count: 1, RecentIPs: seen("2", 9)},
			want:   Usage{TokenID: "a", LastUsedAt: at(9), LastIP: "1", Count: 2, RecentIPs: seen("1", 9, "2", 9)},
		},
		{
			name:   "the later use without an IP keeps the other's",
			stored: Usage{TokenID: "a", LastUsedAt: at(5), LastIP: "1", Count: 1, RecentIPs: seen("1", 5)},
			delta:  Usage{TokenID: "a", LastUsedAt: at(9), Count: 1},
			want:   Usage{TokenID: "a", LastUsedAt: at(9), LastIP: "1", Count: 2, RecentIPs: seen("1", 5)},
		},
		{
			name:   "the same IP once, at its latest",
			stored: Usage{TokenID: "a", LastUsedAt: at(5), LastIP: "1", Count: 2, RecentIPs: seen("1", 5, "2", 4)},
			delta:  Usage{TokenID: "a", LastUsedAt: at(7), LastIP: "2", Count: 1, RecentIPs: seen("2", 7)},
			want:   Usage{TokenID: "a", LastUsedAt: at(7), LastIP: "2", Count: 3, RecentIPs: seen("2", 7, "1", 5)},
		},
		{
			name:   "a stale delta IP does not move back",
			stored: Usage{TokenID: "a", LastUsedAt: at(9), LastIP: "1", Count: 2, RecentIPs: seen("1", 9, "2", 8)},
			delta:  Usage{TokenID: "a", LastUsedAt: at(3), LastIP: "1", Count: 1, RecentIPs: seen("1", 3)},
			want:   Usage{TokenID: "a", LastUsedAt: at(9), LastIP: "1", Count: 3, RecentIPs: seen("1", 9, "2", 8)},
		},
		{
			name:   "interleaved and capped",
			stored: Usage{TokenID: "a", LastUsedAt: at(9), LastIP: "9", Count: 5, RecentIPs: seen("9", 9, "7", 7, "5", 5, "3", 3, "1", 1)},
			delta:  Usage{TokenID: "a", LastUsedAt: at(10), LastIP: "10", Count: 4, RecentIPs: seen("10", 10, "8", 8, "6", 6, "2", 2)},
			want:   Usage{TokenID: "a", LastUsedAt: at(10), LastIP: "10", Count: 9, RecentIPs: seen("10", 10, "9", 9, "8", 8, "7", 7, "6", 6)},
		},
		{
			name:   "an unsorted, overlong stored list is put right",
			stored: Usage{TokenID: "a", Count: 0, RecentIPs: seen("1", 1, "6", 6, "2", 2, "5", 5, "3", 3, "4", 4)},
			want:   Usage{TokenID: "a", RecentIPs: seen("6", 6, "5", 5, "4", 4, "3", 3, "2", 2)},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			storedIPs := append([]IPSeen(nil), tt.stored.RecentIPs...)
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
	for i := range MaxRecentIPs {
		u.Used("tok_a", "192.0.2."+strconv.Itoa(i), now)
	}
	b.ReportAllocs()
	for b.Loop() {
		u.Used("tok_a", "192.0.2.4", now)
	}
}

func BenchmarkUsageUsedParallel(b *testing.B) {
	u := NewUsageTracker(0)
	ids := make([]string, 1024)
	for i := range ids {
		ids[i] = "tok_" + strconv.Itoa(i)
		u.Used(ids[i], "192.0.2.1", t0)
	}
	var next atomic.Uint32
	b.ReportAllocs()
	b.RunParallel(func(pb *testing.PB) {
		i := int(next.Add(1) * 97)
		for pb.Next() {
			u.Used(ids[i%len(ids)], "192.0.2.1", t0)
			i++
		}
	})
}
