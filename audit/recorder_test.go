package audit

import (
	"context"
	"reflect"
	"slices"
	"strings"
	"testing"
	"time"

	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"
	"go.uber.org/zap/zaptest/observer"

	"github.com/apitoken/caddy-apitoken/event"
)

// newTestRecorder builds a Recorder selecting classes, logging to an
// observer at level, with a queue (Flush it to see what it wrote).
func newTestRecorder(t *testing.T, classes []string, level zapcore.Level) (*Recorder, *fakeEvents, *Queue, *observer.ObservedLogs) {
	t.Helper()
	sel, err := ParseSelection(classes, 0)
	if err != nil {
		t.Fatal(err)
	}
	logger, logs := observed(level)
	w := &fakeEvents{}
	q := NewQueue(QueueConfig{Writer: w})
	return NewRecorder(RecorderConfig{Selection: sel, Logger: logger, Queue: q}), w, q, logs
}

func TestRecorderSelection(t *testing.T) {
	tests := []struct {
		name    string
		classes []string
		typ     event.Type
		record  bool // via Record (else Admin)
		wantZap bool
		wantDB  bool
	}{
		{"default failure", nil, event.TypeAuthFailed, true, true, true},
		{"default password passed", nil, event.TypePasswordPassedOn, true, true, true},
		{"default denied", nil, event.TypeDenied, true, true, true},
		{"default would deny", nil, event.TypeWouldDeny, true, true, true},
		{"default success unselected", nil, event.TypeAuthSucceeded, true, false, false},
		{"unknown type", []string{"admin", "failure", "denied", "success"}, "token_exploded", true, false, false},
		{"failure unselected", []string{"denied"}, event.TypeAuthFailed, true, false, false},
		{"success selected", []string{"success"}, event.TypeAuthSucceeded, true, true, true},
		{"admin via Admin", nil, event.TypeTokenCreated, false, true, false},
		{"admin via Record", nil, event.TypeTokenRevoked, true, true, false},
		{"admin unselected via Admin", []string{"failure"}, event.TypeTokenCreated, false, false, false},
		{"admin unselected via Record", []string{"failure"}, event.TypeGroupMemberAdded, true, false, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			r, w, q, logs := newTestRecorder(t, tt.classes, zapcore.DebugLevel)
			e := fullEvent(tt.typ)
			if tt.record {
				r.Record(e)
			} else {
				r.Admin(e)
			}
			if err := q.Flush(context.Background()); err != nil {
				t.Fatal(err)
			}
			entries := logs.All()
			gotZap := len(entries) == 1 && entries[0].Message == string(tt.typ)
			if !gotZap && len(entries) > 0 {
				t.Fatalf("logged %v", entries)
			}
			if gotZap != tt.wantZap {
				t.Errorf("logged = %v, want %v", gotZap, tt.wantZap)
			}
			got := w.events()
			if gotDB := len(got) == 1; gotDB != tt.wantDB || len(got) > 1 {
				t.Errorf("queued %d events, want queued = %v", len(got), tt.wantDB)
			}
			if tt.wantDB && !reflect.DeepEqual(got[0], e) {
				t.Errorf("queued %+v, want %+v", got[0], e)
			}
		})
	}
}

func TestRecorderStoresAdmin(t *testing.T) {
	q := NewQueue(QueueConfig{Writer: &fakeEvents{}})
	failures, err := ParseSelection([]string{"failure"}, 0)
	if err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name string
		r    *Recorder
		want bool
	}{
		{"default with queue", NewRecorder(RecorderConfig{Queue: q}), true},
		{"default without queue", NewRecorder(RecorderConfig{Logger: zap.NewNop()}), false},
		{"admin unselected", NewRecorder(RecorderConfig{Selection: failures, Queue: q}), false},
		{"nil recorder", nil, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := tt.r.StoresAdmin(); got != tt.want {
				t.Errorf("StoresAdmin() = %v, want %v", got, tt.want)
			}
		})
	}
}

func TestRecorderNil(t *testing.T) {
	var r *Recorder
	r.Record(fullEvent(event.TypeAuthFailed)) // must not panic
	r.Admin(fullEvent(event.TypeTokenCreated))
	if r.StoresAdmin() {
		t.Error("a nil Recorder stores admin events")
	}
	// No logger, no queue: nothing to do, nothing to crash on.
	NewRecorder(RecorderConfig{}).Record(fullEvent(event.TypeAuthFailed))
	NewRecorder(RecorderConfig{}).Admin(fullEvent(event.TypeTokenCreated))
}

func TestRecorderZapFields(t *testing.T) {
	tests := []struct {
		name      string
		event     event.Event
		wantLevel zapcore.Level
		want      map[string]any
	}{
		{
			name: "auth failed",
			event: event.Event{Time: t0, Type: event.TypeAuthFailed, Outcome: event.OutcomeFailure, Reason: "bad_secret",
				User: "alice", Scheme: "basic", ClientIP: "192.0.2.7", Method: "GET", Host: "h.example", Path: "/x", Status: 401},
			wantLevel: zapcore.InfoLevel,
			want: map[string]any{"outcome": "failure", "reason": "bad_secret", "user": "alice", "scheme": "basic",
				"client_ip": "192.0.2.7", "method": "GET", "host": "h.example", "path": "/x", "status": int64(401)},
		},
		{
			name: "denied by rule",
			event: event.Event{Time: t0, Type: event.TypeDenied, Outcome: event.OutcomeDenied, Reason: "path", User: "bob",
				TokenID: "tok_9", Scheme: "bearer", ClientIP: "2001:db8::1", Method: "POST", Host: "h", Path: "/admin", Status: 403, Rule: "no-admin"},
			wantLevel: zapcore.InfoLevel,
			want: map[string]any{"outcome": "denied", "reason": "path", "user": "bob", "token_id": "tok_9", "scheme": "bearer",
				"client_ip": "2001:db8::1", "method": "POST", "host": "h", "path": "/admin", "status": int64(403), "rule": "no-admin"},
		},
		{
			name:      "success at debug",
			event:     event.Event{Time: t0, Type: event.TypeAuthSucceeded, Outcome: event.OutcomeSuccess, Reason: "ok", User: "carol", TokenID: "tok_3"},
			wantLevel: zapcore.DebugLevel,
			want:      map[string]any{"outcome": "success", "reason": "ok", "user": "carol", "token_id": "tok_3"},
		},
		{
			name: "admin",
			event: event.Event{Time: t0, Type: event.TypeUserTokensRevoked, Outcome: event.OutcomeSuccess, User: "dave", Actor: "127.0.0.1:3000",
				Method: "DELETE", Path: "/api_tokens/users/dave", Count: 4, Changed: []string{"revoked"}},
			wantLevel: zapcore.InfoLevel,
			want: map[string]any{"outcome": "success", "user": "dave", "actor": "127.0.0.1:3000", "method": "DELETE",
				"path": "/api_tokens/users/dave", "count": int64(4), "changed": []any{"revoked"}},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			logger, logs := observed(zapcore.DebugLevel)
			sel, err := ParseSelection([]string{"admin", "failure", "denied", "success"}, 0)
			if err != nil {
				t.Fatal(err)
			}
			NewRecorder(RecorderConfig{Selection: sel, Logger: logger}).Record(tt.event)
			entries := logs.All()
			if len(entries) != 1 {
				t.Fatalf("logged %d entries, want 1", len(entries))
			}
			got := entries[0]
			if got.Message != string(tt.event.Type) || got.Level != tt.wantLevel {
				t.Errorf("entry %q at %v, want %q at %v", got.Message, got.Level, tt.event.Type, tt.wantLevel)
			}
			if ctx := got.ContextMap(); !reflect.DeepEqual(ctx, tt.want) {
				t.Errorf("fields = %v\nwant     %v", ctx, tt.want)
			}
		})
	}
}

// TestRecorderCarriesOnlyWhatItIsGiven: whatever the type, the zap output
// has only the known keys (never a query or an Authorization value), and
// the queued event is exactly the one recorded.
func TestRecorderCarriesOnlyWhatItIsGiven(t *testing.T) {
	allowed := []string{"outcome", "reason", "user", "token_id", "scheme", "client_ip", "method",
		"host", "path", "actor", "group", "rule", "status", "changed", "count", "top_clients", "top_users"}
	for _, typ := range allTypes {
		t.Run(string(typ), func(t *testing.T) {
			r, w, q, logs := newTestRecorder(t, []string{"admin", "failure", "denied", "success"}, zapcore.DebugLevel)
			e := fullEvent(typ)
			r.Record(e)
			if err := q.Flush(context.Background()); err != nil {
				t.Fatal(err)
			}
			entries := logs.All()
			if len(entries) != 1 {
				t.Fatalf("logged %d entries, want 1", len(entries))
			}
			for key := range entries[0].ContextMap() {
				lower := strings.ToLower(key)
				if strings.Contains(lower, "query") || strings.Contains(lower, "authorization") {
					t.Errorf("zap output has key %q", key)
				}
				if !slices.Contains(allowed, key) {
					t.Errorf("zap output has unexpected key %q", key)
				}
			}
			got := w.events()
			if typ.Class() == event.ClassAdmin {
				if len(got) != 0 {
					t.Fatalf("admin event queued: %+v", got)
				}
				return
			}
			if len(got) != 1 || !reflect.DeepEqual(got[0], e) {
				t.Errorf("queued %+v, want exactly %+v", got, e)
			}
		})
	}
}

func TestRecorderSampling(t *testing.T) {
	sel, err := ParseSelection([]string{"success", "failure"}, 0.5)
	if err != nil {
		t.Fatal(err)
	}
	draws := []float64{0.1, 0.7, 0.49, 0.5, 0.99, 0}
	calls := 0
	w := &fakeEvents{}
	q := NewQueue(QueueConfig{Writer: w})
	r := NewRecorder(RecorderConfig{Selection: sel, Queue: q, Rand: func() float64 {
		v := draws[calls%len(draws)]
		calls++
		return v
	}})
	for range draws {
		r.Record(event.Event{Type: event.TypeAuthSucceeded})
	}
	r.Record(event.Event{Type: event.TypeAuthFailed}) // not sampled, no draw
	if err := q.Flush(context.Background()); err != nil {
		t.Fatal(err)
	}
	if calls != len(draws) {
		t.Errorf("Rand called %d times, want %d", calls, len(draws))
	}
	var types []event.Type
	for _, e := range w.events() {
		types = append(types, e.Type)
	}
	want := []event.Type{event.TypeAuthSucceeded, event.TypeAuthSucceeded, event.TypeAuthSucceeded, event.TypeAuthFailed} // draws 0.1, 0.49, 0
	if !slices.Equal(types, want) {
		t.Errorf("queued %v, want %v", types, want)
	}
}

func TestRecorderAllocs(t *testing.T) {
	disabled := zap.New(zapcore.NewNopCore()) // every level disabled
	info, _ := observed(zapcore.WarnLevel)    // INFO and DEBUG disabled
	tests := []struct {
		name  string
		r     *Recorder
		event event.Event
	}{
		{"unselected", NewRecorder(RecorderConfig{Logger: info, Queue: NewQueue(QueueConfig{Writer: &fakeEvents{}})}), fullEvent(event.TypeAuthSucceeded)},
		{"selected, zap disabled, no queue", NewRecorder(RecorderConfig{Logger: info}), fullEvent(event.TypeAuthFailed)},
		{"selected, nop logger, no queue", NewRecorder(RecorderConfig{Logger: disabled}), fullEvent(event.TypeDenied)},
		{"admin, zap disabled", NewRecorder(RecorderConfig{Logger: info}), fullEvent(event.TypeTokenCreated)},
		{"selected, queue with room", NewRecorder(RecorderConfig{Logger: info, Queue: NewQueue(QueueConfig{Writer: &fakeEvents{}, Size: 1 << 12})}), fullEvent(event.TypeDenied)},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if n := testing.AllocsPerRun(1000, func() { tt.r.Record(tt.event) }); n != 0 {
				t.Errorf("Record allocates %v times, want 0", n)
			}
		})
	}
}

func BenchmarkRecordUnselected(b *testing.B) {
	r := NewRecorder(RecorderConfig{Logger: zap.NewNop(), Queue: NewQueue(QueueConfig{Writer: &fakeEvents{}})})
	e := fullEvent(event.TypeAuthSucceeded)
	b.ReportAllocs()
	for b.Loop() {
		r.Record(e)
	}
}

// discardEvents is an EventWriter that forgets everything.
type discardEvents struct{}

func (discardEvents) AppendAudit(context.Context, []event.Event) error { return nil }
func (discardEvents) PruneAudit(context.Context, time.Time) (int64, error) {
	return 0, nil
}
func (discardEvents) TrimAudit(context.Context, int) (int64, error) { return 0, nil }

func BenchmarkRecordSelectedQueue(b *testing.B) {
	q := NewQueue(QueueConfig{Writer: discardEvents{}})
	stop := runQueue(q)
	r := NewRecorder(RecorderConfig{Logger: zap.NewNop(), Queue: q})
	e := fullEvent(event.TypeAuthFailed)
	e.Changed = nil
	b.ReportAllocs()
	for b.Loop() {
		r.Record(e)
	}
	b.StopTimer()
	stop()
	b.ReportMetric(float64(q.Dropped())/float64(b.N), "dropped/op")
}
