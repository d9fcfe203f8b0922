package tokenstore

import (
	"cmp"
	"context"
	"database/sql"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"time"

	"github.com/apitoken/caddy-apitoken/event"
	"github.com/apitoken/caddy-apitoken/storage"
	"github.com/apitoken/caddy-apitoken/token"
)

// SQL for token_usage.
const (
	// A row of tokens with no token_usage row is a token never used; no row
	// at all is no such token.
	selectUsage = `SELECT u.last_used_at, u.last_ip, u.use_count, u.recent_ips
FROM tokens t LEFT JOIN token_usage u ON u.token_id = t.id WHERE t.id = ?`

	upsertUsage = `INSERT INTO token_usage (token_id, last_used_at, last_ip, use_count, recent_ips)
VALUES (?, ?, ?, ?, ?)
ON CONFLICT (token_id) DO UPDATE SET
last_used_at = excluded.last_used_at, last_ip = excluded.last_ip,
use_count = excluded.use_count, recent_ips = excluded.recent_ips`
)

// FlushUsage adds usage deltas to what is stored, in one transaction: the
// counts add up, the later of the stored and the delta's last use wins
// (with its IP), whatever order deltas arrive in, and the recent IPs merge,
// each IP once with the latest time it was seen, most recent first, at most
// event.MaxRecentIPs. A delta's LastIP counts as one of its recent IPs.
// Deltas for ids that name no token are skipped. A negative Count is
// ErrInvalid, and nothing is stored. Usage does not bump a token's seq or
// UpdatedAt. FlushUsage implements audit.UsageWriter.
func (s *Store) FlushUsage(ctx context.Context, deltas []event.Usage) (err error) {
	defer classify(&err)
	for _, d := range deltas {
		if d.Count < 0 {
			return fmt.Errorf("flushing token usage: %w: token %s: count %d is negative", ErrInvalid, d.TokenID, d.Count)
		}
	}
	if len(deltas) == 0 {
		return nil
	}
	tx, err := s.beginWrite(ctx)
	if err != nil {
		return fmt.Errorf("flushing usage of %d tokens: %w", len(deltas), err)
	}
	defer tx.Rollback()
	if err := addUsages(ctx, tx, deltas); err != nil {
		return fmt.Errorf("flushing token usage: %w", err)
	}
	if err := tx.Commit(); err != nil {
		return fmt.Errorf("flushing usage of %d tokens: %w", len(deltas), err)
	}
	return nil
}

// addUsages adds each delta to the stored usage of its token, if there is
// such a token, through statements prepared once.
func addUsages(ctx context.Context, tx *sql.Tx, deltas []event.Usage) error {
	sel, err := tx.PrepareContext(ctx, selectUsage)
	if err != nil {
		return err
	}
	defer sel.Close()
	upsert, err := tx.PrepareContext(ctx, upsertUsage)
	if err != nil {
		return err
	}
	defer upsert.Close()
	for _, d := range deltas {
		if err := addUsage(ctx, sel, upsert, d); err != nil {
			return fmt.Errorf("token %s: %w", d.TokenID, err)
		}
	}
	return nil
}

// addUsage adds d to the stored usage of its token, if there is such a
// token, with the prepared selectUsage and upsertUsage.
func addUsage(ctx context.Context, sel, upsert *sql.Stmt, d event.Usage) error {
	if !token.ValidID(d.TokenID) {
		return nil // no such token
	}
	var cols usageColumns
	err := sel.QueryRowContext(ctx, d.TokenID).
		Scan(&cols.lastUsedAt, &cols.lastIP, &cols.useCount, &cols.recentIPs)
	if errors.Is(err, sql.ErrNoRows) {
		return nil // no such token
	}
	if err != nil {
		return err
	}
	t := storage.Token{ID: d.TokenID}
	if err := cols.decode(&t); err != nil {
		return err
	}
	u := mergeUsage(event.Usage{LastUsedAt: t.LastUsedAt, LastIP: t.LastUsedIP, Count: t.UseCount, RecentIPs: t.RecentIPs}, d)
	recent, err := encodeRecentIPs(u.RecentIPs)
	if err != nil {
		return err
	}
	_, err = upsert.ExecContext(ctx, d.TokenID, nullMillis(u.LastUsedAt), u.LastIP, u.Count, recent)
	return err
}

// mergeUsage returns the stored usage with the delta d added. Times are
// kept to the millisecond, as stored.
func mergeUsage(stored, d event.Usage) event.Usage {
	u := stored
	u.Count += d.Count
	if last := millis(d.LastUsedAt); last.After(u.LastUsedAt) {
		u.LastUsedAt, u.LastIP = last, d.LastIP
	}
	seen := make([]event.IPSeen, 0, len(stored.RecentIPs)+len(d.RecentIPs)+1)
	seen = append(seen, stored.RecentIPs...)
	seen = append(seen, d.RecentIPs...)
	if d.LastIP != "" {
		seen = append(seen, event.IPSeen{IP: d.LastIP, LastSeen: d.LastUsedAt})
	}
	u.RecentIPs = recentIPs(seen)
	return u
}

// recentIPs returns the distinct IPs of seen, each with the latest time it
// was seen (to the millisecond), most recent first (ties by IP, for a
// stable order), at most event.MaxRecentIPs of them; nil if there are none.
// Entries without an IP are dropped.
func recentIPs(seen []event.IPSeen) []event.IPSeen {
	latest := make(map[string]time.Time, len(seen))
	for _, s := range seen {
		if s.IP == "" {
			continue
		}
		t := millis(s.LastSeen)
		if cur, ok := latest[s.IP]; !ok || t.After(cur) {
			latest[s.IP] = t
		}
	}
	if len(latest) == 0 {
		return nil
	}
	out := make([]event.IPSeen, 0, len(latest))
	for ip, t := range latest {
		out = append(out, event.IPSeen{IP: ip, LastSeen: t})
	}
	slices.SortFunc(out, func(a, b event.IPSeen) int {
		if c := b.LastSeen.Compare(a.LastSeen); c != 0 {
			return c
		}
		return cmp.Compare(a.IP, b.IP)
	})
	return slices.Clip(out[:min(len(out), event.MaxRecentIPs)])
}

// ipSeenJSON is the stored form of an event.IPSeen: the time in unix
// milliseconds, like every other time in the file.
type ipSeenJSON struct {
	IP       string `json:"ip"`
	LastSeen int64  `json:"last_seen"`
}

func encodeRecentIPs(ips []event.IPSeen) (string, error) {
	stored := make([]ipSeenJSON, len(ips))
	for i, s := range ips {
		stored[i] = ipSeenJSON{IP: s.IP, LastSeen: s.LastSeen.UnixMilli()}
	}
	b, err := json.Marshal(stored)
	if err != nil {
		return "", fmt.Errorf("encoding recent_ips: %w", err)
	}
	return string(b), nil
}

// usageColumns are the token_usage columns of a token row, NULL when the
// token was never used.
type usageColumns struct {
	lastUsedAt sql.NullInt64
	lastIP     sql.NullString
	useCount   sql.NullInt64
	recentIPs  sql.NullString
}

// decode sets the usage fields of t.
func (u usageColumns) decode(t *storage.Token) error {
	t.LastUsedAt = fromNullMillis(u.lastUsedAt)
	t.LastUsedIP = u.lastIP.String
	t.UseCount = u.useCount.Int64
	t.RecentIPs = nil
	if !u.recentIPs.Valid {
		return nil
	}
	var stored []ipSeenJSON
	if err := json.Unmarshal([]byte(u.recentIPs.String), &stored); err != nil {
		return fmt.Errorf("token %s: recent_ips: %w", t.ID, err)
	}
	if len(stored) == 0 {
		return nil
	}
	t.RecentIPs = make([]event.IPSeen, len(stored))
	for i, s := range stored {
		t.RecentIPs[i] = event.IPSeen{IP: s.IP, LastSeen: fromMillis(s.LastSeen)}
	}
	return nil
}
