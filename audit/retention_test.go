package audit

import (
	"context"
	"errors"
	"slices"
	"strings"
	"testing"
	"time"

	"go.uber.org/zap/zapcore"
)

func TestPrunerPruneOnce(t *testing.T) {
	tests := []struct {
		name       string
		retain     time.Duration
		deleted    int64
		err        error
		wantBefore []time.Time
		wantErr    string
	}{
		{name: "default 90 days", deleted: 7, wantBefore: []time.Time{t0.Add(-90 * 24 * time.Hour)}},
		{name: "a week", retain: 7 * 24 * time.Hour, wantBefore: []time.Time{t0.Add(-7 * 24 * time.Hour)}},
		{name: "negative keeps forever", retain: -1, wantBefore: nil},
		{name: "error", retain: time.Hour, err: errFake, wantBefore: []time.Time{t0.Add(-time.Hour)},
			wantErr: "pruning audit events before 2025-03-14T14:09:26Z: disk on fire"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			w := &fakeEvents{pruned: tt.deleted, pruneErr: tt.err}
			p := &Pruner{Writer: w, Retain: tt.retain, Now: newClock().Now}
			n, err := p.PruneOnce(context.Background())
			if tt.wantErr != "" {
				if err == nil || err.Error() != tt.wantErr || !errors.Is(err, tt.err) {
					t.Fatalf("error = %v, want %q wrapping %v", err, tt.wantErr, tt.err)
				}
			} else if err != nil {
				t.Fatal(err)
			}
			if n != tt.deleted {
				t.Errorf("deleted %d, want %d", n, tt.deleted)
			}
			if got := w.pruneCalls(); !slices.EqualFunc(got, tt.wantBefore, time.Time.Equal) {
				t.Errorf("before = %v, want %v", got, tt.wantBefore)
			}
		})
	}
}

func TestPrunerRun(t *testing.T) {
	tests := []struct {
		name      string
		deleted   int64
		err       error
		wantMsg   string
		wantLevel zapcore.Level
	}{
		{"deleted some", 42, nil, "pruned audit events", zapcore.InfoLevel},
		{"deleted none", 0, nil, "pruned audit events", zapcore.DebugLevel},
		{"failed", 0, errFake, "pruning audit events failed", zapcore.ErrorLevel},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			logger, logs := observed(zapcore.DebugLevel)
			w := &fakeEvents{pruned: tt.deleted, pruneErr: tt.err}
			clock := newClock()
			p := &Pruner{Writer: w, Every: time.Hour, Now: clock.Now, Logger: logger}
			stop := running(t, p.Run)
			eventually(t, "the first prune", func() bool { return len(w.pruneCalls()) == 1 })
			stop() // Run logs before it waits, so the entry is there once it returns
			if got := w.pruneCalls(); len(got) != 1 || !got[0].Equal(t0.Add(-DefaultRetain)) {
				t.Errorf("prunes before %v, want one before %v", got, t0.Add(-DefaultRetain))
			}
			entries := logs.All()
			if len(entries) != 1 || entries[0].Message != tt.wantMsg || entries[0].Level != tt.wantLevel {
				t.Fatalf("logged %v, want one %q at %v", entries, tt.wantMsg, tt.wantLevel)
			}
			ctx := entries[0].ContextMap()
			if tt.err != nil {
				if e, _ := ctx["error"].(string); !strings.Contains(e, errFake.Error()) {
					t.Errorf("error field %q", e)
				}
			} else if ctx["count"] != tt.deleted {
				t.Errorf("count field %v, want %d", ctx["count"], tt.deleted)
			}
		})
	}
	t.Run("an error from shutting down is not logged", func(t *testing.T) {
		logger, logs := observed(zapcore.DebugLevel)
		ctx, cancel := context.WithCancel(context.Background())
		cancel()
		w := &fakeEvents{pruneErr: context.Canceled}
		(&Pruner{Writer: w, Logger: logger}).Run(ctx)
		if len(w.pruneCalls()) != 1 {
			t.Errorf("pruned %d times, want once", len(w.pruneCalls()))
		}
		if logs.FilterMessage("pruning audit events failed").Len() != 0 {
			t.Errorf("logged %v", logs.All())
		}
	})
	t.Run("prunes again every Every", func(t *testing.T) {
		w := &fakeEvents{}
		clock := newClock()
		p := &Pruner{Writer: w, Every: time.Millisecond, Now: clock.Now}
		running(t, p.Run)
		eventually(t, "three prunes", func() bool { return len(w.pruneCalls()) >= 3 })
	})
}
