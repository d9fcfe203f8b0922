package tokenstore

import (
	"context"
	"crypto/sha256"
	"crypto/subtle"
	"database/sql"
	"fmt"
	"net/netip"
	"sync"
	"time"

	"github.com/apitoken/caddy-apitoken/policy"
)

// Entry is what Lookup knows about a token: enough for the gateway to decide,
// nothing secret. The rules are parsed once, when the token's row is written
// or read, and shared by every Entry for that version of the row: callers
// must not modify AllowedIPs or the scope.
type Entry struct {
	ID        string
	User      string
	UserKey   string // strings.ToLower(User), for policy.Holders.Check and GroupsOf
	Name      string
	ExpiresAt time.Time // zero: never expires
	Revoked   bool

	AllowedIPs []netip.Prefix        // nil: any client address (policy.CheckIP)
	Scope      *policy.CompiledScope // nil: unrestricted
	RateLimit  policy.Rate           // zero: none set, the gate's default applies
}

// State returns the entry's state at now, as Token.State does.
func (e Entry) State(now time.Time) State {
	return state(e.Revoked, e.ExpiresAt, now)
}

// entry is the in-memory form of a token row.
type entry struct {
	Entry // what Lookup returns
	hash  [sha256.Size]byte
	seq   int64 // the row's seq when read; newer versions replace it
}

// index holds every token, revoked ones included, by id.
type index struct {
	mu sync.RWMutex
	m  map[string]entry
}

// apply stores the given rows, skipping any that is not newer than what the
// index holds: the poller and the write methods may both deliver a row.
func (ix *index) apply(recs ...record) {
	ix.mu.Lock()
	defer ix.mu.Unlock()
	for _, r := range recs {
		if cur, ok := ix.m[r.ID]; ok && cur.seq >= r.seq {
			continue
		}
		ix.m[r.ID] = entry{
			Entry: Entry{
				ID:         r.ID,
				User:       r.User,
				UserKey:    userKey(r.User),
				Name:       r.Name,
				ExpiresAt:  r.ExpiresAt,
				Revoked:    !r.RevokedAt.IsZero(),
				AllowedIPs: r.rules.prefixes,
				Scope:      r.rules.scope,
				RateLimit:  r.rules.rate,
			},
			hash: r.hash,
			seq:  r.seq,
		}
	}
}

// missHash is compared against when no token has the presented id, so that a
// miss costs what a hit costs and response times don't tell an attacker which
// ids exist (basicauth's fakePassword does the same). No token hashes to it.
var missHash = sha256.Sum256([]byte("tokenstore: no token has this id"))

// Lookup finds the token that the full token string names, from memory only.
// It reports false for a malformed token, an unknown id or a wrong secret,
// and true, with the token's facts and rules, for a known token, whether
// active, expired or revoked: judging those is the caller's business
// (Entry.State, the policy package). Lookup does not allocate or touch the
// database, and its comparison of the secret is constant-time.
func (s *Store) Lookup(token string) (Entry, bool) {
	id, ok := Parse(token)
	if !ok {
		return Entry{}, false
	}
	return s.LookupID(id, token)
}

// LookupID is Lookup for a caller that has already parsed the token: id
// must be what Parse(token) returned. It costs what Lookup costs, less the
// parse, and has the same guarantees.
func (s *Store) LookupID(id, token string) (Entry, bool) {
	sum := Hash(token)

	s.index.mu.RLock()
	e, found := s.index.m[id]
	s.index.mu.RUnlock()

	want := &missHash
	if found {
		want = &e.hash
	}
	match := subtle.ConstantTimeCompare(sum[:], want[:]) == 1
	if !found || !match {
		return Entry{}, false
	}
	// e.ID, not id: id is a substring of the secret token, which the caller
	// should be free to forget.
	return e.Entry, true
}

// CountByState returns how many tokens are in each state at now, from
// memory, for metrics. Every state has a key, with 0 if no token is in it.
// Tokens written by other processes count once the poller has seen them.
func (s *Store) CountByState(now time.Time) map[State]int {
	counts := map[State]int{StateActive: 0, StateExpired: 0, StateRevoked: 0}
	s.index.mu.RLock()
	defer s.index.mu.RUnlock()
	for _, e := range s.index.m {
		counts[e.State(now)]++
	}
	return counts
}

// poller copies rows changed by any connection, including other processes',
// into the index. It holds one reader connection, asks PRAGMA data_version
// (which changes when another connection commits), and reads the rows whose
// seq is above the highest it has seen. Writers assign seq = MAX(seq)+1 under
// the write lock, so seq grows in commit order and nothing is skipped.
//
// Group memberships have no seq, and a removal leaves no row to find, so on
// every change the poller reloads the whole group_members table (it is
// small) and swaps the membership index; see memberIndex.reload.
type poller struct {
	store   *Store
	onError func(error)

	conn        *sql.Conn // nil after an error: reconnect on the next tick
	dataVersion int64     // as of the last successful read; -1 forces a read
	lastSeq     int64
}

// run polls every interval until ctx is done, then releases the connection.
func (p *poller) run(ctx context.Context, interval time.Duration) {
	defer p.close()
	tick := time.NewTicker(interval)
	defer tick.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-tick.C:
		}
		if err := p.poll(ctx); err != nil && ctx.Err() == nil && p.onError != nil {
			p.onError(fmt.Errorf("polling token store %s: %w", p.store.path, err))
		}
	}
}

// poll applies the changes committed since the last call, if any. The first
// call loads every row and every membership.
func (p *poller) poll(ctx context.Context) error {
	if p.conn == nil {
		conn, err := p.store.reader.Conn(ctx)
		if err != nil {
			return err
		}
		p.conn, p.dataVersion = conn, -1 // data_version is per connection
	}
	var dv int64
	if err := p.conn.QueryRowContext(ctx, `PRAGMA data_version`).Scan(&dv); err != nil {
		p.close()
		return fmt.Errorf("reading data version: %w", err)
	}
	if dv == p.dataVersion {
		return nil
	}
	recs, err := changedRecords(ctx, p.conn, p.lastSeq)
	if err != nil {
		p.close()
		return err
	}
	p.store.index.apply(recs...)
	for _, r := range recs {
		p.lastSeq = max(p.lastSeq, r.seq)
	}
	err = p.store.members.reload(func() (map[string][]string, error) {
		return loadMemberships(ctx, p.conn)
	})
	if err != nil {
		p.close()
		return fmt.Errorf("loading group members: %w", err)
	}
	p.dataVersion = dv
	return nil
}

func (p *poller) close() {
	if p.conn != nil {
		p.conn.Close()
		p.conn = nil
	}
}
