//go:build cgo

package tokenstore

import (
	"database/sql"
	"fmt"
	"reflect"
	"sync"
	"testing"
	"time"

	"github.com/apitoken/caddy-apitoken/storage"
)

func expiringNames(t *testing.T, s *Store, before time.Time) []string {
	t.Helper()
	toks, err := s.ExpiringTokens(t.Context(), before)
	if err != nil {
		t.Fatal(err)
	}
	if toks == nil {
		t.Fatal("ExpiringTokens returned a nil slice")
	}
	names := []string{}
	for _, tok := range toks {
		names = append(names, tok.Name)
	}
	return names
}

func TestExpiringTokens(t *testing.T) {
	s, clock, path := newTestStore(t)
	ctx := t.Context()
	now := clock.Now()
	window := now.Add(2 * time.Hour)
	create := func(name string, expires time.Time) storage.Token {
		t.Helper()
		tok, _ := mustCreate(t, s, storage.NewToken{User: "alice", Name: name, ExpiresAt: expires})
		return tok
	}
	create("soon", now.Add(time.Hour))
	edge := create("at the window's end", window)
	create("a millisecond past the window", window.Add(time.Millisecond))
	create("never expires", time.Time{})
	sooner := create("sooner", now.Add(time.Minute))
	revoked := create("revoked", now.Add(time.Hour))
	if _, _, err := s.Revoke(ctx, revoked.ID, nil); err != nil {
		t.Fatal(err)
	}
	create("expires now", now.Add(time.Millisecond))
	create("already expired", now.Add(-time.Minute)) // Create takes it: limits are the caller's
	clock.Advance(time.Millisecond)                  // "expires now" is expired now

	t.Run("window", func(t *testing.T) {
		want := []string{"sooner", "soon", "at the window's end"}
		if got := expiringNames(t, s, window); !reflect.DeepEqual(got, want) {
			t.Errorf("ExpiringTokens = %q, want %q", got, want)
		}
	})
	t.Run("narrower window", func(t *testing.T) {
		if got := expiringNames(t, s, now.Add(time.Hour).Add(-time.Millisecond)); !reflect.DeepEqual(got, []string{"sooner"}) {
			t.Errorf("ExpiringTokens = %q, want [sooner]", got)
		}
	})
	t.Run("window in the past", func(t *testing.T) {
		if got := expiringNames(t, s, now.Add(-time.Hour)); len(got) != 0 {
			t.Errorf("ExpiringTokens = %q, want none", got)
		}
	})

	notifiedAt := func(id string) sql.NullInt64 {
		t.Helper()
		var n sql.NullInt64
		if err := rawDB(t, path).QueryRow(`SELECT expiry_notified_at FROM tokens WHERE id = ?`, id).Scan(&n); err != nil {
			t.Fatal(err)
		}
		return n
	}
	claimNames := func(t *testing.T, before time.Time) []string {
		t.Helper()
		toks, err := s.ClaimExpiring(ctx, before)
		if err != nil {
			t.Fatal(err)
		}
		if toks == nil {
			t.Fatal("ClaimExpiring returned a nil slice")
		}
		names := []string{}
		for _, tok := range toks {
			names = append(names, tok.Name)
		}
		return names
	}
	t.Run("claimed tokens are left out", func(t *testing.T) {
		before := dumpQuery(t, path, `SELECT id, updated_at, seq FROM tokens ORDER BY id`)
		claimedAt := clock.Now()
		if got := claimNames(t, now.Add(time.Hour).Add(-time.Millisecond)); !reflect.DeepEqual(got, []string{"sooner"}) {
			t.Errorf("ClaimExpiring = %q, want [sooner]", got)
		}
		if got := expiringNames(t, s, window); !reflect.DeepEqual(got, []string{"soon", "at the window's end"}) {
			t.Errorf("ExpiringTokens = %q, want [soon, at the window's end]", got)
		}
		if got := notifiedAt(sooner.ID); got.Int64 != claimedAt.UnixMilli() {
			t.Errorf("expiry_notified_at = %v, want %d", got, claimedAt.UnixMilli())
		}
		if after := dumpQuery(t, path, `SELECT id, updated_at, seq FROM tokens ORDER BY id`); after != before {
			t.Errorf("claiming changed updated_at or seq:\n%s\nwant\n%s", after, before)
		}

		clock.Advance(time.Second)
		if got := claimNames(t, now.Add(time.Hour).Add(-time.Millisecond)); len(got) != 0 {
			t.Errorf("a second claim got %q, want none", got)
		}
		if got := notifiedAt(sooner.ID); got.Int64 != claimedAt.UnixMilli() {
			t.Errorf("claiming again moved expiry_notified_at to %v, want the first mark %d", got, claimedAt.UnixMilli())
		}
	})

	steps := []struct {
		name string
		run  func() error
		want []string
	}{
		{"an update without an expiry keeps the mark", func() error {
			_, err := s.Update(ctx, sooner.ID, storage.Patch{Name: ptr("sooner, renamed")}, nil)
			return err
		}, []string{"soon", "at the window's end"}},
		{"an update of the expiry clears it", func() error {
			_, err := s.Update(ctx, sooner.ID, storage.Patch{ExpiresAt: ptr(now.Add(90 * time.Minute))}, nil)
			return err
		}, []string{"soon", "sooner, renamed", "at the window's end"}},
		{"a claim takes the whole window", func() error {
			if got := claimNames(t, window); !reflect.DeepEqual(got, []string{"soon", "sooner, renamed", "at the window's end"}) {
				return fmt.Errorf("ClaimExpiring = %q", got)
			}
			return nil
		}, []string{}},
		{"a rotation clears it", func() error {
			_, _, err := s.Rotate(ctx, edge.ID, "", nil)
			return err
		}, []string{"at the window's end"}},
		{"once expired, never", func() error {
			clock.Advance(2 * time.Hour)
			return nil
		}, []string{}},
	}
	for _, st := range steps {
		t.Run(st.name, func(t *testing.T) {
			if err := st.run(); err != nil {
				t.Fatal(err)
			}
			if got := expiringNames(t, s, window); !reflect.DeepEqual(got, st.want) {
				t.Errorf("ExpiringTokens = %q, want %q", got, st.want)
			}
		})
	}
	t.Run("nothing to claim", func(t *testing.T) {
		if got := claimNames(t, window); len(got) != 0 {
			t.Errorf("ClaimExpiring = %q, want none", got)
		}
	})
}

// TestClaimExpiringOnce claims the warnings of the same tokens from two
// stores open on one database, several goroutines each, and checks that
// every token was claimed exactly once.
func TestClaimExpiringOnce(t *testing.T) {
	s, clock, path := newTestStore(t)
	other := openStore(t, path, Options{Now: clock.Now, PollInterval: -1})
	stores := []*Store{s, other}
	const rounds, tokensPerRound, claimers = 10, 5, 6
	for round := range rounds {
		want := make(map[string]int)
		for i := range tokensPerRound {
			tok, _ := mustCreate(t, s, storage.NewToken{User: "alice", Name: fmt.Sprintf("r%d t%d", round, i),
				ExpiresAt: clock.Now().Add(time.Duration(i+1) * time.Minute)})
			want[tok.ID] = 1
		}
		start := make(chan struct{})
		claimed := make([][]storage.Token, claimers)
		errs := make([]error, claimers)
		var wg sync.WaitGroup
		for c := range claimers {
			wg.Add(1)
			go func() {
				defer wg.Done()
				<-start
				claimed[c], errs[c] = stores[c%len(stores)].ClaimExpiring(t.Context(), clock.Now().Add(time.Hour))
			}()
		}
		close(start)
		wg.Wait()
		got := make(map[string]int)
		for c := range claimers {
			if errs[c] != nil {
				t.Fatalf("round %d, claimer %d: %v", round, c, errs[c])
			}
			for _, tok := range claimed[c] {
				got[tok.ID]++
			}
		}
		if !reflect.DeepEqual(got, want) {
			t.Errorf("round %d: claims per token %v, want each once %v", round, got, want)
		}
	}
}

func TestCountByState(t *testing.T) {
	s, clock, path := newTestStore(t)
	ctx := t.Context()
	zero := map[storage.State]int{storage.StateActive: 0, storage.StateExpired: 0, storage.StateRevoked: 0}
	if got := s.CountByState(clock.Now()); !reflect.DeepEqual(got, zero) {
		t.Errorf("CountByState of nothing = %v, want %v", got, zero)
	}
	for i := range 3 {
		mustCreate(t, s, storage.NewToken{User: "alice", Name: fmt.Sprint("active", i)})
	}
	mustCreate(t, s, storage.NewToken{User: "alice", Name: "expiring", ExpiresAt: clock.Now().Add(time.Hour)})
	revoked, _ := mustCreate(t, s, storage.NewToken{User: "alice", Name: "revoked", ExpiresAt: clock.Now().Add(time.Minute)})
	if _, _, err := s.Revoke(ctx, revoked.ID, nil); err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name string
		at   time.Duration
		want map[storage.State]int
	}{
		{"now", 0, map[storage.State]int{storage.StateActive: 4, storage.StateExpired: 0, storage.StateRevoked: 1}},
		{"at expiry", time.Hour, map[storage.State]int{storage.StateActive: 3, storage.StateExpired: 1, storage.StateRevoked: 1}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := s.CountByState(clock.Now().Add(tt.at)); !reflect.DeepEqual(got, tt.want) {
				t.Errorf("CountByState = %v, want %v", got, tt.want)
			}
		})
	}
	t.Run("tokens of other processes once polled", func(t *testing.T) {
		other := openStore(t, path, Options{PollInterval: -1})
		mustCreate(t, other, storage.NewToken{User: "bob", Name: "ci"})
		p := newPoller(s, Options{})
		defer p.close()
		if err := p.poll(ctx); err != nil {
			t.Fatal(err)
		}
		if got := s.CountByState(clock.Now())[storage.StateActive]; got != 5 {
			t.Errorf("active = %d, want 5", got)
		}
	})
}
