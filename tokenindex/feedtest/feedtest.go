// Package feedtest is the contract suite for a tokenindex.Feed: every
// backend's tests run it (Run) to check the four properties the
// tokenindex package doc promises, against the real database.
//
// Each check is also a plain function returning an error (Checks), so
// that a test can show that a broken feed fails them.
package feedtest

import (
	"context"
	"errors"
	"fmt"
	"testing"

	"github.com/apitoken/caddy-apitoken/token"
	"github.com/apitoken/caddy-apitoken/tokenindex"
)

// Backend is a store under test: its feed, and ways to change its tokens.
type Backend interface {
	// Feed returns a new feed over the store, as a restarted process
	// would make: it must not share state with the feeds returned before.
	Feed() tokenindex.Feed
	// Create creates a token through the store's API and returns its id
	// and secret.
	Create(ctx context.Context, user, name string) (id, secret string, err error)
	// Rename renames a token through the store's API.
	Rename(ctx context.Context, id, name string) error
	// Revoke revokes a token through the store's API.
	Revoke(ctx context.Context, id string) error
	// RawRename renames a token straight in the database, as an
	// operator's SQL would, bypassing the store.
	RawRename(ctx context.Context, id, name string) error
}

// Check is one property of the contract.
type Check struct {
	Name string
	Run  func(ctx context.Context, b Backend) error
}

// Checks are the properties Run checks, in order.
var Checks = []Check{
	{"order", checkOrder},
	{"apply twice", checkIdempotent},
	{"raw change", checkRaw},
	{"restart", checkRestart},
	{"resync", checkResync},
}

// Run runs every check as a subtest, each on a fresh backend from
// newBackend.
func Run(t *testing.T, newBackend func(t *testing.T) Backend) {
	t.Helper()
	for _, c := range Checks {
		t.Run(c.Name, func(t *testing.T) {
			if err := c.Run(t.Context(), newBackend(t)); err != nil {
				t.Error(err)
			}
		})
	}
}

// follower is an index, its members and a Follower over a feed.
type follower struct {
	ix *tokenindex.Index
	f  *tokenindex.Follower
}

func follow(feed tokenindex.Feed, ix *tokenindex.Index, since tokenindex.Version) follower {
	if ix == nil {
		ix = new(tokenindex.Index)
	}
	return follower{ix: ix, f: tokenindex.NewFollower(feed, ix, new(tokenindex.Members), since)}
}

// want is what the index must hold for one token.
type want struct {
	id, secret, name string
	revoked          bool
}

// expect checks that ix finds every token of ws by its secret, as ws says.
func expect(ix *tokenindex.Index, ws ...want) error {
	var errs []error
	for _, w := range ws {
		id, ok := token.Parse(w.secret)
		if !ok || id != w.id {
			id = w.id // a backend with its own secrets: look up as given
		}
		e, ok := ix.LookupID(id, w.secret)
		switch {
		case !ok:
			errs = append(errs, fmt.Errorf("token %s not found", w.id))
		case e.Name != w.name || e.Revoked != w.revoked:
			errs = append(errs, fmt.Errorf("token %s: name %q revoked %v, want %q revoked %v", w.id, e.Name, e.Revoked, w.name, w.revoked))
		}
	}
	return errors.Join(errs...)
}

func create(ctx context.Context, b Backend, user, name string) (want, error) {
	id, secret, err := b.Create(ctx, user, name)
	return want{id: id, secret: secret, name: name}, err
}

// checkOrder: a Changes batch is in strictly increasing version order, its
// Next is at least its last version, and a follower that applies batch
// after batch ends with each token's newest state.
func checkOrder(ctx context.Context, b Backend) error {
	a, err := create(ctx, b, "alice", "a0")
	if err != nil {
		return err
	}
	c, err := create(ctx, b, "carol", "c0")
	if err != nil {
		return err
	}
	fo := follow(b.Feed(), nil, 0)
	if err := fo.f.Sync(ctx); err != nil {
		return err
	}
	from := fo.f.Version()
	for i := 1; i <= 3; i++ {
		a.name = fmt.Sprint("a", i)
		if err := b.Rename(ctx, a.id, a.name); err != nil {
			return err
		}
	}
	if err := b.Revoke(ctx, c.id); err != nil {
		return err
	}
	c.revoked = true
	batch, err := b.Feed().Changes(ctx, from)
	if err != nil {
		return fmt.Errorf("changes since %d: %w", from, err)
	}
	var last tokenindex.Version
	for i, ch := range batch.Changes {
		if ch.Version <= last || ch.Version <= from {
			return fmt.Errorf("change %d (token %s) has version %d after %d (since %d): not in commit order", i, ch.ID, ch.Version, last, from)
		}
		last = ch.Version
	}
	if batch.Next < last {
		return fmt.Errorf("next version %d is below the last change's %d", batch.Next, last)
	}
	if err := fo.f.Sync(ctx); err != nil {
		return err
	}
	return expect(fo.ix, a, c)
}

// checkIdempotent: applying a batch twice, or an older batch after a newer
// one, leaves the index as the newer one made it.
func checkIdempotent(ctx context.Context, b Backend) error {
	a, err := create(ctx, b, "alice", "a0")
	if err != nil {
		return err
	}
	feed := b.Feed()
	old, err := feed.Snapshot(ctx)
	if err != nil {
		return err
	}
	a.name = "a1"
	if err := b.Rename(ctx, a.id, a.name); err != nil {
		return err
	}
	if err := b.Revoke(ctx, a.id); err != nil {
		return err
	}
	a.revoked = true
	newer, err := b.Feed().Changes(ctx, old.Next)
	if err != nil {
		return err
	}
	var ix tokenindex.Index
	ix.Apply(old.Changes...)
	ix.Apply(newer.Changes...)
	ix.Apply(newer.Changes...)
	ix.Apply(old.Changes...)
	if err := expect(&ix, a); err != nil {
		return fmt.Errorf("after applying twice and late: %w", err)
	}
	return nil
}

// checkRaw: a change made straight in the database reaches a follower.
func checkRaw(ctx context.Context, b Backend) error {
	a, err := create(ctx, b, "alice", "a0")
	if err != nil {
		return err
	}
	fo := follow(b.Feed(), nil, 0)
	if err := fo.f.Sync(ctx); err != nil {
		return err
	}
	a.name = "renamed by hand"
	if err := b.RawRename(ctx, a.id, a.name); err != nil {
		return err
	}
	if err := fo.f.Sync(ctx); err != nil {
		return err
	}
	return expect(fo.ix, a)
}

// checkRestart: a follower started again from the version a previous one
// reached, on a new feed, receives every change committed meanwhile.
func checkRestart(ctx context.Context, b Backend) error {
	a, err := create(ctx, b, "alice", "a0")
	if err != nil {
		return err
	}
	first := follow(b.Feed(), nil, 0)
	if err := first.f.Sync(ctx); err != nil {
		return err
	}
	saved := first.f.Version()
	a.name = "a1"
	if err := b.Rename(ctx, a.id, a.name); err != nil {
		return err
	}
	c, err := create(ctx, b, "carol", "c0")
	if err != nil {
		return err
	}
	again := follow(b.Feed(), first.ix, saved)
	if err := again.f.Sync(ctx); err != nil {
		return err
	}
	if err := expect(first.ix, a, c); err != nil {
		return fmt.Errorf("restarted from version %d: %w", saved, err)
	}
	if again.f.Version() < saved {
		return fmt.Errorf("version went back from %d to %d", saved, again.f.Version())
	}
	return nil
}

// checkResync: a feed asked for changes after a version it never reached
// (a follower that outlived a restore of an older copy) answers
// ErrResync, and the follower then holds the whole store.
func checkResync(ctx context.Context, b Backend) error {
	a, err := create(ctx, b, "alice", "a0")
	if err != nil {
		return err
	}
	fo := follow(b.Feed(), nil, 0)
	if err := fo.f.Sync(ctx); err != nil {
		return err
	}
	ahead := fo.f.Version() + 1<<40
	if _, err := b.Feed().Changes(ctx, ahead); !errors.Is(err, tokenindex.ErrResync) {
		return fmt.Errorf("changes since %d, beyond every version: %v, want ErrResync", ahead, err)
	}
	c, err := create(ctx, b, "carol", "c0")
	if err != nil {
		return err
	}
	var ix tokenindex.Index
	lost := follow(b.Feed(), &ix, ahead)
	if err := lost.f.Sync(ctx); err != nil {
		return err
	}
	if err := expect(&ix, a, c); err != nil {
		return fmt.Errorf("after a resynchronisation: %w", err)
	}
	if v := lost.f.Version(); v >= ahead {
		return fmt.Errorf("version %d after a resynchronisation, still beyond the feed", v)
	}
	return nil
}
