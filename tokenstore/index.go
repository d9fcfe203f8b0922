package tokenstore

import (
	"context"
	"fmt"
	"time"

	"github.com/apitoken/caddy-apitoken/storage"
	"github.com/apitoken/caddy-apitoken/token"
	"github.com/apitoken/caddy-apitoken/tokenindex"
)

// Lookup finds the token that secret, a full token string, names, from
// memory only.
// It reports false for a malformed token, an unknown id or a wrong secret,
// and true, with the token's facts and rules, for a known token, whether
// active, expired or revoked: judging those is the caller's business
// (storage.Entry.State, the policy package). Lookup does not allocate or touch the
// database, and its comparison of the secret is constant-time.
func (s *Store) Lookup(secret string) (storage.Entry, bool) {
	id, ok := token.Parse(secret)
	if !ok {
		return storage.Entry{}, false
	}
	return s.LookupID(id, secret)
}

// LookupID is Lookup for a caller that has already parsed the token: id
// must be what token.Parse(secret) or token.ParseShape(secret) returned.
// It costs what Lookup costs, less the parse, and has the same guarantees:
// in particular, a token it finds has a valid checksum, whichever parsed
// it, since its whole string hashes to a stored token's.
func (s *Store) LookupID(id, secret string) (storage.Entry, bool) {
	return s.index.LookupID(id, secret)
}

// CountByState returns how many tokens are in each state at now, from
// memory, for metrics. Every state has a key, with 0 if no token is in it.
// Tokens written by other processes count once the poller has seen them.
func (s *Store) CountByState(now time.Time) map[storage.State]int {
	return s.index.CountByState(now)
}

// poller keeps the index in step with the database, changes made by other
// processes included, through a tokenindex.Follower over a feed, and keeps
// the count of failed polls (see Staleness).
type poller struct {
	store       *Store
	feed        *feed
	follower    *tokenindex.Follower
	onError     func(error)
	onRecovered func(stale time.Duration, failures int)

	failures int // polls failed since the last success
}

func newPoller(s *Store, opts Options) *poller {
	f := &feed{db: s.reader}
	return &poller{
		store:       s,
		feed:        f,
		follower:    tokenindex.NewFollower(f, &s.index, &s.members, 0),
		onError:     opts.OnPollError,
		onRecovered: opts.OnPollRecovered,
	}
}

// run polls every interval until ctx is done, then releases the connection.
// While the writer finds the file read-only, each tick also tries to
// reopen it (see Store.ReadOnly).
func (p *poller) run(ctx context.Context, interval time.Duration) {
	defer p.close()
	p.follower.Run(ctx, interval, func(err error) {
		p.report(err)
		if p.store.readOnly.Load() {
			_ = p.store.reopenWriter(ctx) // a write says why, if it still can't
		}
	})
}

// report keeps the count of failed polls and the time of the last
// successful one (see Staleness), and tells the callbacks.
func (p *poller) report(err error) {
	s := p.store
	if err != nil {
		s.pollFailures.Add(1)
		p.failures++
		if p.onError != nil {
			p.onError(fmt.Errorf("polling token store %s: %w", s.path, err))
		}
		return
	}
	now := s.now()
	if p.failures > 0 && p.onRecovered != nil {
		p.onRecovered(s.Staleness(now), p.failures)
	}
	p.failures = 0
	s.polledAt.Store(now.UnixNano())
}

// Staleness returns how long before now the poller last read the database
// successfully: the age of this store's view of changes made by other
// processes (another Caddy, the CLI, an operator's SQL). While the poller
// works it stays below the poll interval; while polls fail it grows (see
// Options.OnPollError). Changes made through this Store apply at once
// regardless. It is 0 if polling is disabled.
func (s *Store) Staleness(now time.Time) time.Duration {
	at := s.polledAt.Load()
	if at == 0 {
		return 0
	}
	return max(0, now.Sub(time.Unix(0, at)))
}

// PollFailures returns how many polls have failed since Open.
func (s *Store) PollFailures() uint64 { return s.pollFailures.Load() }

// poll applies the changes committed since the last call, if any. The first
// call loads every row and every membership.
func (p *poller) poll(ctx context.Context) error { return p.follower.Sync(ctx) }

func (p *poller) close() { p.feed.close() }
