package tokenstore

import (
	"context"
	"crypto/sha256"
	"crypto/subtle"
	"database/sql"
	"fmt"
	"sync"
	"time"

	"github.com/apitoken/caddy-apitoken/internal/keytable"
	"github.com/apitoken/caddy-apitoken/storage"
	"github.com/apitoken/caddy-apitoken/token"
)

// The index keeps every token, revoked ones included, for Lookup. It is laid
// out for traffic spread over many tokens, where each token's own data is a
// cache miss: a look-up reads one slot of the id table (a keytable, whose
// array holds no pointers), and the token's entry, one cache line; what
// the entry points to is shared by many tokens and stays in the caches
// (see interned).
// BenchmarkLookupSpread measures it.

// entry is what the index keeps of one token: exactly one cache line
// (TestEntryLayout). What many tokens have in common, their owner,
// revocation and rules, is behind shared. The row's seq, which only
// writes need, is kept apart (chunk.seqs).
type entry struct {
	hash    [sha256.Size]byte // of the whole token string
	idName  string            // ID followed by Name: one allocation, one header
	shared  *shared           // the rest of the Entry
	expires int64             // ExpiresAt in Unix milliseconds (the zero time's for none)
}

// chunkLen is how many entries a chunk holds. A chunk is a large
// allocation, which starts on a page boundary, so every entry starts a
// cache line; and a growing index never copies entries.
const (
	chunkBits = 10
	chunkLen  = 1 << chunkBits
)

type chunk struct {
	entries [chunkLen]entry
	seqs    [chunkLen]int64 // each row's seq when read; newer versions replace it
}

// index holds every token, revoked ones included. The zero value is ready
// to use.
type index struct {
	mu     sync.RWMutex
	ids    keytable.Table[int32] // token.Key → position in chunks
	odd    map[string]int32      // ids without a key (see token.Key), which no token can carry
	chunks []*chunk
	n      int32 // positions in use

	interned // the tables of shared values, also guarded by mu
}

// find returns the position of the token with the given id.
func (ix *index) find(id string) (int32, bool) {
	key, ok := token.Key(id)
	if !ok {
		// Only a row written by other means than this package can
		// have such an id; token.Parse refuses its tokens, so LookupID
		// never asks, but CountByState counts it.
		pos, found := ix.odd[id]
		return pos, found
	}
	return ix.ids.Get(key)
}

func (ix *index) at(pos int32) (*entry, *int64) {
	c := ix.chunks[pos>>chunkBits]
	i := pos & (chunkLen - 1)
	return &c.entries[i], &c.seqs[i]
}

// add returns a new position.
func (ix *index) add() int32 {
	pos := ix.n
	if int(pos>>chunkBits) == len(ix.chunks) {
		ix.chunks = append(ix.chunks, new(chunk))
	}
	ix.n++
	return pos
}

// apply stores the given rows, skipping any that is not newer than what the
// index holds: the poller and the write methods may both deliver a row. A
// batch becomes visible to Lookup all at once.
func (ix *index) apply(recs ...record) {
	ix.mu.Lock()
	defer ix.mu.Unlock()
	if ix.odd == nil {
		ix.ids = keytable.Make[int32](len(recs))
		ix.odd = make(map[string]int32)
	}
	for i := range recs {
		r := &recs[i]
		if len(r.ID) != token.IDLen {
			continue // kept out by the schema's CHECK; no token could name it
		}
		pos, found := ix.find(r.ID)
		if found {
			if _, seq := ix.at(pos); *seq >= r.seq {
				continue
			}
		}
		sh := ix.intern(r) // before release: an unchanged token keeps its shared value
		if found {
			e, _ := ix.at(pos)
			ix.release(e.shared)
		} else {
			pos = ix.add()
			if key, ok := token.Key(r.ID); ok {
				ix.ids.Put(key, pos)
			} else {
				ix.odd[r.ID] = pos
			}
		}
		e, seq := ix.at(pos)
		idName := e.idName
		if idName == "" || idName[token.IDLen:] != r.Name {
			idName = r.ID + r.Name
		}
		*e = entry{hash: r.hash, idName: idName, shared: sh, expires: r.ExpiresAt.UnixMilli()}
		*seq = r.seq
	}
}

// missEntry is what a look-up of an unknown id compares against, so that a
// miss costs what a hit costs and response times don't tell an attacker
// which ids exist (basicauth's fakePassword does the same). No token
// hashes to its hash.
var missEntry = entry{hash: sha256.Sum256([]byte("tokenstore: no token has this id"))}

// Lookup finds the token that secret, a full token string, names, from
// memory only.
// It reports false for a malformed token, an unknown id or a wrong secret,
// and true, with the token's facts and rules, for a known token, whether
// active, expired or revoked: judging those is the caller's business
// (Entry.State, the policy package). Lookup does not allocate or touch the
// database, and its comparison of the secret is constant-time.
func (s *Store) Lookup(secret string) (Entry, bool) {
	id, ok := token.Parse(secret)
	if !ok {
		return Entry{}, false
	}
	return s.LookupID(id, secret)
}

// LookupID is Lookup for a caller that has already parsed the token: id
// must be what token.Parse(secret) or token.ParseShape(secret) returned.
// It costs what Lookup costs, less the parse, and has the same guarantees:
// in particular, a token it finds has a valid checksum, whichever parsed
// it, since its whole string hashes to a stored token's.
func (s *Store) LookupID(id, secret string) (Entry, bool) {
	sum := token.Hash(secret)
	ix := &s.index

	key, valid := token.Key(id) // always valid from token.Parse
	ix.mu.RLock()
	pos, found := ix.ids.Get(key)
	found = found && valid
	p := &missEntry
	if found {
		p, _ = ix.at(pos)
	}
	e := *p
	ix.mu.RUnlock()

	// Compared whether found or not, in time that does not depend on the
	// bytes compared.
	if match := subtle.ConstantTimeCompare(sum[:], e.hash[:]) == 1; !found || !match {
		return Entry{}, false
	}
	// e.export(), by hand: it is just too large to be inlined, and this
	// is the hot path (BenchmarkLookupHit).
	// A shared value never changes once made (only the index's count of
	// references to it does, under the write lock), so it can be read
	// without the lock.
	out := e.shared.Entry
	// From idName, not from the id Lookup was given: that one is a
	// substring of the secret token, which the caller should be free to
	// forget.
	out.ID, out.Name = e.idName[:token.IDLen], e.idName[token.IDLen:]
	out.Key = key
	out.ExpiresAt = fromMillis(e.expires)
	return out, true
}

// export returns the Entry that e stands for, as LookupID does by hand
// (TestLookupExport).
func (e *entry) export() Entry {
	out := e.shared.Entry
	out.ID, out.Name = e.idName[:token.IDLen], e.idName[token.IDLen:]
	out.Key, _ = token.Key(out.ID)
	out.ExpiresAt = fromMillis(e.expires)
	return out
}

// CountByState returns how many tokens are in each state at now, from
// memory, for metrics. Every state has a key, with 0 if no token is in it.
// Tokens written by other processes count once the poller has seen them.
func (s *Store) CountByState(now time.Time) map[State]int {
	counts := map[State]int{StateActive: 0, StateExpired: 0, StateRevoked: 0}
	ix := &s.index
	ix.mu.RLock()
	defer ix.mu.RUnlock()
	for pos := range ix.n {
		e, _ := ix.at(pos)
		counts[storage.StateAt(e.shared.Revoked, fromMillis(e.expires), now)]++
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
	store       *Store
	onError     func(error)
	onRecovered func(stale time.Duration, failures int)

	conn        *sql.Conn // nil after an error: reconnect on the next tick
	dataVersion int64     // as of the last successful read; -1 forces a read
	lastSeq     int64
	failures    int // polls failed since the last success
}

// run polls every interval until ctx is done, then releases the connection.
// While the writer finds the file read-only, each tick also tries to
// reopen it (see Store.ReadOnly).
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
		err := p.poll(ctx)
		if ctx.Err() != nil {
			return
		}
		p.report(err)
		if p.store.readOnly.Load() {
			_ = p.store.reopenWriter(ctx) // a write says why, if it still can't
		}
	}
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
