package caddymodule

import (
	"context"
	"errors"
	"fmt"
	"net/netip"
	"sync"
	"time"

	"github.com/caddyserver/caddy/v2"
	"github.com/caddyserver/caddy/v2/modules/caddyevents"
	"go.uber.org/zap"

	"github.com/apitoken/caddy-apitoken/audit"
	"github.com/apitoken/caddy-apitoken/event"
	"github.com/apitoken/caddy-apitoken/storage"
)

// AuditConfig configures the audit trail of the api_tokens app.
type AuditConfig struct {
	// Event classes to record: admin, failure, denied, success.
	// Default: admin, failure and denied (success is the bulk of traffic).
	Events []string `json:"events,omitempty"`

	// Fraction of success events to keep when success is recorded, in
	// (0, 1]. Default: 1 (all).
	SampleSuccess float64 `json:"sample_success,omitempty"`

	// How long stored audit events are kept; older ones are pruned in the
	// background. Default: 90d.
	Retain caddy.Duration `json:"retain,omitempty"`

	// How many request events (every class but admin) the database keeps
	// at most: beyond it, the oldest are pruned in the background, however
	// young. Admin events don't count and are pruned only by retain.
	// Default: 1000000.
	MaxEvents int `json:"max_events,omitempty"`

	// How long before a token's expiry the api_token_expiring event fires
	// (at most once per token and expiry, even with several instances on
	// one database). Default: 7d.
	ExpiryWarning caddy.Duration `json:"expiry_warning,omitempty"`

	// How many refusals (failure and denied events) of each type and
	// reason are recorded in full per window; the ones beyond are counted
	// and recorded as one summary event per type and reason at the end of
	// the window, so that a flood of refusals stays cheap.
	// Default: 100 events per 10s window.
	DetailLimit *DetailLimitConfig `json:"detail_limit,omitempty"`
}

// DetailLimitConfig bounds the refusals the audit trail records in full.
type DetailLimitConfig struct {
	// Off records every refusal in full. Default: false.
	Off bool `json:"off,omitempty"`
	// Refusals of one type and reason recorded in full per window.
	// Default: 100.
	Events int `json:"events,omitempty"`
	// Length of the windows, at least 1s; windows are aligned to
	// multiples of it (10s: :00, :10, …). Default: 10s.
	Window caddy.Duration `json:"window,omitempty"`
}

// limit returns the detail limit c configures, with the defaults applied;
// the zero audit.DetailLimit when it is off.
func (c *DetailLimitConfig) limit() (audit.DetailLimit, error) {
	l := audit.DetailLimit{Events: audit.DefaultDetailEvents, Window: audit.DefaultDetailWindow}
	if c == nil {
		return l, nil
	}
	if c.Off {
		if c.Events != 0 || c.Window != 0 {
			return audit.DetailLimit{}, errors.New("detail_limit: off takes no events or window")
		}
		return audit.DetailLimit{}, nil
	}
	if c.Events < 0 {
		return audit.DetailLimit{}, fmt.Errorf("detail_limit: events %d: must be a positive whole number", c.Events)
	}
	if c.Events > 0 {
		l.Events = c.Events
	}
	if c.Window < 0 || (c.Window > 0 && time.Duration(c.Window) < minDetailWindow) {
		return audit.DetailLimit{}, fmt.Errorf("detail_limit: window %s: must be at least %s", time.Duration(c.Window), minDetailWindow)
	}
	if c.Window > 0 {
		l.Window = time.Duration(c.Window)
	}
	return l, nil
}

// Audit defaults.
const (
	DefaultRetain        = 90 * 24 * time.Hour
	DefaultExpiryWarning = 7 * 24 * time.Hour
	usageFlushEvery      = 10 * time.Second
	expirySweepEvery     = time.Minute
	// summaryFlushEvery is how often the summaries of ended detail
	// windows are looked for (they are due at most this late).
	summaryFlushEvery = time.Second
	minDetailWindow   = time.Second
)

// Caddy event names this module emits.
const (
	eventCreated  = "api_token_created"
	eventRevoked  = "api_token_revoked"
	eventDenied   = "api_token_denied"
	eventExpiring = "api_token_expiring"
)

// auditState is the app's audit machinery for one config: the recorder
// the gate and the admin API hand events to, its SQLite queue, the usage
// tracker, and the background loops that Start runs and Stop ends.
type auditState struct {
	recorder *audit.Recorder
	queue    *audit.Queue
	usage    *audit.UsageTracker
	pruner   *audit.Pruner
	warning  time.Duration

	events *caddyevents.App
	ctx    caddy.Context

	cancel context.CancelFunc
	wg     sync.WaitGroup
}

// provisionAudit builds the app's audit machinery; nothing runs until
// startAudit.
func (a *App) provisionAudit(ctx caddy.Context) error {
	cfg := a.Audit
	if cfg == nil {
		cfg = new(AuditConfig)
	}
	sel, err := audit.ParseSelection(cfg.Events, cfg.SampleSuccess)
	if err != nil {
		return fmt.Errorf("audit: %w", err)
	}
	retain := time.Duration(cfg.Retain)
	if retain == 0 {
		retain = DefaultRetain
	}
	if retain < 0 {
		return fmt.Errorf("audit: retain %s: must be positive", retain)
	}
	if cfg.MaxEvents < 0 {
		return fmt.Errorf("audit: max_events %d: must be a positive whole number", cfg.MaxEvents)
	}
	warning := time.Duration(cfg.ExpiryWarning)
	if warning == 0 {
		warning = DefaultExpiryWarning
	}
	limit, err := cfg.DetailLimit.limit()
	if err != nil {
		return fmt.Errorf("audit: %w", err)
	}
	logger := a.logger.Named("audit")
	st := &auditState{warning: warning, ctx: ctx, usage: audit.NewUsageTracker(0)}
	st.queue = audit.NewQueue(audit.QueueConfig{Writer: a.store, Logger: logger, Now: a.now})
	st.recorder = audit.NewRecorder(audit.RecorderConfig{Selection: sel, Logger: logger, Queue: st.queue,
		DetailLimit: limit, Now: a.now})
	st.pruner = &audit.Pruner{Writer: a.store, Retain: retain, MaxEvents: cfg.MaxEvents, Now: a.now, Logger: logger}
	if ev, err := ctx.AppIfConfigured("events"); err == nil {
		st.events, _ = ev.(*caddyevents.App)
	}
	a.auditState = st
	a.skipSuccess = !sel.Wants(event.TypeAuthSucceeded)
	a.registerMetrics(ctx)
	return nil
}

// startAudit runs the background loops: the audit queue's writer, the
// summaries of refusals beyond the detail limit, usage flushes, retention
// pruning and the expiry sweep.
func (a *App) startAudit() {
	st := a.auditState
	ctx, cancel := context.WithCancel(context.Background())
	st.cancel = cancel
	run := func(f func()) {
		st.wg.Add(1)
		go func() {
			defer st.wg.Done()
			f()
		}()
	}
	logger := a.logger.Named("audit")
	run(func() { st.queue.Run(ctx) })
	run(func() { st.recorder.Run(ctx, summaryFlushEvery) })
	run(func() { st.usage.Run(ctx, a.store, usageFlushEvery, logger) })
	run(func() { st.pruner.Run(ctx) })
	run(func() { a.sweepExpiring(ctx) })
}

// stopAudit ends the loops; each writes out what it holds before it
// returns (the queue drains, usage flushes). The pending summaries of
// refusals go to the queue first, while its writer still takes them.
func (a *App) stopAudit() {
	st := a.auditState
	if st == nil || st.cancel == nil {
		return
	}
	st.recorder.Close(a.now())
	st.cancel()
	st.wg.Wait()
	st.cancel = nil
}

// sweepExpiring emits api_token_expiring once for every token that comes
// within the warning lead time of its expiry. The first sweep waits for
// the first tick: Caddy starts apps one after another, and the events app
// may still be subscribing its handlers when this one starts. (Creating or
// extending a token sweeps at once, from the admin API.)
func (a *App) sweepExpiring(ctx context.Context) {
	t := time.NewTicker(expirySweepEvery)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
			a.sweepExpiringOnce(ctx)
		}
	}
}

// sweepExpiringOnce claims the warnings due now and emits one event for
// each token claimed. The claim is written before the events go out, so
// that another instance sweeping the same database never warns again:
// the event fires at most once per token and expiry (if Caddy dies
// between the two, that warning is lost). With no events app, nobody can
// listen, so nothing is claimed either: the event fires once one is
// configured.
func (a *App) sweepExpiringOnce(ctx context.Context) {
	st := a.auditState
	if st.events == nil || !st.events.ShouldEmit(eventExpiring) {
		return
	}
	toks, err := a.store.ClaimExpiring(ctx, a.now().Add(st.warning))
	if err != nil {
		if !errors.Is(err, context.Canceled) {
			a.logger.Error("claiming expiry warnings", zap.Error(err))
		}
		return
	}
	for _, t := range toks {
		st.events.Emit(st.ctx, eventExpiring, map[string]any{
			"token_id":   t.ID,
			"user":       t.User,
			"name":       t.Name,
			"expires_at": t.ExpiresAt,
		})
	}
}

// wants reports whether anyone listens for the Caddy event name, so that
// callers on the request path build its data only then.
func (st *auditState) wants(name string) bool {
	return st != nil && st.events != nil && st.events.ShouldEmit(name)
}

// emit sends a Caddy event if anyone listens for it.
func (st *auditState) emit(ctx caddy.Context, name string, data map[string]any) {
	if st != nil && st.events != nil && st.events.ShouldEmit(name) {
		st.events.Emit(ctx, name, data)
	}
}

// emit sends the Caddy event name with data, if a handler subscribes to
// it; for changes made outside a request (the admin API).
func (a *App) emit(name string, data map[string]any) {
	a.auditState.emit(a.auditState.ctx, name, data)
}

// pendingUsage returns the use of the token with this key counted since
// the last flush, which the store does not have yet.
func (a *App) pendingUsage(key uint64) (event.Usage, bool) {
	if a.auditState == nil {
		return event.Usage{}, false
	}
	return a.auditState.usage.Pending(key)
}

// inTx returns ev for the store to write in the change's transaction, or
// nil if admin events are not stored.
func (app *App) inTx(ev *event.Event) *event.Event {
	if app.auditState.recorder.StoresAdmin() {
		return ev
	}
	return nil
}

// adminDone logs a completed admin change (the store has already written
// it, if it is stored), filling in what the store would have.
func (app *App) adminDone(ev *event.Event, tok storage.Token) {
	if ev.Time.IsZero() {
		ev.Time = app.now()
	}
	if ev.TokenID == "" {
		ev.TokenID = tok.ID
	}
	if ev.User == "" {
		ev.User = tok.User
	}
	app.auditState.recorder.Admin(*ev)
}

// used notes a successful use of a token (its Entry.Key and ID) from the
// client IP (the zero Addr if unknown) for the usage statistics.
func (a *App) used(key uint64, tokenID string, ip netip.Addr, now time.Time) {
	if a.auditState != nil {
		a.auditState.usage.Used(key, tokenID, ip, now)
	}
}
