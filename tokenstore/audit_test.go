//go:build cgo

package tokenstore

import (
	"context"
	"encoding/base64"
	"encoding/hex"
	"errors"
	"fmt"
	"reflect"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/apitoken/caddy-apitoken/audit"
	"github.com/apitoken/caddy-apitoken/event"
	"github.com/apitoken/caddy-apitoken/internal/testkit"
	"github.com/apitoken/caddy-apitoken/storage"
	"github.com/apitoken/caddy-apitoken/token"
)

// allEvents returns every stored event, newest first.
func allEvents(t *testing.T, s *Store) []event.Event {
	t.Helper()
	page, err := s.QueryAudit(t.Context(), event.Query{Limit: event.MaxQueryLimit})
	if err != nil {
		t.Fatal(err)
	}
	if page.NextCursor != "" {
		t.Fatal("more events than one page holds")
	}
	return page.Events
}

// countEvents counts the rows of audit_events behind the store's back.
func countEvents(t *testing.T, path string) int {
	t.Helper()
	var n int
	if err := rawDB(t, path).QueryRow(`SELECT COUNT(*) FROM audit_events`).Scan(&n); err != nil {
		t.Fatal(err)
	}
	return n
}

// adminEvent is what an admin handler would pass to a write method.
func adminEvent(typ event.Type, changed ...string) *event.Event {
	return &event.Event{
		Type: typ, Outcome: event.OutcomeSuccess, Actor: "192.0.2.9:51234",
		Method: "POST", Path: "/api-tokens/x", Changed: changed,
	}
}

func mustAppend(t testing.TB, s *Store, events ...event.Event) {
	t.Helper()
	if err := s.AppendAudit(context.Background(), events); err != nil {
		t.Fatalf("AppendAudit: %v", err)
	}
}

// TestChangeEvents: each write method given an event stores exactly one
// row, completed with what the store knows, and hands it back through ev.
func TestChangeEvents(t *testing.T) {
	s, clock, path := newTestStore(t)
	ctx := t.Context()
	tok, _ := mustCreate(t, s, storage.NewToken{User: "Alice", Name: "ci"})
	victim, _ := mustCreate(t, s, storage.NewToken{User: "Alice", Name: "old"})
	mustCreate(t, s, storage.NewToken{User: "bob", Name: "b1"})
	mustCreate(t, s, storage.NewToken{User: "Bob", Name: "b2"})
	callerTime := time.Date(2029, 5, 6, 7, 8, 9, 123_456_789, time.UTC)

	tests := []struct {
		name string
		ev   *event.Event
		// run calls the method and returns the fields the store should
		// have filled in.
		run func(ev *event.Event) (event.Event, error)
	}{
		{"create", adminEvent(event.TypeTokenCreated), func(ev *event.Event) (event.Event, error) {
			created, _, err := s.Create(ctx, storage.NewToken{User: "Carol", Name: "new"}, ev)
			return event.Event{TokenID: created.ID, User: "Carol"}, err
		}},
		{"update", adminEvent(event.TypeTokenUpdated, "name", "expires_at"), func(ev *event.Event) (event.Event, error) {
			_, err := s.Update(ctx, tok.ID, storage.Patch{Name: ptr("renamed"), ExpiresAt: ptr(clock.Now().Add(time.Hour))}, ev)
			return event.Event{TokenID: tok.ID, User: "Alice"}, err
		}},
		{"update: the store's facts win, the caller's time stays",
			&event.Event{Type: event.TypeTokenUpdated, Outcome: event.OutcomeSuccess, TokenID: "wrong", User: "mallory", Time: callerTime},
			func(ev *event.Event) (event.Event, error) {
				_, err := s.Update(ctx, tok.ID, storage.Patch{Description: ptr("d")}, ev)
				return event.Event{TokenID: tok.ID, User: "Alice", Time: millis(callerTime)}, err
			}},
		{"rotate", adminEvent(event.TypeTokenRotated), func(ev *event.Event) (event.Event, error) {
			_, _, err := s.Rotate(ctx, tok.ID, "", ev)
			return event.Event{TokenID: tok.ID, User: "Alice"}, err
		}},
		{"revoke", adminEvent(event.TypeTokenRevoked), func(ev *event.Event) (event.Event, error) {
			_, _, err := s.Revoke(ctx, victim.ID, ev)
			return event.Event{TokenID: victim.ID, User: "Alice"}, err
		}},
		{"revoke user", adminEvent(event.TypeUserTokensRevoked), func(ev *event.Event) (event.Event, error) {
			_, err := s.RevokeUser(ctx, "BOB", ev)
			return event.Event{User: "BOB", Count: 2}, err
		}},
		{"add member", adminEvent(event.TypeGroupMemberAdded), func(ev *event.Event) (event.Event, error) {
			_, _, err := s.AddMember(ctx, "eng", "Dave", ev)
			return event.Event{User: "Dave", Group: "eng"}, err
		}},
		{"remove member, as first spelled", adminEvent(event.TypeGroupMemberRemoved), func(ev *event.Event) (event.Event, error) {
			_, err := s.RemoveMember(ctx, "eng", "DAVE", ev)
			return event.Event{User: "Dave", Group: "eng"}, err
		}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			clock.Advance(time.Minute)
			before := countEvents(t, path)
			caller := *tt.ev
			filled, err := tt.run(tt.ev)
			if err != nil {
				t.Fatal(err)
			}
			if n := countEvents(t, path); n != before+1 {
				t.Fatalf("%d rows written, want 1", n-before)
			}
			want := caller
			want.TokenID, want.User, want.Group, want.Count = filled.TokenID, filled.User, filled.Group, filled.Count
			want.Time = millis(clock.Now())
			if !filled.Time.IsZero() {
				want.Time = filled.Time
			}
			stored := allEvents(t, s)[0]
			want.ID = stored.ID
			if !reflect.DeepEqual(stored, want) {
				t.Errorf("stored event\n%+v, want\n%+v", stored, want)
			}
			if !reflect.DeepEqual(*tt.ev, want) || tt.ev.ID == 0 {
				t.Errorf("ev after the call\n%+v, want the stored event\n%+v", *tt.ev, want)
			}
		})
	}
}

// TestNoChangeNoEvent: a call that changes nothing, or fails, stores no
// event and leaves ev as it was; a nil ev stores none either.
func TestNoChangeNoEvent(t *testing.T) {
	s, _, path := newTestStore(t)
	ctx := t.Context()
	tok, _ := mustCreate(t, s, storage.NewToken{User: "alice", Name: "ci"})
	revoked, _ := mustCreate(t, s, storage.NewToken{User: "alice", Name: "old"})
	if _, _, err := s.Revoke(ctx, revoked.ID, nil); err != nil {
		t.Fatal(err)
	}
	mustAddMember(t, s, "eng", "alice")

	tests := []struct {
		name    string
		run     func(ev *event.Event) error
		wantErr error // nil: the call succeeds, changing nothing
	}{
		{"revoke a revoked token", func(ev *event.Event) error {
			_, _, err := s.Revoke(ctx, revoked.ID, ev)
			return err
		}, nil},
		{"revoke user without tokens", func(ev *event.Event) error {
			_, err := s.RevokeUser(ctx, "nobody", ev)
			return err
		}, nil},
		{"add an existing member", func(ev *event.Event) error {
			_, _, err := s.AddMember(ctx, "eng", "ALICE", ev)
			return err
		}, nil},
		{"remove a non-member", func(ev *event.Event) error {
			_, err := s.RemoveMember(ctx, "eng", "bob", ev)
			return err
		}, nil},
		{"create conflict", func(ev *event.Event) error {
			_, _, err := s.Create(ctx, storage.NewToken{User: "alice", Name: "ci"}, ev)
			return err
		}, ErrConflict},
		{"create invalid", func(ev *event.Event) error {
			_, _, err := s.Create(ctx, storage.NewToken{User: "a:b", Name: "ci"}, ev)
			return err
		}, ErrInvalid},
		{"update revoked", func(ev *event.Event) error {
			_, err := s.Update(ctx, revoked.ID, storage.Patch{Name: ptr("x")}, ev)
			return err
		}, ErrConflict},
		{"rotate unknown", func(ev *event.Event) error {
			_, _, err := s.Rotate(ctx, "zzzzzzzzzzzz", "", ev)
			return err
		}, ErrNotFound},
		{"revoke unknown", func(ev *event.Event) error {
			_, _, err := s.Revoke(ctx, "zzzzzzzzzzzz", ev)
			return err
		}, ErrNotFound},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			ev := adminEvent(event.TypeTokenRevoked)
			caller := *ev
			err := tt.run(ev)
			if !errors.Is(err, tt.wantErr) {
				t.Fatalf("error = %v, want %v", err, tt.wantErr)
			}
			if n := countEvents(t, path); n != 0 {
				t.Errorf("%d events stored, want none", n)
			}
			if !reflect.DeepEqual(*ev, caller) {
				t.Errorf("ev changed to %+v", *ev)
			}
		})
	}

	t.Run("nil event", func(t *testing.T) {
		other, _, err := s.Create(ctx, storage.NewToken{User: "bob", Name: "ci"}, nil)
		if err != nil {
			t.Fatal(err)
		}
		calls := []func() error{
			func() error { _, err := s.Update(ctx, tok.ID, storage.Patch{Name: ptr("x")}, nil); return err },
			func() error { _, _, err := s.Rotate(ctx, tok.ID, "", nil); return err },
			func() error { _, _, err := s.Revoke(ctx, tok.ID, nil); return err },
			func() error { _, err := s.RevokeUser(ctx, "bob", nil); return err },
			func() error { _, _, err := s.AddMember(ctx, "ops", "bob", nil); return err },
			func() error { _, err := s.RemoveMember(ctx, "ops", "bob", nil); return err },
		}
		for i, call := range calls {
			if err := call(); err != nil {
				t.Fatalf("call %d: %v", i, err)
			}
		}
		if got, _ := s.Get(ctx, other.ID); got.RevokedAt.IsZero() {
			t.Error("RevokeUser did nothing")
		}
		if n := countEvents(t, path); n != 0 {
			t.Errorf("%d events stored, want none", n)
		}
	})
}

// failAuditInserts makes every insert into audit_events fail until the
// returned function is called.
func failAuditInserts(t *testing.T, path string) (restore func()) {
	t.Helper()
	db := rawDB(t, path)
	_, err := db.Exec(`CREATE TRIGGER fail_audit BEFORE INSERT ON audit_events
BEGIN SELECT RAISE(ABORT, 'audit insert refused'); END`)
	if err != nil {
		t.Fatal(err)
	}
	return func() {
		t.Helper()
		if _, err := db.Exec(`DROP TRIGGER fail_audit`); err != nil {
			t.Fatal(err)
		}
	}
}

// TestChangeEventAtomic: when the audit event can't be stored, the change
// it records does not happen, in the file or in memory.
func TestChangeEventAtomic(t *testing.T) {
	s, clock, path := newTestStore(t)
	ctx := t.Context()
	tok, secret := mustCreate(t, s, storage.NewToken{User: "alice", Name: "ci", ExpiresAt: clock.Now().Add(time.Hour)})
	mustCreate(t, s, storage.NewToken{User: "bob", Name: "ci"})
	mustAddMember(t, s, "eng", "alice")
	restore := failAuditInserts(t, path)

	dump := func() string {
		return dumpTable(t, path) + dumpMembers(t, path) + dumpQuery(t, path, `SELECT * FROM audit_events`)
	}
	// memory is what the in-memory indexes say.
	memory := func() string {
		e, ok := s.Lookup(secret)
		return fmt.Sprint(e, ok, s.CountByState(clock.Now()), s.GroupsOf("alice"), s.GroupsOf("carol"))
	}
	tests := []struct {
		name string
		run  func(ev *event.Event) error
	}{
		{"create", func(ev *event.Event) error {
			_, secret, err := s.Create(ctx, storage.NewToken{User: "carol", Name: "new"}, ev)
			if err != nil && secret != "" {
				t.Error("Create returned a secret with an error")
			}
			return err
		}},
		{"update", func(ev *event.Event) error {
			_, err := s.Update(ctx, tok.ID, storage.Patch{Name: ptr("renamed"), ExpiresAt: new(time.Time)}, ev)
			return err
		}},
		{"rotate", func(ev *event.Event) error {
			_, secret, err := s.Rotate(ctx, tok.ID, "", ev)
			if err != nil && secret != "" {
				t.Error("Rotate returned a secret with an error")
			}
			return err
		}},
		{"revoke", func(ev *event.Event) error {
			_, _, err := s.Revoke(ctx, tok.ID, ev)
			return err
		}},
		{"revoke user", func(ev *event.Event) error {
			_, err := s.RevokeUser(ctx, "bob", ev)
			return err
		}},
		{"add member", func(ev *event.Event) error {
			_, _, err := s.AddMember(ctx, "ops", "carol", ev)
			return err
		}},
		{"remove member", func(ev *event.Event) error {
			_, err := s.RemoveMember(ctx, "eng", "alice", ev)
			return err
		}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			clock.Advance(time.Second)
			beforeFile, beforeMemory := dump(), memory()
			ev := adminEvent(event.TypeTokenUpdated)
			caller := *ev
			err := tt.run(ev)
			if err == nil || !strings.Contains(err.Error(), "recording audit event") || !strings.Contains(err.Error(), "audit insert refused") {
				t.Fatalf("error = %v, want the failed audit insert", err)
			}
			if after := dump(); after != beforeFile {
				t.Errorf("the file changed:\n%s\nwant\n%s", after, beforeFile)
			}
			if after := memory(); after != beforeMemory {
				t.Errorf("memory changed:\n%s\nwant\n%s", after, beforeMemory)
			}
			if !reflect.DeepEqual(*ev, caller) {
				t.Errorf("ev changed to %+v", *ev)
			}
		})
	}

	t.Run("a nil event is not inserted", func(t *testing.T) {
		for _, tt := range tests {
			if err := tt.run(nil); err != nil {
				t.Errorf("%s without an event: %v", tt.name, err)
			}
		}
	})
	t.Run("append is all or nothing", func(t *testing.T) {
		restore()
		_, err := rawDB(t, path).Exec(`CREATE TRIGGER fail_boom BEFORE INSERT ON audit_events WHEN NEW.type = 'boom'
BEGIN SELECT RAISE(ABORT, 'boom refused'); END`)
		if err != nil {
			t.Fatal(err)
		}
		before := countEvents(t, path)
		err = s.AppendAudit(ctx, []event.Event{{Type: event.TypeAuthFailed}, {Type: "boom"}, {Type: event.TypeAuthFailed}})
		if err == nil || !strings.Contains(err.Error(), "event 1 (boom)") {
			t.Fatalf("AppendAudit error = %v, want one naming event 1", err)
		}
		if n := countEvents(t, path); n != before {
			t.Errorf("%d events stored by a failed AppendAudit", n-before)
		}
	})
}

// queryFixture appends a set of events, oldest first, and returns them as
// stored.
func queryFixture(t *testing.T, s *Store, base time.Time) []event.Event {
	t.Helper()
	at := func(m int) time.Time { return base.Add(time.Duration(m) * time.Minute) }
	events := []event.Event{
		{Time: at(0), Type: event.TypeTokenCreated, Outcome: event.OutcomeSuccess, User: "Alice", TokenID: "aaaaaaaaaaaa", Actor: "admin", Changed: []string{"name"}},
		{Time: at(1), Type: event.TypeAuthSucceeded, Outcome: event.OutcomeSuccess, User: "alice", TokenID: "aaaaaaaaaaaa", ClientIP: "192.0.2.1", Scheme: "bearer", Method: "GET", Host: "api.example.com", Path: "/v1/x", Status: 200},
		{Time: at(2), Type: event.TypeAuthFailed, Outcome: event.OutcomeFailure, Reason: "wrong_secret", User: "bob", ClientIP: "192.0.2.2", Status: 401},
		{Time: at(3), Type: event.TypeDenied, Outcome: event.OutcomeDenied, Reason: "path", User: "ALICE", TokenID: "aaaaaaaaaaaa", ClientIP: "192.0.2.2", Rule: "/admin/*", Status: 403},
		{Time: at(4), Type: event.TypeAuthSucceeded, Outcome: event.OutcomeSuccess, User: "bob", TokenID: "bbbbbbbbbbbb", ClientIP: "2001:db8::1"},
		{Time: at(5), Type: event.TypeWouldDeny, Outcome: event.OutcomeReported, Reason: "client_ip", User: "bob", TokenID: "bbbbbbbbbbbb", ClientIP: "192.0.2.1"},
		{Time: at(6), Type: event.TypeGroupMemberAdded, Outcome: event.OutcomeSuccess, User: "Carol", Group: "eng", Actor: "admin"},
		{Time: at(7), Type: event.TypeUserTokensRevoked, Outcome: event.OutcomeSuccess, User: "bob", Count: 2, Actor: "admin"},
		// Stored last but timed earlier (a late flush): order is by id.
		{Time: at(-1), Type: event.TypeAuthFailed, Outcome: event.OutcomeFailure, Reason: "malformed", ClientIP: "192.0.2.3"},
	}
	mustAppend(t, s, events...)
	stored := allEvents(t, s)
	slices.Reverse(stored)
	if len(stored) != len(events) {
		t.Fatalf("%d events stored, want %d", len(stored), len(events))
	}
	for i := range events {
		want := events[i]
		want.ID, want.Time = stored[i].ID, millis(want.Time)
		if !reflect.DeepEqual(stored[i], want) {
			t.Fatalf("event %d stored as\n%+v, want\n%+v", i, stored[i], want)
		}
		if i > 0 && stored[i].ID <= stored[i-1].ID {
			t.Fatalf("ids not increasing: %d after %d", stored[i].ID, stored[i-1].ID)
		}
	}
	return stored
}

func TestQueryAudit(t *testing.T) {
	s, clock, _ := newTestStore(t)
	ctx := t.Context()
	base := clock.Now()
	stored := queryFixture(t, s, base)
	at := func(m int) time.Time { return base.Add(time.Duration(m) * time.Minute) }

	tests := []struct {
		name string
		q    event.Query
		want []int // indexes into the fixture, newest first
	}{
		{"all, by id not time", event.Query{}, []int{8, 7, 6, 5, 4, 3, 2, 1, 0}},
		{"token", event.Query{TokenID: "aaaaaaaaaaaa"}, []int{3, 1, 0}},
		{"unknown token", event.Query{TokenID: "zzzzzzzzzzzz"}, []int{}},
		{"user ignores case", event.Query{User: "aLiCe"}, []int{3, 1, 0}},
		{"client ip", event.Query{ClientIP: "192.0.2.2"}, []int{3, 2}},
		{"ipv6 client ip", event.Query{ClientIP: "2001:db8::1"}, []int{4}},
		{"one type", event.Query{Types: []event.Type{event.TypeAuthSucceeded}}, []int{4, 1}},
		{"types are or-ed", event.Query{Types: []event.Type{event.TypeAuthFailed, event.TypeDenied, event.TypeWouldDeny}}, []int{8, 5, 3, 2}},
		{"unknown type", event.Query{Types: []event.Type{"nope"}}, []int{}},
		{"outcome", event.Query{Outcome: event.OutcomeFailure}, []int{8, 2}},
		{"since is inclusive", event.Query{Since: at(5)}, []int{7, 6, 5}},
		{"until is exclusive", event.Query{Until: at(1)}, []int{8, 0}},
		{"since and until", event.Query{Since: at(2), Until: at(5)}, []int{4, 3, 2}},
		{"user and type", event.Query{User: "BOB", Types: []event.Type{event.TypeAuthSucceeded, event.TypeUserTokensRevoked}}, []int{7, 4}},
		{"token and ip", event.Query{TokenID: "aaaaaaaaaaaa", ClientIP: "192.0.2.1"}, []int{1}},
		{"ip and outcome", event.Query{ClientIP: "192.0.2.1", Outcome: event.OutcomeReported}, []int{5}},
		{"user, types and time", event.Query{User: "alice", Types: []event.Type{event.TypeAuthSucceeded, event.TypeDenied}, Since: at(2)}, []int{3}},
		{"every filter", event.Query{
			TokenID: "bbbbbbbbbbbb", User: "Bob", ClientIP: "2001:db8::1", Outcome: event.OutcomeSuccess,
			Types: []event.Type{event.TypeAuthSucceeded}, Since: at(4), Until: at(5),
		}, []int{4}},
		{"every filter, one off", event.Query{
			TokenID: "bbbbbbbbbbbb", User: "Bob", ClientIP: "2001:db8::1", Outcome: event.OutcomeSuccess,
			Types: []event.Type{event.TypeAuthSucceeded}, Since: at(4), Until: at(4),
		}, []int{}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			page, err := s.QueryAudit(ctx, tt.q)
			if err != nil {
				t.Fatal(err)
			}
			if page.Events == nil {
				t.Fatal("Events is nil")
			}
			want := make([]event.Event, len(tt.want))
			for i, j := range tt.want {
				want[i] = stored[j]
			}
			if !reflect.DeepEqual(page.Events, want) {
				t.Errorf("QueryAudit(%+v) = %v, want %v", tt.q, eventIDs(page.Events), eventIDs(want))
			}
			if page.NextCursor != "" {
				t.Errorf("NextCursor = %q on the only page", page.NextCursor)
			}
		})
	}
}

func eventIDs(events []event.Event) []int64 {
	ids := make([]int64, len(events))
	for i, e := range events {
		ids[i] = e.ID
	}
	return ids
}

// TestQueryAuditTimeBounds: Since and Until at and between the stored
// milliseconds.
func TestQueryAuditTimeBounds(t *testing.T) {
	s, clock, _ := newTestStore(t)
	t0 := millis(clock.Now())
	ms := func(n float64) time.Time { return t0.Add(time.Duration(n * float64(time.Millisecond))) }
	mustAppend(t, s, event.Event{Time: ms(0), Type: "e0"}, event.Event{Time: ms(1), Type: "e1"}, event.Event{Time: ms(2), Type: "e2"})
	tests := []struct {
		name         string
		since, until time.Time
		want         string
	}{
		{"since at an event", ms(1), time.Time{}, "[e2 e1]"},
		{"since between", ms(0.5), time.Time{}, "[e2 e1]"},
		{"since a nanosecond after", ms(1).Add(time.Nanosecond), time.Time{}, "[e2]"},
		{"until at an event", time.Time{}, ms(1), "[e0]"},
		{"until between", time.Time{}, ms(1.5), "[e1 e0]"},
		{"until a nanosecond after", time.Time{}, ms(1).Add(time.Nanosecond), "[e1 e0]"},
		{"since = until", ms(1), ms(1), "[]"},
		{"one millisecond", ms(1), ms(2), "[e1]"},
		{"until before since", ms(2), ms(1), "[]"},
		{"another time zone", ms(1).In(time.FixedZone("X", 3600)), time.Time{}, "[e2 e1]"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			page, err := s.QueryAudit(t.Context(), event.Query{Since: tt.since, Until: tt.until})
			if err != nil {
				t.Fatal(err)
			}
			var types []string
			for _, e := range page.Events {
				types = append(types, string(e.Type))
			}
			if got := fmt.Sprint(types); got != tt.want {
				t.Errorf("got %s, want %s", got, tt.want)
			}
		})
	}
}

// TestQueryAuditPages pages through more events than a page holds.
func TestQueryAuditPages(t *testing.T) {
	s, clock, _ := newTestStore(t)
	events := make([]event.Event, 250)
	for i := range events {
		events[i] = event.Event{Time: clock.Now(), Type: event.TypeAuthSucceeded, Outcome: event.OutcomeSuccess, TokenID: "aaaaaaaaaaaa"}
		if i%5 == 0 {
			events[i].TokenID = "bbbbbbbbbbbb" // 50 of them
		}
		clock.Advance(time.Second)
	}
	mustAppend(t, s, events...)

	tests := []struct {
		name      string
		q         event.Query
		wantPages []int
	}{
		{"three pages", event.Query{Limit: 100}, []int{100, 100, 50}},
		{"filtered, index order", event.Query{Limit: 100, TokenID: "aaaaaaaaaaaa"}, []int{100, 100}},
		{"filtered, table order", event.Query{Limit: 100, Outcome: event.OutcomeSuccess}, []int{100, 100, 50}},
		{"small pages", event.Query{Limit: 7, TokenID: "bbbbbbbbbbbb"}, []int{7, 7, 7, 7, 7, 7, 7, 1}},
		{"one page exactly", event.Query{Limit: 50, TokenID: "bbbbbbbbbbbb"}, []int{50}},
		{"default limit", event.Query{}, []int{event.DefaultQueryLimit, event.DefaultQueryLimit, 50}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			q := tt.q
			var sizes []int
			var ids []int64
			for range 100 {
				page, err := s.QueryAudit(t.Context(), q)
				if err != nil {
					t.Fatal(err)
				}
				sizes = append(sizes, len(page.Events))
				for _, e := range page.Events {
					if tt.q.TokenID != "" && e.TokenID != tt.q.TokenID {
						t.Fatalf("event %d has token %s", e.ID, e.TokenID)
					}
					ids = append(ids, e.ID)
				}
				if page.NextCursor == "" {
					break
				}
				q.Cursor = page.NextCursor
			}
			if !reflect.DeepEqual(sizes, tt.wantPages) {
				t.Errorf("page sizes %v, want %v", sizes, tt.wantPages)
			}
			// Strictly decreasing: newest first, no duplicates.
			for i := 1; i < len(ids); i++ {
				if ids[i] >= ids[i-1] {
					t.Fatalf("id %d follows %d", ids[i], ids[i-1])
				}
			}
			// No gaps: exactly the matching events.
			var want []int64
			for _, e := range allEvents(t, s) {
				if tt.q.TokenID == "" || e.TokenID == tt.q.TokenID {
					want = append(want, e.ID)
				}
			}
			if !reflect.DeepEqual(ids, want) {
				t.Errorf("paged through %d events, want the %d matching", len(ids), len(want))
			}
		})
	}
}

func TestQueryAuditLimits(t *testing.T) {
	s, _, _ := newTestStore(t)
	events := make([]event.Event, event.MaxQueryLimit+10)
	for i := range events {
		events[i] = event.Event{Type: event.TypeAuthSucceeded}
	}
	mustAppend(t, s, events...)
	tests := []struct {
		limit, want int
	}{
		{0, event.DefaultQueryLimit},
		{1, 1},
		{event.MaxQueryLimit, event.MaxQueryLimit},
		{event.MaxQueryLimit + 1, event.MaxQueryLimit},
		{1 << 40, event.MaxQueryLimit},
	}
	for _, tt := range tests {
		t.Run(fmt.Sprint(tt.limit), func(t *testing.T) {
			page, err := s.QueryAudit(t.Context(), event.Query{Limit: tt.limit})
			if err != nil {
				t.Fatal(err)
			}
			if len(page.Events) != tt.want || page.NextCursor == "" {
				t.Errorf("%d events, next %q; want %d and a cursor", len(page.Events), page.NextCursor, tt.want)
			}
		})
	}
}

func TestQueryAuditInvalid(t *testing.T) {
	s, _, _ := newTestStore(t)
	mustAppend(t, s, event.Event{Type: event.TypeAuthFailed})
	b64 := base64.RawURLEncoding.EncodeToString
	str := func(s string) []byte { return []byte(s) }
	tests := []struct {
		name string
		q    event.Query
		want string // in the message
	}{
		{"cursor not base64", event.Query{Cursor: "!!!"}, `cursor "!!!"`},
		{"cursor padded", event.Query{Cursor: base64.URLEncoding.EncodeToString(str("1234"))}, "cursor"},
		{"cursor not a number", event.Query{Cursor: b64(str("abc"))}, "cursor"},
		{"cursor zero", event.Query{Cursor: b64(str("0"))}, "cursor"},
		{"cursor negative", event.Query{Cursor: b64(str("-5"))}, "cursor"},
		{"cursor with a leading zero", event.Query{Cursor: b64(str("05"))}, "cursor"},
		{"cursor with a plus", event.Query{Cursor: b64(str("+5"))}, "cursor"},
		{"cursor too big", event.Query{Cursor: b64(str("99999999999999999999"))}, "cursor"},
		{"cursor with a space", event.Query{Cursor: b64(str("5 "))}, "cursor"},
		{"cursor in standard base64", event.Query{Cursor: "Pz8/"}, "cursor"},
		{"negative limit", event.Query{Limit: -1}, "limit -1"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := s.QueryAudit(t.Context(), tt.q)
			if !errors.Is(err, ErrInvalid) {
				t.Fatalf("error = %v, want ErrInvalid", err)
			}
			if !strings.Contains(err.Error(), tt.want) {
				t.Errorf("error %q does not mention %q", err, tt.want)
			}
		})
	}
	t.Run("a well-formed cursor past every event", func(t *testing.T) {
		page, err := s.QueryAudit(t.Context(), event.Query{Cursor: encodeCursor(1)})
		if err != nil || len(page.Events) != 0 || page.NextCursor != "" {
			t.Errorf("QueryAudit = %+v, %v; want an empty last page", page, err)
		}
	})
}

// TestQueryAuditPlans: each form of the query walks an index (or the
// table) in id order, so that a page costs its size, not the table's.
func TestQueryAuditPlans(t *testing.T) {
	s, _, _ := newTestStore(t)
	since := time.Date(2030, 1, 1, 0, 0, 0, 0, time.UTC)
	tests := []struct {
		name string
		q    event.Query
		want string // in the plan
	}{
		{"no filter", event.Query{}, "USING INTEGER PRIMARY KEY"},
		{"time", event.Query{Since: since, Until: since.Add(time.Hour)}, "USING INTEGER PRIMARY KEY"},
		{"several types", event.Query{Types: []event.Type{"a", "b"}}, "USING INTEGER PRIMARY KEY"},
		{"token", event.Query{TokenID: "aaaaaaaaaaaa", User: "x", Types: []event.Type{"a", "b"}}, "USING INDEX audit_events_token_id"},
		{"client ip", event.Query{ClientIP: "192.0.2.1", User: "x"}, "USING INDEX audit_events_client_ip"},
		{"user", event.Query{User: "x", Types: []event.Type{"a"}}, "USING INDEX audit_events_user_key"},
		{"one type", event.Query{Types: []event.Type{"a"}, Since: since}, "USING INDEX audit_events_type"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			args, err := queryArgs(tt.q, 1000, 101)
			if err != nil {
				t.Fatal(err)
			}
			rows, err := s.reader.QueryContext(t.Context(), "EXPLAIN QUERY PLAN "+eventQuery(tt.q), args...)
			if err != nil {
				t.Fatal(err)
			}
			defer rows.Close()
			var plan []string
			for rows.Next() {
				var id, parent, notused int
				var detail string
				if err := rows.Scan(&id, &parent, &notused, &detail); err != nil {
					t.Fatal(err)
				}
				plan = append(plan, detail)
			}
			if err := rows.Err(); err != nil {
				t.Fatal(err)
			}
			got := strings.Join(plan, "; ")
			if !strings.Contains(got, "SEARCH audit_events "+tt.want) || strings.Contains(got, "TEMP B-TREE") {
				t.Errorf("plan %q: want a search %s without a sort", got, tt.want)
			}
		})
	}
}

func TestPruneAudit(t *testing.T) {
	s, clock, path := newTestStore(t)
	ctx := t.Context()
	s.pruneChunkSize = 7
	tok, _ := mustCreate(t, s, storage.NewToken{User: "alice", Name: "ci"})

	// 50 old events (49 appended, 1 admin), each a second apart, then
	// the cut-off, then 20 new ones.
	for range 49 {
		mustAppend(t, s, event.Event{Type: event.TypeAuthSucceeded}) // the clock's time
		clock.Advance(time.Second)
	}
	if _, err := s.Update(ctx, tok.ID, storage.Patch{Name: ptr("x")}, adminEvent(event.TypeTokenUpdated)); err != nil {
		t.Fatal(err)
	}
	clock.Advance(time.Second)
	cutoff := clock.Now()
	var newIDs []int64
	for range 20 {
		mustAppend(t, s, event.Event{Type: event.TypeAuthSucceeded})
		clock.Advance(time.Second)
	}
	for _, e := range allEvents(t, s)[:20] {
		newIDs = append(newIDs, e.ID)
	}

	t.Run("a failed chunk keeps the earlier ones", func(t *testing.T) {
		// The third chunk holds the 20th event: two chunks go, then the
		// error.
		var id20 int64
		if err := rawDB(t, path).QueryRow(`SELECT id FROM audit_events ORDER BY id LIMIT 1 OFFSET 19`).Scan(&id20); err != nil {
			t.Fatal(err)
		}
		_, err := rawDB(t, path).Exec(`CREATE TRIGGER fail_prune BEFORE DELETE ON audit_events WHEN OLD.id = ` + fmt.Sprint(id20) + `
BEGIN SELECT RAISE(ABORT, 'prune refused'); END`)
		if err != nil {
			t.Fatal(err)
		}
		n, err := s.PruneAudit(ctx, cutoff)
		if err == nil || !strings.Contains(err.Error(), "prune refused") {
			t.Fatalf("PruneAudit error = %v, want the trigger's", err)
		}
		if n != 14 {
			t.Errorf("PruneAudit = %d with the error, want 14 (two chunks of 7)", n)
		}
		if got := countEvents(t, path); got != 70-14 {
			t.Errorf("%d events left, want %d", got, 70-14)
		}
		if _, err := rawDB(t, path).Exec(`DROP TRIGGER fail_prune`); err != nil {
			t.Fatal(err)
		}
	})
	t.Run("exactly the old events go", func(t *testing.T) {
		n, err := s.PruneAudit(ctx, cutoff)
		if err != nil {
			t.Fatal(err)
		}
		if n != 50-14 {
			t.Errorf("PruneAudit = %d, want %d", n, 50-14)
		}
		if got := eventIDs(allEvents(t, s)); !reflect.DeepEqual(got, newIDs) {
			t.Errorf("left %v, want the new events %v", got, newIDs)
		}
	})
	t.Run("again", func(t *testing.T) {
		if n, err := s.PruneAudit(ctx, cutoff); err != nil || n != 0 {
			t.Errorf("PruneAudit = %d, %v; want 0", n, err)
		}
	})
	t.Run("a multiple of the chunk size", func(t *testing.T) {
		// 14 of the 20 new events, a second apart, are before this.
		n, err := s.PruneAudit(ctx, cutoff.Add(14*time.Second))
		if err != nil || n != 14 {
			t.Errorf("PruneAudit = %d, %v; want 14", n, err)
		}
		if got := countEvents(t, path); got != 6 {
			t.Errorf("%d events left, want 6", got)
		}
	})
	t.Run("ids are never reused", func(t *testing.T) {
		if n, err := s.PruneAudit(ctx, clock.Now().Add(time.Hour)); err != nil || n != 6 {
			t.Fatalf("PruneAudit = %d, %v; want 6", n, err)
		}
		mustAppend(t, s, event.Event{Type: event.TypeAuthFailed})
		if got := allEvents(t, s)[0].ID; got <= newIDs[0] {
			t.Errorf("new event has id %d, not above the pruned %d", got, newIDs[0])
		}
	})
}

// TestAuditHoldsNoSecrets: whatever the write methods record, no token, no
// part of its secret and no hash of it reaches audit_events.
func TestAuditHoldsNoSecrets(t *testing.T) {
	s, _, path := newTestStore(t)
	ctx := t.Context()
	var secrets []string
	remember := func(secret string) {
		t.Helper()
		sep := strings.LastIndexByte(secret, '_')
		body := secret[sep+1:]
		hash := token.Hash(secret)
		secrets = append(secrets,
			secret,
			body[token.IDLen:token.IDLen+token.SecretLen],     // the secret part alone
			body[token.IDLen+8:token.IDLen+token.SecretLen-8], // any long piece of it
			hex.EncodeToString(hash[:]),                       // the hash, as SQL's hex() or Go would print it
			strings.ToUpper(hex.EncodeToString(hash[:])),
			string(hash[:]),
		)
	}
	for i, user := range []string{"alice", "Bob"} {
		tok, secret, err := s.Create(ctx, storage.NewToken{User: user, Name: "ci", Description: "d"}, adminEvent(event.TypeTokenCreated, "name", "description"))
		if err != nil {
			t.Fatal(err)
		}
		remember(secret)
		for range 2 {
			_, secret, err := s.Rotate(ctx, tok.ID, "acme", adminEvent(event.TypeTokenRotated))
			if err != nil {
				t.Fatal(err)
			}
			remember(secret)
		}
		if _, err := s.Update(ctx, tok.ID, storage.Patch{Name: ptr(fmt.Sprint("n", i))}, adminEvent(event.TypeTokenUpdated, "name")); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := s.RevokeUser(ctx, "alice", adminEvent(event.TypeUserTokensRevoked)); err != nil {
		t.Fatal(err)
	}

	rows, err := rawDB(t, path).Query(`SELECT * FROM audit_events`)
	if err != nil {
		t.Fatal(err)
	}
	n := 0
	testkit.ScanRows(t, rows, func(cols []string, vals []any) {
		for i, v := range vals {
			text := fmt.Sprint(v)
			if b, ok := v.([]byte); ok {
				text = string(b)
			}
			for _, secret := range secrets {
				if strings.Contains(text, secret) {
					t.Errorf("row %d, column %s holds secret material %q", n, cols[i], secret)
				}
			}
		}
		n++
	})
	if n != 9 {
		t.Errorf("scanned %d rows, want 9: the test must see what it checks", n)
	}
}

// TestAuditSummaryRoundTrip: a summary's top lists are stored as JSON
// arrays and read back as written; other events leave the columns empty.
func TestAuditSummaryRoundTrip(t *testing.T) {
	s, clock, path := newTestStore(t)
	ctx := t.Context()
	// Through the real path: a Recorder with a detail limit of one, its
	// queue, the store as its writer.
	q := audit.NewQueue(audit.QueueConfig{Writer: s})
	r := audit.NewRecorder(audit.RecorderConfig{Queue: q, Now: clock.Now,
		DetailLimit: audit.DetailLimit{Events: 1, Window: time.Minute}})
	refusal := func(ip, user string) event.Event {
		return event.Event{Time: clock.Now(), Type: event.TypeAuthFailed, Outcome: event.OutcomeFailure,
			Reason: "unknown_token", User: user, Scheme: "basic", ClientIP: ip, Method: "GET", Host: "h", Path: "/x", Status: 401}
	}
	for _, c := range []struct {
		ip, user string
		n        int
	}{{"203.0.113.7", "admin", 4}, {"2001:db8::9", "root", 2}, {"198.51.100.1", "", 1}} {
		for range c.n {
			r.Record(refusal(c.ip, c.user))
		}
	}
	end := clock.Now().Truncate(time.Minute).Add(time.Minute)
	r.Flush(end)
	if err := q.Flush(ctx); err != nil {
		t.Fatal(err)
	}

	got := allEvents(t, s) // newest first: the summary, then the detailed event
	if len(got) != 2 {
		t.Fatalf("stored %+v, want a detailed event and a summary", got)
	}
	want := event.Event{
		ID: got[0].ID, Time: end, Type: event.TypeAuthFailed, Outcome: event.OutcomeFailure, Reason: "unknown_token",
		User: "admin", Scheme: "basic", ClientIP: "203.0.113.7", Method: "GET", Host: "h", Path: "/x", Status: 401, Count: 6,
		TopClients: []event.Tally{{Value: "203.0.113.7", Count: 3}, {Value: "2001:db8::9", Count: 2}, {Value: "198.51.100.1", Count: 1}},
		TopUsers:   []event.Tally{{Value: "admin", Count: 3}, {Value: "root", Count: 2}},
	}
	if !reflect.DeepEqual(got[0], want) || !got[0].IsSummary() {
		t.Errorf("summary read back as\n%+v, want\n%+v", got[0], want)
	}
	if got[1].IsSummary() || got[1].TopClients != nil || got[1].TopUsers != nil {
		t.Errorf("detailed event read back as %+v", got[1])
	}
	dump := dumpQuery(t, path, `SELECT top_clients, top_users FROM audit_events ORDER BY id`)
	wantDump := `[ ]
[[{"value":"203.0.113.7","count":3},{"value":"2001:db8::9","count":2},{"value":"198.51.100.1","count":1}] [{"value":"admin","count":3},{"value":"root","count":2}]]
2 rows
`
	if dump != wantDump {
		t.Errorf("columns hold\n%s\nwant\n%s", dump, wantDump)
	}
	t.Run("filters find the summary", func(t *testing.T) {
		for _, q := range []event.Query{{ClientIP: "203.0.113.7"}, {User: "ADMIN"}, {Types: []event.Type{event.TypeAuthFailed}, Outcome: event.OutcomeFailure}} {
			page, err := s.QueryAudit(ctx, q)
			if err != nil || !slices.ContainsFunc(page.Events, event.Event.IsSummary) {
				t.Errorf("QueryAudit(%+v) = %+v, %v; want the summary", q, page.Events, err)
			}
		}
	})
	t.Run("only JSON arrays", func(t *testing.T) {
		for _, col := range []string{"top_clients", "top_users"} {
			_, err := rawDB(t, path).Exec(`INSERT INTO audit_events (time, type, ` + col + `) VALUES (1, 'auth_failed', '{"value":"x"}')`)
			if err == nil || !strings.Contains(err.Error(), "CHECK constraint failed") {
				t.Errorf("%s: an object was stored (%v)", col, err)
			}
		}
	})
}

// TestMigrateAuditSummaries: migration 4 applies to a version 3 database
// that holds audit events; they read back unchanged, without top lists.
func TestMigrateAuditSummaries(t *testing.T) {
	migrations, err := loadMigrations()
	if err != nil {
		t.Fatal(err)
	}
	if len(migrations) < 4 || migrations[3].name != "0004_audit_summaries.sql" {
		t.Fatalf("migration 4 is not 0004_audit_summaries.sql: %d migrations", len(migrations))
	}
	path, db := databaseAt(t, 3)
	ctx := t.Context()
	// Events as a version 3 build wrote them.
	_, err = db.ExecContext(ctx, `INSERT INTO audit_events
(time, type, outcome, reason, user, user_key, client_ip, status, changed, count) VALUES
(1000, 'auth_failed', 'failure', 'revoked', 'Alice', 'alice', '192.0.2.1', 401, '', 0),
(2000, 'user_tokens_revoked', 'success', '', 'bob', 'bob', '', 0, '["revoked"]', 3)`)
	if err != nil {
		t.Fatal(err)
	}
	if err := db.Close(); err != nil {
		t.Fatal(err)
	}

	s := openStore(t, path, Options{PollInterval: -1})
	if got := userVersion(t, path); got != len(migrations) {
		t.Errorf("user_version = %d, want %d", got, len(migrations))
	}
	var strict int
	if err := rawDB(t, path).QueryRow(`SELECT strict FROM pragma_table_list WHERE name = 'audit_events'`).Scan(&strict); err != nil || strict != 1 {
		t.Errorf("audit_events: strict = %d, %v; want it still STRICT", strict, err)
	}
	got := allEvents(t, s)
	want := []event.Event{
		{ID: 2, Time: fromMillis(2000), Type: event.TypeUserTokensRevoked, Outcome: event.OutcomeSuccess, User: "bob", Changed: []string{"revoked"}, Count: 3},
		{ID: 1, Time: fromMillis(1000), Type: event.TypeAuthFailed, Outcome: event.OutcomeFailure, Reason: "revoked", User: "Alice", ClientIP: "192.0.2.1", Status: 401},
	}
	if !reflect.DeepEqual(got, want) {
		t.Errorf("old events read back as\n%+v, want\n%+v", got, want)
	}
	if got[0].IsSummary() || got[1].IsSummary() {
		t.Error("an old event reads as a summary")
	}
	summary := event.Event{Time: fromMillis(3000), Type: event.TypeDenied, Outcome: event.OutcomeDenied, Reason: "scope_denied",
		User: "carol", Count: 7, TopUsers: []event.Tally{{Value: "carol", Count: 7}}}
	mustAppend(t, s, summary)
	summary.ID = 3
	if got := allEvents(t, s)[0]; !reflect.DeepEqual(got, summary) {
		t.Errorf("summary after the migration read back as\n%+v, want\n%+v", got, summary)
	}
}

func TestTrimAudit(t *testing.T) {
	s, clock, path := newTestStore(t)
	ctx := t.Context()
	s.pruneChunkSize = 7
	tok, _ := mustCreate(t, s, storage.NewToken{User: "alice", Name: "ci"})

	// Admin events first (the oldest), then 30 request events of every
	// request type, with more admin events among them.
	admin := func(name string) {
		t.Helper()
		if _, err := s.Update(ctx, tok.ID, storage.Patch{Name: ptr(name)}, adminEvent(event.TypeTokenUpdated, "name")); err != nil {
			t.Fatal(err)
		}
	}
	admin("first")
	admin("second")
	types := event.RequestTypes()
	var requestIDs []int64 // oldest first
	for i := range 30 {
		if i == 10 || i == 20 {
			admin(fmt.Sprint("middle ", i))
		}
		mustAppend(t, s, event.Event{Type: types[i%len(types)], Count: i % 3})
		requestIDs = append(requestIDs, allEvents(t, s)[0].ID)
		clock.Advance(time.Second)
	}
	adminIDs := func() []int64 {
		t.Helper()
		var ids []int64
		for _, e := range allEvents(t, s) {
			if e.Type.Class() == event.ClassAdmin {
				ids = append(ids, e.ID)
			}
		}
		return ids
	}
	wantAdmin := adminIDs()
	if len(wantAdmin) != 4 {
		t.Fatalf("%d admin events, want 4", len(wantAdmin))
	}
	remaining := func(t *testing.T) []int64 {
		t.Helper()
		var ids []int64
		for _, e := range allEvents(t, s) {
			if e.Type.Class() != event.ClassAdmin {
				ids = append(ids, e.ID)
			}
		}
		slices.Reverse(ids)
		return ids
	}

	steps := []struct {
		name    string
		keep    int
		deleted int64
		left    []int64 // request events left, oldest first
	}{
		{"under the bound", 30, 0, requestIDs},
		{"over it: the oldest go, in chunks", 8, 22, requestIDs[22:]},
		{"again: nothing more", 8, 0, requestIDs[22:]},
		{"a multiple of the chunk size", 1, 7, requestIDs[29:]},
		{"none kept", 0, 1, nil},
	}
	for _, st := range steps {
		t.Run(st.name, func(t *testing.T) {
			n, err := s.TrimAudit(ctx, st.keep)
			if err != nil {
				t.Fatal(err)
			}
			if n != st.deleted {
				t.Errorf("TrimAudit(%d) = %d, want %d", st.keep, n, st.deleted)
			}
			if got := remaining(t); !slices.Equal(got, st.left) {
				t.Errorf("request events left %v, want %v", got, st.left)
			}
			if got := adminIDs(); !slices.Equal(got, wantAdmin) {
				t.Errorf("admin events %v, want all of %v", got, wantAdmin)
			}
			if got := countEvents(t, path); got != len(st.left)+len(wantAdmin) {
				t.Errorf("%d rows, want %d", got, len(st.left)+len(wantAdmin))
			}
		})
	}
	t.Run("negative keep", func(t *testing.T) {
		if _, err := s.TrimAudit(ctx, -1); !errors.Is(err, ErrInvalid) {
			t.Errorf("TrimAudit(-1) error = %v, want ErrInvalid", err)
		}
	})
	t.Run("through the pruner, with its count", func(t *testing.T) {
		var newest []int64
		for i := range 12 {
			mustAppend(t, s, event.Event{Type: types[i%len(types)]})
			newest = append(newest, allEvents(t, s)[0].ID)
		}
		p := &audit.Pruner{Writer: s, MaxEvents: 5, Now: clock.Now}
		n, err := p.PruneOnce(ctx)
		if err != nil {
			t.Fatal(err)
		}
		if n != (audit.Pruned{Trimmed: 7}) || p.Trimmed() != 7 {
			t.Errorf("PruneOnce = %+v, Trimmed() = %d; want 7 trimmed", n, p.Trimmed())
		}
		if got := remaining(t); !slices.Equal(got, newest[7:]) {
			t.Errorf("request events left %v, want the newest five %v", got, newest[7:])
		}
		if got := adminIDs(); !slices.Equal(got, wantAdmin) {
			t.Errorf("admin events %v, want all of %v", got, wantAdmin)
		}
	})
}

// The audit sinks write to a Store (kept here, not in store code, so that
// the store does not import package audit and, through it, zap).
var (
	_ audit.EventWriter = (*Store)(nil)
	_ audit.UsageWriter = (*Store)(nil)
)
