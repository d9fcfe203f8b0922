package tokenstore

import (
	"context"
	"database/sql"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"math"
	"strconv"
	"time"

	"github.com/apitoken/caddy-apitoken/event"
	"github.com/apitoken/caddy-apitoken/storage"
)

// defaultPruneChunk is how many events PruneAudit deletes per transaction,
// so that the write lock is never held for long.
const defaultPruneChunk = 5000

// SQL for audit_events. Every SELECT reads eventColumns, as scanEvent
// expects.
const (
	eventColumns = `id, time, type, outcome, reason, user, token_id, scheme, client_ip, method, host, path,
status, actor, changed, count, grp, rule, top_clients, top_users, claimed_user`

	insertEvent = `INSERT INTO audit_events
(time, type, outcome, reason, user, user_key, token_id, scheme, client_ip, method, host, path,
 status, actor, changed, count, grp, rule, top_clients, top_users, claimed_user)
VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)`

	// ?1 the time to prune before, in ms, ?2 the chunk size.
	pruneEvents = `DELETE FROM audit_events WHERE id IN
(SELECT id FROM audit_events WHERE time < ?1 LIMIT ?2)`

	// ?1 the request types as a JSON array, ?2 how many to keep. The
	// newest request event beyond those kept, if any; the unary + keeps
	// the scan on the rowid, newest first, rather than on the type index.
	selectTrimCutoff = `SELECT id FROM audit_events
WHERE +type IN (SELECT value FROM json_each(?1))
ORDER BY id DESC LIMIT 1 OFFSET ?2`

	// ?1 the request types as a JSON array, ?2 the cut-off id, ?3 the
	// chunk size.
	trimEvents = `DELETE FROM audit_events WHERE id IN
(SELECT id FROM audit_events WHERE id <= ?2 AND +type IN (SELECT value FROM json_each(?1)) ORDER BY id LIMIT ?3)`

	// eventFilters are the filters of an event.Query, each '' or NULL when
	// unset (see queryArgs):
	//   ?1 token id, ?2 user key, ?3 client IP, ?4 outcome,
	//   ?5 the type when there is exactly one, ?6 the types as a JSON array,
	//   ?7 since, ?8 until (ms), ?9 the cursor's id, ?10 the row limit.
	// None of these terms can use an index (an OR with a parameter, and a
	// unary + on the IN), so the leading term of each selectEvents*
	// statement picks the index, one that yields rows in id order: no sort,
	// and the scan stops at the limit.
	eventFilters = `
  AND (?1 = '' OR token_id = ?1)
  AND (?2 = '' OR user_key = ?2)
  AND (?3 = '' OR client_ip = ?3)
  AND (?4 = '' OR outcome = ?4)
  AND (?5 = '' OR type = ?5)
  AND (?6 IS NULL OR +type IN (SELECT value FROM json_each(?6)))
  AND (?7 IS NULL OR time >= ?7)
  AND (?8 IS NULL OR time < ?8)
ORDER BY id DESC
LIMIT ?10`

	selectEvents        = `SELECT ` + eventColumns + ` FROM audit_events WHERE id < ?9` + eventFilters
	selectEventsByToken = `SELECT ` + eventColumns + ` FROM audit_events WHERE token_id = ?1 AND id < ?9` + eventFilters
	selectEventsByIP    = `SELECT ` + eventColumns + ` FROM audit_events WHERE client_ip = ?3 AND id < ?9` + eventFilters
	selectEventsByUser  = `SELECT ` + eventColumns + ` FROM audit_events WHERE user_key = ?2 AND id < ?9` + eventFilters
	selectEventsByType  = `SELECT ` + eventColumns + ` FROM audit_events WHERE type = ?5 AND id < ?9` + eventFilters
)

// AppendAudit stores events in the audit trail, in one transaction: all or
// none. An event with a zero Time is stored with the store's current time.
// Event IDs are assigned by the store and not reported back; the events'
// fields are stored as given (validating them is the caller's business),
// but for ClientIP, stored unmapped (event.UnmapIP).
// AppendAudit implements audit.EventWriter.
func (s *Store) AppendAudit(ctx context.Context, events []event.Event) (err error) {
	defer classify(&err)
	if len(events) == 0 {
		return nil
	}
	tx, err := s.beginWrite(ctx)
	if err != nil {
		return fmt.Errorf("appending %d audit events: %w", len(events), err)
	}
	defer tx.Rollback()
	if err := insertEvents(ctx, tx, events, s.now()); err != nil {
		return fmt.Errorf("appending %d audit events: %w", len(events), err)
	}
	if err := tx.Commit(); err != nil {
		return fmt.Errorf("appending %d audit events: %w", len(events), err)
	}
	return nil
}

// PruneAudit deletes the events whose Time is before before and reports how
// many it deleted. It deletes in chunks of a few thousand events, each in a
// transaction of its own, so that writers are never held up for long; if it
// fails part way, the chunks already deleted stay deleted, and the count
// returned with the error says how many events that was. PruneAudit
// implements audit.EventWriter.
func (s *Store) PruneAudit(ctx context.Context, before time.Time) (_ int64, err error) {
	defer classify(&err)
	n, err := s.deleteInChunks(ctx, pruneEvents, ceilMillis(before))
	if err != nil {
		return n, fmt.Errorf("pruning audit events before %s: %w", before.UTC().Format(time.RFC3339Nano), err)
	}
	return n, nil
}

// deleteInChunks runs query, a DELETE whose last parameter is the most
// rows it may delete, with args and the chunk size, each time in a
// transaction of its own, until a chunk deletes fewer rows than that. It
// reports how many rows it deleted, with an error too.
func (s *Store) deleteInChunks(ctx context.Context, query string, args ...any) (int64, error) {
	args = append(args, s.pruneChunkSize)
	var total int64
	for {
		n, err := s.deleteChunk(ctx, query, args)
		total += n
		if err != nil || n < int64(s.pruneChunkSize) {
			return total, err
		}
	}
}

// deleteChunk runs one chunk of deleteInChunks.
func (s *Store) deleteChunk(ctx context.Context, query string, args []any) (int64, error) {
	tx, err := s.beginWrite(ctx)
	if err != nil {
		return 0, err
	}
	defer tx.Rollback()
	res, err := tx.ExecContext(ctx, query, args...)
	if err != nil {
		return 0, err
	}
	n, err := res.RowsAffected()
	if err != nil {
		return 0, err
	}
	if err := tx.Commit(); err != nil {
		return 0, err
	}
	return n, nil
}

// requestTypesJSON are event.RequestTypes as a JSON array, for the SQL of
// TrimAudit.
var requestTypesJSON = func() string {
	b, err := json.Marshal(event.RequestTypes())
	if err != nil {
		panic(err)
	}
	return string(b)
}()

// TrimAudit bounds the request events in the trail (every type but the
// admin ones; see event.RequestTypes): it deletes the oldest of them
// beyond the newest keep, and reports how many it deleted. Admin events
// are never deleted by it. It deletes in chunks, as PruneAudit does, up
// to the newest event beyond the bound as it was when the call began;
// the count returned with an error says how many events went before it.
// A negative keep is ErrInvalid. TrimAudit implements audit.EventWriter.
func (s *Store) TrimAudit(ctx context.Context, keep int) (_ int64, err error) {
	defer classify(&err)
	if keep < 0 {
		return 0, fmt.Errorf("trimming audit events: %w: keep %d is negative", ErrInvalid, keep)
	}
	var cutoff int64
	err = s.reader.QueryRowContext(ctx, selectTrimCutoff, requestTypesJSON, keep).Scan(&cutoff)
	if errors.Is(err, sql.ErrNoRows) {
		return 0, nil // at most keep request events
	}
	if err != nil {
		return 0, fmt.Errorf("trimming audit events to %d: %w", keep, err)
	}
	n, err := s.deleteInChunks(ctx, trimEvents, requestTypesJSON, cutoff)
	if err != nil {
		return n, fmt.Errorf("trimming audit events to %d: %w", keep, err)
	}
	return n, nil
}

// QueryAudit returns a page of the stored events that match q, newest (the
// highest ID) first. The filters of q are AND-ed, the Types among
// themselves OR-ed; User compares case-insensitively; ClientIP compares
// unmapped, as events are stored (event.UnmapIP); Since is inclusive and
// Until exclusive. Limit 0 means event.DefaultQueryLimit and a Limit above
// event.MaxQueryLimit is lowered to it; a negative Limit or a Cursor that
// no page returned is ErrInvalid. The strings of Types and Outcome are
// matched as given: checking them against the known values is the caller's
// business. Events is never nil.
func (s *Store) QueryAudit(ctx context.Context, q event.Query) (_ event.Page, err error) {
	defer classify(&err)
	limit, beforeID, err := pageBounds(q)
	if err != nil {
		return event.Page{}, fmt.Errorf("querying audit events: %w", err)
	}
	args, err := queryArgs(q, beforeID, limit+1)
	if err != nil {
		return event.Page{}, fmt.Errorf("querying audit events: %w", err)
	}
	tx, err := s.reader.BeginTx(ctx, nil)
	if err != nil {
		return event.Page{}, fmt.Errorf("querying audit events: %w", err)
	}
	defer tx.Rollback()
	events, err := queryEvents(ctx, tx, eventQuery(q), args...)
	if err != nil {
		return event.Page{}, fmt.Errorf("querying audit events: %w", err)
	}
	page := event.Page{Events: events}
	if len(events) > limit {
		page.Events = events[:limit]
		page.NextCursor = encodeCursor(events[limit-1].ID)
	}
	return page, nil
}

// insertChange stores e, the audit event of a change made in tx at now, if
// the caller of the write method asked for one (ev not nil; e is ev
// completed with what the store knows, see tokenEvent). A zero Time becomes
// now. It returns the event as stored, ID included, for changeDone.
func insertChange(ctx context.Context, tx *sql.Tx, ev *event.Event, e event.Event, now time.Time) (event.Event, error) {
	if ev == nil {
		return event.Event{}, nil
	}
	if e.Time.IsZero() {
		e.Time = now
	}
	e.Time = millis(e.Time)
	args, err := eventArgs(e)
	if err != nil {
		return event.Event{}, fmt.Errorf("recording audit event: %w", err)
	}
	res, err := tx.ExecContext(ctx, insertEvent, args...)
	if err != nil {
		return event.Event{}, fmt.Errorf("recording audit event: %w", err)
	}
	if e.ID, err = res.LastInsertId(); err != nil {
		return event.Event{}, fmt.Errorf("recording audit event: %w", err)
	}
	return e, nil
}

// changeDone hands the stored event back to the caller through ev, once the
// change it records has committed.
func changeDone(ev *event.Event, stored event.Event) {
	if ev != nil {
		*ev = stored
	}
}

// tokenEvent returns *ev completed for a change to tok, or the zero Event if
// ev is nil.
func tokenEvent(ev *event.Event, tok storage.Token) event.Event {
	if ev == nil {
		return event.Event{}
	}
	e := *ev
	e.TokenID, e.User = tok.ID, tok.User
	return e
}

// userEvent returns *ev completed for a change to n tokens of user, or the
// zero Event if ev is nil.
func userEvent(ev *event.Event, user string, n int) event.Event {
	if ev == nil {
		return event.Event{}
	}
	e := *ev
	e.TokenID, e.User, e.Count = "", user, n
	return e
}

// memberEvent returns *ev completed for a change to the membership m, or the
// zero Event if ev is nil.
func memberEvent(ev *event.Event, m storage.Member) event.Event {
	if ev == nil {
		return event.Event{}
	}
	e := *ev
	e.User, e.Group = m.User, m.Group
	return e
}

// insertEvents stores events through one prepared statement. A zero Time
// becomes now.
func insertEvents(ctx context.Context, tx *sql.Tx, events []event.Event, now time.Time) error {
	stmt, err := tx.PrepareContext(ctx, insertEvent)
	if err != nil {
		return err
	}
	defer stmt.Close()
	for i, e := range events {
		if e.Time.IsZero() {
			e.Time = now
		}
		args, err := eventArgs(e)
		if err != nil {
			return fmt.Errorf("event %d (%s): %w", i, e.Type, err)
		}
		if _, err := stmt.ExecContext(ctx, args...); err != nil {
			return fmt.Errorf("event %d (%s): %w", i, e.Type, err)
		}
	}
	return nil
}

// eventArgs returns the arguments of insertEvent for e.
func eventArgs(e event.Event) ([]any, error) {
	changed, err := jsonColumn("changed", e.Changed)
	if err != nil {
		return nil, err
	}
	topClients, err := jsonColumn("top_clients", e.TopClients)
	if err != nil {
		return nil, err
	}
	topUsers, err := jsonColumn("top_users", e.TopUsers)
	if err != nil {
		return nil, err
	}
	return []any{
		e.Time.UnixMilli(), string(e.Type), string(e.Outcome), e.Reason,
		e.User, userKey(e.User), e.TokenID, e.Scheme, event.UnmapIP(e.ClientIP), e.Method, e.Host, e.Path,
		e.Status, e.Actor, changed, e.Count, e.Group, e.Rule, topClients, topUsers, e.ClaimedUser,
	}, nil
}

// jsonColumn encodes a list for a JSON array column, or returns the empty
// string for an empty list.
func jsonColumn[T any](name string, list []T) (string, error) {
	if len(list) == 0 {
		return "", nil
	}
	b, err := json.Marshal(list)
	if err != nil {
		return "", fmt.Errorf("encoding %s: %w", name, err)
	}
	return string(b), nil
}

// pageBounds returns the page size and the id below which the page starts.
func pageBounds(q event.Query) (limit int, beforeID int64, err error) {
	switch {
	case q.Limit < 0:
		return 0, 0, fmt.Errorf("%w: limit %d is negative", ErrInvalid, q.Limit)
	case q.Limit == 0:
		limit = event.DefaultQueryLimit
	default:
		limit = min(q.Limit, event.MaxQueryLimit)
	}
	beforeID = math.MaxInt64
	if q.Cursor != "" {
		if beforeID, err = decodeCursor(q.Cursor); err != nil {
			return 0, 0, err
		}
	}
	return limit, beforeID, nil
}

// queryArgs returns the arguments of the selectEvents statements for q; see
// eventFilters.
func queryArgs(q event.Query, beforeID int64, limit int) ([]any, error) {
	var oneType string
	var types sql.NullString
	if len(q.Types) == 1 {
		oneType = string(q.Types[0])
	}
	if len(q.Types) > 0 {
		b, err := json.Marshal(q.Types)
		if err != nil {
			return nil, fmt.Errorf("encoding types: %w", err)
		}
		types = sql.NullString{String: string(b), Valid: true}
	}
	var since, until sql.NullInt64
	if !q.Since.IsZero() {
		since = sql.NullInt64{Int64: ceilMillis(q.Since), Valid: true}
	}
	if !q.Until.IsZero() {
		until = sql.NullInt64{Int64: ceilMillis(q.Until), Valid: true}
	}
	return []any{
		q.TokenID, userKey(q.User), event.UnmapIP(q.ClientIP), string(q.Outcome), oneType, types,
		since, until, beforeID, limit,
	}, nil
}

// eventQuery picks the statement whose index serves q best: the most
// selective filter set leads.
func eventQuery(q event.Query) string {
	switch {
	case q.TokenID != "":
		return selectEventsByToken
	case q.ClientIP != "":
		return selectEventsByIP
	case q.User != "":
		return selectEventsByUser
	case len(q.Types) == 1:
		return selectEventsByType
	default:
		// Several types would need a sort of every matching row; walking
		// the table backwards stops at the limit instead.
		return selectEvents
	}
}

func queryEvents(ctx context.Context, q queryer, query string, args ...any) ([]event.Event, error) {
	rows, err := q.QueryContext(ctx, query, args...)
	if err != nil {
		return nil, err
	}
	defer rows.Close()
	events := []event.Event{}
	for rows.Next() {
		e, err := scanEvent(rows)
		if err != nil {
			return nil, err
		}
		events = append(events, e)
	}
	return events, rows.Err()
}

func scanEvent(row interface{ Scan(...any) error }) (event.Event, error) {
	var (
		e             event.Event
		ms            int64
		typ, outcome  string
		changed       string
		status, count int64
		top           [2]string
	)
	err := row.Scan(&e.ID, &ms, &typ, &outcome, &e.Reason, &e.User, &e.TokenID, &e.Scheme, &e.ClientIP,
		&e.Method, &e.Host, &e.Path, &status, &e.Actor, &changed, &count, &e.Group, &e.Rule, &top[0], &top[1],
		&e.ClaimedUser)
	if err != nil {
		return event.Event{}, err
	}
	e.Time = fromMillis(ms)
	e.Type, e.Outcome = event.Type(typ), event.Outcome(outcome)
	e.Status, e.Count = int(status), int(count)
	for _, c := range []struct {
		name string
		text string
		dst  any
	}{
		{"changed", changed, &e.Changed},
		{"top_clients", top[0], &e.TopClients},
		{"top_users", top[1], &e.TopUsers},
	} {
		if c.text == "" {
			continue
		}
		if err := json.Unmarshal([]byte(c.text), c.dst); err != nil {
			return event.Event{}, fmt.Errorf("audit event %d: %s: %w", e.ID, c.name, err)
		}
	}
	return e, nil
}

// A cursor is the id of the last event of a page, as a decimal number in
// unpadded base64url: opaque to clients, and free to change form later.
func encodeCursor(id int64) string {
	return base64.RawURLEncoding.EncodeToString(strconv.AppendInt(nil, id, 10))
}

// decodeCursor returns the id a cursor carries. Anything encodeCursor can't
// have returned is ErrInvalid.
func decodeCursor(c string) (int64, error) {
	b, err := base64.RawURLEncoding.Strict().DecodeString(c)
	if err == nil {
		var id int64
		id, err = strconv.ParseInt(string(b), 10, 64)
		if err == nil && id > 0 && encodeCursor(id) == c {
			return id, nil
		}
	}
	if err == nil {
		err = errors.New("not one a page returned")
	}
	return 0, fmt.Errorf("%w: cursor %q is malformed: %v", ErrInvalid, c, err)
}

// ceilMillis returns t in unix milliseconds, rounded up: for a bound on the
// stored millisecond times, "time >= t" and "time < t" are the same with
// this value as with t itself.
func ceilMillis(t time.Time) int64 {
	ms := t.UnixMilli() // rounded down, even before 1970
	if t.Nanosecond()%int(time.Millisecond) != 0 {
		ms++
	}
	return ms
}
