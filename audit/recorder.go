package audit

import (
	"context"
	"math/rand/v2"
	"time"

	"go.uber.org/zap"

	"github.com/apitoken/caddy-apitoken/event"
)

// Recorder decides which events are kept and hands them to the sinks: a zap
// logger (conventionally named api_tokens.audit, so that Caddy's
// log { include … } can route it) and, for request events, a Queue that
// writes them to the database in batches.
//
// Admin events take another road to the database: the store writes them in
// the transaction that makes the change (see StoresAdmin), so the Recorder
// only logs them and never queues them.
//
// Refusals beyond the detail limit (see DetailLimit) are counted instead of
// recorded, and recorded as one summary event per type and reason when
// their window ends: at the first refusal of the pair in a later window, by
// Flush (which Run calls periodically) or by Close.
//
// A Recorder is safe for concurrent use. A nil *Recorder records nothing.
type Recorder struct {
	sel     Selection
	zap     ZapSink // Logger is nil when there is no zap output
	queue   *Queue
	random  func() float64
	now     func() time.Time
	budgets *budgets // nil: no detail limit
}

// RecorderConfig configures a Recorder.
type RecorderConfig struct {
	// Selection says which events are recorded. Default: the zero
	// Selection (admin, failure, denied).
	Selection Selection
	// Logger receives the selected events. Default: none.
	Logger *zap.Logger
	// Queue stores the selected request events. Default: none.
	Queue *Queue
	// Rand returns a number in [0,1) for success sampling.
	// Default: math/rand/v2.Float64.
	Rand func() float64
	// DetailLimit bounds the refusals recorded in full. Default: none,
	// every event is recorded in full.
	DetailLimit DetailLimit
	// Now is the clock of Run, and the time of an event recorded without
	// one. Default: time.Now.
	Now func() time.Time
}

// NewRecorder builds a Recorder.
func NewRecorder(c RecorderConfig) *Recorder {
	r := &Recorder{sel: c.Selection, zap: ZapSink{Logger: c.Logger}, queue: c.Queue, random: c.Rand, now: c.Now,
		budgets: newBudgets(c.DetailLimit)}
	if r.random == nil {
		r.random = rand.Float64
	}
	if r.now == nil {
		r.now = time.Now
	}
	return r
}

// Record records a request event if it is selected (and survives
// sampling): to the logger and to the queue. It never blocks; an event the
// queue has no room for is counted as dropped there. A refusal beyond the
// detail limit is only counted, without allocating or writing anything;
// the window's summary is recorded first if e is the first event of its
// type and reason in a new window. An admin event handed to Record is
// treated as by Admin: logged, never queued.
//
// Record implements Sink.
func (r *Recorder) Record(e event.Event) {
	if r == nil {
		return
	}
	if e.Type.Class() == event.ClassAdmin {
		r.Admin(e)
		return
	}
	if !r.sel.Keep(e.Type, r.random) {
		return
	}
	if r.budgets != nil && limited(e.Type) {
		if e.Time.IsZero() {
			e.Time = r.now()
		}
		full, summary, due := r.budgets.admit(&e)
		if due {
			r.write(summary)
		}
		if !full {
			return
		}
	}
	r.write(e)
}

// write hands a recorded event to the sinks.
func (r *Recorder) write(e event.Event) {
	if r.zap.Logger != nil {
		r.zap.Record(e)
	}
	if r.queue != nil {
		r.queue.Offer(e)
	}
}

// Flush records the summaries of the windows that ended at or before now.
// A window without refusals beyond the limit has no summary.
func (r *Recorder) Flush(now time.Time) {
	if r == nil || r.budgets == nil {
		return
	}
	for _, e := range r.budgets.flush(now, false) {
		r.write(e)
	}
}

// Close records the summaries of every window, those still running cut
// short at now, and lifts the detail limit: later refusals are recorded in
// full. Call it before the queue's Run ends, so that the summaries are
// stored. Close is idempotent.
func (r *Recorder) Close(now time.Time) {
	if r == nil || r.budgets == nil {
		return
	}
	for _, e := range r.budgets.close(now) {
		r.write(e)
	}
}

// Summarized reports how many refusals the Recorder has counted into
// summaries instead of recording them in full.
func (r *Recorder) Summarized() int64 {
	if r == nil || r.budgets == nil {
		return 0
	}
	r.budgets.mu.Lock()
	defer r.budgets.mu.Unlock()
	return r.budgets.summarized
}

// Run calls Flush every period until ctx is done, so that a window's
// summary is recorded even when no refusal follows it. It does not Close
// the Recorder: the caller does, before it stops the queue.
func (r *Recorder) Run(ctx context.Context, every time.Duration) {
	if r == nil || r.budgets == nil {
		return
	}
	if every <= 0 {
		every = time.Second
	}
	tick := time.NewTicker(every)
	defer tick.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-tick.C:
			r.Flush(r.now())
		}
	}
}

// Admin records an admin event that the store has already written in the
// transaction of the change: it only logs it, if admin events are selected.
func (r *Recorder) Admin(e event.Event) {
	if r == nil || r.zap.Logger == nil || !r.sel.Wants(e.Type) {
		return
	}
	r.zap.Record(e)
}

// StoresAdmin reports whether admin events go to the database, that is
// whether they are selected and there is a database queue. The caller asks
// the store to write the admin event in its transaction when it is true.
func (r *Recorder) StoresAdmin() bool {
	return r != nil && r.queue != nil && r.sel.wantsClass(event.ClassAdmin)
}

// Interface guards
var _ Sink = (*Recorder)(nil)
