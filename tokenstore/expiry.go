package tokenstore

import (
	"context"
	"fmt"
	"time"
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
// at or before before, and not yet marked as warned (MarkExpiryNotified),
// soonest first. The slice is never nil.
//
// The mark belongs to the token's current expiry: Update with ExpiresAt set
// and Rotate clear it, so a renewed token is warned about again.
func (s *Store) ExpiringTokens(ctx context.Context, before time.Time) ([]Token, error) {
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

// MarkExpiryNotified records, at the store's current time, that the
// expiry warning for each of the tokens with the given ids went out, so
// that ExpiringTokens no longer returns them. Ids that name no token, and
// tokens already marked, are left alone. It neither bumps the tokens' seq
// nor their UpdatedAt: the mark is bookkeeping, not a change to the token.
func (s *Store) MarkExpiryNotified(ctx context.Context, ids []string) error {
	if len(ids) == 0 {
		return nil
	}
	tx, err := s.writer.BeginTx(ctx, nil)
	if err != nil {
		return fmt.Errorf("marking expiry warnings: %w", err)
	}
	defer tx.Rollback()
	now := s.now().UnixMilli()
	for _, id := range ids {
		if _, err := tx.ExecContext(ctx, markExpiryNotified, now, id); err != nil {
			return fmt.Errorf("marking expiry warning of token %q: %w", id, err)
		}
	}
	if err := tx.Commit(); err != nil {
		return fmt.Errorf("marking expiry warnings: %w", err)
	}
	return nil
}
