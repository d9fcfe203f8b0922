package tokenindex

import (
	"context"
	"errors"
	"testing"
)

// scriptFeed answers Changes and Snapshot from fixed batches, counting
// the calls.
type scriptFeed struct {
	changes   Batch
	changeErr error
	snapshot  Batch
	snapshots int
}

func (f *scriptFeed) Changes(context.Context, Version) (Batch, error) {
	return f.changes, f.changeErr
}

func (f *scriptFeed) Snapshot(context.Context) (Batch, error) {
	f.snapshots++
	return f.snapshot, nil
}

// TestFollowerResync: the first Sync from 0 loads a snapshot; ErrResync
// loads another, which replaces the index (a token gone from the store is
// gone from the index) and sets the version back; a failed Changes changes
// nothing.
func TestFollowerResync(t *testing.T) {
	a := Change{Version: 1, ID: "abcdefgh2345", Name: "a"}
	b := Change{Version: 2, ID: "abcdefgh2346", Name: "b"}
	feed := &scriptFeed{snapshot: Batch{Changes: []Change{a, b}, Next: 2}}
	var ix Index
	f := NewFollower(feed, &ix, new(Members), 0)
	ctx := t.Context()
	if err := f.Sync(ctx); err != nil || feed.snapshots != 1 || f.Version() != 2 {
		t.Fatalf("first sync: %v, %d snapshots, version %d", err, feed.snapshots, f.Version())
	}

	feed.changes = Batch{Changes: []Change{{Version: 3, ID: a.ID, Name: "a3"}}, Next: 3}
	if err := f.Sync(ctx); err != nil || feed.snapshots != 1 || f.Version() != 3 {
		t.Fatalf("changes: %v, %d snapshots, version %d", err, feed.snapshots, f.Version())
	}
	if e, _, _ := ix.Get(a.ID); e.Name != "a3" {
		t.Errorf("after changes: %q, want a3", e.Name)
	}

	broken := errors.New("connection lost")
	feed.changeErr = broken
	if err := f.Sync(ctx); !errors.Is(err, broken) || f.Version() != 3 {
		t.Fatalf("failed changes: %v, version %d", err, f.Version())
	}

	feed.changeErr = ErrResync
	feed.snapshot = Batch{Changes: []Change{b}, Next: 2} // a restored older copy, without a
	if err := f.Sync(ctx); err != nil || feed.snapshots != 2 || f.Version() != 2 {
		t.Fatalf("resync: %v, %d snapshots, version %d", err, feed.snapshots, f.Version())
	}
	if _, _, ok := ix.Get(a.ID); ok {
		t.Error("a token missing from the snapshot is still in the index")
	}
	if e, v, ok := ix.Get(b.ID); !ok || e.Name != "b" || v != 2 {
		t.Errorf("b after resync: %+v, version %d, %v", e, v, ok)
	}
	if _, _, err := ix.Check(); err != nil {
		t.Error(err)
	}
}
