//go:build cgo

package tokenstore

import (
	"context"
	"sync"
	"sync/atomic"
	"testing"

	"github.com/apitoken/caddy-apitoken/event"
	"github.com/apitoken/caddy-apitoken/storage"
)

// TestRevokeReportsTheRevoker checks that of concurrent revokes of one
// token exactly one reports that it revoked it, and only that one stores
// an audit event, so callers can log and announce a revocation once.
func TestRevokeReportsTheRevoker(t *testing.T) {
	s, _, _ := newTestStore(t)
	ctx := context.Background()
	tok, _, err := s.Create(ctx, storage.NewToken{User: "alice", Name: "ci"}, nil)
	if err != nil {
		t.Fatal(err)
	}
	var revokers, stored atomic.Int32
	var wg sync.WaitGroup
	for range 8 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			ev := &event.Event{Type: event.TypeTokenRevoked, Outcome: event.OutcomeSuccess}
			got, revoked, err := s.Revoke(ctx, tok.ID, ev)
			if err != nil {
				t.Error(err)
				return
			}
			if got.RevokedAt.IsZero() {
				t.Error("Revoke returned an unrevoked token")
			}
			if revoked {
				revokers.Add(1)
			}
			if ev.ID != 0 {
				stored.Add(1)
			}
			if revoked != (ev.ID != 0) {
				t.Errorf("revoked=%v but event id %d", revoked, ev.ID)
			}
		}()
	}
	wg.Wait()
	if revokers.Load() != 1 || stored.Load() != 1 {
		t.Errorf("%d calls reported revoking and %d stored an event, want 1 and 1", revokers.Load(), stored.Load())
	}
	if _, revoked, err := s.Revoke(ctx, tok.ID, nil); err != nil || revoked {
		t.Errorf("revoking again: revoked=%v, %v", revoked, err)
	}
}
