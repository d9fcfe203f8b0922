package audit

import (
	"context"
	"errors"
	"fmt"
	"sync/atomic"
	"time"

	"go.uber.org/zap"
)

// Retention defaults.
const (
	DefaultRetain     = 90 * 24 * time.Hour
	DefaultMaxEvents  = 1_000_000
	DefaultPruneEvery = time.Hour
)

// Pruner deletes stored events once they are older than the retention
// period, and the oldest request events beyond a number, so that a flood
// of requests can't grow the trail without bound before they age out.
type Pruner struct {
	// Writer deletes the events. Required.
	Writer EventWriter
	// Retain is how long events are kept; negative keeps them forever.
	// Default: 90 days.
	Retain time.Duration
	// MaxEvents is how many request events (event.RequestTypes) are kept at
	// most: beyond it, the oldest are deleted. Admin events don't count
	// and are deleted only for their age. Negative: no bound.
	// Default: 1,000,000.
	MaxEvents int
	// Every is the time between two prunes. Default: 1h.
	Every time.Duration
	// Now is the clock. Default: time.Now.
	Now func() time.Time
	// Logger receives the counts and the errors. Default: none.
	Logger *zap.Logger

	trimmed atomic.Int64
}

// Pruned counts the events one PruneOnce deleted.
type Pruned struct {
	Aged    int64 // older than Retain
	Trimmed int64 // request events beyond MaxEvents, oldest first
}

// PruneOnce deletes the events older than Now()-Retain, then the oldest
// request events beyond MaxEvents, and reports how many of each it
// deleted. An error in the first step does not stop the second.
func (p *Pruner) PruneOnce(ctx context.Context) (Pruned, error) {
	var n Pruned
	var errs []error
	retain := p.Retain
	if retain == 0 {
		retain = DefaultRetain
	}
	if retain > 0 {
		now := time.Now
		if p.Now != nil {
			now = p.Now
		}
		before := now().Add(-retain)
		var err error
		n.Aged, err = p.Writer.PruneAudit(ctx, before)
		if err != nil {
			errs = append(errs, fmt.Errorf("pruning audit events before %s: %w", before.UTC().Format(time.RFC3339), err))
		}
	}
	if keep := p.maxEvents(); keep > 0 {
		var err error
		n.Trimmed, err = p.Writer.TrimAudit(ctx, keep)
		if err != nil {
			errs = append(errs, fmt.Errorf("trimming audit events to the newest %d request events: %w", keep, err))
		}
	}
	p.trimmed.Add(n.Trimmed)
	return n, errors.Join(errs...)
}

// maxEvents returns MaxEvents with the default applied.
func (p *Pruner) maxEvents() int {
	if p.MaxEvents == 0 {
		return DefaultMaxEvents
	}
	return p.MaxEvents
}

// Trimmed returns how many request events the Pruner has deleted because
// there were more than MaxEvents.
func (p *Pruner) Trimmed() int64 { return p.trimmed.Load() }

// Run prunes at once and then every Every until ctx is done. Errors are
// logged and do not stop it.
func (p *Pruner) Run(ctx context.Context) {
	logger := p.Logger
	if logger == nil {
		logger = zap.NewNop()
	}
	every := p.Every
	if every <= 0 {
		every = DefaultPruneEvery
	}
	tick := time.NewTicker(every)
	defer tick.Stop()
	for {
		n, err := p.PruneOnce(ctx)
		switch {
		case err != nil:
			if ctx.Err() == nil || !errors.Is(err, ctx.Err()) { // not just shutting down
				logger.Error("pruning audit events failed", zap.Error(err))
			}
		case n.Aged > 0:
			logger.Info("pruned audit events", zap.Int64("count", n.Aged))
		default:
			logger.Debug("pruned audit events", zap.Int64("count", n.Aged))
		}
		if n.Trimmed > 0 {
			logger.Warn("audit trail over its size bound: deleted the oldest request events",
				zap.Int64("count", n.Trimmed), zap.Int("max_events", p.maxEvents()))
		}
		select {
		case <-ctx.Done():
			return
		case <-tick.C:
		}
	}
}
