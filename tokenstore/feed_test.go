//go:build cgo

package tokenstore

import (
	"context"
	"database/sql"
	"slices"
	"testing"
	"time"

	"github.com/apitoken/caddy-apitoken/event"
	"github.com/apitoken/caddy-apitoken/storage"
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
	tok, secret, err := b.s.Create(ctx, storage.NewToken{User: user, Name: name}, nil)
	return tok.ID, secret, err
}

func (b sqliteBackend) Rename(ctx context.Context, id, name string) error {
	_, err := b.s.Update(ctx, id, storage.Patch{Name: &name}, nil)
	return err
}

func (b sqliteBackend) Revoke(ctx context.Context, id string) error {
	_, _, err := b.s.Revoke(ctx, id, nil)
	return err
}

// RawRename leaves seq alone, as an operator's SQL would: the triggers of
// 0006_tokens_seq_trigger.sql bump it.
func (b sqliteBackend) RawRename(ctx context.Context, id, name string) error {
	_, err := b.raw.ExecContext(ctx, `UPDATE tokens SET name = ? WHERE id = ?`, name, id)
	return err
}

// TestFeedContract runs the contract suite on SQLite.
func TestFeedContract(t *testing.T) {
	feedtest.Run(t, func(t *testing.T) feedtest.Backend {
		s, _, path := newTestStore(t)
		return sqliteBackend{s: s, raw: rawDB(t, path)}
	})
}

// TestRawSQLReachesIndex checks that a change made by plain SQL, which
// leaves seq alone or copies one, reaches the index at the next poll.
func TestRawSQLReachesIndex(t *testing.T) {
	ctx := t.Context()
	s, clock, path := newTestStore(t)
	raw := rawDB(t, path)
	a, secretA := mustCreate(t, s, storage.NewToken{User: "alice", Name: "a"})
	b, secretB := mustCreate(t, s, storage.NewToken{User: "bob", Name: "b"}) // holds the highest seq
	p := newPoller(s, Options{})
	defer p.close()
	if err := p.poll(ctx); err != nil { // the first poll loads every row
		t.Fatal(err)
	}
	exec := func(query string, args ...any) {
		t.Helper()
		if _, err := raw.ExecContext(ctx, query, args...); err != nil {
			t.Fatalf("%s: %v", query, err)
		}
		if err := p.poll(ctx); err != nil {
			t.Fatal(err)
		}
	}

	for _, tok := range []struct {
		storage.Token
		secret string
	}{{a, secretA}, {b, secretB}} {
		exec(`UPDATE tokens SET revoked_at = ? WHERE id = ?`, clock.Now().UnixMilli(), tok.ID)
		e, ok := s.LookupID(tok.ID, tok.secret)
		if !ok || e.State(clock.Now()) != storage.StateRevoked {
			t.Errorf("%s revoked by SQL: LookupID = %+v, %v; want it revoked", tok.Name, e, ok)
		}
	}

	// A row copied with its seq, and one inserted with seq 0.
	for _, id := range []string{"copied234567", "zeroseq23456"} {
		exec(`INSERT INTO tokens (id, user, user_key, name, secret_hash, hint, created_at, updated_at, seq)
SELECT ?, user, user_key, ? || name, randomblob(32), hint, created_at, updated_at,
	CASE WHEN ? = 'copied234567' THEN seq ELSE 0 END
FROM tokens WHERE id = ?`, id, id, id, b.ID)
		if _, ok := indexEntry(&s.index, id); !ok {
			t.Errorf("%s inserted by SQL is not in the index", id)
		}
	}

	// Memberships carry no seq: every poll that sees a commit reloads them.
	exec(`INSERT INTO group_members VALUES ('ops', 'carol', 'Carol', 1000)`)
	if got := s.GroupsOf("carol"); !slices.Equal(got, []string{"ops"}) {
		t.Errorf("after an INSERT by SQL: GroupsOf(carol) = %v, want [ops]", got)
	}
	exec(`DELETE FROM group_members WHERE user_key = 'carol'`)
	if got := s.GroupsOf("carol"); len(got) != 0 {
		t.Errorf("after a DELETE by SQL: GroupsOf(carol) = %v, want none", got)
	}
}

// TestOwnWritesKeepTheirSeq checks that the triggers of
// 0006_tokens_seq_trigger.sql leave the store's own writes alone: each
// row written takes the next seq, which the index holds too, and the
// expiry claim and usage flushes bump nothing.
func TestOwnWritesKeepTheirSeq(t *testing.T) {
	ctx := t.Context()
	s, clock, path := newTestStore(t)
	raw := rawDB(t, path)
	top := int64(0)
	check := func(what string, rows int64) {
		t.Helper()
		var got int64
		if err := raw.QueryRowContext(ctx, selectMaxSeq).Scan(&got); err != nil {
			t.Fatal(err)
		}
		if got != top+rows {
			t.Errorf("after %s: MAX(seq) = %d, want %d", what, got, top+rows)
		}
		top = got
		rs, err := raw.QueryContext(ctx, `SELECT id, seq FROM tokens`)
		if err != nil {
			t.Fatal(err)
		}
		defer rs.Close()
		for rs.Next() {
			var id string
			var seq int64
			if err := rs.Scan(&id, &seq); err != nil {
				t.Fatal(err)
			}
			if ix, ok := indexSeq(s, id); !ok || ix != seq {
				t.Errorf("after %s: %s has seq %d, the index %d (%v)", what, id, seq, ix, ok)
			}
		}
		if err := rs.Err(); err != nil {
			t.Fatal(err)
		}
	}
	expires := clock.Now().Add(time.Hour)
	a, _ := mustCreate(t, s, storage.NewToken{User: "alice", Name: "a", ExpiresAt: expires})
	check("Create", 1)
	mustCreate(t, s, storage.NewToken{User: "alice", Name: "b"})
	check("Create", 1)
	if _, _, err := s.CreateBatch(ctx, []storage.NewToken{{User: "bob", Name: "x"}, {User: "bob", Name: "y"}, {User: "bob", Name: "z"}}); err != nil {
		t.Fatal(err)
	}
	check("CreateBatch", 3)
	name := "renamed"
	if _, err := s.Update(ctx, a.ID, storage.Patch{Name: &name}, nil); err != nil {
		t.Fatal(err)
	}
	check("Update", 1)
	if _, _, err := s.Rotate(ctx, a.ID, "", nil); err != nil {
		t.Fatal(err)
	}
	check("Rotate", 1)
	if toks, err := s.ClaimExpiring(ctx, expires.Add(time.Minute)); err != nil || len(toks) != 1 {
		t.Fatalf("ClaimExpiring = %d tokens, %v; want 1", len(toks), err)
	}
	check("ClaimExpiring", 0)
	if err := s.FlushUsage(ctx, []event.Usage{{TokenID: a.ID, LastUsedAt: clock.Now(), LastIP: "192.0.2.1", Count: 1}}); err != nil {
		t.Fatal(err)
	}
	check("FlushUsage", 0)
	if _, _, err := s.Revoke(ctx, a.ID, nil); err != nil {
		t.Fatal(err)
	}
	check("Revoke", 1)
	if _, err := s.RevokeUser(ctx, "bob", nil); err != nil {
		t.Fatal(err)
	}
	check("RevokeUser", 3)
}
