//go:build cgo

package tokenstore

import (
	"fmt"
	"hash/crc32"
	"net/netip"
	"reflect"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/apitoken/caddy-apitoken/policy"
	"github.com/apitoken/caddy-apitoken/storage"
	"github.com/apitoken/caddy-apitoken/token"
	"github.com/apitoken/caddy-apitoken/tokenindex"
)

// assemble builds the token "<prefix>_<id><secret>" with its checksum, as
// package token documents it: for tokens with a chosen id and secret.
func assemble(t testing.TB, prefix, id, secret string) string {
	t.Helper()
	s := prefix + "_" + id + secret
	sum := crc32.ChecksumIEEE([]byte(s))
	var digits [6]byte
	for i := len(digits) - 1; i >= 0; i-- {
		digits[i] = "0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz"[sum%62]
		sum /= 62
	}
	s += string(digits[:])
	if _, ok := token.Parse(s); !ok {
		t.Fatalf("assembled token %q does not parse", s)
	}
	return s
}

// unknownIDToken returns a well-formed token (valid checksum) whose id no
// stored token has.
func unknownIDToken(t testing.TB, s *Store) string {
	t.Helper()
	for range 100 {
		id, token, err := token.Generate(token.DefaultPrefix)
		if err != nil {
			t.Fatal(err)
		}
		if _, taken := indexSeq(s, id); !taken {
			return token
		}
	}
	t.Fatal("no free id found")
	return ""
}

// indexSeq returns the seq of the version of the token that the index
// holds, if it holds one.
func indexSeq(s *Store, id string) (int64, bool) {
	_, v, ok := s.index.Get(id)
	return int64(v), ok
}

// indexEntry returns what the index holds for id, without a secret.
func indexEntry(ix *tokenindex.Index, id string) (storage.Entry, bool) {
	e, _, ok := ix.Get(id)
	return e, ok
}

func TestLookup(t *testing.T) {
	s, _, _ := newTestStore(t)
	ctx := t.Context()
	tok, secret := mustCreate(t, s, storage.NewToken{User: "alice", Name: "ci"})
	revoked, revokedSecret := mustCreate(t, s, storage.NewToken{User: "bob", Name: "old"})
	if _, _, err := s.Revoke(ctx, revoked.ID, nil); err != nil {
		t.Fatal(err)
	}
	scope := policy.Scope{ReadOnly: true, Methods: []string{"get"}, Paths: []string{"/api/*"}}
	ruled, ruledSecret := mustCreate(t, s, storage.NewToken{
		User: "Carol", Name: "ruled", AllowedIPs: []string{"10.1.2.3", "2001:db8::/32"}, Scope: scope, RateLimit: "600/60s",
	})
	compiled, err := policy.CompileScope(scope)
	if err != nil {
		t.Fatal(err)
	}
	body := secret[len(token.DefaultPrefix)+1:]
	// Same id, another secret, a valid checksum: only the hash can tell.
	wrongSecret := assemble(t, token.DefaultPrefix, tok.ID, strings.Repeat("A", token.SecretLen))
	// Same id and secret under another prefix: the hash covers the prefix.
	otherPrefix := assemble(t, "acme", tok.ID, body[token.IDLen:token.IDLen+token.SecretLen])

	tests := []struct {
		name  string
		token string
		want  storage.Entry
		ok    bool
	}{
		{"hit", secret, storage.Entry{ID: tok.ID, Key: keyOf(t, tok.ID), User: "alice", UserKey: "alice", Name: "ci"}, true},
		{"revoked", revokedSecret, storage.Entry{ID: revoked.ID, Key: keyOf(t, revoked.ID), User: "bob", UserKey: "bob", Name: "old", Revoked: true}, true},
		{"with rules", ruledSecret, storage.Entry{
			ID: ruled.ID, Key: keyOf(t, ruled.ID), User: "Carol", UserKey: "carol", Name: "ruled",
			AllowedIPs: []netip.Prefix{netip.MustParsePrefix("10.1.2.3/32"), netip.MustParsePrefix("2001:db8::/32")},
			Scope:      &compiled,
			RateLimit:  policy.Rate{Events: 600, Per: time.Minute},
		}, true},
		{"wrong secret", wrongSecret, storage.Entry{}, false},
		{"other prefix", otherPrefix, storage.Entry{}, false},
		{"unknown id", unknownIDToken(t, s), storage.Entry{}, false},
		{"bad checksum", breakChecksum(secret), storage.Entry{}, false},
		{"empty", "", storage.Entry{}, false},
		{"id alone", tok.ID, storage.Entry{}, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, ok := s.Lookup(tt.token)
			if ok != tt.ok || !reflect.DeepEqual(got, tt.want) {
				t.Errorf("Lookup = %+v, %v; want %+v, %v", got, ok, tt.want, tt.ok)
			}
		})
	}
}

// keyOf is Entry.Key for id, worked out apart from the package: the id's
// alphabet a-z2-7 is base 32 with the digits strconv reads as 0-9a-v.
func keyOf(t *testing.T, id string) uint64 {
	t.Helper()
	digits := strings.NewReplacer(strings.Split("a 0 b 1 c 2 d 3 e 4 f 5 g 6 h 7 i 8 j 9 k a l b m c n d o e p f q g r h s i t j u k v l w m x n y o z p 2 q 3 r 4 s 5 t 6 u 7 v", " ")...)
	key, err := strconv.ParseUint(digits.Replace(id), 32, 64)
	if err != nil {
		t.Fatalf("id %q: %v", id, err)
	}
	return key
}

// breakChecksum changes a token's last character, which belongs to the
// checksum, to another one: a random token may already end in any of them.
func breakChecksum(token string) string {
	last := "x"
	if strings.HasSuffix(token, last) {
		last = "y"
	}
	return token[:len(token)-1] + last
}

func TestLookupAllocs(t *testing.T) {
	s, _, _ := newTestStore(t)
	_, secret := mustCreate(t, s, storage.NewToken{Prefix: "abcdefghijklmnop", User: "alice", Name: "ci"})
	_, ruledSecret := mustCreate(t, s, storage.NewToken{User: "alice", Name: "ruled",
		AllowedIPs: []string{"private_ranges"}, RateLimit: "600/1m",
		Scope: policy.Scope{ReadOnly: true, Methods: []string{"GET"}, Paths: []string{"/api/*"}, Hosts: []string{"*.example.com"}},
	})
	miss := unknownIDToken(t, s)
	id, _ := token.Parse(secret)
	wrong := assemble(t, "abcdefghijklmnop", id, strings.Repeat("A", token.SecretLen))
	tests := []struct{ name, token string }{
		{"hit", secret},
		{"hit with rules", ruledSecret},
		{"miss", miss},
		{"wrong secret", wrong},
		{"malformed", breakChecksum(secret)},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if n := testing.AllocsPerRun(100, func() { s.Lookup(tt.token) }); n != 0 {
				t.Errorf("Lookup allocates %v times, want 0", n)
			}
			if id, ok := token.Parse(tt.token); ok {
				if n := testing.AllocsPerRun(100, func() { s.LookupID(id, tt.token) }); n != 0 {
					t.Errorf("LookupID allocates %v times, want 0", n)
				}
			}
		})
	}
}

func TestOpenLoadsIndex(t *testing.T) {
	path := testDBPath(t)
	s1, err := Open(t.Context(), path, Options{PollInterval: -1})
	if err != nil {
		t.Fatal(err)
	}
	tok, secret := mustCreate(t, s1, storage.NewToken{User: "alice", Name: "ci"})
	revoked, revokedSecret := mustCreate(t, s1, storage.NewToken{User: "alice", Name: "old"})
	if _, _, err := s1.Revoke(t.Context(), revoked.ID, nil); err != nil {
		t.Fatal(err)
	}
	if err := s1.Close(); err != nil {
		t.Fatal(err)
	}

	s2 := openStore(t, path, Options{PollInterval: -1})
	if e, ok := s2.Lookup(secret); !ok || e.ID != tok.ID || e.Revoked {
		t.Errorf("Lookup(active) = %+v, %v", e, ok)
	}
	if e, ok := s2.Lookup(revokedSecret); !ok || !e.Revoked {
		t.Errorf("Lookup(revoked) = %+v, %v; want revoked", e, ok)
	}
}

// waitFor polls cond until it holds or the deadline passes.
func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting until %s", what)
		}
		time.Sleep(2 * time.Millisecond)
	}
}

// TestPollerSeesOtherWriters: changes written through a second Store on the
// same file (as another process would) reach the first Store's index.
func TestPollerSeesOtherWriters(t *testing.T) {
	path := testDBPath(t)
	var pollErrs atomic.Int32
	watcher := openStore(t, path, Options{
		PollInterval: 5 * time.Millisecond,
		OnPollError:  func(err error) { pollErrs.Add(1); t.Logf("poll error: %v", err) },
	})
	writer := openStore(t, path, Options{PollInterval: -1})
	ctx := t.Context()

	tok, secret := mustCreate(t, writer, storage.NewToken{User: "alice", Name: "ci"})
	waitFor(t, "the new token is known", func() bool {
		_, ok := watcher.Lookup(secret)
		return ok
	})

	newSecret := ""
	t.Run("rotate", func(t *testing.T) {
		var err error
		_, newSecret, err = writer.Rotate(ctx, tok.ID, "", nil)
		if err != nil {
			t.Fatal(err)
		}
		waitFor(t, "the rotation is seen", func() bool {
			_, oldOK := watcher.Lookup(secret)
			_, newOK := watcher.Lookup(newSecret)
			return !oldOK && newOK
		})
	})
	t.Run("update", func(t *testing.T) {
		name := "renamed"
		if _, err := writer.Update(ctx, tok.ID, storage.Patch{Name: &name}, nil); err != nil {
			t.Fatal(err)
		}
		waitFor(t, "the new name is seen", func() bool {
			e, _ := watcher.Lookup(newSecret)
			return e.Name == name
		})
	})
	t.Run("revoke user", func(t *testing.T) {
		if _, err := writer.RevokeUser(ctx, "ALICE", nil); err != nil {
			t.Fatal(err)
		}
		waitFor(t, "the revocation is seen", func() bool {
			e, ok := watcher.Lookup(newSecret)
			return ok && e.Revoked
		})
	})
	t.Run("own writes still apply at once", func(t *testing.T) {
		tok, secret := mustCreate(t, watcher, storage.NewToken{User: "bob", Name: "ci"})
		if _, ok := watcher.Lookup(secret); !ok {
			t.Fatal("own Create not visible at once")
		}
		if _, _, err := watcher.Revoke(ctx, tok.ID, nil); err != nil {
			t.Fatal(err)
		}
		if e, _ := watcher.Lookup(secret); !e.Revoked {
			t.Fatal("own Revoke not visible at once")
		}
		waitFor(t, "the writer's store would see it too once reopened", func() bool {
			got, err := writer.Get(ctx, tok.ID)
			return err == nil && !got.RevokedAt.IsZero()
		})
	})
	if n := pollErrs.Load(); n != 0 {
		t.Errorf("%d poll errors", n)
	}
}

// TestLookupDuringWrites runs Lookups against concurrent rotations and a
// revocation, while the poller also applies the same rows; with -race it
// checks the index's locking. A superseded secret must never be accepted,
// and a revocation, once seen, must never be undone.
func TestLookupDuringWrites(t *testing.T) {
	s := openStore(t, testDBPath(t), Options{PollInterval: time.Millisecond})
	ctx := t.Context()
	const tokens = 8
	type slot struct {
		mu      sync.Mutex
		id      string
		secrets []string // every secret the token has had, newest last
	}
	slots := make([]*slot, tokens)
	for i := range slots {
		tok, secret := mustCreate(t, s, storage.NewToken{User: fmt.Sprintf("user%d", i), Name: "ci"})
		slots[i] = &slot{id: tok.ID, secrets: []string{secret}}
	}
	victim, victimSecret := mustCreate(t, s, storage.NewToken{User: "victim", Name: "ci"})

	stop := make(chan struct{})
	var wg sync.WaitGroup
	var lookups atomic.Int64
	stopReaders := sync.OnceFunc(func() { close(stop); wg.Wait() })
	defer stopReaders() // also when a t.Fatal below ends the test early
	for r := range 4 {
		wg.Go(func() {
			sawRevoked := false
			for i := r; ; i++ {
				select {
				case <-stop:
					return
				default:
				}
				sl := slots[i%tokens]
				sl.mu.Lock()
				secrets := sl.secrets[:len(sl.secrets):len(sl.secrets)]
				sl.mu.Unlock()
				// Every secret but the newest was superseded by a
				// rotation that had returned, so its index update is done.
				for j, secret := range secrets[:len(secrets)-1] {
					if _, ok := s.Lookup(secret); ok {
						t.Errorf("token %s: secret %d of %d still accepted", sl.id, j+1, len(secrets))
					}
				}
				e, ok := s.Lookup(victimSecret)
				if !ok {
					t.Errorf("victim token not found")
				}
				if sawRevoked && !e.Revoked {
					t.Errorf("victim token revoked, then not revoked again")
				}
				sawRevoked = e.Revoked
				lookups.Add(1)
			}
		})
	}
	for round := range 20 {
		for _, sl := range slots {
			_, secret, err := s.Rotate(ctx, sl.id, "", nil)
			if err != nil {
				t.Fatal(err)
			}
			sl.mu.Lock()
			sl.secrets = append(sl.secrets, secret)
			sl.mu.Unlock()
		}
		if round == 10 {
			if _, _, err := s.Revoke(ctx, victim.ID, nil); err != nil {
				t.Fatal(err)
			}
			if e, _ := s.Lookup(victimSecret); !e.Revoked {
				t.Error("revocation not visible when Revoke returned")
			}
		}
	}
	stopReaders()
	if lookups.Load() == 0 {
		t.Error("no lookups ran")
	}
}

// TestIndexApplyOrder: the poller may deliver a row after the write method
// that produced a newer version of it has applied that; the older one must
// not win.
func TestIndexApplyOrder(t *testing.T) {
	var ix tokenindex.Index
	rec := func(seq int64, revoked bool) record {
		r := record{Token: storage.Token{ID: "abcdefgh2345", User: "alice", Name: fmt.Sprint("v", seq)}, seq: seq}
		if revoked {
			r.RevokedAt = time.Unix(1, 0)
		}
		return r
	}
	steps := []struct {
		name        string
		apply       record
		wantName    string
		wantRevoked bool
	}{
		{"first", rec(3, false), "v3", false},
		{"newer", rec(5, true), "v5", true},
		{"older, late", rec(4, false), "v5", true},
		{"same again", rec(5, false), "v5", true},
		{"newest", rec(6, true), "v6", true},
	}
	for _, st := range steps {
		t.Run(st.name, func(t *testing.T) {
			ix.Apply(st.apply.change())
			e, _ := indexEntry(&ix, "abcdefgh2345")
			if e.Name != st.wantName || e.Revoked != st.wantRevoked {
				t.Errorf("entry = %s revoked=%v, want %s revoked=%v", e.Name, e.Revoked, st.wantName, st.wantRevoked)
			}
		})
	}
}

// TestPollerReportsFailures breaks the poller's reads as an operator's SQL
// can (the tokens table renamed away) and mends them again: every failed
// poll counts and reaches OnPollError, Staleness grows with the clock from
// the last successful poll, and the first success after the failures
// reaches OnPollRecovered with how long the view was stale and how many
// polls failed. Changes made meanwhile by another process apply then.
func TestPollerReportsFailures(t *testing.T) {
	clock := newFakeClock()
	path := testDBPath(t)
	var (
		mu        sync.Mutex
		errs      []error
		recovered []string
	)
	s := openStore(t, path, Options{
		Now:          clock.Now,
		PollInterval: 2 * time.Millisecond,
		OnPollError: func(err error) {
			mu.Lock()
			defer mu.Unlock()
			errs = append(errs, err)
		},
		OnPollRecovered: func(stale time.Duration, failures int) {
			mu.Lock()
			defer mu.Unlock()
			recovered = append(recovered, fmt.Sprintf("stale %v after %d failures", stale, failures))
		},
	})
	if got := s.Staleness(clock.Now()); got != 0 {
		t.Errorf("Staleness after Open: %v, want 0", got)
	}
	db := rawDB(t, path)
	if _, err := db.Exec(`ALTER TABLE tokens RENAME TO tokens_away`); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "polls fail", func() bool { return s.PollFailures() >= 3 })
	clock.Advance(90 * time.Second)
	if got := s.Staleness(clock.Now()); got != 90*time.Second {
		t.Errorf("Staleness while polls fail: %v, want 90s", got)
	}
	mu.Lock()
	if len(errs) == 0 || !strings.Contains(errs[0].Error(), "polling token store "+path) || !strings.Contains(errs[0].Error(), "no such table: tokens") {
		t.Errorf("poll errors %v, want them to name the store and the missing table", errs)
	}
	if len(recovered) != 0 {
		t.Errorf("recovered while failing: %v", recovered)
	}
	mu.Unlock()

	if _, err := db.Exec(`ALTER TABLE tokens_away RENAME TO tokens`); err != nil {
		t.Fatal(err)
	}
	other := openStore(t, path, Options{PollInterval: -1})
	_, secret := mustCreate(t, other, storage.NewToken{User: "bob", Name: "other process"})
	waitFor(t, "the poller recovers and sees the other store's token", func() bool {
		_, ok := s.Lookup(secret)
		return ok
	})
	waitFor(t, "the recovery is reported", func() bool {
		mu.Lock()
		defer mu.Unlock()
		return len(recovered) == 1
	})
	mu.Lock()
	failures := len(errs)
	want := fmt.Sprintf("stale 1m30s after %d failures", failures)
	if recovered[0] != want || uint64(failures) != s.PollFailures() {
		t.Errorf("recovery %q, PollFailures %d; want %q", recovered[0], s.PollFailures(), want)
	}
	mu.Unlock()
	if got := s.Staleness(clock.Now()); got != 0 {
		t.Errorf("Staleness after the recovery: %v, want 0", got)
	}

	t.Run("polling disabled", func(t *testing.T) {
		s := openStore(t, path, Options{Now: clock.Now, PollInterval: -1})
		clock.Advance(time.Hour)
		if got := s.Staleness(clock.Now()); got != 0 {
			t.Errorf("Staleness without a poller: %v, want 0", got)
		}
	})
}
