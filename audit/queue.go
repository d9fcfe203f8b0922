package audit

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"sync/atomic"
	"time"

	"go.uber.org/zap"

	"github.com/apitoken/caddy-apitoken/event"
)

// Queue defaults. A batch is one transaction, so one fsync: under a flood
// of refused requests (tens of thousands of events a second) small batches
// made the commits the gate's largest cost. Events wait at most FlushEvery
// either way.
const (
	DefaultQueueSize  = 20000
	DefaultQueueBatch = 5000
	DefaultFlushEvery = time.Second
	DefaultWarnEvery  = time.Minute
)

// writeTimeout bounds one batch write made by Run, including the last
// one after its context is done.
const writeTimeout = 10 * time.Second

// Queue carries request events to the database: the request offers its
// event without ever waiting, and one goroutine (Run) writes them in
// batches. When the queue is full the event is dropped and counted, with a
// rate-limited warning on the logger; the request is never slowed or failed.
type Queue struct {
	w          EventWriter
	ch         chan event.Event
	batch      int
	flushEvery time.Duration
	logger     *zap.Logger
	now        func() time.Time

	closed  atomic.Bool
	full    atomic.Uint64 // offers refused: queue full or closed
	failed  atomic.Uint64 // events lost to write errors
	written atomic.Uint64

	// Warning about refused offers: at most one per period, with the
	// number refused since the last one.
	dropWarn     limiter
	dropReported atomic.Uint64

	// mu serializes the writes; buf and the write-error report are the
	// writer's.
	mu         sync.Mutex
	buf        []event.Event
	errWarn    limiter
	errBatches int
	errEvents  int
}

// QueueConfig configures a Queue.
type QueueConfig struct {
	// Writer stores the events. Required. AppendAudit must not keep the
	// slice it is given: the queue reuses it.
	Writer EventWriter
	// Size is how many events may wait. Default: 10 000.
	Size int
	// Batch is the most events written in one AppendAudit. Default: 500.
	Batch int
	// FlushEvery is the longest an event waits in a partial batch.
	// Default: 1s.
	FlushEvery time.Duration
	// Logger receives the drop warnings and the write errors. Default: none.
	Logger *zap.Logger
	// WarnEvery is the least time between two drop warnings, and between
	// two write-error reports. Default: 1m.
	WarnEvery time.Duration
	// Now is the clock of the rate limits. Default: time.Now.
	Now func() time.Time
}

// NewQueue builds a Queue. Start its writer with Run.
func NewQueue(c QueueConfig) *Queue {
	if c.Size <= 0 {
		c.Size = DefaultQueueSize
	}
	if c.Batch <= 0 {
		c.Batch = DefaultQueueBatch
	}
	if c.FlushEvery <= 0 {
		c.FlushEvery = DefaultFlushEvery
	}
	if c.Logger == nil {
		c.Logger = zap.NewNop()
	}
	if c.WarnEvery <= 0 {
		c.WarnEvery = DefaultWarnEvery
	}
	if c.Now == nil {
		c.Now = time.Now
	}
	return &Queue{
		w:          c.Writer,
		ch:         make(chan event.Event, c.Size),
		batch:      c.Batch,
		flushEvery: c.FlushEvery,
		logger:     c.Logger,
		now:        c.Now,
		dropWarn:   limiter{every: c.WarnEvery},
		errWarn:    limiter{every: c.WarnEvery},
		buf:        make([]event.Event, 0, c.Batch),
	}
}

// Offer queues e for writing without waiting. It reports false, and counts
// the event as dropped, when the queue is full or closed.
func (q *Queue) Offer(e event.Event) bool {
	if !q.closed.Load() {
		select {
		case q.ch <- e:
			return true
		default:
		}
	}
	q.full.Add(1)
	q.warnDropped()
	return false
}

// Dropped is the number of events lost: refused by Offer, lost to a write
// error, or left behind in the queue when Run returned.
func (q *Queue) Dropped() uint64 {
	n := q.full.Load() + q.failed.Load()
	if q.closed.Load() {
		// An offer racing with the end of Run may have slipped in after
		// the last drain; nobody will write it.
		n += uint64(len(q.ch))
	}
	return n
}

// Written is the number of events stored.
func (q *Queue) Written() uint64 {
	return q.written.Load()
}

// Run is the queue's one writer. It writes a batch as soon as it is full,
// a partial batch after at most FlushEvery, and when ctx is done it closes
// the queue (later offers are dropped), writes everything still waiting
// and returns. A write error is logged and its batch counted as dropped;
// Run goes on. Run must be called once.
func (q *Queue) Run(ctx context.Context) {
	if q.closed.Load() {
		return
	}
	tick := time.NewTicker(q.flushEvery)
	defer tick.Stop()
	for {
		select {
		case <-ctx.Done():
			q.closed.Store(true)
			wctx, cancel := writeContext(ctx)
			_ = q.Flush(wctx)
			cancel()
			return
		case e := <-q.ch:
			q.mu.Lock()
			q.buf = append(q.buf, e)
			q.takeLocked()
			if len(q.buf) >= q.batch {
				wctx, cancel := writeContext(ctx)
				_ = q.writeLocked(wctx)
				cancel()
			}
			q.mu.Unlock()
		case <-tick.C:
			wctx, cancel := writeContext(ctx)
			_ = q.Flush(wctx)
			cancel()
		}
	}
}

// writeContext is the context of one write made by Run: it outlives ctx,
// so that the events taken before shutdown are still written, but not by
// more than writeTimeout.
func writeContext(ctx context.Context) (context.Context, context.CancelFunc) {
	return context.WithTimeout(context.WithoutCancel(ctx), writeTimeout)
}

// Flush writes the events waiting when it is called, in batches of at most
// Batch, and reports any write errors (which it also logs, rate-limited,
// counting the events as dropped). Run uses it; tests may call it instead
// of running Run. An event that Run is taking at the same moment is written
// by Run.
func (q *Queue) Flush(ctx context.Context) error {
	q.mu.Lock()
	defer q.mu.Unlock()
	n := len(q.ch)
	var errs []error
	for {
		for ; n > 0 && len(q.buf) < q.batch; n-- {
			select {
			case e := <-q.ch:
				q.buf = append(q.buf, e)
			default: // Run took the rest
				n = 1
			}
		}
		if len(q.buf) == 0 {
			break
		}
		if err := q.writeLocked(ctx); err != nil {
			errs = append(errs, err)
		}
	}
	q.warnDropped()
	return errors.Join(errs...)
}

// takeLocked moves the events waiting in the channel to q.buf, up to a
// batch, without waiting. q.mu is held.
func (q *Queue) takeLocked() {
	for len(q.buf) < q.batch {
		select {
		case e := <-q.ch:
			q.buf = append(q.buf, e)
		default:
			return
		}
	}
}

// writeLocked writes q.buf in one call and empties it. q.mu is held.
func (q *Queue) writeLocked(ctx context.Context) error {
	n := len(q.buf)
	err := q.w.AppendAudit(ctx, q.buf)
	clear(q.buf) // drop the strings the events hold
	q.buf = q.buf[:0]
	if err == nil {
		q.written.Add(uint64(n))
		return nil
	}
	err = fmt.Errorf("writing %d audit events: %w", n, err)
	q.failed.Add(uint64(n))
	q.errBatches++
	q.errEvents += n
	if q.errWarn.allow(q.now()) {
		q.logger.Error("writing audit events failed",
			zap.Error(err),
			zap.Int("failed_batches", q.errBatches),
			zap.Int("dropped", q.errEvents))
		q.errBatches, q.errEvents = 0, 0
	}
	return err
}

// warnDropped logs how many offers were refused since the last warning, if
// any were and the last warning is at least WarnEvery old.
func (q *Queue) warnDropped() {
	if q.full.Load() == q.dropReported.Load() || !q.dropWarn.allow(q.now()) {
		return
	}
	for {
		total := q.full.Load()
		prev := q.dropReported.Load()
		if total <= prev {
			return
		}
		if q.dropReported.CompareAndSwap(prev, total) {
			q.logger.Warn("audit events dropped",
				zap.Uint64("dropped", total-prev),
				zap.Uint64("dropped_total", total))
			return
		}
	}
}

// limiter lets at most one report through per period.
type limiter struct {
	every time.Duration
	last  atomic.Int64 // UnixNano of the last report; 0 before the first
}

// allow reports whether a report may be made at now, and if so claims it.
func (l *limiter) allow(now time.Time) bool {
	last := l.last.Load()
	t := now.UnixNano()
	if last != 0 && t-last < int64(l.every) {
		return false
	}
	return l.last.CompareAndSwap(last, t)
}
