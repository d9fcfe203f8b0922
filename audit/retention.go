package audit

import (
	"context"
	"errors"
	"fmt"
	"time"

	"go.uber.org/zap"
)

// Retention defaults.
const (
	DefaultRetain     = 90 * 24 * time.Hour
	DefaultPruneEvery = time.Hour
)

// Pruner deletes stored events once they are older than the retention
// period.
type Pruner struct {
	// Writer deletes the events. Required.
	Writer EventWriter
	// Retain is how long events are kept; negative keeps them forever.
	// Default: 90 days.
	Retain time.Duration
	// Every is the time between two prunes. Default: 1h.
	Every time.Duration
	// Now is the clock. Default: time.Now.
	Now func() time.Time
	// Logger receives the counts and the errors. Default: none.
	Logger *zap.Logger
}

// PruneOnce deletes the events older than Now()-Retain and reports how many
// it deleted.
func (p *Pruner) PruneOnce(ctx context.Context) (int64, error) {
	retain := p.Retain
	switch {
	case retain < 0:
		return 0, nil
	case retain == 0:
		retain = DefaultRetain
	}
	now := time.Now
	if p.Now != nil {
		now = p.Now
	}
	before := now().Add(-retain)
	n, err := p.Writer.PruneAudit(ctx, before)
	if err != nil {
		return n, fmt.Errorf("pruning audit events before %s: %w", before.UTC().Format(time.RFC3339), err)
	}
	return n, nil
}

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
		case n > 0:
			logger.Info("pruned audit events", zap.Int64("count", n))
		default:
			logger.Debug("pruned audit events", zap.Int64("count", n))
		}
		select {
		case <-ctx.Done():
			return
		case <-tick.C:
		}
	}
}
