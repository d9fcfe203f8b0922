package tokenstore

import (
	"context"
	"fmt"
	"time"

	"github.com/apitoken/caddy-apitoken/storage"
)

// SQL for the expiry warnings. selectExpiring is served by the partial
// index tokens_expiring.
const (
	// ?1 now, ?2 before, in ms.
	selectExpiring = `SELECT ` + tokenColumns + tokensWithUsage + `
WHERE t.revoked_at IS NULL AND t.expiry_notified_at IS NULL
  AND t.expires_at > ?1 AND t.expires_at <= ?2
ORDER BY t.expires_at, t.rowid`

	// The first mark stays: marking again changes nothing.
	markExpiryNotified = `UPDATE tokens SET expiry_notified_at = ? WHERE id = ? AND expiry_notified_at IS NULL`
)

// ExpiringTokens returns the tokens that are due an "expiring soon"
// warning: not revoked, not yet expired at the store's current time, expiring
// at or before before, and not yet marked as warned (ClaimExpiring),
// soonest first. The slice is never nil. It only reads: the warnings are
// sent for what ClaimExpiring returns.
//
// The mark belongs to the token's current expiry: Update with ExpiresAt set
// and Rotate clear it, so a renewed token is warned about again.
func (s *Store) ExpiringTokens(ctx context.Context, before time.Time) (_ []storage.Token, err error) {
	defer classify(&err)
	tx, err := s.reader.BeginTx(ctx, nil)
	if err != nil {
		return nil, fmt.Errorf("listing expiring tokens: %w", err)
	}
	defer tx.Rollback()
	recs, err := queryRecords(ctx, tx, selectExpiring, s.now().UnixMilli(), before.UnixMilli())
	if err != nil {
		return nil, fmt.Errorf("listing expiring tokens: %w", err)
	}
	return tokens(recs), nil
}

// ClaimExpiring claims the expiry warnings that are due: in one write
// transaction it finds the tokens that ExpiringTokens would return for
// before, marks each as warned at the store's current time, and returns
// those it marked, soonest first. The slice is never nil.
//
// The caller sends the warning for exactly the tokens returned. Of
// concurrent calls, on this store or on another one open on the same
// database, only one gets a given token, so the warning goes out once.
// The mark is written before the warning is sent: if the process dies in
// between, that warning is lost rather than sent twice.
//
// Marking bumps neither the tokens' seq nor their UpdatedAt: the mark is
// bookkeeping, not a change to the token.
func (s *Store) ClaimExpiring(ctx context.Context, before time.Time) (_ []storage.Token, err error) {
	defer classify(&err)
	tx, err := s.beginWrite(ctx)
	if err != nil {
		return nil, fmt.Errorf("claiming expiry warnings: %w", err)
	}
	defer tx.Rollback()
	now := s.now().UnixMilli()
	recs, err := queryRecords(ctx, tx, selectExpiring, now, before.UnixMilli())
	if err != nil {
		return nil, fmt.Errorf("claiming expiry warnings: %w", err)
	}
	claimed := make([]storage.Token, 0, len(recs))
	for _, rec := range recs {
		// The write lock is held since BEGIN IMMEDIATE, so the row is as
		// read; the count is checked all the same, as the claim's proof.
		res, err := tx.ExecContext(ctx, markExpiryNotified, now, rec.ID)
		if err != nil {
			return nil, fmt.Errorf("claiming expiry warning of token %s: %w", rec.ID, err)
		}
		n, err := res.RowsAffected()
		if err != nil {
			return nil, fmt.Errorf("claiming expiry warning of token %s: %w", rec.ID, err)
		}
		if n == 1 {
			claimed = append(claimed, rec.Token)
		}
	}
	if err := tx.Commit(); err != nil {
		return nil, fmt.Errorf("claiming expiry warnings: %w", err)
	}
	return claimed, nil
}
