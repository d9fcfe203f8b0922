package caddymodule

import (
	"testing"

	"github.com/caddyserver/caddy/v2"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/apitoken/caddy-apitoken/event"
	"github.com/apitoken/caddy-apitoken/policy"
)

// requestCounts reads the request counter's children, by outcome and
// reason.
func requestCounts(t *testing.T) map[[2]string]float64 {
	t.Helper()
	reg := prometheus.NewRegistry()
	reg.MustRegister(metrics.requests)
	families, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	counts := map[[2]string]float64{}
	for _, f := range families {
		for _, m := range f.GetMetric() {
			var k [2]string
			for _, l := range m.GetLabel() {
				switch l.GetName() {
				case "outcome":
					k[0] = l.GetValue()
				case "reason":
					k[1] = l.GetValue()
				}
			}
			counts[k] = m.GetCounter().GetValue()
		}
	}
	return counts
}

// TestRequestCounter: accepted requests, whose child is kept apart from
// the map of children, count in the same child as the others see, and
// other decisions in their own.
func TestRequestCounter(t *testing.T) {
	(&App{}).registerMetrics(caddy.Context{})
	accepted := [2]string{string(event.OutcomeSuccess), string(policy.ReasonOK)}
	unknown := [2]string{string(event.OutcomeFailure), string(policy.ReasonUnknownToken)}
	before := requestCounts(t)
	for range 3 {
		requestCounter(event.OutcomeSuccess, policy.ReasonOK).Inc()
	}
	requestCounter(event.OutcomeFailure, policy.ReasonUnknownToken).Inc()
	after := requestCounts(t)
	if got := after[accepted] - before[accepted]; got != 3 {
		t.Errorf("accepted requests counted %v, want 3", got)
	}
	if got := after[unknown] - before[unknown]; got != 1 {
		t.Errorf("unknown tokens counted %v, want 1", got)
	}
	if requestCounters.accepted.Load() == nil {
		t.Error("the accepted requests' child is not kept apart")
	}
}
