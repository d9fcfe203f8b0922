package audit

import (
	"math/rand/v2"

	"go.uber.org/zap"
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
// A Recorder is immutable once built and safe for concurrent use. A nil
// *Recorder records nothing.
type Recorder struct {
	sel    Selection
	zap    ZapSink // Logger is nil when there is no zap output
	queue  *Queue
	random func() float64
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
}

// NewRecorder builds a Recorder.
func NewRecorder(c RecorderConfig) *Recorder {
	r := &Recorder{sel: c.Selection, zap: ZapSink{Logger: c.Logger}, queue: c.Queue, random: c.Rand}
	if r.random == nil {
		r.random = rand.Float64
	}
	return r
}

// Record records a request event if it is selected (and survives
// sampling): to the logger and to the queue. It never blocks; an event the
// queue has no room for is counted as dropped there. An admin event handed
// to Record is treated as by Admin: logged, never queued.
//
// Record implements Sink.
func (r *Recorder) Record(e Event) {
	if r == nil {
		return
	}
	if e.Type.Class() == ClassAdmin {
		r.Admin(e)
		return
	}
	if !r.sel.Keep(e.Type, r.random) {
		return
	}
	if r.zap.Logger != nil {
		r.zap.Record(e)
	}
	if r.queue != nil {
		r.queue.Offer(e)
	}
}

// Admin records an admin event that the store has already written in the
// transaction of the change: it only logs it, if admin events are selected.
func (r *Recorder) Admin(e Event) {
	if r == nil || r.zap.Logger == nil || !r.sel.Wants(e.Type) {
		return
	}
	r.zap.Record(e)
}

// StoresAdmin reports whether admin events go to the database, that is
// whether they are selected and there is a database queue. The caller asks
// the store to write the admin event in its transaction when it is true.
func (r *Recorder) StoresAdmin() bool {
	return r != nil && r.queue != nil && r.sel.wantsClass(ClassAdmin)
}

// Interface guards
var _ Sink = (*Recorder)(nil)
