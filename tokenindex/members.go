package tokenindex

import (
	"slices"
	"sync"
)

// Members maps a user key to the sorted names of the user's groups, for a
// store's GroupsOf. A published slice is never changed: every change builds
// a new one (copy-on-write), so readers can keep what they got without
// copying. The zero value is ready to use.
//
// Members must not let a removed membership come back. Two kinds of change
// reach it: a store method's commit followed by its update of one user's
// list (Commit), and a Follower's read of every membership followed by a
// swap of the map. If a Follower read the memberships before a removal
// committed and swapped after the removal had updated Members, the stale
// snapshot would bring the membership back until the next read; and two
// store methods could apply their updates in the opposite order of their
// commits. So sync is held across each of those pairs: every commit with
// its update, every read with its swap. Members then always equals the
// stored memberships as of some moment, give or take commits not yet
// followed, and the lock is never held while waiting for a write lock
// (only while committing an already written transaction).
type Members struct {
	sync sync.Mutex   // orders the changes; see above
	mu   sync.RWMutex // guards m
	m    map[string][]string
}

// GroupsOf returns the groups of the user with key, sorted; the caller
// must not modify the slice.
func (ix *Members) GroupsOf(key string) []string {
	ix.mu.RLock()
	defer ix.mu.RUnlock()
	return ix.m[key]
}

// Commit calls commit, which commits a transaction that made the user with
// key a member of group or not, and then, if it succeeded, makes Members
// say the same.
func (ix *Members) Commit(commit func() error, key, group string, member bool) error {
	ix.sync.Lock()
	defer ix.sync.Unlock()
	if err := commit(); err != nil {
		return err
	}
	ix.set(key, group, member)
	return nil
}

// set makes the user with key a member of group or not, building a new
// slice for that user.
func (ix *Members) set(key, group string, member bool) {
	ix.mu.Lock()
	defer ix.mu.Unlock()
	if ix.m == nil {
		ix.m = make(map[string][]string)
	}
	cur := ix.m[key]
	i, found := slices.BinarySearch(cur, group)
	switch {
	case member && !found:
		next := make([]string, 0, len(cur)+1)
		next = append(next, cur[:i]...)
		next = append(next, group)
		next = append(next, cur[i:]...)
		ix.m[key] = next
	case !member && found && len(cur) == 1:
		delete(ix.m, key)
	case !member && found:
		next := make([]string, 0, len(cur)-1)
		next = append(next, cur[:i]...)
		next = append(next, cur[i+1:]...)
		ix.m[key] = next
	}
}

// Reload replaces every membership with what load returns, holding the
// lock that Commit holds across both; a nil map from load keeps the
// memberships as they are. The slices in the map must be sorted, and
// clipped (slices.Clip) so that a reader's append copies.
func (ix *Members) Reload(load func() (map[string][]string, error)) error {
	return ix.reload(load)
}

func (ix *Members) reload(load func() (map[string][]string, error)) error {
	ix.sync.Lock()
	defer ix.sync.Unlock()
	m, err := load()
	if err != nil || m == nil {
		return err
	}
	ix.mu.Lock()
	defer ix.mu.Unlock()
	ix.m = m
	return nil
}
