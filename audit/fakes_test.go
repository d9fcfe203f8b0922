package audit

import (
	"context"
	"errors"
	"sync"
	"testing"
	"time"

	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"
	"go.uber.org/zap/zaptest/observer"

	"github.com/apitoken/caddy-apitoken/event"
	"github.com/apitoken/caddy-apitoken/internal/testkit"
)

var errFake = errors.New("disk on fire")

// t0 is the tests' epoch.
var t0 = time.Date(2025, 3, 14, 15, 9, 26, 0, time.UTC)

// fakeClock is a clock the test moves by hand.
type fakeClock = testkit.Clock

func newClock() *fakeClock { return testkit.NewClock(t0) }

// fakeEvents is an EventWriter that records what it is given, and can be
// told to fail or to block.
type fakeEvents struct {
	mu       sync.Mutex
	batches  [][]event.Event
	fail     int // the next fail calls to AppendAudit fail
	befores  []time.Time
	pruned   int64
	pruneErr error
	keeps    []int // the keep of every TrimAudit call
	trimmed  int64
	trimErr  error

	// When block is set, AppendAudit signals entered and waits for block
	// to be closed (or its context to end).
	block   chan struct{}
	entered chan struct{}
}

func (f *fakeEvents) AppendAudit(ctx context.Context, events []event.Event) error {
	f.mu.Lock()
	block, entered := f.block, f.entered
	f.mu.Unlock()
	if block != nil {
		select {
		case entered <- struct{}{}:
		default:
		}
		select {
		case <-block:
		case <-ctx.Done():
			return ctx.Err()
		}
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.fail > 0 {
		f.fail--
		return errFake
	}
	f.batches = append(f.batches, append([]event.Event(nil), events...))
	return nil
}

func (f *fakeEvents) PruneAudit(ctx context.Context, before time.Time) (int64, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.befores = append(f.befores, before)
	return f.pruned, f.pruneErr
}

func (f *fakeEvents) TrimAudit(ctx context.Context, keep int) (int64, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.keeps = append(f.keeps, keep)
	return f.trimmed, f.trimErr
}

// trimCalls returns the keep of every TrimAudit call.
func (f *fakeEvents) trimCalls() []int {
	f.mu.Lock()
	defer f.mu.Unlock()
	return append([]int(nil), f.keeps...)
}

// sizes returns the length of every batch written.
func (f *fakeEvents) sizes() []int {
	f.mu.Lock()
	defer f.mu.Unlock()
	out := make([]int, len(f.batches))
	for i, b := range f.batches {
		out[i] = len(b)
	}
	return out
}

// events returns every event written, in order.
func (f *fakeEvents) events() []event.Event {
	f.mu.Lock()
	defer f.mu.Unlock()
	var out []event.Event
	for _, b := range f.batches {
		out = append(out, b...)
	}
	return out
}

func (f *fakeEvents) pruneCalls() []time.Time {
	f.mu.Lock()
	defer f.mu.Unlock()
	return append([]time.Time(nil), f.befores...)
}

// observed returns a logger recording entries at level and above.
func observed(level zapcore.Level) (*zap.Logger, *observer.ObservedLogs) {
	core, logs := observer.New(level)
	return zap.New(core), logs
}

// eventually polls cond until it holds, failing after a deadline. It is
// only for waiting on a goroutine, never a substitute for an assertion.
func eventually(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(time.Millisecond)
	}
}

// running starts fn in a goroutine and returns a function that cancels
// its context and waits for it to return.
func running(t *testing.T, fn func(ctx context.Context)) (stop func()) {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() {
		defer close(done)
		fn(ctx)
	}()
	var once sync.Once
	stop = func() {
		once.Do(func() {
			cancel()
			select {
			case <-done:
			case <-time.After(10 * time.Second):
				t.Fatal("goroutine did not return after cancel")
			}
		})
	}
	t.Cleanup(stop)
	return stop
}

// fullEvent has every field set, of type typ.
func fullEvent(typ event.Type) event.Event {
	return event.Event{
		Time:       t0,
		Type:       typ,
		Outcome:    event.OutcomeFailure,
		Reason:     "bad_secret",
		User:       "alice",
		TokenID:    "tok_1",
		Scheme:     "bearer",
		ClientIP:   "192.0.2.7",
		Method:     "GET",
		Host:       "api.example.com",
		Path:       "/v1/items",
		Status:     401,
		Actor:      "203.0.113.9:5555",
		Changed:    []string{"expires_at"},
		Count:      3,
		Group:      "ops",
		Rule:       "deny-admin",
		TopClients: []event.Tally{{Value: "192.0.2.7", Count: 2}},
		TopUsers:   []event.Tally{{Value: "alice", Count: 2}},
	}
}

// allTypes lists every event type.
var allTypes = []event.Type{
	event.TypeTokenCreated, event.TypeTokenUpdated, event.TypeTokenRotated, event.TypeTokenRevoked,
	event.TypeUserTokensRevoked, event.TypeGroupMemberAdded, event.TypeGroupMemberRemoved,
	event.TypeAuthSucceeded, event.TypeAuthFailed, event.TypePasswordPassedOn, event.TypeDenied, event.TypeWouldDeny,
}

// runQueue runs q in the background; stop ends its Run and returns once
// Run has returned (after draining what q holds).
func runQueue(q *Queue) (stop func()) {
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { defer close(done); q.Run(ctx) }()
	return func() {
		cancel()
		<-done
	}
}
