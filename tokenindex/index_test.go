package tokenindex

import (
	"fmt"
	"reflect"
	"slices"
	"strings"
	"testing"
)

// TestEntryLayout: an entry is one cache line, and chunks keep every entry
// on one.
func TestEntryLayout(t *testing.T) {
	if size := reflect.TypeFor[entry]().Size(); size != 64 {
		t.Errorf("entry is %d bytes, want 64", size)
	}
	var ix Index
	for i := range 3 * chunkLen / 2 {
		id := fmt.Sprintf("%012d", i) // digits 0, 1, 8 and 9 make ids without a key
		if i%2 == 0 {
			id = strings.Map(func(r rune) rune { return rune("abcdefghijklmnopqrstuvwxyz234567"[r-'0']) }, id)
		}
		ix.Apply(Change{ID: id, User: "u", Name: "n", Version: 1})
	}
	for _, c := range ix.chunks {
		if addr := reflect.ValueOf(&c.entries[0]).Pointer(); addr%64 != 0 {
			t.Errorf("chunk entries start at %#x, not on a cache line", addr)
		}
	}
	if ix.n != 3*chunkLen/2 || len(ix.chunks) != 2 {
		t.Errorf("%d entries in %d chunks", ix.n, len(ix.chunks))
	}
}

// TestMembersReload: a load that returns nil keeps the memberships (a
// feed batch whose memberships did not change); a map replaces them.
func TestMembersReload(t *testing.T) {
	var m Members
	if err := m.Commit(func() error { return nil }, "alice", "eng", true); err != nil {
		t.Fatal(err)
	}
	if err := m.Reload(func() (map[string][]string, error) { return nil, nil }); err != nil {
		t.Fatal(err)
	}
	if got := m.GroupsOf("alice"); !slices.Equal(got, []string{"eng"}) {
		t.Errorf("after a nil reload: %q, want [eng]", got)
	}
	if err := m.Reload(func() (map[string][]string, error) { return map[string][]string{"bob": {"ops"}}, nil }); err != nil {
		t.Fatal(err)
	}
	if got := m.GroupsOf("alice"); got != nil {
		t.Errorf("alice after a reload without her: %q", got)
	}
	if got := m.GroupsOf("bob"); !slices.Equal(got, []string{"ops"}) {
		t.Errorf("bob: %q, want [ops]", got)
	}
}
