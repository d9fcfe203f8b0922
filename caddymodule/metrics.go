package caddymodule

import (
	"errors"
	"maps"
	"sync"
	"sync/atomic"
	"time"

	"github.com/caddyserver/caddy/v2"
	"github.com/prometheus/client_golang/prometheus"
	"go.uber.org/zap"

	"github.com/apitoken/caddy-apitoken/event"
	"github.com/apitoken/caddy-apitoken/policy"
	"github.com/apitoken/caddy-apitoken/storage"
)

// counterKey names one child of the request counter.
type counterKey struct {
	outcome event.Outcome
	reason  policy.Reason
}

// requestCounters caches the request counter's children. WithLabelValues
// hashes its labels and takes a lock on every call; the labels come from
// closed sets, so the gate looks each child up once and then reads it from
// a map that is only ever replaced, never written. The child of accepted
// requests, the bulk of the traffic, is also kept apart: a look-up in the
// map hashes both strings of the key, work the common case need not do
// (BenchmarkServeHTTP runs this path).
var requestCounters struct {
	mu       sync.Mutex // serialises adding a child
	children atomic.Pointer[map[counterKey]prometheus.Counter]
	accepted atomic.Pointer[prometheus.Counter] // the child of OutcomeSuccess, ReasonOK
}

// discardCounter stands in for the request counter before it exists: it
// is registered nowhere.
var discardCounter = prometheus.NewCounter(prometheus.CounterOpts{Name: "discarded"})

// requestCounter returns the counter of gate decisions with this outcome
// and reason.
func requestCounter(outcome event.Outcome, reason policy.Reason) prometheus.Counter {
	accepted := outcome == event.OutcomeSuccess && reason == policy.ReasonOK
	if accepted {
		if c := requestCounters.accepted.Load(); c != nil {
			return *c
		}
	}
	k := counterKey{outcome, reason}
	if m := requestCounters.children.Load(); m != nil {
		if c, ok := (*m)[k]; ok {
			return c
		}
	}
	if metrics.requests == nil {
		return discardCounter
	}
	requestCounters.mu.Lock()
	defer requestCounters.mu.Unlock()
	old := requestCounters.children.Load()
	if old != nil {
		if c, ok := (*old)[k]; ok {
			return c
		}
	}
	c := metrics.requests.WithLabelValues(string(outcome), string(reason))
	m := map[counterKey]prometheus.Counter{k: c}
	if old != nil {
		maps.Copy(m, *old)
	}
	requestCounters.children.Store(&m)
	if accepted {
		requestCounters.accepted.Store(&c)
	}
	return c
}

// Metrics. The request counter is created once and registered into every
// config's registry, so its values carry across reloads; the collectors
// that read one app's state are registered per config.
var metrics = struct {
	once     sync.Once
	requests *prometheus.CounterVec
}{}

func (a *App) registerMetrics(ctx caddy.Context) {
	const ns, sub = "caddy", "api_tokens"
	metrics.once.Do(func() {
		metrics.requests = prometheus.NewCounterVec(prometheus.CounterOpts{
			Namespace: ns, Subsystem: sub, Name: "requests_total",
			Help: "Requests the api_token gate decided, by outcome and reason.",
		}, []string{"outcome", "reason"})
	})
	reg := ctx.GetMetricsRegistry()
	if reg == nil {
		return
	}
	register := func(c prometheus.Collector) {
		err := reg.Register(c)
		if err != nil && !errors.As(err, new(prometheus.AlreadyRegisteredError)) {
			a.logger.Warn("registering metrics", zap.Error(err))
		}
	}
	register(metrics.requests)
	q := a.auditState.queue
	register(prometheus.NewCounterFunc(prometheus.CounterOpts{
		Namespace: ns, Subsystem: sub, Name: "audit_events_dropped_total",
		Help: "Audit events dropped because the audit queue was full or a write failed (since the config was loaded).",
	}, func() float64 { return float64(q.Dropped()) }))
	rec := a.auditState.recorder
	register(prometheus.NewCounterFunc(prometheus.CounterOpts{
		Namespace: ns, Subsystem: sub, Name: "audit_events_summarized_total",
		Help: "Refusals beyond the audit detail limit, recorded only in their window's summary event (since the config was loaded).",
	}, func() float64 { return float64(rec.Summarized()) }))
	pruner := a.auditState.pruner
	register(prometheus.NewCounterFunc(prometheus.CounterOpts{
		Namespace: ns, Subsystem: sub, Name: "audit_events_trimmed_total",
		Help: "Request events deleted from the audit trail, oldest first, because it held more than max_events (since the config was loaded).",
	}, func() float64 { return float64(pruner.Trimmed()) }))
	register(&tokenStateCollector{store: a.store, now: a.now, desc: prometheus.NewDesc(
		prometheus.BuildFQName(ns, sub, "tokens"), "Tokens in the store, by state.", []string{"state"}, nil)})
	for _, c := range storeCollectors(a.store, a.now) {
		register(c)
	}
}

// storeCollectors report the health of the store's poller, which reads
// the changes other processes make: its failures (since the store was
// opened, which outlives reloads) and the age of the view the gate judges
// tokens on, which past stale_after makes it answer 503.
func storeCollectors(store StoreHealth, now func() time.Time) []prometheus.Collector {
	const ns, sub = "caddy", "api_tokens"
	return []prometheus.Collector{
		prometheus.NewCounterFunc(prometheus.CounterOpts{
			Namespace: ns, Subsystem: sub, Name: "store_poll_errors_total",
			Help: "Failed reads of the changes made to the token store by other processes.",
		}, func() float64 { return float64(store.PollFailures()) }),
		prometheus.NewGaugeFunc(prometheus.GaugeOpts{
			Namespace: ns, Subsystem: sub, Name: "store_staleness_seconds",
			Help: "Seconds since the token store last read the changes made by other processes; past stale_after the gate answers 503.",
		}, func() float64 { return store.Staleness(now()).Seconds() }),
	}
}

// tokenStateCollector reports the token counts by state at scrape time,
// from the store's in-memory index.
type tokenStateCollector struct {
	store StoreHealth
	now   func() time.Time
	desc  *prometheus.Desc
}

func (c *tokenStateCollector) Describe(ch chan<- *prometheus.Desc) { ch <- c.desc }

func (c *tokenStateCollector) Collect(ch chan<- prometheus.Metric) {
	counts := c.store.CountByState(c.now())
	for _, s := range []storage.State{storage.StateActive, storage.StateExpired, storage.StateRevoked} {
		ch <- prometheus.MustNewConstMetric(c.desc, prometheus.GaugeValue, float64(counts[s]), string(s))
	}
}
