//go:build cgo

package tokenstore

import (
	"context"
	"database/sql"
	"testing"

	"github.com/apitoken/caddy-apitoken/tokenindex"
	"github.com/apitoken/caddy-apitoken/tokenindex/feedtest"
)

// sqliteBackend runs the feed contract suite against a Store and its file.
type sqliteBackend struct {
	s   *Store
	raw *sql.DB
}

func (b sqliteBackend) Feed() tokenindex.Feed {
	f := &feed{db: b.s.reader}
	return closingFeed{f}
}

// closingFeed releases the feed's connection after each call, so that
// the suite's many feeds do not hold the reader pool.
type closingFeed struct{ f *feed }

func (c closingFeed) Changes(ctx context.Context, since tokenindex.Version) (tokenindex.Batch, error) {
	defer c.f.close()
	return c.f.Changes(ctx, since)
}

func (c closingFeed) Snapshot(ctx context.Context) (tokenindex.Batch, error) {
	defer c.f.close()
	return c.f.Snapshot(ctx)
}

func (b sqliteBackend) Create(ctx context.Context, user, name string) (string, string, error) {
	tok, secret, err := b.s.Create(ctx, NewToken{User: user, Name: name}, nil)
	return tok.ID, secret, err
}

func (b sqliteBackend) Rename(ctx context.Context, id, name string) error {
	_, err := b.s.Update(ctx, id, Patch{Name: &name}, nil)
	return err
}

func (b sqliteBackend) Revoke(ctx context.Context, id string) error {
	_, _, err := b.s.Revoke(ctx, id, nil)
	return err
}

// RawRename bumps seq as the schema asks of any write to a row
// (0001_tokens.sql).
func (b sqliteBackend) RawRename(ctx context.Context, id, name string) error {
	_, err := b.raw.ExecContext(ctx,
		`UPDATE tokens SET name = ?, seq = (SELECT MAX(seq) + 1 FROM tokens) WHERE id = ?`, name, id)
	return err
}

// TestFeedContract runs the contract suite on SQLite.
func TestFeedContract(t *testing.T) {
	feedtest.Run(t, func(t *testing.T) feedtest.Backend {
		s, _, path := newTestStore(t)
		return sqliteBackend{s: s, raw: rawDB(t, path)}
	})
}
