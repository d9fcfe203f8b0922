package tokenstore

import (
	"context"
	"fmt"

	"github.com/apitoken/caddy-apitoken/storage"
	"github.com/apitoken/caddy-apitoken/token"
)

// CreateBatch stores many new tokens at once, for bulk provisioning:
// migrating the service accounts of another system, or seeding a store for
// a load test. It returns the tokens and their secrets in the order of nts.
//
// Every item is checked as Create checks it (the prefix, user, name,
// description and rules; an empty prefix means token.DefaultPrefix), and the
// whole batch is written in ONE transaction: all or nothing. An invalid
// item fails the call with ErrInvalid, and an item whose user already has
// an unrevoked token of that name (in the store or earlier in the batch)
// with ErrConflict; either way the error names the item by its index in
// nts ("item 17: …") and nothing is written. So it is, as for every write
// method, with ErrBusy when the write lock can't be had. The in-memory
// index learns the tokens once the transaction has committed, so Lookup
// finds all of them or none.
//
// Unlike Create, CreateBatch stores no audit event: a bulk load is one
// operator action, which the caller may record with AppendAudit. An empty
// batch writes nothing and returns empty slices. The batch is held in
// memory, rules compiled, until it commits: split very large loads (over a
// few hundred thousand tokens) into several calls. Every poller on the
// file, this Store's own included, reads the batch's rows once.
func (s *Store) CreateBatch(ctx context.Context, nts []storage.NewToken) (_ []storage.Token, _ []string, err error) {
	defer classify(&err)
	if len(nts) == 0 {
		return []storage.Token{}, []string{}, nil
	}
	recs := make([]record, len(nts))
	secrets := make([]string, len(nts))
	now := millis(s.now())
	for i, nt := range nts {
		if nt.Prefix == "" {
			nt.Prefix = token.DefaultPrefix
		}
		parsed, err := validateNewToken(nt)
		if err != nil {
			return nil, nil, fmt.Errorf("creating %d tokens: item %d: %w", len(nts), i, err)
		}
		rec, secret, err := newRecord(nt, parsed, now)
		if err != nil {
			return nil, nil, fmt.Errorf("creating %d tokens: item %d: %w", len(nts), i, err)
		}
		recs[i] = rec
		secrets[i] = secret
	}

	tx, err := s.beginWrite(ctx)
	if err != nil {
		return nil, nil, fmt.Errorf("creating %d tokens: %w", len(nts), err)
	}
	defer tx.Rollback()
	// A seq of its own for each row, each above every other row's, as
	// the triggers of 0006_tokens_seq_trigger.sql expect of the store's
	// writes (a shared one would look like a copied seq, and be bumped).
	seq, err := nextSeq(ctx, tx)
	if err != nil {
		return nil, nil, fmt.Errorf("creating %d tokens: %w", len(nts), err)
	}
	stmt, err := tx.PrepareContext(ctx, insertToken)
	if err != nil {
		return nil, nil, fmt.Errorf("creating %d tokens: %w", len(nts), err)
	}
	defer stmt.Close()
	for i := range recs {
		rec := &recs[i]
		rec.seq = seq + int64(i)
		allowedIPs, scope, err := encodeRules(*rec)
		if err != nil {
			return nil, nil, fmt.Errorf("creating %d tokens: item %d: %w", len(nts), i, err)
		}
		_, err = stmt.ExecContext(ctx,
			rec.ID, rec.User, userKey(rec.User), rec.Name, rec.Description, rec.hash[:], rec.Hint,
			rec.CreatedAt.UnixMilli(), rec.UpdatedAt.UnixMilli(),
			nullMillis(rec.ExpiresAt), nullMillis(rec.RevokedAt), nullMillis(rec.RotatedAt), rec.seq,
			allowedIPs, scope, rec.RateLimit)
		if err != nil {
			return nil, nil, fmt.Errorf("creating %d tokens: item %d: %w", len(nts), i, conflict(err, *rec))
		}
	}
	if err := tx.Commit(); err != nil {
		return nil, nil, fmt.Errorf("creating %d tokens: %w", len(nts), err)
	}
	s.index.Apply(changes(recs)...)
	return tokens(recs), secrets, nil
}
