package tokenindex

import (
	"context"
	"errors"
	"net/netip"
	"time"

	"github.com/apitoken/caddy-apitoken/policy"
)

// Version orders the changes of one store: a change committed after
// another has a greater Version. 0 is before every change.
type Version int64

// Change is a token as one committed change left it: everything the
// index keeps of it, and the version of the change.
type Change struct {
	Version   Version
	ID        string
	Name      string
	User      string
	Hash      [32]byte  // token.Hash of the whole token string
	ExpiresAt time.Time // zero: never expires
	Revoked   bool

	// The token's rules, parsed: AllowedIPs nil for any address,
	// CompiledScope nil for unrestricted, RateLimit zero for none set.
	// Scope is the canonical form CompiledScope was compiled from; tokens
	// whose rules encode alike share one copy of them.
	AllowedIPs    []netip.Prefix
	Scope         policy.Scope
	CompiledScope *policy.CompiledScope
	RateLimit     policy.Rate
}

// Batch is what a Feed returns: changes in version order, the version to
// ask from next, and, when they may have changed, every group membership.
type Batch struct {
	Changes []Change
	// Next is the version the next Changes call should start from: at
	// least the greatest Version in Changes.
	Next Version
	// Members maps a user key (strings.ToLower of the user) to the
	// sorted names of the user's groups, as in Members.Replace; nil: the
	// memberships did not change.
	Members map[string][]string
}

// ErrResync is what Feed.Changes returns when it cannot serve since: the
// Follower then loads a Snapshot.
var ErrResync = errors.New("token feed cannot serve changes since that version")

// Feed is what a backend provides for a Follower; see the package doc for
// what it must guarantee.
type Feed interface {
	// Changes returns, in version order, every token whose newest
	// committed change is after since (at least that newest change), or
	// ErrResync.
	Changes(ctx context.Context, since Version) (Batch, error)
	// Snapshot returns every token and membership as of one moment, with
	// Next the version of that moment.
	Snapshot(ctx context.Context) (Batch, error)
}

// Waker is a Feed that can say something changed before the Follower's
// next poll. Wake returns a channel that receives a value then; nil: it
// cannot tell.
type Waker interface {
	Wake() <-chan struct{}
}

// Follower applies a Feed's changes to an Index and its Members. Its
// methods are not safe for concurrent use; the Index and Members are.
type Follower struct {
	feed    Feed
	index   *Index
	members *Members
	since   Version
	synced  bool // a Snapshot or Changes has been applied since NewFollower
}

// NewFollower returns a Follower that applies feed's changes after since to
// index and members. since 0 (or a version the feed no longer serves)
// makes the first Sync load a Snapshot.
func NewFollower(feed Feed, index *Index, members *Members, since Version) *Follower {
	return &Follower{feed: feed, index: index, members: members, since: since}
}

// Version returns the version up to which the Follower has applied
// changes: what to give NewFollower to start again where it stopped.
func (f *Follower) Version() Version { return f.since }

// Sync applies the changes committed since the last call, or loads a
// Snapshot on the first call from version 0 and when the feed answers
// ErrResync. On an error nothing is applied and the next call asks again.
//
// The members' write lock (see Members) is held across the read and the
// apply, so that a membership change a store method commits meanwhile is
// not undone by an older read.
func (f *Follower) Sync(ctx context.Context) error {
	return f.members.reload(func() (map[string][]string, error) {
		var (
			b   Batch
			err error
		)
		resync := f.since == 0 && !f.synced
		if !resync {
			b, err = f.feed.Changes(ctx, f.since)
			if errors.Is(err, ErrResync) {
				resync = true
			}
		}
		if resync {
			b, err = f.feed.Snapshot(ctx)
			if err != nil {
				return nil, err
			}
			f.index.replace(b.Changes)
		} else {
			if err != nil {
				return nil, err
			}
			f.index.Apply(b.Changes...)
		}
		if resync {
			f.since = b.Next
		} else {
			f.since = max(f.since, b.Next)
		}
		f.synced = true
		return b.Members, nil
	})
}

// Run calls Sync every interval, and whenever the feed wakes it (see
// Waker), until ctx is done; after each call but the one ctx ended, it
// calls after with Sync's error.
func (f *Follower) Run(ctx context.Context, interval time.Duration, after func(error)) {
	var wake <-chan struct{}
	if w, ok := f.feed.(Waker); ok {
		wake = w.Wake()
	}
	tick := time.NewTicker(interval)
	defer tick.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-tick.C:
		case <-wake:
		}
		err := f.Sync(ctx)
		if ctx.Err() != nil {
			return
		}
		after(err)
	}
}
