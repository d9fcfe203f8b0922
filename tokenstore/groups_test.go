//go:build cgo

package tokenstore

import (
	"errors"
	"fmt"
	"reflect"
	"runtime"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/apitoken/caddy-apitoken/policy"
	"github.com/apitoken/caddy-apitoken/storage"
)

func mustAddMember(t testing.TB, s *Store, group, user string) storage.Member {
	t.Helper()
	m, _, err := s.AddMember(t.Context(), group, user, nil)
	if err != nil {
		t.Fatalf("AddMember(%q, %q): %v", group, user, err)
	}
	return m
}

func memberUsers(t *testing.T, s *Store, group string) []string {
	t.Helper()
	ms, err := s.Members(t.Context(), group)
	if err != nil {
		t.Fatal(err)
	}
	if ms == nil {
		t.Fatal("Members returned a nil slice")
	}
	users := []string{}
	for _, m := range ms {
		if m.Group != group {
			t.Errorf("Members(%q) returned a member of %q", group, m.Group)
		}
		users = append(users, m.User)
	}
	return users
}

func TestMembers(t *testing.T) {
	s, clock, _ := newTestStore(t)
	ctx := t.Context()
	first := millis(clock.Now())

	adds := []struct {
		name, group, user string
		wantUser          string // as stored
		wantAdded         bool
		wantGroupsOfAlice []string
	}{
		{"first", "eng", "Alice", "Alice", true, []string{"eng"}},
		{"same user other case", "eng", "ALICE", "Alice", false, []string{"eng"}},
		{"second group", "admins", "alice", "alice", true, []string{"admins", "eng"}},
		{"third group, sorted", "ops", "alice", "alice", true, []string{"admins", "eng", "ops"}},
		{"other user", "eng", "bob", "bob", true, []string{"admins", "eng", "ops"}},
		{"unicode user", "eng", "Zoë", "Zoë", true, []string{"admins", "eng", "ops"}},
	}
	for _, tt := range adds {
		t.Run("add/"+tt.name, func(t *testing.T) {
			m, added, err := s.AddMember(ctx, tt.group, tt.user, nil)
			if err != nil {
				t.Fatal(err)
			}
			if added != tt.wantAdded || m.Group != tt.group || m.User != tt.wantUser {
				t.Errorf("AddMember = %+v, %v; want user %q, added %v", m, added, tt.wantUser, tt.wantAdded)
			}
			if tt.name == "same user other case" && !m.AddedAt.Equal(first) {
				t.Errorf("AddedAt = %v, want the first addition's %v", m.AddedAt, first)
			}
			if got := s.GroupsOf("alice"); !reflect.DeepEqual(got, tt.wantGroupsOfAlice) {
				t.Errorf("GroupsOf(alice) = %q, want %q", got, tt.wantGroupsOfAlice)
			}
			clock.Advance(time.Second)
		})
	}

	t.Run("members sorted ignoring case", func(t *testing.T) {
		if got, want := memberUsers(t, s, "eng"), []string{"Alice", "bob", "Zoë"}; !reflect.DeepEqual(got, want) {
			t.Errorf("Members(eng) = %q, want %q", got, want)
		}
		ms, _ := s.Members(ctx, "eng")
		if !ms[0].AddedAt.Equal(first) {
			t.Errorf("AddedAt = %v, want %v", ms[0].AddedAt, first)
		}
	})
	t.Run("groups", func(t *testing.T) {
		got, err := s.Groups(ctx)
		if err != nil {
			t.Fatal(err)
		}
		want := []storage.GroupInfo{{Name: "admins", Members: 1}, {Name: "eng", Members: 3}, {Name: "ops", Members: 1}}
		if !reflect.DeepEqual(got, want) {
			t.Errorf("Groups = %+v, want %+v", got, want)
		}
	})
	t.Run("GroupsOf takes the user key", func(t *testing.T) {
		if got := s.GroupsOf("zoë"); !reflect.DeepEqual(got, []string{"eng"}) {
			t.Errorf("GroupsOf(zoë) = %q", got)
		}
		if got := s.GroupsOf("nobody"); got != nil {
			t.Errorf("GroupsOf(nobody) = %q, want nil", got)
		}
	})

	removes := []struct {
		name, group, user string
		wantRemoved       bool
		wantGroupsOfAlice []string
	}{
		{"other case", "eng", "aLiCe", true, []string{"admins", "ops"}},
		{"again", "eng", "alice", false, []string{"admins", "ops"}},
		{"unknown group", "nope", "alice", false, []string{"admins", "ops"}},
		{"first of two", "admins", "alice", true, []string{"ops"}},
		{"last", "ops", "ALICE", true, nil},
	}
	for _, tt := range removes {
		t.Run("remove/"+tt.name, func(t *testing.T) {
			removed, err := s.RemoveMember(ctx, tt.group, tt.user, nil)
			if err != nil {
				t.Fatal(err)
			}
			if removed != tt.wantRemoved {
				t.Errorf("RemoveMember = %v, want %v", removed, tt.wantRemoved)
			}
			if got := s.GroupsOf("alice"); !reflect.DeepEqual(got, tt.wantGroupsOfAlice) {
				t.Errorf("GroupsOf(alice) = %q, want %q", got, tt.wantGroupsOfAlice)
			}
		})
	}

	t.Run("empty group", func(t *testing.T) {
		for _, g := range []string{"admins", "never-used"} {
			if got := memberUsers(t, s, g); len(got) != 0 {
				t.Errorf("Members(%q) = %q, want none", g, got)
			}
		}
		got, err := s.Groups(ctx)
		if err != nil {
			t.Fatal(err)
		}
		if want := []storage.GroupInfo{{Name: "eng", Members: 2}}; !reflect.DeepEqual(got, want) {
			t.Errorf("Groups = %+v, want %+v", got, want)
		}
	})
	t.Run("re-adding takes the new spelling", func(t *testing.T) {
		m, added, err := s.AddMember(ctx, "ops", "ALICE", nil)
		if err != nil || !added || m.User != "ALICE" {
			t.Errorf("AddMember = %+v, %v, %v", m, added, err)
		}
	})
	t.Run("no groups", func(t *testing.T) {
		empty, _, _ := newTestStore(t)
		got, err := empty.Groups(ctx)
		if err != nil {
			t.Fatal(err)
		}
		if got == nil || len(got) != 0 {
			t.Errorf("Groups = %#v, want an empty slice", got)
		}
	})
}

func TestMembersInvalid(t *testing.T) {
	s, _, path := newTestStore(t)
	ctx := t.Context()
	mustAddMember(t, s, "eng", "alice")
	before := dumpMembers(t, path)

	tests := []struct {
		name, group, user, want string
	}{
		{"upper-case group", "Eng", "bob", `group name "Eng"`},
		{"empty group", "", "bob", `group name ""`},
		{"group with a space", "a b", "bob", `group name "a b"`},
		{"group starting with a dash", "-eng", "bob", `group name "-eng"`},
		{"group with the prefix", "group:eng", "bob", `group name "group:eng"`},
		{"group too long", strings.Repeat("g", 65), "bob", "1 to 64 characters"},
		{"empty user", "eng", "", "user is required"},
		{"user with a colon", "eng", "bo:b", `user "bo:b"`},
		{"user with a newline", "eng", "bo\nb", "control characters"},
		{"user with a trailing space", "eng", "bob ", "begin or end with a space"},
	}
	for _, tt := range tests {
		check := func(t *testing.T, err error) {
			t.Helper()
			if !errors.Is(err, ErrInvalid) {
				t.Fatalf("error = %v, want ErrInvalid", err)
			}
			if !strings.Contains(err.Error(), tt.want) {
				t.Errorf("error %q does not mention %q", err, tt.want)
			}
			if after := dumpMembers(t, path); after != before {
				t.Errorf("table changed:\n%s\nwant\n%s", after, before)
			}
		}
		t.Run("add/"+tt.name, func(t *testing.T) {
			_, _, err := s.AddMember(ctx, tt.group, tt.user, nil)
			check(t, err)
		})
		t.Run("remove/"+tt.name, func(t *testing.T) {
			_, err := s.RemoveMember(ctx, tt.group, tt.user, nil)
			check(t, err)
		})
	}
	t.Run("members of a bad group", func(t *testing.T) {
		if _, err := s.Members(ctx, "Eng"); !errors.Is(err, ErrInvalid) {
			t.Errorf("Members error = %v, want ErrInvalid", err)
		}
	})
	if got := s.GroupsOf("alice"); !reflect.DeepEqual(got, []string{"eng"}) {
		t.Errorf("GroupsOf(alice) = %q after failed calls", got)
	}
}

func TestGroupsOfAllocs(t *testing.T) {
	s, _, _ := newTestStore(t)
	mustAddMember(t, s, "eng", "alice")
	mustAddMember(t, s, "ops", "alice")
	tests := []struct{ name, key string }{
		{"member", "alice"},
		{"no groups", "bob"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if n := testing.AllocsPerRun(100, func() { s.GroupsOf(tt.key) }); n != 0 {
				t.Errorf("GroupsOf allocates %v times, want 0", n)
			}
		})
	}
}

// TestGroupsOfCopyOnWrite: a slice GroupsOf returned is never changed
// afterwards, whichever way the index changes.
func TestGroupsOfCopyOnWrite(t *testing.T) {
	path := testDBPath(t)
	s := openStore(t, path, Options{PollInterval: time.Millisecond})
	ctx := t.Context()
	mustAddMember(t, s, "eng", "alice")
	mustAddMember(t, s, "ops", "alice")
	held := s.GroupsOf("alice")
	snapshot := append([]string(nil), held...)

	mustAddMember(t, s, "admins", "alice") // sorts first: an in-place insert would shift held
	if _, err := s.RemoveMember(ctx, "ops", "alice", nil); err != nil {
		t.Fatal(err)
	}
	other := openStore(t, path, Options{PollInterval: -1})
	mustAddMember(t, other, "dev", "alice")
	waitFor(t, "the poller reloads the memberships", func() bool {
		return reflect.DeepEqual(s.GroupsOf("alice"), []string{"admins", "dev", "eng"})
	})
	if !reflect.DeepEqual(held, snapshot) {
		t.Errorf("a held GroupsOf slice changed from %q to %q", snapshot, held)
	}
}

// TestPollerSeesMembersAndRules: membership and rule changes written through
// a second Store on the same file (as another process would) reach the
// first Store's memory.
func TestPollerSeesMembersAndRules(t *testing.T) {
	path := testDBPath(t)
	var pollErrs atomic.Int32
	watcher := openStore(t, path, Options{
		PollInterval: 5 * time.Millisecond,
		OnPollError:  func(err error) { pollErrs.Add(1); t.Logf("poll error: %v", err) },
	})
	writer := openStore(t, path, Options{PollInterval: -1})
	ctx := t.Context()

	t.Run("add member", func(t *testing.T) {
		mustAddMember(t, writer, "eng", "Alice")
		mustAddMember(t, writer, "ops", "alice")
		waitFor(t, "the memberships are seen", func() bool {
			return reflect.DeepEqual(watcher.GroupsOf("alice"), []string{"eng", "ops"})
		})
	})
	t.Run("remove member", func(t *testing.T) {
		if _, err := writer.RemoveMember(ctx, "eng", "ALICE", nil); err != nil {
			t.Fatal(err)
		}
		waitFor(t, "the removal is seen", func() bool {
			return reflect.DeepEqual(watcher.GroupsOf("alice"), []string{"ops"})
		})
	})
	t.Run("remove last membership", func(t *testing.T) {
		if _, err := writer.RemoveMember(ctx, "ops", "alice", nil); err != nil {
			t.Fatal(err)
		}
		waitFor(t, "the user has no groups", func() bool { return watcher.GroupsOf("alice") == nil })
	})

	tok, secret := mustCreate(t, writer, storage.NewToken{User: "alice", Name: "ci", AllowedIPs: []string{"10.0.0.0/8"}, RateLimit: "5/1s"})
	t.Run("create with rules", func(t *testing.T) {
		waitFor(t, "the token and its rules are seen", func() bool {
			e, ok := watcher.Lookup(secret)
			return ok && reflect.DeepEqual(prefixStrings(e.AllowedIPs), []string{"10.0.0.0/8"}) &&
				e.RateLimit == policy.Rate{Events: 5, Per: time.Second}
		})
	})
	t.Run("update rules", func(t *testing.T) {
		_, err := writer.Update(ctx, tok.ID, storage.Patch{AllowedIPs: &[]string{"192.0.2.1"}, ReadOnly: ptr(true)}, nil)
		if err != nil {
			t.Fatal(err)
		}
		waitFor(t, "the new rules are seen", func() bool {
			e, _ := watcher.Lookup(secret)
			return reflect.DeepEqual(prefixStrings(e.AllowedIPs), []string{"192.0.2.1/32"}) &&
				e.Scope != nil && e.Scope.Check("POST", "h", "/", false) == policy.ReasonReadOnly
		})
	})
	t.Run("clear rules", func(t *testing.T) {
		_, err := writer.Update(ctx, tok.ID, storage.Patch{AllowedIPs: &[]string{}, ReadOnly: ptr(false), RateLimit: ptr("")}, nil)
		if err != nil {
			t.Fatal(err)
		}
		waitFor(t, "the rules are cleared", func() bool {
			e, _ := watcher.Lookup(secret)
			return e.AllowedIPs == nil && e.Scope == nil && e.RateLimit.IsZero()
		})
	})
	t.Run("own membership changes still apply at once", func(t *testing.T) {
		mustAddMember(t, watcher, "dev", "carol")
		if got := watcher.GroupsOf("carol"); !reflect.DeepEqual(got, []string{"dev"}) {
			t.Errorf("GroupsOf(carol) = %q right after AddMember", got)
		}
		if _, err := watcher.RemoveMember(ctx, "dev", "carol", nil); err != nil {
			t.Fatal(err)
		}
		if got := watcher.GroupsOf("carol"); got != nil {
			t.Errorf("GroupsOf(carol) = %q right after RemoveMember", got)
		}
	})
	if n := pollErrs.Load(); n != 0 {
		t.Errorf("%d poll errors", n)
	}
}

// TestMemberReloadCannotResurrect stages the dangerous interleaving by hand:
// the poller has read the table while alice was still a member, and a
// removal runs before the poller swaps its snapshot in. The removal must not
// be undone: it may not commit until the swap is done, and it then removes
// alice from the swapped-in map.
func TestMemberReloadCannotResurrect(t *testing.T) {
	s, _, path := newTestStore(t)
	ctx := t.Context()
	mustAddMember(t, s, "eng", "alice")
	conn, err := s.reader.Conn(ctx)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	raw := rawDB(t, path)

	removed := make(chan error, 1)
	err = s.members.Reload(func() (map[string][]string, error) {
		snap, err := loadMemberships(ctx, conn)
		if err != nil {
			return nil, err
		}
		if !reflect.DeepEqual(snap["alice"], []string{"eng"}) {
			return nil, fmt.Errorf("snapshot = %q, want alice in eng", snap)
		}
		go func() {
			_, err := s.RemoveMember(ctx, "eng", "alice", nil)
			removed <- err
		}()
		// Give the removal every chance to commit and update the index
		// before this stale snapshot is swapped in. Correct code can't
		// commit yet, so this waits the whole time; the assertion below
		// does not depend on it.
		deadline := time.Now().Add(200 * time.Millisecond)
		for time.Now().Before(deadline) {
			var n int
			if err := raw.QueryRow(`SELECT COUNT(*) FROM group_members`).Scan(&n); err != nil {
				return nil, err
			}
			if n == 0 {
				break
			}
			time.Sleep(time.Millisecond)
		}
		return snap, nil
	})
	if err != nil {
		t.Fatal(err)
	}
	if err := <-removed; err != nil {
		t.Fatal(err)
	}
	if got := s.GroupsOf("alice"); got != nil {
		t.Errorf("GroupsOf(alice) = %q after RemoveMember returned: a stale reload resurrected the membership", got)
	}
}

// TestMembershipDuringPolls races membership changes against a fast
// poller, which reloads the table after each of them, while readers check
// that a removal, once RemoveMember has returned, is never undone.
func TestMembershipDuringPolls(t *testing.T) {
	s := openStore(t, testDBPath(t), Options{PollInterval: time.Millisecond})
	ctx := t.Context()
	const users = 30
	names := make([]string, users)
	for i := range names {
		names[i] = fmt.Sprint("user", i)
	}
	var removedUpTo atomic.Int32 // users [0, removedUpTo) have been removed for good

	stop := make(chan struct{})
	var wg sync.WaitGroup
	var checks atomic.Int64
	stopReaders := sync.OnceFunc(func() { close(stop); wg.Wait() })
	defer stopReaders()
	for range 4 {
		wg.Go(func() {
			for {
				select {
				case <-stop:
					return
				default:
				}
				n := int(removedUpTo.Load())
				for _, user := range names[:n] {
					if g := s.GroupsOf(user); g != nil {
						t.Errorf("%s: groups %q after removal", user, g)
						return
					}
				}
				checks.Add(1)
				runtime.Gosched()
			}
		})
	}
	for i, user := range names {
		mustAddMember(t, s, "eng", user)
		mustAddMember(t, s, "ops", user)
		if got := s.GroupsOf(user); !reflect.DeepEqual(got, []string{"eng", "ops"}) {
			t.Fatalf("GroupsOf(%s) = %q right after AddMember", user, got)
		}
		for _, g := range []string{"ops", "eng"} {
			if _, err := s.RemoveMember(ctx, g, user, nil); err != nil {
				t.Fatal(err)
			}
		}
		if got := s.GroupsOf(user); got != nil {
			t.Fatalf("GroupsOf(%s) = %q right after RemoveMember", user, got)
		}
		removedUpTo.Store(int32(i + 1))
	}
	stopReaders()
	if checks.Load() == 0 {
		t.Error("no checks ran")
	}
}
