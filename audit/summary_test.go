package audit

import (
	"context"
	"fmt"
	"io"
	"reflect"
	"slices"
	"sync"
	"testing"
	"time"

	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"
	"go.uber.org/zap/zaptest/observer"

	"github.com/apitoken/caddy-apitoken/event"
)

// window is the tests' detail window; t0 (…:26) falls in [20s, 30s).
const window = 10 * time.Second

var (
	windowStart = time.Date(2025, 3, 14, 15, 9, 20, 0, time.UTC)
	windowEnd   = windowStart.Add(window)
)

// limitedRecorder builds a Recorder with the default selection, the detail
// limit l, a queue (Flush it to see what it wrote) and a logger at INFO.
func limitedRecorder(t testing.TB, l DetailLimit, clock *fakeClock) (*Recorder, *fakeEvents, *Queue, *observer.ObservedLogs) {
	t.Helper()
	logger, logs := observed(zapcore.InfoLevel)
	w := &fakeEvents{}
	q := NewQueue(QueueConfig{Writer: w, Size: 1 << 16})
	r := NewRecorder(RecorderConfig{Logger: logger, Queue: q, DetailLimit: l, Now: clock.Now})
	return r, w, q, logs
}

// refusal is an auth_failed event at the clock's time.
func refusal(clock *fakeClock, reason, ip, user string) event.Event {
	return event.Event{
		Time: clock.Now(), Type: event.TypeAuthFailed, Outcome: event.OutcomeFailure, Reason: reason,
		User: user, Scheme: "bearer", ClientIP: ip, Method: "GET", Host: "api.example.com",
		Path: "/v1/items", Status: 401,
	}
}

// stored flushes q and returns what it wrote.
func stored(t *testing.T, q *Queue, w *fakeEvents) []event.Event {
	t.Helper()
	if err := q.Flush(context.Background()); err != nil {
		t.Fatal(err)
	}
	return w.events()
}

// split separates summaries from detailed events.
func split(events []event.Event) (detailed, summaries []event.Event) {
	for _, e := range events {
		if e.IsSummary() {
			summaries = append(summaries, e)
		} else {
			detailed = append(detailed, e)
		}
	}
	return detailed, summaries
}

// countBy counts events by type and reason, summaries by what they stand
// for: "type/reason" -> events.
func countBy(events []event.Event) map[string]int {
	out := make(map[string]int)
	for _, e := range events {
		n := 1
		if e.IsSummary() {
			n = e.Count
		}
		out[string(e.Type)+"/"+e.Reason] += n
	}
	return out
}

func TestDetailLimitBudget(t *testing.T) {
	tests := []struct {
		name          string
		limit         int
		events        int
		wantDetailed  int
		wantSuppessed int // 0: no summary
	}{
		{"under the limit", 5, 4, 4, 0},
		{"at the limit", 5, 5, 5, 0},
		{"one over", 5, 6, 5, 1},
		{"flood", 5, 1000, 5, 995},
		{"limit of one", 1, 3, 1, 2},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			clock := newClock()
			r, w, q, logs := limitedRecorder(t, DetailLimit{Events: tt.limit, Window: window}, clock)
			for i := range tt.events {
				r.Record(refusal(clock, "unknown_token", fmt.Sprintf("192.0.2.%d", i%200), ""))
			}
			if got := r.Summarized(); got != int64(tt.wantSuppessed) {
				t.Errorf("Summarized() = %d, want %d", got, tt.wantSuppessed)
			}
			detailed, summaries := split(stored(t, q, w))
			if len(detailed) != tt.wantDetailed || len(summaries) != 0 {
				t.Fatalf("within the window: %d detailed, %d summaries; want %d and none", len(detailed), len(summaries), tt.wantDetailed)
			}
			if n := logs.Len(); n != tt.wantDetailed {
				t.Errorf("logged %d lines within the window, want %d", n, tt.wantDetailed)
			}
			for i, e := range detailed {
				if want := fmt.Sprintf("192.0.2.%d", i); e.ClientIP != want || e.Count != 0 || e.TopClients != nil {
					t.Errorf("detailed event %d: %+v, want the event from %s as recorded", i, e, want)
				}
			}
			r.Flush(windowEnd)
			_, summaries = split(stored(t, q, w))
			if tt.wantSuppessed == 0 {
				if len(summaries) != 0 {
					t.Errorf("summaries %+v for a window within its limit", summaries)
				}
				return
			}
			if len(summaries) != 1 || summaries[0].Count != tt.wantSuppessed {
				t.Fatalf("summaries %+v, want one of %d events", summaries, tt.wantSuppessed)
			}
			if got := logs.FilterField(zap.Int("count", tt.wantSuppessed)).Len(); got != 1 {
				t.Errorf("the summary was logged %d times, want once", got)
			}
		})
	}
}

// TestDetailLimitPerReason: each type and reason has its own budget, so a
// flood of one cannot hide another.
func TestDetailLimitPerReason(t *testing.T) {
	clock := newClock()
	r, w, q, _ := limitedRecorder(t, DetailLimit{Events: 3, Window: window}, clock)
	for range 500 {
		r.Record(refusal(clock, "unknown_token", "203.0.113.7", ""))
	}
	revoked := refusal(clock, "revoked", "198.51.100.1", "alice")
	revoked.TokenID = "tok_revoked"
	r.Record(revoked)
	r.Record(revoked)
	scope := event.Event{Time: clock.Now(), Type: event.TypeDenied, Outcome: event.OutcomeDenied, Reason: "scope_denied", User: "bob", Status: 403}
	r.Record(scope)
	// Same reason, other types: budgets of their own.
	for _, typ := range []event.Type{event.TypeDenied, event.TypeWouldDeny} {
		for range 4 {
			r.Record(event.Event{Time: clock.Now(), Type: typ, Outcome: event.OutcomeDenied, Reason: "ip_not_allowed"})
		}
	}
	detailed, _ := split(stored(t, q, w))
	want := map[string]int{
		"auth_failed/unknown_token": 3, "auth_failed/revoked": 2, "denied/scope_denied": 1,
		"denied/ip_not_allowed": 3, "would_deny/ip_not_allowed": 3,
	}
	if got := countBy(detailed); !reflect.DeepEqual(got, want) {
		t.Errorf("detailed events %v, want %v", got, want)
	}
	if !slices.ContainsFunc(detailed, func(e event.Event) bool { return e.TokenID == "tok_revoked" }) {
		t.Error("the revoked token's use is not recorded in full")
	}
	r.Flush(windowEnd)
	_, summaries := split(stored(t, q, w))
	want = map[string]int{"auth_failed/unknown_token": 497, "denied/ip_not_allowed": 1, "would_deny/ip_not_allowed": 1}
	if got := countBy(summaries); !reflect.DeepEqual(got, want) || len(summaries) != 3 {
		t.Errorf("summaries %v (%d), want %v", got, len(summaries), want)
	}
}

// TestDetailLimitRollover: a new window starts a new budget, and its
// first refusal records the previous window's summary first.
func TestDetailLimitRollover(t *testing.T) {
	clock := newClock()
	r, w, q, _ := limitedRecorder(t, DetailLimit{Events: 2, Window: window}, clock)
	for range 7 {
		r.Record(refusal(clock, "unknown_token", "203.0.113.7", ""))
	}
	clock.Advance(window) // t0+10s: the next window
	first := refusal(clock, "unknown_token", "203.0.113.8", "")
	r.Record(first)
	r.Record(refusal(clock, "unknown_token", "203.0.113.8", ""))
	r.Record(refusal(clock, "unknown_token", "203.0.113.8", ""))
	got := stored(t, q, w)
	var kinds []string
	for _, e := range got {
		k := "detail"
		if e.IsSummary() {
			k = fmt.Sprintf("summary of %d at %s", e.Count, e.Time.Format("15:04:05"))
		}
		kinds = append(kinds, k)
	}
	want := []string{"detail", "detail", "summary of 5 at 15:09:30", "detail", "detail"}
	if !slices.Equal(kinds, want) {
		t.Fatalf("recorded %q, want %q", kinds, want)
	}
	if got[3].ClientIP != first.ClientIP {
		t.Errorf("after the summary: %+v, want the new window's first event", got[3])
	}
	if !got[2].Time.Equal(windowEnd) {
		t.Errorf("summary time %v, want the end of its window %v", got[2].Time, windowEnd)
	}
	// The second window's one suppressed event.
	r.Flush(windowEnd.Add(window - time.Nanosecond))
	if _, s := split(stored(t, q, w)); len(s) != 1 {
		t.Errorf("flushed before the second window ended: %+v", s)
	}
	r.Flush(windowEnd.Add(window))
	if _, s := split(stored(t, q, w)); len(s) != 2 || s[1].Count != 1 || !s[1].Time.Equal(windowEnd.Add(window)) {
		t.Errorf("summaries %+v, want a second one of 1 event at %v", s, windowEnd.Add(window))
	}
}

func TestDetailLimitSummaryContent(t *testing.T) {
	clock := newClock()
	r, w, q, logs := limitedRecorder(t, DetailLimit{Events: 1, Window: window}, clock)
	r.Record(refusal(clock, "wrong_user", "192.0.2.99", "zed")) // the detailed one
	clients := map[string]int{"192.0.2.1": 9, "192.0.2.2": 7, "2001:db8::3": 5, "192.0.2.4": 3, "192.0.2.5": 2, "192.0.2.6": 1}
	users := map[string]int{"admin": 12, "root": 8, "": 7}
	var ips, names []string
	for ip, n := range clients {
		for range n {
			ips = append(ips, ip)
		}
	}
	for u, n := range users {
		for range n {
			names = append(names, u)
		}
	}
	slices.Sort(ips)
	slices.Sort(names)
	for i := range ips { // 27 events, interleaved
		e := refusal(clock, "wrong_user", ips[(i*7)%27], names[(i*5)%27])
		e.TokenID = fmt.Sprint("tok_", i%2) // differs: left out
		r.Record(e)
	}
	r.Flush(windowEnd)
	_, summaries := split(stored(t, q, w))
	if len(summaries) != 1 {
		t.Fatalf("summaries %+v, want one", summaries)
	}
	want := event.Event{
		Time: windowEnd, Type: event.TypeAuthFailed, Outcome: event.OutcomeFailure, Reason: "wrong_user",
		User: "admin", Scheme: "bearer", ClientIP: "192.0.2.1", Method: "GET", Host: "api.example.com",
		Path: "/v1/items", Status: 401, Count: 27,
		TopClients: []event.Tally{{Value: "192.0.2.1", Count: 9}, {Value: "192.0.2.2", Count: 7}, {Value: "2001:db8::3", Count: 5}, {Value: "192.0.2.4", Count: 3}, {Value: "192.0.2.5", Count: 2}},
		TopUsers:   []event.Tally{{Value: "admin", Count: 12}, {Value: "root", Count: 8}},
	}
	if !reflect.DeepEqual(summaries[0], want) {
		t.Errorf("summary\n%+v, want\n%+v", summaries[0], want)
	}

	t.Run("logged", func(t *testing.T) {
		entries := logs.FilterField(zap.Int("count", 27)).All()
		if len(entries) != 1 {
			t.Fatalf("%d summary lines logged, want 1", len(entries))
		}
		e := entries[0]
		fields := e.ContextMap()
		if e.Message != "auth_failed" || e.Level != zapcore.InfoLevel || fields["reason"] != "wrong_user" || fields["client_ip"] != "192.0.2.1" {
			t.Errorf("summary line %q at %v: %v", e.Message, e.Level, fields)
		}
		wantTop := []any{
			map[string]any{"value": "192.0.2.1", "count": 9},
			map[string]any{"value": "192.0.2.2", "count": 7},
			map[string]any{"value": "2001:db8::3", "count": 5},
			map[string]any{"value": "192.0.2.4", "count": 3},
			map[string]any{"value": "192.0.2.5", "count": 2},
		}
		if !reflect.DeepEqual(fields["top_clients"], wantTop) {
			t.Errorf("top_clients = %v\nwant %v", fields["top_clients"], wantTop)
		}
		wantUsers := []any{map[string]any{"value": "admin", "count": 12}, map[string]any{"value": "root", "count": 8}}
		if !reflect.DeepEqual(fields["top_users"], wantUsers) {
			t.Errorf("top_users = %v, want %v", fields["top_users"], wantUsers)
		}
		if _, ok := fields["token_id"]; ok {
			t.Error("a token id the events did not share is logged")
		}
	})
}

// TestDetailLimitFlush: summaries go out when the traffic stops, once, and
// only for windows that had events beyond the limit.
func TestDetailLimitFlush(t *testing.T) {
	clock := newClock()
	r, w, q, _ := limitedRecorder(t, DetailLimit{Events: 2, Window: window}, clock)
	for range 4 {
		r.Record(refusal(clock, "unknown_token", "203.0.113.7", ""))
	}
	r.Record(refusal(clock, "expired", "203.0.113.7", "")) // within its limit
	summaries := func() []event.Event {
		_, s := split(stored(t, q, w))
		return s
	}
	r.Flush(windowEnd.Add(-time.Nanosecond))
	if s := summaries(); len(s) != 0 {
		t.Fatalf("summary before the window ended: %+v", s)
	}
	r.Flush(windowEnd)
	if s := summaries(); len(s) != 1 || s[0].Reason != "unknown_token" || s[0].Count != 2 {
		t.Fatalf("summaries %+v, want one of 2 unknown_token", s)
	}
	r.Flush(windowEnd.Add(time.Hour))
	if s := summaries(); len(s) != 1 {
		t.Errorf("a second flush recorded %d more summaries", len(s)-1)
	}
	// A window entirely within the limit has no summary.
	clock.Advance(time.Hour)
	r.Record(refusal(clock, "unknown_token", "203.0.113.7", ""))
	r.Flush(clock.Now().Add(time.Hour))
	if s := summaries(); len(s) != 1 {
		t.Errorf("%d summaries for a window within its limit", len(s)-1)
	}
}

func TestDetailLimitRun(t *testing.T) {
	clock := newClock()
	r, w, q, _ := limitedRecorder(t, DetailLimit{Events: 1, Window: window}, clock)
	for range 3 {
		r.Record(refusal(clock, "unknown_token", "203.0.113.7", ""))
	}
	stop := running(t, func(ctx context.Context) { r.Run(ctx, time.Millisecond) })
	clock.Advance(window)
	eventually(t, "the summary", func() bool {
		_, s := split(stored(t, q, w))
		return len(s) == 1 && s[0].Count == 2
	})
	stop()
}

// TestDetailLimitClose: Close records the running window's summary, cut
// short, and lifts the limit.
func TestDetailLimitClose(t *testing.T) {
	clock := newClock()
	r, w, q, _ := limitedRecorder(t, DetailLimit{Events: 1, Window: window}, clock)
	for range 4 {
		r.Record(refusal(clock, "unknown_token", "203.0.113.7", ""))
	}
	r.Close(clock.Now())
	r.Close(clock.Now()) // idempotent
	_, s := split(stored(t, q, w))
	if len(s) != 1 || s[0].Count != 3 || !s[0].Time.Equal(clock.Now()) {
		t.Fatalf("summaries %+v, want one of 3 at %v", s, clock.Now())
	}
	for range 3 {
		r.Record(refusal(clock, "unknown_token", "203.0.113.7", ""))
	}
	if d, s := split(stored(t, q, w)); len(d) != 4 || len(s) != 1 {
		t.Errorf("after Close: %d detailed, %d summaries; want 4 and 1", len(d), len(s))
	}
}

// TestDetailLimitOff: without a limit (the zero DetailLimit), every
// refusal is recorded in full.
func TestDetailLimitOff(t *testing.T) {
	for _, l := range []DetailLimit{{}, {Events: 5}, {Window: window}} {
		t.Run(fmt.Sprintf("%+v", l), func(t *testing.T) {
			clock := newClock()
			r, w, q, logs := limitedRecorder(t, l, clock)
			for range 300 {
				r.Record(refusal(clock, "unknown_token", "203.0.113.7", ""))
			}
			r.Flush(clock.Now().Add(time.Hour))
			r.Close(clock.Now().Add(time.Hour))
			d, s := split(stored(t, q, w))
			if len(d) != 300 || len(s) != 0 || logs.Len() != 300 {
				t.Errorf("%d detailed, %d summaries, %d lines; want 300, 0, 300", len(d), len(s), logs.Len())
			}
		})
	}
}

// TestDetailLimitUnaffected: successes and admin events are not limited.
func TestDetailLimitUnaffected(t *testing.T) {
	clock := newClock()
	sel, err := ParseSelection([]string{"admin", "failure", "denied", "success"}, 0)
	if err != nil {
		t.Fatal(err)
	}
	logger, logs := observed(zapcore.DebugLevel)
	w := &fakeEvents{}
	q := NewQueue(QueueConfig{Writer: w})
	r := NewRecorder(RecorderConfig{Selection: sel, Logger: logger, Queue: q, DetailLimit: DetailLimit{Events: 1, Window: window}, Now: clock.Now})
	for range 50 {
		r.Record(event.Event{Time: clock.Now(), Type: event.TypeAuthSucceeded, Outcome: event.OutcomeSuccess, Reason: "ok"})
		r.Record(event.Event{Time: clock.Now(), Type: event.TypeTokenRevoked, Outcome: event.OutcomeSuccess})
		r.Admin(event.Event{Time: clock.Now(), Type: event.TypeTokenCreated, Outcome: event.OutcomeSuccess})
	}
	r.Close(clock.Now())
	if got := countBy(stored(t, q, w)); !reflect.DeepEqual(got, map[string]int{"auth_succeeded/ok": 50}) {
		t.Errorf("stored %v, want every success", got)
	}
	if n := logs.Len(); n != 150 {
		t.Errorf("logged %d lines, want 150", n)
	}
}

// TestDetailLimitConcurrent: under concurrent refusals, exactly the limit
// is recorded in full and the summary accounts for every other one.
func TestDetailLimitConcurrent(t *testing.T) {
	clock := newClock()
	r, w, q, _ := limitedRecorder(t, DetailLimit{Events: 10, Window: window}, clock)
	const workers, each = 8, 500
	reasons := []string{"unknown_token", "revoked"}
	var wg sync.WaitGroup
	for i := range workers {
		wg.Go(func() {
			for j := range each {
				r.Record(refusal(clock, reasons[i%2], fmt.Sprintf("192.0.2.%d", i), fmt.Sprint("u", j%3)))
			}
		})
	}
	flushes := make(chan struct{})
	go func() { // flushes racing with the records: nothing due yet
		defer close(flushes)
		for range 100 {
			r.Flush(clock.Now())
		}
	}()
	wg.Wait()
	<-flushes
	r.Flush(windowEnd)
	d, s := split(stored(t, q, w))
	if got := countBy(d); !reflect.DeepEqual(got, map[string]int{"auth_failed/unknown_token": 10, "auth_failed/revoked": 10}) {
		t.Errorf("detailed %v, want 10 of each", got)
	}
	want := map[string]int{"auth_failed/unknown_token": workers / 2 * each, "auth_failed/revoked": workers / 2 * each}
	if got := countBy(append(d, s...)); !reflect.DeepEqual(got, want) || len(s) != 2 {
		t.Errorf("accounted for %v in %d summaries, want %v in 2", got, len(s), want)
	}
	for _, e := range s {
		total := 0
		for _, c := range e.TopClients {
			total += c.Count
		}
		if len(e.TopClients) != workers/2 || total != e.Count {
			t.Errorf("%s: top clients %v do not add up to %d", e.Reason, e.TopClients, e.Count)
		}
	}
}

func TestTopK(t *testing.T) {
	t.Run("exact with few values", func(t *testing.T) {
		var k topK
		for _, v := range []string{"a", "b", "a", "", "c", "b", "a", "d", "e", "f", "g", "h"} {
			k.add(v)
		}
		want := []event.Tally{{Value: "a", Count: 3}, {Value: "b", Count: 2}, {Value: "c", Count: 1}, {Value: "d", Count: 1}, {Value: "e", Count: 1}}
		if got := k.top(TopReported); !reflect.DeepEqual(got, want) {
			t.Errorf("top = %v, want %v", got, want)
		}
	})
	t.Run("empty", func(t *testing.T) {
		var k topK
		k.add("")
		if got := k.top(TopReported); got != nil {
			t.Errorf("top = %v, want nil", got)
		}
	})
	t.Run("heavy hitters among many values", func(t *testing.T) {
		var k topK
		// 3000 distinct addresses once each, with two heavy ones in
		// between: 1000 and 600 times.
		for i := range 3000 {
			k.add(fmt.Sprint("10.0.", i/250, ".", i%250))
			if i%3 == 0 {
				k.add("203.0.113.7")
			}
			if i%5 == 0 {
				k.add("198.51.100.9")
			}
		}
		got := k.top(TopReported)
		if len(got) < 2 || got[0].Value != "203.0.113.7" || got[1].Value != "198.51.100.9" {
			t.Fatalf("top = %v, want the two heavy hitters first", got)
		}
		if got[0].Count > 1000 || got[0].Count < 900 || got[1].Count > 600 || got[1].Count < 500 {
			t.Errorf("counts %d and %d: want lower bounds close to 1000 and 600", got[0].Count, got[1].Count)
		}
		for _, e := range got[2:] {
			if e.Count > 1 {
				t.Errorf("%v: a one-off address reported above its true count", e)
			}
		}
	})
}

// TestDetailLimitAllocs: a refusal beyond the limit allocates nothing,
// whatever the sinks.
func TestDetailLimitAllocs(t *testing.T) {
	clock := newClock()
	info, _ := observed(zapcore.InfoLevel)
	tests := []struct {
		name string
		cfg  RecorderConfig
	}{
		{"queue and logger", RecorderConfig{Logger: info, Queue: NewQueue(QueueConfig{Writer: &fakeEvents{}, Size: 1})}},
		{"queue only", RecorderConfig{Queue: NewQueue(QueueConfig{Writer: &fakeEvents{}, Size: 1})}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			tt.cfg.DetailLimit = DetailLimit{Events: 1, Window: window}
			tt.cfg.Now = clock.Now
			r := NewRecorder(tt.cfg)
			e := refusal(clock, "unknown_token", "203.0.113.7", "admin")
			r.Record(e) // the one in full, and the budget's first allocation
			r.Record(e)
			other := e
			other.ClientIP, other.User = "198.51.100.1", "root"
			if n := testing.AllocsPerRun(1000, func() { r.Record(e); r.Record(other) }); n != 0 {
				t.Errorf("Record beyond the limit allocates %v times, want 0", n)
			}
		})
	}
}

// BenchmarkRecordRefusal compares a refusal recorded in full with one
// beyond the detail limit, with a database queue (drained by its writer
// into nothing) and no logger; detailed_logged adds a JSON log line to
// io.Discard. The SQLite insert that a detailed event costs later is not
// part of any of them.
func BenchmarkRecordRefusal(b *testing.B) {
	jsonLogger := zap.New(zapcore.NewCore(zapcore.NewJSONEncoder(zap.NewProductionEncoderConfig()), zapcore.AddSync(io.Discard), zapcore.InfoLevel))
	for _, bb := range []struct {
		name   string
		limit  DetailLimit
		logger *zap.Logger
	}{
		{"detailed", DetailLimit{}, nil},
		{"detailed_logged", DetailLimit{}, jsonLogger},
		{"suppressed", DetailLimit{Events: 1, Window: time.Hour}, nil},
	} {
		b.Run(bb.name, func(b *testing.B) {
			q := NewQueue(QueueConfig{Writer: discardEvents{}})
			stop := runQueue(q)
			clock := newClock()
			r := NewRecorder(RecorderConfig{Queue: q, Logger: bb.logger, DetailLimit: bb.limit, Now: clock.Now})
			e := refusal(clock, "unknown_token", "203.0.113.7", "")
			r.Record(e)
			b.ReportAllocs()
			for b.Loop() {
				r.Record(e)
			}
			b.StopTimer()
			stop()
			b.ReportMetric(float64(q.Written())/float64(b.N), "rows/op")
		})
	}
}
