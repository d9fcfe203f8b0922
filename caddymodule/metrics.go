package caddymodule

import (
	"maps"
	"sync"
	"sync/atomic"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/apitoken/caddy-apitoken/audit"
	"github.com/apitoken/caddy-apitoken/policy"
)

// counterKey names one child of the request counter.
type counterKey struct {
	outcome audit.Outcome
	reason  policy.Reason
}

// requestCounters caches the request counter's children. WithLabelValues
// hashes its labels and takes a lock on every call; the labels come from
// closed sets, so the gate looks each child up once and then reads it from
// a map that is only ever replaced, never written.
var requestCounters struct {
	mu       sync.Mutex // serialises adding a child
	children atomic.Pointer[map[counterKey]prometheus.Counter]
}

// discardCounter stands in for the request counter before it exists: it
// is registered nowhere.
var discardCounter = prometheus.NewCounter(prometheus.CounterOpts{Name: "discarded"})

// requestCounter returns the counter of gate decisions with this outcome
// and reason.
func requestCounter(outcome audit.Outcome, reason policy.Reason) prometheus.Counter {
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
	return c
}
