package tokenstore

import (
	"context"
	"database/sql"
	"fmt"

	"github.com/apitoken/caddy-apitoken/tokenindex"
)

// feed is the store's tokenindex.Feed. A row's seq is its version: writers
// assign seq = MAX(seq)+1 under the write lock, and SQLite has one writer
// at a time, so seq grows in commit order, whichever process or connection
// commits, and an operator's UPDATE that sets seq the same way is seen
// too. The feed holds one reader connection and asks PRAGMA data_version
// (which changes when another connection commits) before reading: a poll
// of an unchanged database costs one pragma.
//
// Group memberships have no seq, and a removal leaves no row to find, so on
// every change the feed reads the whole group_members table (it is small).
type feed struct {
	db          *sql.DB
	conn        *sql.Conn // nil after an error: reconnect on the next call
	dataVersion int64     // as of the last successful read; -1 forces a read
}

const selectMaxSeq = `SELECT COALESCE(MAX(seq), 0) FROM tokens`

// Changes returns the rows written after since. It answers
// tokenindex.ErrResync when the highest seq in the file is below since:
// the file was replaced by an older copy, whose rows since does not
// cover.
func (f *feed) Changes(ctx context.Context, since tokenindex.Version) (tokenindex.Batch, error) {
	return f.read(ctx, since, false)
}

// Snapshot returns every row and membership.
func (f *feed) Snapshot(ctx context.Context) (tokenindex.Batch, error) {
	return f.read(ctx, 0, true)
}

func (f *feed) read(ctx context.Context, since tokenindex.Version, all bool) (tokenindex.Batch, error) {
	if f.conn == nil {
		conn, err := f.db.Conn(ctx)
		if err != nil {
			return tokenindex.Batch{}, err
		}
		f.conn, f.dataVersion = conn, -1 // data_version is per connection
	}
	var dv int64
	if err := f.conn.QueryRowContext(ctx, `PRAGMA data_version`).Scan(&dv); err != nil {
		f.close()
		return tokenindex.Batch{}, fmt.Errorf("reading data version: %w", err)
	}
	if dv == f.dataVersion && !all {
		return tokenindex.Batch{Next: since}, nil
	}
	if !all {
		var top int64
		if err := f.conn.QueryRowContext(ctx, selectMaxSeq).Scan(&top); err != nil {
			f.close()
			return tokenindex.Batch{}, err // as changedRecords's: the SQLite message names the table
		}
		if tokenindex.Version(top) < since {
			return tokenindex.Batch{}, fmt.Errorf("seq %d is below %d: %w", top, since, tokenindex.ErrResync)
		}
	}
	recs, err := changedRecords(ctx, f.conn, int64(since))
	if err != nil {
		f.close()
		return tokenindex.Batch{}, err
	}
	members, err := loadMemberships(ctx, f.conn)
	if err != nil {
		f.close()
		return tokenindex.Batch{}, fmt.Errorf("loading group members: %w", err)
	}
	b := tokenindex.Batch{Changes: changes(recs), Next: since, Members: members}
	for _, r := range recs {
		b.Next = max(b.Next, tokenindex.Version(r.seq))
	}
	f.dataVersion = dv
	return b, nil
}

func (f *feed) close() {
	if f.conn != nil {
		f.conn.Close()
		f.conn = nil
	}
}

// change is what the index keeps of rec.
func (rec record) change() tokenindex.Change {
	return tokenindex.Change{
		Version:       tokenindex.Version(rec.seq),
		ID:            rec.ID,
		Name:          rec.Name,
		User:          rec.User,
		Hash:          rec.hash,
		ExpiresAt:     rec.ExpiresAt,
		Revoked:       !rec.RevokedAt.IsZero(),
		AllowedIPs:    rec.rules.prefixes,
		Scope:         rec.Scope,
		CompiledScope: rec.rules.scope,
		RateLimit:     rec.rules.rate,
	}
}

func changes(recs []record) []tokenindex.Change {
	cs := make([]tokenindex.Change, len(recs))
	for i := range recs {
		cs[i] = recs[i].change()
	}
	return cs
}
