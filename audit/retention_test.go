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
		maxEvents  int
		deleted    int64
		trimmed    int64
		err        error
		trimErr    error
		wantBefore []time.Time
		wantKeeps  []int
		wantErr    []string
	}{
		{name: "default 90 days and 1,000,000 events", deleted: 7, wantBefore: []time.Time{t0.Add(-90 * 24 * time.Hour)},
			wantKeeps: []int{DefaultMaxEvents}},
		{name: "a week", retain: 7 * 24 * time.Hour, wantBefore: []time.Time{t0.Add(-7 * 24 * time.Hour)},
			wantKeeps: []int{DefaultMaxEvents}},
		{name: "negative keeps forever", retain: -1, wantBefore: nil, wantKeeps: []int{DefaultMaxEvents}},
		{name: "over the bound", maxEvents: 500, deleted: 3, trimmed: 42,
			wantBefore: []time.Time{t0.Add(-DefaultRetain)}, wantKeeps: []int{500}},
		{name: "no bound", maxEvents: -1, wantBefore: []time.Time{t0.Add(-DefaultRetain)}, wantKeeps: nil},
		{name: "error", retain: time.Hour, err: errFake, wantBefore: []time.Time{t0.Add(-time.Hour)},
			wantKeeps: []int{DefaultMaxEvents},
			wantErr:   []string{"pruning audit events before 2025-03-14T14:09:26Z: disk on fire"}},
		{name: "trim error", trimErr: errFake, deleted: 2, wantBefore: []time.Time{t0.Add(-DefaultRetain)},
			wantKeeps: []int{DefaultMaxEvents},
			wantErr:   []string{"trimming audit events to the newest 1000000 request events: disk on fire"}},
		{name: "both fail", err: errFake, trimErr: errFake, wantBefore: []time.Time{t0.Add(-DefaultRetain)},
			wantKeeps: []int{DefaultMaxEvents},
			wantErr: []string{"pruning audit events before 2024-12-14T15:09:26Z: disk on fire",
				"trimming audit events to the newest 1000000 request events: disk on fire"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			w := &fakeEvents{pruned: tt.deleted, pruneErr: tt.err, trimmed: tt.trimmed, trimErr: tt.trimErr}
			p := &Pruner{Writer: w, Retain: tt.retain, MaxEvents: tt.maxEvents, Now: newClock().Now}
			n, err := p.PruneOnce(context.Background())
			if tt.wantErr != nil {
				if err == nil || err.Error() != strings.Join(tt.wantErr, "\n") || !errors.Is(err, errFake) {
					t.Fatalf("error = %v, want %q wrapping %v", err, tt.wantErr, errFake)
				}
			} else if err != nil {
				t.Fatal(err)
			}
			if n != (Pruned{Aged: tt.deleted, Trimmed: tt.trimmed}) {
				t.Errorf("deleted %+v, want %d aged and %d trimmed", n, tt.deleted, tt.trimmed)
			}
			if got := w.pruneCalls(); !slices.EqualFunc(got, tt.wantBefore, time.Time.Equal) {
				t.Errorf("before = %v, want %v", got, tt.wantBefore)
			}
			if got := w.trimCalls(); !slices.Equal(got, tt.wantKeeps) {
				t.Errorf("keep = %v, want %v", got, tt.wantKeeps)
			}
			if _, err := p.PruneOnce(context.Background()); (err != nil) != (tt.wantErr != nil) {
				t.Fatalf("second PruneOnce: %v", err)
			}
			if got := p.Trimmed(); got != 2*tt.trimmed {
				t.Errorf("Trimmed() after two prunes = %d, want %d", got, 2*tt.trimmed)
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
	t.Run("trimmed some", func(t *testing.T) {
		logger, logs := observed(zapcore.DebugLevel)
		w := &fakeEvents{trimmed: 17}
		p := &Pruner{Writer: w, MaxEvents: 100, Every: time.Hour, Now: newClock().Now, Logger: logger}
		stop := running(t, p.Run)
		eventually(t, "the first prune", func() bool { return len(w.trimCalls()) == 1 })
		stop()
		warned := logs.FilterLevelExact(zapcore.WarnLevel).All()
		if len(warned) != 1 || warned[0].Message != "audit trail over its size bound: deleted the oldest request events" {
			t.Fatalf("warnings %v, want one about the size bound", warned)
		}
		if ctx := warned[0].ContextMap(); ctx["count"] != int64(17) || ctx["max_events"] != int64(100) {
			t.Errorf("warning fields %v, want count 17 and max_events 100", ctx)
		}
	})
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
