package tokenindex

import (
	"crypto/sha256"
	"crypto/subtle"
	"errors"
	"fmt"
	"sync"
	"time"

	"github.com/apitoken/caddy-apitoken/internal/keytable"
	"github.com/apitoken/caddy-apitoken/storage"
	"github.com/apitoken/caddy-apitoken/token"
)

// The index keeps every token, revoked ones included, for LookupID. It is
// laid out for traffic spread over many tokens, where each token's own data
// is a cache miss: a look-up reads one slot of the id table (a keytable,
// whose array holds no pointers), and the token's entry, one cache line;
// what the entry points to is shared by many tokens and stays in the caches
// (see interned). tokenstore's BenchmarkLookupSpread measures it.

// entry is what the index keeps of one token: exactly one cache line
// (TestEntryLayout). What many tokens have in common, their owner,
// revocation and rules, is behind shared. The change's version, which only
// Apply needs, is kept apart (chunk.versions).
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
	entries  [chunkLen]entry
	versions [chunkLen]Version // of each entry's change; newer ones replace it
}

// Index holds every token, revoked ones included, in memory, for LookupID.
// Changes reach it through Apply, from a Follower or from the backend's own
// write methods. The zero value is ready to use; an Index must not be
// copied once used.
type Index struct {
	mu     sync.RWMutex
	ids    keytable.Table[int32] // token.Key → position in chunks
	odd    map[string]int32      // ids without a key (see token.Key), which no token can carry
	chunks []*chunk
	n      int32 // positions in use

	interned // the tables of shared values, also guarded by mu
}

// find returns the position of the token with the given id.
func (ix *Index) find(id string) (int32, bool) {
	key, ok := token.Key(id)
	if !ok {
		// Only a row written by other means than a store can have such
		// an id; token.Parse refuses its tokens, so LookupID never asks,
		// but CountByState counts it.
		pos, found := ix.odd[id]
		return pos, found
	}
	return ix.ids.Get(key)
}

func (ix *Index) at(pos int32) (*entry, *Version) {
	c := ix.chunks[pos>>chunkBits]
	i := pos & (chunkLen - 1)
	return &c.entries[i], &c.versions[i]
}

// add returns a new position.
func (ix *Index) add() int32 {
	pos := ix.n
	if int(pos>>chunkBits) == len(ix.chunks) {
		ix.chunks = append(ix.chunks, new(chunk))
	}
	ix.n++
	return pos
}

// Apply stores the given changes, skipping any whose version is not newer
// than the one the index holds for that token: a change may arrive twice
// (from a store's write method and from its Follower), or late, and
// applying it again or after a newer one changes nothing. A batch becomes
// visible to LookupID all at once. A change whose ID is not token.IDLen
// long is ignored: no token could name it.
func (ix *Index) Apply(changes ...Change) {
	ix.mu.Lock()
	defer ix.mu.Unlock()
	ix.apply(changes)
}

func (ix *Index) apply(changes []Change) {
	if ix.odd == nil {
		ix.ids = keytable.Make[int32](len(changes))
		ix.odd = make(map[string]int32)
	}
	for i := range changes {
		c := &changes[i]
		if len(c.ID) != token.IDLen {
			continue
		}
		pos, found := ix.find(c.ID)
		if found {
			if _, v := ix.at(pos); *v >= c.Version {
				continue
			}
		}
		sh := ix.intern(c) // before release: an unchanged token keeps its shared value
		if found {
			e, _ := ix.at(pos)
			ix.release(e.shared)
		} else {
			pos = ix.add()
			if key, ok := token.Key(c.ID); ok {
				ix.ids.Put(key, pos)
			} else {
				ix.odd[c.ID] = pos
			}
		}
		e, v := ix.at(pos)
		idName := e.idName
		if idName == "" || idName[token.IDLen:] != c.Name {
			idName = c.ID + c.Name
		}
		*e = entry{hash: c.Hash, idName: idName, shared: sh, expires: c.ExpiresAt.UnixMilli()}
		*v = c.Version
	}
}

// replace makes ix hold exactly the given changes, as one step for
// LookupID: what a resynchronisation does (see Follower).
func (ix *Index) replace(changes []Change) {
	var fresh Index
	fresh.apply(changes)
	ix.mu.Lock()
	defer ix.mu.Unlock()
	ix.ids, ix.odd, ix.chunks, ix.n, ix.interned = fresh.ids, fresh.odd, fresh.chunks, fresh.n, fresh.interned
}

// missEntry is what a look-up of an unknown id compares against, so that a
// miss costs what a hit costs and response times don't tell an attacker
// which ids exist (basicauth's fakePassword does the same). No token
// hashes to its hash.
var missEntry = entry{hash: sha256.Sum256([]byte("tokenstore: no token has this id"))}

// LookupID finds the token that secret, a full token string, names; id
// must be what token.Parse(secret) or token.ParseShape(secret) returned.
// It reports false for an unknown id or a wrong secret, and true, with the
// token's facts and rules, for a known token, whether active, expired or
// revoked: judging those is the caller's business. It does not allocate,
// and its comparison of the secret is constant-time. A token it finds has
// a valid checksum, whichever parsed it, since its whole string hashes to
// a stored token's.
func (ix *Index) LookupID(id, secret string) (storage.Entry, bool) {
	sum := token.Hash(secret)

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
		return storage.Entry{}, false
	}
	// e.export(), by hand: it is just too large to be inlined
	// (BenchmarkLookupHit).
	// A shared value never changes once made (only the index's count of
	// references to it does, under the write lock), so it can be read
	// without the lock.
	out := e.shared.Entry
	// From idName, not from the id LookupID was given: that one is a
	// substring of the secret token, which the caller should be free to
	// forget.
	out.ID, out.Name = e.idName[:token.IDLen], e.idName[token.IDLen:]
	out.Key = key
	out.ExpiresAt = fromMillis(e.expires)
	return out, true
}

// Get returns what the index holds for id, without a secret, and the
// version of the change it came from: for tests and diagnostics, never for
// authentication.
func (ix *Index) Get(id string) (storage.Entry, Version, bool) {
	ix.mu.RLock()
	defer ix.mu.RUnlock()
	pos, ok := ix.find(id)
	if !ok {
		return storage.Entry{}, 0, false
	}
	e, v := ix.at(pos)
	return e.export(), *v, true
}

// export returns the Entry that e stands for, as LookupID does by hand
// (TestLookupExport).
func (e *entry) export() storage.Entry {
	out := e.shared.Entry
	out.ID, out.Name = e.idName[:token.IDLen], e.idName[token.IDLen:]
	out.Key, _ = token.Key(out.ID)
	out.ExpiresAt = fromMillis(e.expires)
	return out
}

func fromMillis(ms int64) time.Time { return time.UnixMilli(ms).UTC() }

// CountByState returns how many tokens are in each state at now. Every
// state has a key, with 0 if no token is in it.
func (ix *Index) CountByState(now time.Time) map[storage.State]int {
	counts := map[storage.State]int{storage.StateActive: 0, storage.StateExpired: 0, storage.StateRevoked: 0}
	ix.mu.RLock()
	defer ix.mu.RUnlock()
	for pos := range ix.n {
		e, _ := ix.at(pos)
		counts[storage.Entry{Revoked: e.shared.Revoked, ExpiresAt: fromMillis(e.expires)}.State(now)]++
	}
	return counts
}

// Check checks the index's reference counts against its entries: each
// shared value is counted once per entry pointing to it, each rule set
// once per shared value, and the tables hold exactly the values in use.
// It returns how many shared values and rule sets the index keeps. It is
// for tests.
func (ix *Index) Check() (nShared, nRules int, err error) {
	ix.mu.RLock()
	defer ix.mu.RUnlock()
	var errs []error
	refs := make(map[*shared]int)
	for pos := range ix.n {
		e, _ := ix.at(pos)
		refs[e.shared]++
	}
	ruleRefs := make(map[*ruleSet]int)
	for sh, n := range refs {
		if sh.refs != n {
			errs = append(errs, fmt.Errorf("shared value of %q has refs %d, want %d", sh.User, sh.refs, n))
		}
		if ix.shared[sh.key] != sh {
			errs = append(errs, fmt.Errorf("shared value of %q in use but not in the table", sh.User))
		}
		ruleRefs[sh.key.rules]++
	}
	if len(ix.shared) != len(refs) {
		errs = append(errs, fmt.Errorf("%d shared values in the table, %d in use", len(ix.shared), len(refs)))
	}
	for rs, n := range ruleRefs {
		if rs.refs != n {
			errs = append(errs, fmt.Errorf("rule set has refs %d, want %d", rs.refs, n))
		}
		if ix.rules[rs.key] != rs {
			errs = append(errs, errors.New("rule set in use but not in the table"))
		}
	}
	if len(ix.rules) != len(ruleRefs) {
		errs = append(errs, fmt.Errorf("%d rule sets in the table, %d in use", len(ix.rules), len(ruleRefs)))
	}
	return len(ix.shared), len(ix.rules), errors.Join(errs...)
}
