//go:build cgo

package tokenstore

import (
	"context"
	"database/sql"
	"encoding/json"
	"errors"
	"fmt"
	"net/url"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/apitoken/caddy-apitoken/event"
	"github.com/apitoken/caddy-apitoken/internal/testkit"
	"github.com/apitoken/caddy-apitoken/policy"
	"github.com/apitoken/caddy-apitoken/storage"
	"github.com/apitoken/caddy-apitoken/token"
)

// fakeClock is an injectable Options.Now.
type fakeClock = testkit.Clock

// clockStart is when a fakeClock starts.
var clockStart = time.Date(2030, 1, 2, 3, 4, 5, 6_000_000, time.UTC)

func newFakeClock() *fakeClock { return testkit.NewClock(clockStart) }

func testDBPath(t *testing.T) string {
	t.Helper()
	return filepath.Join(t.TempDir(), "tokens.db")
}

// openStore opens a store at path, closed when the test ends.
func openStore(t testing.TB, path string, opts Options) *Store {
	t.Helper()
	s, err := Open(context.Background(), path, opts)
	if err != nil {
		t.Fatalf("Open(%q): %v", path, err)
	}
	t.Cleanup(func() {
		if err := s.Close(); err != nil {
			t.Errorf("Close: %v", err)
		}
	})
	return s
}

// newTestStore opens a store in a new directory, with a fake clock and no
// poller.
func newTestStore(t *testing.T) (*Store, *fakeClock, string) {
	t.Helper()
	clock := newFakeClock()
	path := testDBPath(t)
	return openStore(t, path, Options{Now: clock.Now, PollInterval: -1}), clock, path
}

func mustCreate(t testing.TB, s *Store, nt storage.NewToken) (storage.Token, string) {
	t.Helper()
	tok, secret, err := s.Create(context.Background(), nt, nil)
	if err != nil {
		t.Fatalf("Create(%+v): %v", nt, err)
	}
	return tok, secret
}

// rawDB opens the file behind the store's back, for inspection.
func rawDB(t *testing.T, path string) *sql.DB {
	t.Helper()
	db, err := sql.Open("sqlite3", dsn(path, url.Values{"_busy_timeout": {"5000"}}))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { db.Close() })
	return db
}

// dumpTable returns every row of the tokens table as text, to show that a
// failed call wrote nothing.
func dumpTable(t *testing.T, path string) string {
	t.Helper()
	return dumpQuery(t, path, `SELECT * FROM tokens ORDER BY id`)
}

// dumpMembers is dumpTable for group_members.
func dumpMembers(t *testing.T, path string) string {
	t.Helper()
	return dumpQuery(t, path, `SELECT * FROM group_members ORDER BY group_name, user_key`)
}

func dumpQuery(t *testing.T, path, query string) string {
	t.Helper()
	rows, err := rawDB(t, path).Query(query)
	if err != nil {
		t.Fatal(err)
	}
	var b strings.Builder
	n := 0
	testkit.ScanRows(t, rows, func(_ []string, vals []any) {
		fmt.Fprintf(&b, "%v\n", vals)
		n++
	})
	fmt.Fprintf(&b, "%d rows\n", n)
	return b.String()
}

func userVersion(t *testing.T, path string) int {
	t.Helper()
	var v int
	if err := rawDB(t, path).QueryRow(`PRAGMA user_version`).Scan(&v); err != nil {
		t.Fatal(err)
	}
	return v
}

// databaseAt returns a new database with the first n migrations applied,
// as a build of schema version n left it, and a raw handle on it.
func databaseAt(t *testing.T, n int) (path string, db *sql.DB) {
	t.Helper()
	migrations, err := loadMigrations()
	if err != nil {
		t.Fatal(err)
	}
	path = testDBPath(t)
	db = rawDB(t, path)
	for _, m := range migrations[:n] {
		if err := applyMigration(t.Context(), db, m); err != nil {
			t.Fatal(err)
		}
	}
	if got := userVersion(t, path); got != n {
		t.Fatalf("user_version = %d, want %d", got, n)
	}
	return path, db
}

func TestCreateGet(t *testing.T) {
	s, clock, _ := newTestStore(t)
	ctx := t.Context()
	expires := clock.Now().Add(24*time.Hour + 123456*time.Nanosecond)

	tests := []struct {
		name       string
		nt         storage.NewToken
		wantPrefix string
	}{
		{"default prefix", storage.NewToken{User: "alice", Name: "ci"}, token.DefaultPrefix + "_"},
		{"custom prefix", storage.NewToken{Prefix: "acme", User: "Bob", Name: "deploy", Description: "deploys\nthings", ExpiresAt: expires}, "acme_"},
		{"longest fields", storage.NewToken{User: strings.Repeat("u", maxUserLen), Name: strings.Repeat("n", maxNameLen), Description: strings.Repeat("d", maxDescriptionLen)}, token.DefaultPrefix + "_"},
		{"unicode", storage.NewToken{User: "zoë", Name: "laptop 💻"}, token.DefaultPrefix + "_"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			tok, secret := mustCreate(t, s, tt.nt)
			now := millis(clock.Now())
			want := storage.Token{
				ID:          tok.ID,
				User:        tt.nt.User,
				Name:        tt.nt.Name,
				Description: tt.nt.Description,
				Hint:        token.Hint(secret),
				CreatedAt:   now,
				UpdatedAt:   now,
				ExpiresAt:   millis(tt.nt.ExpiresAt),
			}
			if !reflect.DeepEqual(tok, want) {
				t.Errorf("Create returned\n%+v, want\n%+v", tok, want)
			}
			if !strings.HasPrefix(secret, tt.wantPrefix) {
				t.Errorf("secret %q does not start with %q", secret, tt.wantPrefix)
			}
			if id, ok := token.Parse(secret); !ok || id != tok.ID {
				t.Errorf("Parse(secret) = %q, %v; want %q, true", id, ok, tok.ID)
			}
			if strings.Contains(fmt.Sprintf("%+v", tok), secret[len(tt.wantPrefix)+token.IDLen:]) {
				t.Errorf("the token's public view contains the secret")
			}
			got, err := s.Get(ctx, tok.ID)
			if err != nil {
				t.Fatalf("Get: %v", err)
			}
			if !reflect.DeepEqual(got, want) {
				t.Errorf("Get returned\n%+v, want\n%+v", got, want)
			}
			e, ok := s.Lookup(secret)
			wantEntry := storage.Entry{ID: tok.ID, Key: keyOf(t, tok.ID), User: tok.User, UserKey: strings.ToLower(tok.User), Name: tok.Name, ExpiresAt: tok.ExpiresAt}
			if !ok || !reflect.DeepEqual(e, wantEntry) {
				t.Errorf("Lookup = %+v, %v; want %+v, true", e, ok, wantEntry)
			}
			clock.Advance(time.Second)
		})
	}
}

func TestGetNotFound(t *testing.T) {
	s, _, _ := newTestStore(t)
	for _, id := range []string{"abcdefgh2345", "", "ABCDEFGH2345", "x", "'; DROP TABLE tokens; --"} {
		t.Run(id, func(t *testing.T) {
			if _, err := s.Get(t.Context(), id); !errors.Is(err, ErrNotFound) {
				t.Errorf("Get(%q) error = %v, want ErrNotFound", id, err)
			}
		})
	}
}

func TestCreateInvalid(t *testing.T) {
	s, _, path := newTestStore(t)
	mustCreate(t, s, storage.NewToken{User: "alice", Name: "existing"})
	before := dumpTable(t, path)

	tests := []struct {
		name string
		nt   storage.NewToken
		want string // in the message
	}{
		{"no user", storage.NewToken{Name: "n"}, "user is required"},
		{"user too long", storage.NewToken{User: strings.Repeat("u", maxUserLen+1), Name: "n"}, "user is 257 bytes"},
		{"user not UTF-8", storage.NewToken{User: "al\xffice", Name: "n"}, "not valid UTF-8"},
		{"user with colon", storage.NewToken{User: "al:ice", Name: "n"}, "must not contain ':'"},
		{"user with newline", storage.NewToken{User: "al\nice", Name: "n"}, "control characters"},
		{"user with DEL", storage.NewToken{User: "al\x7fice", Name: "n"}, "control characters"},
		{"user with C1 control", storage.NewToken{User: "al\u0085ice", Name: "n"}, "control characters"},
		{"user with leading space", storage.NewToken{User: " alice", Name: "n"}, "begin or end with a space"},
		{"user with trailing space", storage.NewToken{User: "alice ", Name: "n"}, "begin or end with a space"},
		{"no name", storage.NewToken{User: "alice"}, "name is required"},
		{"name too long", storage.NewToken{User: "alice", Name: strings.Repeat("n", maxNameLen+1)}, "name is 129 bytes"},
		{"name with tab", storage.NewToken{User: "alice", Name: "a\tb"}, "control characters"},
		{"name not UTF-8", storage.NewToken{User: "alice", Name: "\xc3"}, "not valid UTF-8"},
		{"description too long", storage.NewToken{User: "alice", Name: "n", Description: strings.Repeat("d", maxDescriptionLen+1)}, "description is 1025 bytes"},
		{"description not UTF-8", storage.NewToken{User: "alice", Name: "n", Description: "\xff"}, "not valid UTF-8"},
		{"prefix upper-case", storage.NewToken{Prefix: "Acme", User: "alice", Name: "n"}, `prefix "Acme"`},
		{"prefix too long", storage.NewToken{Prefix: "abcdefghijklmnopq", User: "alice", Name: "n"}, "prefix"},
		{"prefix with separator", storage.NewToken{Prefix: "ac_me", User: "alice", Name: "n"}, "prefix"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, secret, err := s.Create(t.Context(), tt.nt, nil)
			if !errors.Is(err, ErrInvalid) {
				t.Fatalf("Create error = %v, want ErrInvalid", err)
			}
			if !strings.Contains(err.Error(), tt.want) {
				t.Errorf("error %q does not mention %q", err, tt.want)
			}
			if secret != "" {
				t.Errorf("Create returned a secret with an error")
			}
			if after := dumpTable(t, path); after != before {
				t.Errorf("table changed:\n%s\nwant\n%s", after, before)
			}
		})
	}
}

func TestCreateConflict(t *testing.T) {
	s, clock, path := newTestStore(t)
	ctx := t.Context()
	first, _ := mustCreate(t, s, storage.NewToken{User: "alice", Name: "ci"})

	before := dumpTable(t, path)
	for _, user := range []string{"alice", "ALICE", "Alice"} {
		t.Run(user, func(t *testing.T) {
			_, _, err := s.Create(ctx, storage.NewToken{User: user, Name: "ci"}, nil)
			if !errors.Is(err, ErrConflict) {
				t.Fatalf("Create error = %v, want ErrConflict", err)
			}
			if after := dumpTable(t, path); after != before {
				t.Errorf("table changed:\n%s\nwant\n%s", after, before)
			}
		})
	}

	t.Run("other user", func(t *testing.T) {
		mustCreate(t, s, storage.NewToken{User: "bob", Name: "ci"})
	})
	t.Run("other name", func(t *testing.T) {
		mustCreate(t, s, storage.NewToken{User: "alice", Name: "CI"}) // names are case-sensitive
	})
	t.Run("expired token still holds the name", func(t *testing.T) {
		mustCreate(t, s, storage.NewToken{User: "carol", Name: "old", ExpiresAt: clock.Now().Add(time.Minute)})
		clock.Advance(time.Hour)
		if _, _, err := s.Create(ctx, storage.NewToken{User: "carol", Name: "old"}, nil); !errors.Is(err, ErrConflict) {
			t.Errorf("Create error = %v, want ErrConflict", err)
		}
	})
	t.Run("after revocation", func(t *testing.T) {
		if _, _, err := s.Revoke(ctx, first.ID, nil); err != nil {
			t.Fatal(err)
		}
		mustCreate(t, s, storage.NewToken{User: "alice", Name: "ci"})
	})
}

func TestList(t *testing.T) {
	s, clock, _ := newTestStore(t)
	ctx := t.Context()

	t.Run("empty", func(t *testing.T) {
		got, err := s.List(ctx, storage.Filter{})
		if err != nil {
			t.Fatal(err)
		}
		if b, _ := json.Marshal(got); string(b) != "[]" {
			t.Errorf("List of nothing marshals to %s, want []", b)
		}
	})

	create := func(user, name string, expiresIn time.Duration) storage.Token {
		t.Helper()
		nt := storage.NewToken{User: user, Name: name}
		if expiresIn != 0 {
			nt.ExpiresAt = clock.Now().Add(expiresIn)
		}
		tok, _ := mustCreate(t, s, nt)
		clock.Advance(time.Second)
		return tok
	}
	create("alice", "a1", 0)
	create("Alice", "a2", time.Minute) // will expire
	b1 := create("bob", "b1", time.Hour)
	a3 := create("ALICE", "a3", 0) // will be revoked
	b2 := create("bob", "b2", 0)
	if _, _, err := s.Revoke(ctx, a3.ID, nil); err != nil {
		t.Fatal(err)
	}
	clock.Advance(30 * time.Minute) // a2 has expired, b1 has not

	tests := []struct {
		name string
		f    storage.Filter
		want []string // names, newest first
	}{
		{"all", storage.Filter{}, []string{"b2", "a3", "b1", "a2", "a1"}},
		{"user", storage.Filter{User: "alice"}, []string{"a3", "a2", "a1"}},
		{"user other case", storage.Filter{User: "aLiCe"}, []string{"a3", "a2", "a1"}},
		{"unknown user", storage.Filter{User: "carol"}, []string{}},
		{"active", storage.Filter{State: storage.StateActive}, []string{"b2", "b1", "a1"}},
		{"expired", storage.Filter{State: storage.StateExpired}, []string{"a2"}},
		{"revoked", storage.Filter{State: storage.StateRevoked}, []string{"a3"}},
		{"user and state", storage.Filter{User: "BOB", State: storage.StateActive}, []string{"b2", "b1"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := s.List(ctx, tt.f)
			if err != nil {
				t.Fatal(err)
			}
			if got == nil {
				t.Fatal("List returned a nil slice")
			}
			names := []string{}
			for _, tok := range got {
				names = append(names, tok.Name)
				if tt.f.State != "" && tok.State(clock.Now()) != tt.f.State {
					t.Errorf("%s is %s, listed as %s", tok.Name, tok.State(clock.Now()), tt.f.State)
				}
			}
			if fmt.Sprint(names) != fmt.Sprint(tt.want) {
				t.Errorf("List(%+v) = %v, want %v", tt.f, names, tt.want)
			}
		})
	}

	t.Run("tokens are complete", func(t *testing.T) {
		got, err := s.List(ctx, storage.Filter{User: "bob"})
		if err != nil {
			t.Fatal(err)
		}
		if !reflect.DeepEqual(got, []storage.Token{b2, b1}) {
			t.Errorf("List = %+v, want %+v", got, []storage.Token{b2, b1})
		}
	})

	t.Run("invalid state", func(t *testing.T) {
		if _, err := s.List(ctx, storage.Filter{State: "gone"}); !errors.Is(err, ErrInvalid) {
			t.Errorf("List error = %v, want ErrInvalid", err)
		}
	})
}

func TestClockDrivesState(t *testing.T) {
	s, clock, _ := newTestStore(t)
	ctx := t.Context()
	tok, secret := mustCreate(t, s, storage.NewToken{User: "alice", Name: "ci", ExpiresAt: clock.Now().Add(time.Hour)})

	listIDs := func(st storage.State) []string {
		t.Helper()
		got, err := s.List(ctx, storage.Filter{State: st})
		if err != nil {
			t.Fatal(err)
		}
		ids := []string{}
		for _, tok := range got {
			ids = append(ids, tok.ID)
		}
		return ids
	}
	steps := []struct {
		name    string
		advance time.Duration
		want    storage.State
	}{
		{"fresh", 0, storage.StateActive},
		{"a millisecond before", time.Hour - time.Millisecond, storage.StateActive},
		{"at expiry", time.Millisecond, storage.StateExpired},
		{"long after", 24 * time.Hour, storage.StateExpired},
	}
	for _, st := range steps {
		t.Run(st.name, func(t *testing.T) {
			clock.Advance(st.advance)
			now := clock.Now()
			if got := tok.State(now); got != st.want {
				t.Errorf("Token.State = %s, want %s", got, st.want)
			}
			e, ok := s.Lookup(secret)
			if !ok {
				t.Fatal("Lookup failed")
			}
			if got := e.State(now); got != st.want {
				t.Errorf("Entry.State = %s, want %s", got, st.want)
			}
			if got := listIDs(st.want); len(got) != 1 || got[0] != tok.ID {
				t.Errorf("List(%s) = %v, want [%s]", st.want, got, tok.ID)
			}
		})
	}
}

func TestUpdate(t *testing.T) {
	s, clock, path := newTestStore(t)
	ctx := t.Context()
	tok, secret := mustCreate(t, s, storage.NewToken{User: "alice", Name: "ci", Description: "old"})
	other, _ := mustCreate(t, s, storage.NewToken{User: "alice", Name: "laptop"})
	ptr := func(s string) *string { return &s }

	t.Run("fields", func(t *testing.T) {
		clock.Advance(time.Minute)
		expires := clock.Now().Add(time.Hour)
		got, err := s.Update(ctx, tok.ID, storage.Patch{Name: ptr("build"), Description: ptr("new"), ExpiresAt: &expires}, nil)
		if err != nil {
			t.Fatal(err)
		}
		want := tok
		want.Name, want.Description, want.ExpiresAt = "build", "new", millis(expires)
		want.UpdatedAt = millis(clock.Now())
		if !reflect.DeepEqual(got, want) {
			t.Errorf("Update returned\n%+v, want\n%+v", got, want)
		}
		if stored, err := s.Get(ctx, tok.ID); err != nil || !reflect.DeepEqual(stored, want) {
			t.Errorf("Get = %+v, %v; want %+v", stored, err, want)
		}
		if e, ok := s.Lookup(secret); !ok || e.Name != "build" || !e.ExpiresAt.Equal(millis(expires)) {
			t.Errorf("Lookup = %+v, %v; want the new name and expiry", e, ok)
		}
	})
	t.Run("never expires", func(t *testing.T) {
		got, err := s.Update(ctx, tok.ID, storage.Patch{ExpiresAt: new(time.Time)}, nil)
		if err != nil {
			t.Fatal(err)
		}
		if !got.ExpiresAt.IsZero() {
			t.Errorf("ExpiresAt = %v, want zero", got.ExpiresAt)
		}
		if e, _ := s.Lookup(secret); !e.ExpiresAt.IsZero() {
			t.Errorf("Lookup ExpiresAt = %v, want zero", e.ExpiresAt)
		}
	})
	t.Run("description only", func(t *testing.T) {
		got, err := s.Update(ctx, tok.ID, storage.Patch{Description: ptr("")}, nil)
		if err != nil {
			t.Fatal(err)
		}
		if got.Name != "build" || got.Description != "" {
			t.Errorf("Update = %+v; want name kept, description cleared", got)
		}
	})

	before := dumpTable(t, path)
	failures := []struct {
		name  string
		id    string
		patch storage.Patch
		want  error
	}{
		{"empty patch", tok.ID, storage.Patch{}, ErrInvalid},
		{"empty name", tok.ID, storage.Patch{Name: ptr("")}, ErrInvalid},
		{"name with newline", tok.ID, storage.Patch{Name: ptr("a\nb")}, ErrInvalid},
		{"long description", tok.ID, storage.Patch{Name: ptr("ok"), Description: ptr(strings.Repeat("d", maxDescriptionLen+1))}, ErrInvalid},
		{"name taken", tok.ID, storage.Patch{Name: ptr(other.Name)}, ErrConflict},
		{"unknown id", "zzzzzzzzzzzz", storage.Patch{Name: ptr("x")}, ErrNotFound},
		{"malformed id", "nope", storage.Patch{Name: ptr("x")}, ErrNotFound},
	}
	for _, tt := range failures {
		t.Run(tt.name, func(t *testing.T) {
			if _, err := s.Update(ctx, tt.id, tt.patch, nil); !errors.Is(err, tt.want) {
				t.Fatalf("Update error = %v, want %v", err, tt.want)
			}
			if after := dumpTable(t, path); after != before {
				t.Errorf("table changed:\n%s\nwant\n%s", after, before)
			}
		})
	}

	t.Run("revoked", func(t *testing.T) {
		if _, _, err := s.Revoke(ctx, other.ID, nil); err != nil {
			t.Fatal(err)
		}
		before := dumpTable(t, path)
		if _, err := s.Update(ctx, other.ID, storage.Patch{Name: ptr("x")}, nil); !errors.Is(err, ErrConflict) {
			t.Fatalf("Update error = %v, want ErrConflict", err)
		}
		if after := dumpTable(t, path); after != before {
			t.Errorf("table changed")
		}
	})
	t.Run("name of a revoked token is free", func(t *testing.T) {
		if _, err := s.Update(ctx, tok.ID, storage.Patch{Name: ptr(other.Name)}, nil); err != nil {
			t.Fatal(err)
		}
	})
}

func TestRevoke(t *testing.T) {
	s, clock, path := newTestStore(t)
	ctx := t.Context()
	tok, secret := mustCreate(t, s, storage.NewToken{User: "alice", Name: "ci"})

	clock.Advance(time.Minute)
	revoked, _, err := s.Revoke(ctx, tok.ID, nil)
	if err != nil {
		t.Fatal(err)
	}
	now := millis(clock.Now())
	want := tok
	want.RevokedAt, want.UpdatedAt = now, now
	if !reflect.DeepEqual(revoked, want) {
		t.Errorf("Revoke returned\n%+v, want\n%+v", revoked, want)
	}
	if revoked.State(clock.Now()) != storage.StateRevoked {
		t.Errorf("State = %s, want revoked", revoked.State(clock.Now()))
	}
	e, ok := s.Lookup(secret)
	if !ok || !e.Revoked {
		t.Errorf("Lookup = %+v, %v; want a revoked entry", e, ok)
	}

	t.Run("again", func(t *testing.T) {
		before := dumpTable(t, path)
		clock.Advance(time.Minute)
		again, _, err := s.Revoke(ctx, tok.ID, nil)
		if err != nil {
			t.Fatal(err)
		}
		if !reflect.DeepEqual(again, want) {
			t.Errorf("second Revoke returned\n%+v, want it unchanged\n%+v", again, want)
		}
		if after := dumpTable(t, path); after != before {
			t.Errorf("second Revoke changed the table")
		}
	})
	t.Run("not found", func(t *testing.T) {
		for _, id := range []string{"zzzzzzzzzzzz", "bad id"} {
			if _, _, err := s.Revoke(ctx, id, nil); !errors.Is(err, ErrNotFound) {
				t.Errorf("Revoke(%q) error = %v, want ErrNotFound", id, err)
			}
		}
	})
}

func TestRevokeUser(t *testing.T) {
	s, clock, path := newTestStore(t)
	ctx := t.Context()
	create := func(user, name string) (storage.Token, string) {
		t.Helper()
		tok, secret := mustCreate(t, s, storage.NewToken{User: user, Name: name})
		clock.Advance(time.Second)
		return tok, secret
	}
	a1, s1 := create("alice", "a1")
	a2, s2 := create("Alice", "a2")
	a3, _ := create("alice", "a3")
	b1, sb := create("bob", "b1")
	if _, _, err := s.Revoke(ctx, a3.ID, nil); err != nil {
		t.Fatal(err)
	}
	a3, _ = s.Get(ctx, a3.ID)
	clock.Advance(time.Minute)

	got, err := s.RevokeUser(ctx, "ALICE", nil)
	if err != nil {
		t.Fatal(err)
	}
	var ids []string
	for _, tok := range got {
		ids = append(ids, tok.ID)
		if !tok.RevokedAt.Equal(millis(clock.Now())) {
			t.Errorf("%s: RevokedAt = %v, want now", tok.Name, tok.RevokedAt)
		}
	}
	if want := []string{a2.ID, a1.ID}; fmt.Sprint(ids) != fmt.Sprint(want) {
		t.Errorf("RevokeUser revoked %v, want %v (a3 was revoked already)", ids, want)
	}
	for _, secret := range []string{s1, s2} {
		if e, ok := s.Lookup(secret); !ok || !e.Revoked {
			t.Errorf("Lookup = %+v, %v; want revoked", e, ok)
		}
	}
	if e, ok := s.Lookup(sb); !ok || e.Revoked {
		t.Errorf("bob's token: Lookup = %+v, %v; want not revoked", e, ok)
	}
	if got, _ := s.Get(ctx, a3.ID); !reflect.DeepEqual(got, a3) {
		t.Errorf("a3 changed: %+v, want %+v", got, a3)
	}
	if got, _ := s.Get(ctx, b1.ID); !reflect.DeepEqual(got, b1) {
		t.Errorf("b1 changed: %+v, want %+v", got, b1)
	}

	t.Run("nothing to revoke", func(t *testing.T) {
		before := dumpTable(t, path)
		for _, user := range []string{"alice", "nobody"} {
			got, err := s.RevokeUser(ctx, user, nil)
			if err != nil {
				t.Fatal(err)
			}
			if got == nil || len(got) != 0 {
				t.Errorf("RevokeUser(%q) = %#v, want an empty slice", user, got)
			}
		}
		if after := dumpTable(t, path); after != before {
			t.Errorf("table changed")
		}
	})
	t.Run("invalid user", func(t *testing.T) {
		for _, user := range []string{"", "a:b"} {
			if _, err := s.RevokeUser(ctx, user, nil); !errors.Is(err, ErrInvalid) {
				t.Errorf("RevokeUser(%q) error = %v, want ErrInvalid", user, err)
			}
		}
	})
}

func TestRotate(t *testing.T) {
	s, clock, path := newTestStore(t)
	ctx := t.Context()
	tok, oldSecret := mustCreate(t, s, storage.NewToken{User: "alice", Name: "ci", Description: "d", ExpiresAt: clock.Now().Add(time.Hour)})

	clock.Advance(time.Minute)
	rotated, newSecret, err := s.Rotate(ctx, tok.ID, "acme", nil)
	if err != nil {
		t.Fatal(err)
	}
	now := millis(clock.Now())
	want := tok
	want.Hint, want.RotatedAt, want.UpdatedAt = token.Hint(newSecret), now, now
	if !reflect.DeepEqual(rotated, want) {
		t.Errorf("Rotate returned\n%+v, want\n%+v", rotated, want)
	}
	if newSecret == oldSecret || !strings.HasPrefix(newSecret, "acme_") {
		t.Errorf("new secret %q: want a different token with prefix acme_", newSecret)
	}
	if id, ok := token.Parse(newSecret); !ok || id != tok.ID {
		t.Errorf("Parse(new secret) = %q, %v; want the same id %q", id, ok, tok.ID)
	}
	if _, ok := s.Lookup(oldSecret); ok {
		t.Error("the old secret still passes Lookup after Rotate")
	}
	if e, ok := s.Lookup(newSecret); !ok || e.ID != tok.ID || e.Revoked {
		t.Errorf("Lookup(new secret) = %+v, %v", e, ok)
	}
	if got, _ := s.Get(ctx, tok.ID); !reflect.DeepEqual(got, want) {
		t.Errorf("Get = %+v, want %+v", got, want)
	}

	t.Run("default prefix", func(t *testing.T) {
		_, secret, err := s.Rotate(ctx, tok.ID, "", nil)
		if err != nil {
			t.Fatal(err)
		}
		if !strings.HasPrefix(secret, token.DefaultPrefix+"_") {
			t.Errorf("secret %q lacks the default prefix", secret)
		}
		if _, ok := s.Lookup(newSecret); ok {
			t.Error("the previous secret still passes Lookup")
		}
	})

	expired, _ := mustCreate(t, s, storage.NewToken{User: "alice", Name: "expired", ExpiresAt: clock.Now().Add(time.Second)})
	revoked, _ := mustCreate(t, s, storage.NewToken{User: "alice", Name: "revoked"})
	if _, _, err := s.Revoke(ctx, revoked.ID, nil); err != nil {
		t.Fatal(err)
	}
	clock.Advance(time.Second)
	before := dumpTable(t, path)
	failures := []struct {
		name, id, prefix string
		want             error
	}{
		{"revoked", revoked.ID, "", ErrConflict},
		{"expired", expired.ID, "", ErrConflict},
		{"unknown", "zzzzzzzzzzzz", "", ErrNotFound},
		{"malformed id", "zz", "", ErrNotFound},
		{"bad prefix", tok.ID, "Bad", ErrInvalid},
	}
	for _, tt := range failures {
		t.Run(tt.name, func(t *testing.T) {
			_, secret, err := s.Rotate(ctx, tt.id, tt.prefix, nil)
			if !errors.Is(err, tt.want) {
				t.Fatalf("Rotate error = %v, want %v", err, tt.want)
			}
			if secret != "" {
				t.Error("Rotate returned a secret with an error")
			}
			if after := dumpTable(t, path); after != before {
				t.Errorf("table changed")
			}
		})
	}
}

func TestOpenFiles(t *testing.T) {
	t.Run("new file is private", func(t *testing.T) {
		dir := filepath.Join(t.TempDir(), "a", "b")
		path := filepath.Join(dir, "tokens.db")
		s := openStore(t, path, Options{PollInterval: -1})
		mustCreate(t, s, storage.NewToken{User: "alice", Name: "ci"}) // makes the -wal file
		for _, p := range []string{path, path + "-wal", path + "-shm"} {
			fi, err := os.Stat(p)
			if err != nil {
				t.Fatal(err)
			}
			if m := fi.Mode().Perm(); m != 0o600 {
				t.Errorf("%s has mode %o, want 600", filepath.Base(p), m)
			}
		}
		for _, d := range []string{dir, filepath.Dir(dir)} {
			fi, err := os.Stat(d)
			if err != nil {
				t.Fatal(err)
			}
			if m := fi.Mode().Perm(); m != 0o700 {
				t.Errorf("directory %s has mode %o, want 700", d, m)
			}
		}
	})
	t.Run("existing file keeps its mode", func(t *testing.T) {
		path := testDBPath(t)
		if err := os.WriteFile(path, nil, 0o640); err != nil {
			t.Fatal(err)
		}
		if err := os.Chmod(path, 0o640); err != nil {
			t.Fatal(err)
		}
		openStore(t, path, Options{PollInterval: -1})
		fi, err := os.Stat(path)
		if err != nil {
			t.Fatal(err)
		}
		if m := fi.Mode().Perm(); m != 0o640 {
			t.Errorf("mode %o, want 640", m)
		}
	})
	t.Run("path needing escapes", func(t *testing.T) {
		dir := filepath.Join(t.TempDir(), "we?ird #dir %41")
		path := filepath.Join(dir, "to&kens=1.db")
		s := openStore(t, path, Options{PollInterval: -1})
		mustCreate(t, s, storage.NewToken{User: "alice", Name: "ci"})
		entries, err := os.ReadDir(dir)
		if err != nil {
			t.Fatal(err)
		}
		var names []string
		for _, e := range entries {
			names = append(names, e.Name())
		}
		if fmt.Sprint(names) != "[to&kens=1.db to&kens=1.db-shm to&kens=1.db-wal]" {
			t.Errorf("files in %q: %v", dir, names)
		}
	})
	t.Run("relative path", func(t *testing.T) {
		dir := t.TempDir()
		t.Chdir(dir)
		openStore(t, filepath.Join("sub", "tokens.db"), Options{PollInterval: -1})
		if _, err := os.Stat(filepath.Join(dir, "sub", "tokens.db")); err != nil {
			t.Error(err)
		}
	})
	t.Run("empty path", func(t *testing.T) {
		if _, err := Open(t.Context(), "", Options{}); !errors.Is(err, ErrInvalid) {
			t.Errorf("Open(\"\") error = %v, want ErrInvalid", err)
		}
	})
	t.Run("not a database", func(t *testing.T) {
		path := testDBPath(t)
		if err := os.WriteFile(path, []byte(strings.Repeat("not sqlite ", 100)), 0o600); err != nil {
			t.Fatal(err)
		}
		_, err := Open(t.Context(), path, Options{})
		if err == nil || !strings.Contains(err.Error(), "opening token store "+path) {
			t.Errorf("Open error = %v, want one naming the path", err)
		}
	})
}

func TestConnectionSettings(t *testing.T) {
	s, _, _ := newTestStore(t)
	ctx := t.Context()
	pragmas := []struct {
		db     *sql.DB
		pragma string
		want   string
	}{
		{s.writer, "journal_mode", "wal"},
		{s.writer, "synchronous", "2"}, // FULL
		{s.writer, "foreign_keys", "1"},
		{s.writer, "busy_timeout", "5000"},
		{s.reader, "journal_mode", "wal"},
		{s.reader, "query_only", "1"},
	}
	for _, p := range pragmas {
		name := "writer"
		if p.db == s.reader {
			name = "reader"
		}
		t.Run(name+" "+p.pragma, func(t *testing.T) {
			var got string
			if err := p.db.QueryRowContext(ctx, "PRAGMA "+p.pragma).Scan(&got); err != nil {
				t.Fatal(err)
			}
			if got != p.want {
				t.Errorf("PRAGMA %s = %q, want %q", p.pragma, got, p.want)
			}
		})
	}
	t.Run("reader can't write", func(t *testing.T) {
		if _, err := s.reader.ExecContext(ctx, `DELETE FROM tokens`); err == nil {
			t.Error("DELETE through the reader succeeded")
		}
	})
	t.Run("writer has one connection", func(t *testing.T) {
		if n := s.writer.Stats().MaxOpenConnections; n != 1 {
			t.Errorf("MaxOpenConnections = %d, want 1", n)
		}
	})
}

func TestMigrations(t *testing.T) {
	migrations, err := loadMigrations()
	if err != nil {
		t.Fatal(err)
	}
	if len(migrations) == 0 {
		t.Fatal("no migrations embedded")
	}
	latest := len(migrations)

	t.Run("idempotent across opens", func(t *testing.T) {
		path := testDBPath(t)
		s1, err := Open(t.Context(), path, Options{PollInterval: -1})
		if err != nil {
			t.Fatal(err)
		}
		tok, secret := mustCreate(t, s1, storage.NewToken{User: "alice", Name: "ci"})
		if err := s1.Close(); err != nil {
			t.Fatal(err)
		}
		before := dumpTable(t, path)
		s2 := openStore(t, path, Options{PollInterval: -1})
		if got := userVersion(t, path); got != latest {
			t.Errorf("user_version = %d, want %d", got, latest)
		}
		if after := dumpTable(t, path); after != before {
			t.Errorf("reopening changed the table")
		}
		if got, err := s2.Get(t.Context(), tok.ID); err != nil || !reflect.DeepEqual(got, tok) {
			t.Errorf("Get after reopen = %+v, %v; want %+v", got, err, tok)
		}
		if _, ok := s2.Lookup(secret); !ok {
			t.Error("Lookup after reopen failed: the index was not loaded")
		}
	})
	t.Run("concurrent first opens", func(t *testing.T) {
		path := testDBPath(t)
		const n = 4
		errs := make(chan error, n)
		for range n {
			go func() {
				s, err := Open(context.Background(), path, Options{PollInterval: -1})
				if err == nil {
					err = s.Close()
				}
				errs <- err
			}()
		}
		for range n {
			if err := <-errs; err != nil {
				t.Error(err)
			}
		}
		if got := userVersion(t, path); got != latest {
			t.Errorf("user_version = %d, want %d", got, latest)
		}
	})
	t.Run("from version 1", func(t *testing.T) {
		path, db := databaseAt(t, 1)
		ctx := t.Context()
		// A token as a version 1 build wrote it.
		id, secret, err := token.Generate(token.DefaultPrefix)
		if err != nil {
			t.Fatal(err)
		}
		hash := token.Hash(secret)
		_, err = db.ExecContext(ctx, `INSERT INTO tokens
(id, user, user_key, name, description, secret_hash, hint, created_at, updated_at, seq)
VALUES (?, 'Alice', 'alice', 'ci', 'old', ?, ?, 1000, 1000, 1)`, id, hash[:], token.Hint(secret))
		if err != nil {
			t.Fatal(err)
		}
		if err := db.Close(); err != nil {
			t.Fatal(err)
		}

		s := openStore(t, path, Options{PollInterval: -1})
		if got := userVersion(t, path); got != latest {
			t.Errorf("user_version = %d, want %d", got, latest)
		}
		want := storage.Token{
			ID: id, User: "Alice", Name: "ci", Description: "old", Hint: token.Hint(secret),
			CreatedAt: fromMillis(1000), UpdatedAt: fromMillis(1000),
		}
		if got, err := s.Get(ctx, id); err != nil || !reflect.DeepEqual(got, want) {
			t.Errorf("Get = %+v, %v; want %+v (no rules)", got, err, want)
		}
		e, ok := s.Lookup(secret)
		if !ok || e.ID != id || e.UserKey != "alice" || e.AllowedIPs != nil || e.Scope != nil || !e.RateLimit.IsZero() {
			t.Errorf("Lookup = %+v, %v; want the token without rules", e, ok)
		}
		if _, err := s.Update(ctx, id, storage.Patch{RateLimit: ptr("10/1s")}, nil); err != nil {
			t.Errorf("Update of a migrated token: %v", err)
		}
		if e, _ := s.Lookup(secret); e.RateLimit != (policy.Rate{Events: 10, Per: time.Second}) {
			t.Errorf("RateLimit after Update = %+v", e.RateLimit)
		}
		mustAddMember(t, s, "eng", "alice")
		if got := s.GroupsOf("alice"); !reflect.DeepEqual(got, []string{"eng"}) {
			t.Errorf("GroupsOf(alice) = %q", got)
		}
	})
	t.Run("from version 2", func(t *testing.T) {
		path, db := databaseAt(t, 2)
		ctx := t.Context()
		// A token and a membership as a version 2 build wrote them.
		id, secret, err := token.Generate(token.DefaultPrefix)
		if err != nil {
			t.Fatal(err)
		}
		hash := token.Hash(secret)
		_, err = db.ExecContext(ctx, `INSERT INTO tokens
(id, user, user_key, name, description, secret_hash, hint, created_at, updated_at, expires_at, seq, allowed_ips, scope, rate_limit)
VALUES (?, 'Alice', 'alice', 'ci', '', ?, ?, 1000, 1000, ?, 1, '["10.0.0.0/8"]', '{"read_only":true}', '5/1s')`,
			id, hash[:], token.Hint(secret), clockStart.Add(time.Hour).UnixMilli())
		if err != nil {
			t.Fatal(err)
		}
		if _, err := db.ExecContext(ctx, `INSERT INTO group_members VALUES ('eng', 'alice', 'Alice', 1000)`); err != nil {
			t.Fatal(err)
		}
		if err := db.Close(); err != nil {
			t.Fatal(err)
		}

		clock := newFakeClock()
		s := openStore(t, path, Options{Now: clock.Now, PollInterval: -1})
		if got := userVersion(t, path); got != latest {
			t.Errorf("user_version = %d, want %d", got, latest)
		}
		for _, table := range []string{"audit_events", "token_usage"} {
			var strict int
			if err := rawDB(t, path).QueryRow(`SELECT strict FROM pragma_table_list WHERE name = ?`, table).Scan(&strict); err != nil || strict != 1 {
				t.Errorf("table %s: strict = %d, %v; want a STRICT table", table, strict, err)
			}
		}
		want := storage.Token{
			ID: id, User: "Alice", Name: "ci", Hint: token.Hint(secret),
			CreatedAt: fromMillis(1000), UpdatedAt: fromMillis(1000), ExpiresAt: millis(clockStart.Add(time.Hour)),
			AllowedIPs: []string{"10.0.0.0/8"}, Scope: policy.Scope{ReadOnly: true}, RateLimit: "5/1s",
		}
		if got, err := s.Get(ctx, id); err != nil || !reflect.DeepEqual(got, want) {
			t.Errorf("Get = %+v, %v; want %+v (never used)", got, err, want)
		}
		if e, ok := s.Lookup(secret); !ok || e.Scope == nil || len(e.AllowedIPs) != 1 {
			t.Errorf("Lookup = %+v, %v; want the token with its rules", e, ok)
		}
		if got := s.GroupsOf("alice"); !reflect.DeepEqual(got, []string{"eng"}) {
			t.Errorf("GroupsOf(alice) = %q", got)
		}
		if got := expiringNames(t, s, clock.Now().Add(2*time.Hour)); !reflect.DeepEqual(got, []string{"ci"}) {
			t.Errorf("ExpiringTokens = %q: an old token has not been warned about", got)
		}
		mustFlush(t, s, event.Usage{TokenID: id, Count: 2, LastUsedAt: clock.Now(), LastIP: "10.1.2.3"})
		if got, _ := s.Get(ctx, id); got.UseCount != 2 || got.LastUsedIP != "10.1.2.3" {
			t.Errorf("usage after a flush: %+v", got)
		}
		ev := &event.Event{Type: event.TypeGroupMemberRemoved, Outcome: event.OutcomeSuccess}
		if _, err := s.RemoveMember(ctx, "eng", "ALICE", ev); err != nil {
			t.Fatal(err)
		}
		if got := allEvents(t, s); len(got) != 1 || got[0].User != "Alice" || got[0].ID != ev.ID {
			t.Errorf("audit events = %+v, want the removal", got)
		}
	})
	t.Run("newer schema is refused", func(t *testing.T) {
		path := testDBPath(t)
		s, err := Open(t.Context(), path, Options{PollInterval: -1})
		if err != nil {
			t.Fatal(err)
		}
		if err := s.Close(); err != nil {
			t.Fatal(err)
		}
		future := latest + 1
		if _, err := rawDB(t, path).Exec(fmt.Sprintf("PRAGMA user_version = %d", future)); err != nil {
			t.Fatal(err)
		}
		_, err = Open(t.Context(), path, Options{PollInterval: -1})
		if !errors.Is(err, ErrSchemaNewer) {
			t.Fatalf("Open error = %v, want ErrSchemaNewer", err)
		}
		if got := userVersion(t, path); got != future {
			t.Errorf("user_version = %d, want it left at %d", got, future)
		}
	})
}

func TestClose(t *testing.T) {
	path := testDBPath(t)
	s, err := Open(t.Context(), path, Options{PollInterval: time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	_, secret := mustCreate(t, s, storage.NewToken{User: "alice", Name: "ci"})
	for i := range 3 {
		if err := s.Close(); err != nil {
			t.Errorf("Close #%d: %v", i+1, err)
		}
	}
	if _, _, err := s.Create(t.Context(), storage.NewToken{User: "alice", Name: "x"}, nil); err == nil {
		t.Error("Create after Close succeeded")
	}
	if _, ok := s.Lookup(secret); !ok {
		t.Error("Lookup after Close failed; it should answer from memory")
	}
}
