package feedtest

import (
	"cmp"
	"context"
	"fmt"
	"slices"
	"sync"
	"testing"

	"github.com/apitoken/caddy-apitoken/token"
	"github.com/apitoken/caddy-apitoken/tokenindex"
)

// memBackend is a store in memory whose feed keeps the contract, unless
// broken says how not to.
type memBackend struct {
	mu      sync.Mutex
	version tokenindex.Version
	tokens  map[string]tokenindex.Change // newest change of each token
	broken  string                       // "", "reorder", "skip", "no resync", "stale raw"
}

func newMem(broken string) *memBackend {
	return &memBackend{tokens: map[string]tokenindex.Change{}, broken: broken}
}

func (m *memBackend) Feed() tokenindex.Feed { return m }

func (m *memBackend) Changes(_ context.Context, since tokenindex.Version) (tokenindex.Batch, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	if since > m.version && m.broken != "no resync" {
		return tokenindex.Batch{}, tokenindex.ErrResync
	}
	b := tokenindex.Batch{Next: max(since, m.version)}
	for _, c := range m.tokens {
		if c.Version > since {
			b.Changes = append(b.Changes, c)
		}
	}
	slices.SortFunc(b.Changes, func(x, y tokenindex.Change) int { return cmp.Compare(x.Version, y.Version) })
	switch m.broken {
	case "reorder":
		slices.Reverse(b.Changes)
	case "skip":
		if len(b.Changes) > 1 {
			b.Changes = b.Changes[:len(b.Changes)-1]
		}
	}
	return b, nil
}

func (m *memBackend) Snapshot(ctx context.Context) (tokenindex.Batch, error) {
	m.mu.Lock()
	v := m.version
	m.mu.Unlock()
	b, err := m.Changes(ctx, 0)
	b.Next = v
	return b, err
}

// commit stores c as a new version, or, for a raw change of a "stale raw"
// backend, without one.
func (m *memBackend) commit(c tokenindex.Change, raw bool) {
	m.mu.Lock()
	defer m.mu.Unlock()
	if !raw || m.broken != "stale raw" {
		m.version++
		c.Version = m.version
	}
	m.tokens[c.ID] = c
}

func (m *memBackend) Create(_ context.Context, user, name string) (string, string, error) {
	id, secret, err := token.Generate(token.DefaultPrefix)
	if err != nil {
		return "", "", err
	}
	m.commit(tokenindex.Change{ID: id, User: user, Name: name, Hash: token.Hash(secret)}, false)
	return id, secret, nil
}

func (m *memBackend) change(id string, raw bool, f func(*tokenindex.Change)) error {
	m.mu.Lock()
	c, ok := m.tokens[id]
	m.mu.Unlock()
	if !ok {
		return fmt.Errorf("no token %s", id)
	}
	f(&c)
	m.commit(c, raw)
	return nil
}

func (m *memBackend) Rename(_ context.Context, id, name string) error {
	return m.change(id, false, func(c *tokenindex.Change) { c.Name = name })
}

func (m *memBackend) Revoke(_ context.Context, id string) error {
	return m.change(id, false, func(c *tokenindex.Change) { c.Revoked = true })
}

func (m *memBackend) RawRename(_ context.Context, id, name string) error {
	return m.change(id, true, func(c *tokenindex.Change) { c.Name = name })
}

// TestMemoryFeed: a feed that keeps the contract passes the suite.
func TestMemoryFeed(t *testing.T) {
	Run(t, func(*testing.T) Backend { return newMem("") })
}

// TestBrokenFeeds: the suite can fail. Each broken feed fails the checks
// named, and only those.
func TestBrokenFeeds(t *testing.T) {
	tests := []struct {
		broken string
		fails  []string
	}{
		{"reorder", []string{"order"}},
		{"skip", []string{"order", "restart", "resync"}},
		{"no resync", []string{"resync"}},
		{"stale raw", []string{"raw change"}},
	}
	for _, tt := range tests {
		t.Run(tt.broken, func(t *testing.T) {
			var failed []string
			for _, c := range Checks {
				if err := c.Run(t.Context(), newMem(tt.broken)); err != nil {
					t.Logf("%s: %v", c.Name, err)
					failed = append(failed, c.Name)
				}
			}
			if !slices.Equal(failed, tt.fails) {
				t.Errorf("failed checks %q, want %q", failed, tt.fails)
			}
		})
	}
}
