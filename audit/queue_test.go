package audit

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"go.uber.org/zap/zapcore"
	"go.uber.org/zap/zaptest/observer"

	"github.com/apitoken/caddy-apitoken/event"
)

// numbered returns an event told apart by its path.
func numbered(i int) event.Event {
	return event.Event{Time: t0, Type: event.TypeAuthFailed, Outcome: event.OutcomeFailure, Path: fmt.Sprintf("/%d", i)}
}

// paths lists the paths of events.
func paths(events []event.Event) []string {
	out := make([]string, len(events))
	for i, e := range events {
		out[i] = e.Path
	}
	return out
}

// offerN offers events numbered from..to-1 and fails if one is refused.
func offerN(t *testing.T, q *Queue, from, to int) []event.Event {
	t.Helper()
	var out []event.Event
	for i := from; i < to; i++ {
		e := numbered(i)
		if !q.Offer(e) {
			t.Fatalf("Offer(%d) refused", i)
		}
		out = append(out, e)
	}
	return out
}

func TestQueueFlushBatches(t *testing.T) {
	tests := []struct {
		name      string
		offered   int
		batch     int
		wantSizes []int
	}{
		{"empty", 0, 10, []int{}},
		{"partial", 5, 10, []int{5}},
		{"exactly one", 10, 10, []int{10}},
		{"several", 25, 10, []int{10, 10, 5}},
		{"batch of one", 3, 1, []int{1, 1, 1}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			w := &fakeEvents{}
			q := NewQueue(QueueConfig{Writer: w, Size: 100, Batch: tt.batch})
			want := offerN(t, q, 0, tt.offered)
			if err := q.Flush(context.Background()); err != nil {
				t.Fatal(err)
			}
			if got := w.sizes(); !slices.Equal(got, tt.wantSizes) {
				t.Errorf("batch sizes = %v, want %v", got, tt.wantSizes)
			}
			if got := paths(w.events()); !slices.Equal(got, paths(want)) {
				t.Errorf("written %v, want %v", got, paths(want))
			}
			if q.Written() != uint64(tt.offered) || q.Dropped() != 0 {
				t.Errorf("written %d dropped %d, want %d and 0", q.Written(), q.Dropped(), tt.offered)
			}
		})
	}
}

func TestQueueRun(t *testing.T) {
	t.Run("full batches are written at once", func(t *testing.T) {
		w := &fakeEvents{}
		q := NewQueue(QueueConfig{Writer: w, Size: 100, Batch: 10, FlushEvery: time.Hour})
		stop := running(t, q.Run)
		want := offerN(t, q, 0, 25)
		eventually(t, "two full batches", func() bool { return q.Written() == 20 })
		if got := w.sizes(); !slices.Equal(got, []int{10, 10}) {
			t.Errorf("before stop, batch sizes = %v, want [10 10]", got)
		}
		stop()
		if got := w.sizes(); !slices.Equal(got, []int{10, 10, 5}) {
			t.Errorf("after stop, batch sizes = %v, want [10 10 5]", got)
		}
		if got := paths(w.events()); !slices.Equal(got, paths(want)) {
			t.Errorf("written %v, want %v", got, paths(want))
		}
	})
	t.Run("a partial batch is written after FlushEvery", func(t *testing.T) {
		w := &fakeEvents{}
		q := NewQueue(QueueConfig{Writer: w, Size: 100, Batch: 500, FlushEvery: 5 * time.Millisecond})
		running(t, q.Run)
		want := offerN(t, q, 0, 3)
		eventually(t, "the partial batch", func() bool { return q.Written() == 3 })
		if got := paths(w.events()); !slices.Equal(got, paths(want)) {
			t.Errorf("written %v, want %v", got, paths(want))
		}
	})
	t.Run("drains on cancel", func(t *testing.T) {
		w := &fakeEvents{}
		q := NewQueue(QueueConfig{Writer: w, Size: 1000, Batch: 7, FlushEvery: time.Hour})
		stop := running(t, q.Run)
		want := offerN(t, q, 0, 100)
		stop()
		if got := paths(w.events()); !slices.Equal(got, paths(want)) {
			t.Errorf("written %d events %v, want the %d offered", len(got), got, len(want))
		}
		if q.Written() != 100 || q.Dropped() != 0 {
			t.Errorf("written %d dropped %d, want 100 and 0", q.Written(), q.Dropped())
		}
		if q.Offer(numbered(100)) {
			t.Error("Offer accepted after Run returned")
		}
		if q.Dropped() != 1 {
			t.Errorf("dropped %d after a late offer, want 1", q.Dropped())
		}
	})
	t.Run("writes before cancel outlive it", func(t *testing.T) {
		// A batch being written when ctx ends is still written.
		w := &fakeEvents{block: make(chan struct{}), entered: make(chan struct{}, 1)}
		q := NewQueue(QueueConfig{Writer: w, Size: 10, Batch: 1, FlushEvery: time.Hour})
		ctx, cancel := context.WithCancel(context.Background())
		done := make(chan struct{})
		go func() { defer close(done); q.Run(ctx) }()
		offerN(t, q, 0, 1)
		<-w.entered
		cancel()
		close(w.block)
		<-done
		if q.Written() != 1 {
			t.Errorf("written %d, want 1", q.Written())
		}
	})
	t.Run("a second Run after the first returns at once", func(t *testing.T) {
		q := NewQueue(QueueConfig{Writer: &fakeEvents{}})
		ctx, cancel := context.WithCancel(context.Background())
		cancel()
		q.Run(ctx)
		q.Run(context.Background()) // would block forever if it ran
	})
}

func TestQueueFull(t *testing.T) {
	t.Run("no room", func(t *testing.T) {
		w := &fakeEvents{}
		q := NewQueue(QueueConfig{Writer: w, Size: 3})
		offerN(t, q, 0, 3)
		for i := 3; i < 5; i++ {
			if q.Offer(numbered(i)) {
				t.Fatalf("Offer(%d) accepted in a full queue", i)
			}
		}
		if q.Dropped() != 2 {
			t.Errorf("dropped %d, want 2", q.Dropped())
		}
		if err := q.Flush(context.Background()); err != nil {
			t.Fatal(err)
		}
		if got := paths(w.events()); !slices.Equal(got, []string{"/0", "/1", "/2"}) {
			t.Errorf("written %v", got)
		}
		offerN(t, q, 5, 6) // room again
	})
	t.Run("writer blocked", func(t *testing.T) {
		w := &fakeEvents{block: make(chan struct{}), entered: make(chan struct{}, 1)}
		q := NewQueue(QueueConfig{Writer: w, Size: 4, Batch: 1, FlushEvery: time.Hour})
		stop := running(t, q.Run)
		offerN(t, q, 0, 1)
		<-w.entered // Run holds event 0 in a blocked write
		offerN(t, q, 1, 5)
		if q.Offer(numbered(5)) {
			t.Fatal("Offer accepted in a full queue")
		}
		if q.Dropped() != 1 {
			t.Errorf("dropped %d, want 1", q.Dropped())
		}
		close(w.block)
		stop()
		if q.Written() != 5 || q.Dropped() != 1 {
			t.Errorf("written %d dropped %d, want 5 and 1", q.Written(), q.Dropped())
		}
	})
	t.Run("left behind after Run returned", func(t *testing.T) {
		q := NewQueue(QueueConfig{Writer: &fakeEvents{}})
		ctx, cancel := context.WithCancel(context.Background())
		cancel()
		q.Run(ctx)
		q.ch <- numbered(0) // what an offer racing with the end of Run may do
		if q.Dropped() != 1 {
			t.Errorf("dropped %d, want the stranded event counted", q.Dropped())
		}
	})
}

// warnings returns the dropped counts of the "audit events dropped" entries.
func warnings(t *testing.T, logs *observer.ObservedLogs) []uint64 {
	t.Helper()
	var out []uint64
	for _, e := range logs.FilterMessage("audit events dropped").All() {
		if e.Level != zapcore.WarnLevel {
			t.Errorf("drop warning at %v", e.Level)
		}
		n, ok := e.ContextMap()["dropped"].(uint64)
		if !ok {
			t.Fatalf("drop warning without a dropped count: %v", e.ContextMap())
		}
		out = append(out, n)
	}
	return out
}

func TestQueueDropWarning(t *testing.T) {
	clock := newClock()
	logger, logs := observed(zapcore.DebugLevel)
	q := NewQueue(QueueConfig{Writer: &fakeEvents{}, Size: 1, Logger: logger, WarnEvery: time.Minute, Now: clock.Now})
	drop := func(n int) {
		t.Helper()
		for range n {
			if q.Offer(numbered(0)) {
				t.Fatal("Offer accepted in a full queue")
			}
		}
	}
	flush := func() {
		t.Helper()
		if err := q.Flush(context.Background()); err != nil {
			t.Fatal(err)
		}
		offerN(t, q, 0, 1) // full again
	}
	offerN(t, q, 0, 1)

	steps := []struct {
		name    string
		advance time.Duration
		drops   int
		flush   bool
		want    []uint64 // every warning so far
	}{
		{name: "first drop warns at once", drops: 1, want: []uint64{1}},
		{name: "more drops in the minute are held", drops: 2, want: []uint64{1}},
		{name: "a flush in the minute says nothing", flush: true, want: []uint64{1}},
		{name: "half a minute later still held", advance: 30 * time.Second, drops: 1, want: []uint64{1}},
		{name: "a minute after the first, one warning with the count", advance: 30 * time.Second, drops: 5, want: []uint64{1, 4}},
		{name: "held again", advance: time.Second, drops: 2, want: []uint64{1, 4}},
		{name: "a flush a minute later reports what was held", advance: time.Minute, flush: true, want: []uint64{1, 4, 6}},
		{name: "nothing new, nothing said", advance: 2 * time.Minute, flush: true, want: []uint64{1, 4, 6}},
		{name: "a new drop much later warns at once", advance: time.Hour, drops: 1, want: []uint64{1, 4, 6, 1}},
	}
	for _, s := range steps {
		t.Run(s.name, func(t *testing.T) {
			clock.Advance(s.advance)
			drop(s.drops)
			if s.flush {
				flush()
			}
			if got := warnings(t, logs); !slices.Equal(got, s.want) {
				t.Errorf("warnings %v, want %v", got, s.want)
			}
		})
	}
	if q.Dropped() != 12 {
		t.Errorf("Dropped() = %d, want 12", q.Dropped())
	}
	last := logs.FilterMessage("audit events dropped").All()
	if total := last[len(last)-1].ContextMap()["dropped_total"]; total != uint64(12) {
		t.Errorf("dropped_total = %v, want 12", total)
	}
}

func TestQueueWriteError(t *testing.T) {
	t.Run("logged, counted, rate-limited", func(t *testing.T) {
		clock := newClock()
		logger, logs := observed(zapcore.DebugLevel)
		w := &fakeEvents{fail: 3}
		q := NewQueue(QueueConfig{Writer: w, Size: 10, Batch: 10, Logger: logger, WarnEvery: time.Minute, Now: clock.Now})
		errorLogs := func() []map[string]any {
			var out []map[string]any
			for _, e := range logs.FilterMessage("writing audit events failed").All() {
				if e.Level != zapcore.ErrorLevel {
					t.Errorf("write error logged at %v", e.Level)
				}
				out = append(out, e.ContextMap())
			}
			return out
		}
		steps := []struct {
			name       string
			advance    time.Duration
			offer      int
			wantErr    bool
			wantLogs   int
			wantFailed int64 // failed_batches of the last log
			wantLost   int64 // dropped of the last log
			written    uint64
			dropped    uint64
		}{
			{name: "first failure is logged", offer: 3, wantErr: true, wantLogs: 1, wantFailed: 1, wantLost: 3, dropped: 3},
			{name: "second within the minute is not", advance: 10 * time.Second, offer: 2, wantErr: true, wantLogs: 1, wantFailed: 1, wantLost: 3, dropped: 5},
			{name: "third after the minute, with the count", advance: time.Minute, offer: 4, wantErr: true, wantLogs: 2, wantFailed: 2, wantLost: 6, dropped: 9},
			{name: "writing goes on", offer: 2, wantLogs: 2, wantFailed: 2, wantLost: 6, written: 2, dropped: 9},
		}
		n := 0
		for _, s := range steps {
			t.Run(s.name, func(t *testing.T) {
				clock.Advance(s.advance)
				offerN(t, q, n, n+s.offer)
				n += s.offer
				err := q.Flush(context.Background())
				if s.wantErr != (err != nil) {
					t.Fatalf("Flush() = %v, want error %v", err, s.wantErr)
				}
				if err != nil && (!errors.Is(err, errFake) || !strings.Contains(err.Error(), fmt.Sprintf("writing %d audit events", s.offer))) {
					t.Errorf("Flush() = %v, want it to wrap %v and name the count", err, errFake)
				}
				got := errorLogs()
				if len(got) != s.wantLogs {
					t.Fatalf("%d error logs, want %d", len(got), s.wantLogs)
				}
				last := got[len(got)-1]
				if last["failed_batches"] != s.wantFailed || last["dropped"] != s.wantLost {
					t.Errorf("last log %v, want failed_batches %d dropped %d", last, s.wantFailed, s.wantLost)
				}
				if _, ok := last["error"]; !ok {
					t.Error("error log has no error")
				}
				if q.Written() != s.written || q.Dropped() != s.dropped {
					t.Errorf("written %d dropped %d, want %d and %d", q.Written(), q.Dropped(), s.written, s.dropped)
				}
			})
		}
	})
	t.Run("Run goes on", func(t *testing.T) {
		w := &fakeEvents{fail: 1}
		q := NewQueue(QueueConfig{Writer: w, Size: 10, Batch: 1, FlushEvery: time.Hour})
		stop := running(t, q.Run)
		offerN(t, q, 0, 3)
		eventually(t, "the writes", func() bool { return q.Written()+q.Dropped() == 3 })
		stop()
		if q.Written() != 2 || q.Dropped() != 1 {
			t.Errorf("written %d dropped %d, want 2 and 1", q.Written(), q.Dropped())
		}
		if got := paths(w.events()); !slices.Equal(got, []string{"/1", "/2"}) {
			t.Errorf("written %v, want [/1 /2]", got)
		}
	})
}

func TestQueueConcurrentOffer(t *testing.T) {
	w := &fakeEvents{}
	q := NewQueue(QueueConfig{Writer: w, Size: 64, Batch: 16, FlushEvery: time.Millisecond})
	stop := running(t, q.Run)
	var accepted, refused atomic.Uint64
	var wg sync.WaitGroup
	for g := range 8 {
		wg.Go(func() {
			for i := range 2000 {
				if q.Offer(numbered(g*10000 + i)) {
					accepted.Add(1)
				} else {
					refused.Add(1)
				}
				if i%100 == 0 {
					_ = q.Flush(context.Background()) // a Flush racing with Run
				}
			}
		})
	}
	wg.Wait()
	stop()
	if accepted.Load()+refused.Load() != 16000 {
		t.Fatalf("counted %d offers", accepted.Load()+refused.Load())
	}
	if q.Written() != accepted.Load() || q.Dropped() != refused.Load() {
		t.Errorf("written %d dropped %d, want %d and %d", q.Written(), q.Dropped(), accepted.Load(), refused.Load())
	}
	if got := uint64(len(w.events())); got != accepted.Load() {
		t.Errorf("writer got %d events, want %d", got, accepted.Load())
	}
}

func TestQueueOfferAllocs(t *testing.T) {
	e := fullEvent(event.TypeDenied)
	t.Run("room", func(t *testing.T) {
		q := NewQueue(QueueConfig{Writer: &fakeEvents{}, Size: 2000})
		if n := testing.AllocsPerRun(1000, func() { q.Offer(e) }); n != 0 {
			t.Errorf("Offer allocates %v times, want 0", n)
		}
	})
	t.Run("full", func(t *testing.T) {
		q := NewQueue(QueueConfig{Writer: &fakeEvents{}, Size: 1})
		q.Offer(e)
		if n := testing.AllocsPerRun(1000, func() { q.Offer(e) }); n != 0 {
			t.Errorf("a refused Offer allocates %v times, want 0", n)
		}
	})
}
