package tokenstore

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"time"

	"github.com/apitoken/caddy-apitoken/event"
	"github.com/apitoken/caddy-apitoken/storage"
	"github.com/apitoken/caddy-apitoken/token"
)

// record is a whole row, with the token's usage: the public Token plus what
// only the store sees.
type record struct {
	storage.Token
	hash  [32]byte
	seq   int64
	rules compiled // Token's rules, parsed

	// expiryNotifiedAt is when the warning for the current expiry was
	// claimed (ClaimExpiring); zero: not yet.
	expiryNotifiedAt time.Time
}

// SQL. Every SELECT of tokens reads tokenColumns from tokensWithUsage, as
// scanRecord expects: the token t joined to its usage u, NULLs when the
// token was never used.
const (
	tokenColumns = `t.id, t.user, t.name, t.description, t.hint, t.created_at, t.updated_at,
t.expires_at, t.revoked_at, t.rotated_at, t.secret_hash, t.seq,
t.allowed_ips, t.scope, t.rate_limit, t.expiry_notified_at,
u.last_used_at, u.last_ip, u.use_count, u.recent_ips`

	tokensWithUsage = ` FROM tokens t LEFT JOIN token_usage u ON u.token_id = t.id`

	selectTokenByID = `SELECT ` + tokenColumns + tokensWithUsage + ` WHERE t.id = ?`

	// ?1 user key or '' for any, ?2 state or '' for any, ?3 now in ms.
	selectTokens = `SELECT ` + tokenColumns + tokensWithUsage + `
WHERE (?1 = '' OR t.user_key = ?1)
  AND CASE ?2
        WHEN '' THEN 1
        WHEN 'revoked' THEN t.revoked_at IS NOT NULL
        WHEN 'expired' THEN t.revoked_at IS NULL AND t.expires_at IS NOT NULL AND t.expires_at <= ?3
        WHEN 'active'  THEN t.revoked_at IS NULL AND (t.expires_at IS NULL OR t.expires_at > ?3)
      END
ORDER BY t.created_at DESC, t.rowid DESC`

	selectUnrevokedByUser = `SELECT ` + tokenColumns + tokensWithUsage + `
WHERE t.user_key = ? AND t.revoked_at IS NULL
ORDER BY t.created_at DESC, t.rowid DESC`

	selectChangedSince = `SELECT ` + tokenColumns + tokensWithUsage + ` WHERE t.seq > ? ORDER BY t.seq`

	selectNextSeq = `SELECT COALESCE(MAX(seq), 0) + 1 FROM tokens`

	insertToken = `INSERT INTO tokens
(id, user, user_key, name, description, secret_hash, hint, created_at, updated_at, expires_at, revoked_at, rotated_at, seq,
 allowed_ips, scope, rate_limit)
VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)`

	// The user never changes, so neither does user_key.
	updateToken = `UPDATE tokens SET
name = ?, description = ?, secret_hash = ?, hint = ?,
updated_at = ?, expires_at = ?, revoked_at = ?, rotated_at = ?, seq = ?,
allowed_ips = ?, scope = ?, rate_limit = ?, expiry_notified_at = ?
WHERE id = ?`
)

// newRecord makes the record of a new token, validated as parsed, and
// its secret: a fresh id and secret, the hash and hint, times at now.
func newRecord(nt storage.NewToken, parsed rules, now time.Time) (record, string, error) {
	id, secret, err := token.Generate(nt.Prefix)
	if err != nil {
		return record{}, "", err
	}
	rec := record{
		Token: storage.Token{
			ID:          id,
			User:        nt.User,
			Name:        nt.Name,
			Description: nt.Description,
			Hint:        token.Hint(secret),
			CreatedAt:   now,
			UpdatedAt:   now,
			ExpiresAt:   millis(nt.ExpiresAt),
		},
		hash: token.Hash(secret),
	}
	rec.setRules(parsed)
	return rec, secret, nil
}

// Create stores a new token and returns it with its secret, the full token
// string, which is not stored and can't be shown again.
//
// The user is required, at most 256 bytes of UTF-8 without ':' (HTTP Basic
// can't carry it), control characters, or leading or trailing spaces; users
// compare case-insensitively. The name is required, at most 128 bytes
// without control characters, and unique among the user's unrevoked tokens
// (ErrConflict otherwise). The description is at most 1024 bytes of UTF-8.
// An empty prefix means token.DefaultPrefix. The rules (see storage.NewToken) are checked
// and stored in canonical form: "10.1.2.3" becomes "10.1.2.3/32",
// "private_ranges" its prefixes, methods upper case.
//
// If ev is not nil, Create stores it in the audit trail in the same
// transaction as the token, after filling in its Time (if zero, the
// creation time), TokenID and User; if that fails, no token is created.
// Once the token is stored, *ev is the event as stored, ID included. The
// other write methods treat ev the same way.
func (s *Store) Create(ctx context.Context, nt storage.NewToken, ev *event.Event) (_ storage.Token, _ string, err error) {
	defer classify(&err)
	if nt.Prefix == "" {
		nt.Prefix = token.DefaultPrefix
	}
	parsed, err := validateNewToken(nt)
	if err != nil {
		return storage.Token{}, "", fmt.Errorf("creating token: %w", err)
	}
	now := millis(s.now())
	rec, secret, err := newRecord(nt, parsed, now)
	if err != nil {
		return storage.Token{}, "", fmt.Errorf("creating token: %w", err)
	}

	tx, err := s.beginWrite(ctx)
	if err != nil {
		return storage.Token{}, "", fmt.Errorf("creating token: %w", err)
	}
	defer tx.Rollback()
	if rec.seq, err = nextSeq(ctx, tx); err != nil {
		return storage.Token{}, "", fmt.Errorf("creating token: %w", err)
	}
	if err := insertRecord(ctx, tx, rec); err != nil {
		return storage.Token{}, "", fmt.Errorf("creating token: %w", err)
	}
	stored, err := insertChange(ctx, tx, ev, tokenEvent(ev, rec.Token), now)
	if err != nil {
		return storage.Token{}, "", fmt.Errorf("creating token %s: %w", rec.ID, err)
	}
	if err := tx.Commit(); err != nil {
		return storage.Token{}, "", fmt.Errorf("creating token: %w", err)
	}
	s.index.Apply(rec.change())
	changeDone(ev, stored)
	return rec.Token, secret, nil
}

// Get returns the token with the given id, or ErrNotFound.
func (s *Store) Get(ctx context.Context, id string) (_ storage.Token, err error) {
	defer classify(&err)
	if !token.ValidID(id) {
		return storage.Token{}, fmt.Errorf("getting token %q: %w", id, ErrNotFound)
	}
	tx, err := s.reader.BeginTx(ctx, nil)
	if err != nil {
		return storage.Token{}, fmt.Errorf("getting token %s: %w", id, err)
	}
	defer tx.Rollback()
	rec, err := findRecord(ctx, tx, id)
	if err != nil {
		return storage.Token{}, fmt.Errorf("getting token %s: %w", id, err)
	}
	return rec.Token, nil
}

// List returns the tokens that match f, newest first. The slice is never nil.
func (s *Store) List(ctx context.Context, f storage.Filter) (_ []storage.Token, err error) {
	defer classify(&err)
	if err := validateFilter(f); err != nil {
		return nil, fmt.Errorf("listing tokens: %w", err)
	}
	tx, err := s.reader.BeginTx(ctx, nil)
	if err != nil {
		return nil, fmt.Errorf("listing tokens: %w", err)
	}
	defer tx.Rollback()
	recs, err := queryRecords(ctx, tx, selectTokens, userKey(f.User), string(f.State), s.now().UnixMilli())
	if err != nil {
		return nil, fmt.Errorf("listing tokens: %w", err)
	}
	return tokens(recs), nil
}

// Update changes the fields set in p, rules as Create checks them. A revoked
// token can't be updated (ErrConflict); an expired one can, e.g. to extend
// it. An empty Patch is ErrInvalid. The new rules apply to the next Lookup.
// The fields are applied to the row as read inside the write transaction:
// of concurrent updates, each keeps what the others set in fields it
// leaves nil.
// A Patch that sets ExpiresAt, even to the same time, clears the expiry
// warning mark (see ClaimExpiring): a renewed token warns again. ev is
// stored with the change, as Create does.
func (s *Store) Update(ctx context.Context, id string, p storage.Patch, ev *event.Event) (_ storage.Token, err error) {
	defer classify(&err)
	parsed, err := validatePatch(p)
	if err != nil {
		return storage.Token{}, fmt.Errorf("updating token %q: %w", id, err)
	}
	if !token.ValidID(id) {
		return storage.Token{}, fmt.Errorf("updating token %q: %w", id, ErrNotFound)
	}
	tx, err := s.beginWrite(ctx)
	if err != nil {
		return storage.Token{}, fmt.Errorf("updating token %s: %w", id, err)
	}
	defer tx.Rollback()
	rec, err := findRecord(ctx, tx, id)
	if err != nil {
		return storage.Token{}, fmt.Errorf("updating token %s: %w", id, err)
	}
	if !rec.RevokedAt.IsZero() {
		return storage.Token{}, fmt.Errorf("updating token %s: %w: the token is revoked", id, ErrConflict)
	}
	if p.Name != nil {
		rec.Name = *p.Name
	}
	if p.Description != nil {
		rec.Description = *p.Description
	}
	if p.ExpiresAt != nil {
		rec.ExpiresAt = millis(*p.ExpiresAt)
		rec.expiryNotifiedAt = time.Time{}
	}
	if err := rec.patchRules(p, parsed); err != nil {
		return storage.Token{}, fmt.Errorf("updating token %s: %w", id, err)
	}
	rec.UpdatedAt = millis(s.now())
	if err := updateRecord(ctx, tx, &rec); err != nil {
		return storage.Token{}, fmt.Errorf("updating token %s: %w", id, err)
	}
	stored, err := insertChange(ctx, tx, ev, tokenEvent(ev, rec.Token), rec.UpdatedAt)
	if err != nil {
		return storage.Token{}, fmt.Errorf("updating token %s: %w", id, err)
	}
	if err := tx.Commit(); err != nil {
		return storage.Token{}, fmt.Errorf("updating token %s: %w", id, err)
	}
	s.index.Apply(rec.change())
	changeDone(ev, stored)
	return rec.Token, nil
}

// Revoke revokes the token for good and reports whether this call did it.
// Revoking a revoked token changes nothing and returns it as it is, with
// false: no audit event is stored then, and ev is left as it was. Otherwise
// ev is stored with the change, as Create does. Of concurrent calls for one
// token, exactly one reports true.
func (s *Store) Revoke(ctx context.Context, id string, ev *event.Event) (_ storage.Token, _ bool, err error) {
	defer classify(&err)
	if !token.ValidID(id) {
		return storage.Token{}, false, fmt.Errorf("revoking token %q: %w", id, ErrNotFound)
	}
	tx, err := s.beginWrite(ctx)
	if err != nil {
		return storage.Token{}, false, fmt.Errorf("revoking token %s: %w", id, err)
	}
	defer tx.Rollback()
	rec, err := findRecord(ctx, tx, id)
	if err != nil {
		return storage.Token{}, false, fmt.Errorf("revoking token %s: %w", id, err)
	}
	if !rec.RevokedAt.IsZero() {
		return rec.Token, false, nil
	}
	now := millis(s.now())
	rec.RevokedAt, rec.UpdatedAt = now, now
	if err := updateRecord(ctx, tx, &rec); err != nil {
		return storage.Token{}, false, fmt.Errorf("revoking token %s: %w", id, err)
	}
	stored, err := insertChange(ctx, tx, ev, tokenEvent(ev, rec.Token), now)
	if err != nil {
		return storage.Token{}, false, fmt.Errorf("revoking token %s: %w", id, err)
	}
	if err := tx.Commit(); err != nil {
		return storage.Token{}, false, fmt.Errorf("revoking token %s: %w", id, err)
	}
	s.index.Apply(rec.change())
	changeDone(ev, stored)
	return rec.Token, true, nil
}

// RevokeUser revokes every unrevoked token of user, compared
// case-insensitively, and returns the tokens it revoked, newest first (an
// empty slice if there were none).
//
// ev, if not nil, is stored as one audit event for the whole change, with
// User set to user as given, TokenID empty and Count the number of tokens
// revoked, otherwise as Create does. When there was nothing to revoke,
// nothing changed and, as with Revoke, no event is stored (ev keeps ID 0).
func (s *Store) RevokeUser(ctx context.Context, user string, ev *event.Event) (_ []storage.Token, err error) {
	defer classify(&err)
	if err := validateUser(user); err != nil {
		return nil, fmt.Errorf("revoking tokens of user: %w", err)
	}
	tx, err := s.beginWrite(ctx)
	if err != nil {
		return nil, fmt.Errorf("revoking tokens of user %q: %w", user, err)
	}
	defer tx.Rollback()
	recs, err := queryRecords(ctx, tx, selectUnrevokedByUser, userKey(user))
	if err != nil {
		return nil, fmt.Errorf("revoking tokens of user %q: %w", user, err)
	}
	if len(recs) == 0 {
		return []storage.Token{}, nil
	}
	now := millis(s.now())
	for i := range recs {
		recs[i].RevokedAt, recs[i].UpdatedAt = now, now
		if err := updateRecord(ctx, tx, &recs[i]); err != nil {
			return nil, fmt.Errorf("revoking tokens of user %q: %w", user, err)
		}
	}
	stored, err := insertChange(ctx, tx, ev, userEvent(ev, user, len(recs)), now)
	if err != nil {
		return nil, fmt.Errorf("revoking tokens of user %q: %w", user, err)
	}
	if err := tx.Commit(); err != nil {
		return nil, fmt.Errorf("revoking tokens of user %q: %w", user, err)
	}
	s.index.Apply(changes(recs)...)
	changeDone(ev, stored)
	return tokens(recs), nil
}

// Rotate gives the token a new secret, keeping its id, settings and rules, and
// returns it with the new secret. The old secret stops working at once. A
// revoked or expired token can't be rotated (ErrConflict). An empty prefix
// means token.DefaultPrefix. Rotating clears the expiry warning mark (see
// ClaimExpiring), so the token warns again before it expires. ev is stored
// with the change, as Create does.
func (s *Store) Rotate(ctx context.Context, id, prefix string, ev *event.Event) (_ storage.Token, _ string, err error) {
	defer classify(&err)
	if prefix == "" {
		prefix = token.DefaultPrefix
	}
	if err := token.ValidPrefix(prefix); err != nil {
		return storage.Token{}, "", fmt.Errorf("rotating token %q: %w", id, err)
	}
	if !token.ValidID(id) {
		return storage.Token{}, "", fmt.Errorf("rotating token %q: %w", id, ErrNotFound)
	}
	secret, err := token.GenerateFor(prefix, id)
	if err != nil {
		return storage.Token{}, "", fmt.Errorf("rotating token %s: %w", id, err)
	}

	tx, err := s.beginWrite(ctx)
	if err != nil {
		return storage.Token{}, "", fmt.Errorf("rotating token %s: %w", id, err)
	}
	defer tx.Rollback()
	rec, err := findRecord(ctx, tx, id)
	if err != nil {
		return storage.Token{}, "", fmt.Errorf("rotating token %s: %w", id, err)
	}
	now := s.now()
	if st := rec.State(now); st != storage.StateActive {
		return storage.Token{}, "", fmt.Errorf("rotating token %s: %w: the token is %s", id, ErrConflict, st)
	}
	rec.hash, rec.Hint = token.Hash(secret), token.Hint(secret)
	rec.RotatedAt, rec.UpdatedAt = millis(now), millis(now)
	rec.expiryNotifiedAt = time.Time{}
	if err := updateRecord(ctx, tx, &rec); err != nil {
		return storage.Token{}, "", fmt.Errorf("rotating token %s: %w", id, err)
	}
	stored, err := insertChange(ctx, tx, ev, tokenEvent(ev, rec.Token), now)
	if err != nil {
		return storage.Token{}, "", fmt.Errorf("rotating token %s: %w", id, err)
	}
	if err := tx.Commit(); err != nil {
		return storage.Token{}, "", fmt.Errorf("rotating token %s: %w", id, err)
	}
	s.index.Apply(rec.change())
	changeDone(ev, stored)
	return rec.Token, secret, nil
}

// queryer is what the read helpers need: a *sql.Tx or a *sql.Conn.
type queryer interface {
	QueryContext(ctx context.Context, query string, args ...any) (*sql.Rows, error)
	QueryRowContext(ctx context.Context, query string, args ...any) *sql.Row
}

// findRecord returns the row with the given id, or ErrNotFound.
func findRecord(ctx context.Context, q queryer, id string) (record, error) {
	rec, err := scanRecord(q.QueryRowContext(ctx, selectTokenByID, id))
	if errors.Is(err, sql.ErrNoRows) {
		return record{}, ErrNotFound
	}
	return rec, err
}

// changedRecords returns the rows written after seq, in seq order.
func changedRecords(ctx context.Context, q queryer, seq int64) ([]record, error) {
	return queryRecords(ctx, q, selectChangedSince, seq)
}

func queryRecords(ctx context.Context, q queryer, query string, args ...any) ([]record, error) {
	rows, err := q.QueryContext(ctx, query, args...)
	if err != nil {
		return nil, err
	}
	defer rows.Close()
	var recs []record
	for rows.Next() {
		rec, err := scanRecord(rows)
		if err != nil {
			return nil, err
		}
		recs = append(recs, rec)
	}
	return recs, rows.Err()
}

// nextSeq returns the seq for this transaction's writes. Writers hold the
// write lock from BEGIN IMMEDIATE, so seq grows in commit order.
func nextSeq(ctx context.Context, tx *sql.Tx) (int64, error) {
	var seq int64
	if err := tx.QueryRowContext(ctx, selectNextSeq).Scan(&seq); err != nil {
		return 0, fmt.Errorf("reading sequence: %w", err)
	}
	return seq, nil
}

func insertRecord(ctx context.Context, tx *sql.Tx, rec record) error {
	allowedIPs, scope, err := encodeRules(rec)
	if err != nil {
		return err
	}
	_, err = tx.ExecContext(ctx, insertToken,
		rec.ID, rec.User, userKey(rec.User), rec.Name, rec.Description, rec.hash[:], rec.Hint,
		rec.CreatedAt.UnixMilli(), rec.UpdatedAt.UnixMilli(),
		nullMillis(rec.ExpiresAt), nullMillis(rec.RevokedAt), nullMillis(rec.RotatedAt), rec.seq,
		allowedIPs, scope, rec.RateLimit)
	return conflict(err, rec)
}

// updateRecord writes the mutable fields of rec and gives it the next seq.
func updateRecord(ctx context.Context, tx *sql.Tx, rec *record) error {
	allowedIPs, scope, err := encodeRules(*rec)
	if err != nil {
		return err
	}
	seq, err := nextSeq(ctx, tx)
	if err != nil {
		return err
	}
	_, err = tx.ExecContext(ctx, updateToken,
		rec.Name, rec.Description, rec.hash[:], rec.Hint,
		rec.UpdatedAt.UnixMilli(), nullMillis(rec.ExpiresAt), nullMillis(rec.RevokedAt), nullMillis(rec.RotatedAt),
		seq, allowedIPs, scope, rec.RateLimit, nullMillis(rec.expiryNotifiedAt), rec.ID)
	if err != nil {
		return conflict(err, *rec)
	}
	rec.seq = seq
	return nil
}

// conflict turns a violation of the unique (user, name) index into
// ErrConflict.
func conflict(err error, rec record) error {
	if err != nil && isUniqueViolation(err) {
		return fmt.Errorf("%w: user %q already has an unrevoked token named %q", ErrConflict, rec.User, rec.Name)
	}
	return err
}

func scanRecord(row interface{ Scan(...any) error }) (record, error) {
	var (
		rec                       record
		created, updated          int64
		expires, revoked, rotated sql.NullInt64
		hash                      []byte
		allowedIPs, scope, rate   string
		notified                  sql.NullInt64
		u                         usageColumns
	)
	err := row.Scan(&rec.ID, &rec.User, &rec.Name, &rec.Description, &rec.Hint,
		&created, &updated, &expires, &revoked, &rotated, &hash, &rec.seq,
		&allowedIPs, &scope, &rate, &notified,
		&u.lastUsedAt, &u.lastIP, &u.useCount, &u.recentIPs)
	if err != nil {
		return record{}, err
	}
	if len(hash) != len(rec.hash) {
		return record{}, fmt.Errorf("token %s: secret hash is %d bytes, want %d", rec.ID, len(hash), len(rec.hash))
	}
	copy(rec.hash[:], hash)
	rec.CreatedAt = fromMillis(created)
	rec.UpdatedAt = fromMillis(updated)
	rec.ExpiresAt = fromNullMillis(expires)
	rec.RevokedAt = fromNullMillis(revoked)
	rec.RotatedAt = fromNullMillis(rotated)
	rec.expiryNotifiedAt = fromNullMillis(notified)
	if err := decodeRules(&rec, allowedIPs, scope, rate); err != nil {
		return record{}, err
	}
	if err := u.decode(&rec.Token); err != nil {
		return record{}, err
	}
	return rec, nil
}

func tokens(recs []record) []storage.Token {
	ts := make([]storage.Token, len(recs))
	for i, r := range recs {
		ts[i] = r.Token
	}
	return ts
}

// millis rounds t down to what the database keeps: UTC milliseconds. The
// zero time stays zero.
func millis(t time.Time) time.Time {
	if t.IsZero() {
		return t
	}
	return fromMillis(t.UnixMilli())
}

func fromMillis(ms int64) time.Time { return time.UnixMilli(ms).UTC() }

func nullMillis(t time.Time) sql.NullInt64 {
	if t.IsZero() {
		return sql.NullInt64{}
	}
	return sql.NullInt64{Int64: t.UnixMilli(), Valid: true}
}

func fromNullMillis(n sql.NullInt64) time.Time {
	if !n.Valid {
		return time.Time{}
	}
	return fromMillis(n.Int64)
}
