// Package audit holds the sinks that record the gate's audit events
// (package event): a zap logger, and a queue that writes to a store with
// detail limits, selection and retention. The gate and the admin API only
// build events and hand them to a Sink; what is kept, and where, is
// decided here.
package audit

import (
	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"

	"github.com/apitoken/caddy-apitoken/event"
)

// Sink records events. Record must be safe for concurrent use and must not
// block the request that produced the event.
type Sink interface {
	Record(event.Event)
}

// ZapSink writes events to a zap logger. Failures and admin events are
// logged at INFO, successes at DEBUG (they are the bulk of the traffic).
type ZapSink struct {
	Logger *zap.Logger
}

// Record implements Sink.
func (s ZapSink) Record(e event.Event) {
	level := zapcore.InfoLevel
	if e.Type == event.TypeAuthSucceeded {
		level = zapcore.DebugLevel
	}
	c := s.Logger.Check(level, string(e.Type))
	if c == nil {
		return
	}
	fields := make([]zap.Field, 0, 16)
	fields = append(fields, zap.String("outcome", string(e.Outcome)))
	add := func(key, v string) {
		if v != "" {
			fields = append(fields, zap.String(key, v))
		}
	}
	add("reason", e.Reason)
	add("user", e.User)
	add("claimed_user", e.ClaimedUser)
	add("token_id", e.TokenID)
	add("scheme", e.Scheme)
	add("client_ip", e.ClientIP)
	add("method", e.Method)
	add("host", e.Host)
	add("path", e.Path)
	add("actor", e.Actor)
	add("group", e.Group)
	add("rule", e.Rule)
	if e.Status != 0 {
		fields = append(fields, zap.Int("status", e.Status))
	}
	if len(e.Changed) > 0 {
		fields = append(fields, zap.Strings("changed", e.Changed))
	}
	if e.Count != 0 {
		fields = append(fields, zap.Int("count", e.Count))
	}
	if len(e.TopClients) > 0 {
		fields = append(fields, zap.Array("top_clients", tallies(e.TopClients)))
	}
	if len(e.TopUsers) > 0 {
		fields = append(fields, zap.Array("top_users", tallies(e.TopUsers)))
	}
	c.Write(fields...)
}

// tallies logs a top list as an array of {"value": …, "count": …}, the
// form the database and the admin API use.
type tallies []event.Tally

func (ts tallies) MarshalLogArray(enc zapcore.ArrayEncoder) error {
	for _, t := range ts {
		if err := enc.AppendObject(tallyLog(t)); err != nil {
			return err
		}
	}
	return nil
}

// tallyLog logs an event.Tally.
type tallyLog event.Tally

func (t tallyLog) MarshalLogObject(enc zapcore.ObjectEncoder) error {
	enc.AddString("value", t.Value)
	enc.AddInt("count", t.Count)
	return nil
}
