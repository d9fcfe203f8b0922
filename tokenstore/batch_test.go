//go:build cgo

package tokenstore

import (
	"errors"
	"fmt"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/apitoken/caddy-apitoken/policy"
	"github.com/apitoken/caddy-apitoken/storage"
	"github.com/apitoken/caddy-apitoken/token"
)

func TestCreateBatch(t *testing.T) {
	s, clock, path := newTestStore(t)
	ctx := t.Context()
	expires := clock.Now().Add(24 * time.Hour)

	tests := []struct {
		name string
		nts  []storage.NewToken
	}{
		{"one", []storage.NewToken{{User: "alice", Name: "ci"}}},
		{"mixed", []storage.NewToken{
			{User: "bob", Name: "deploy", Description: "deploys", ExpiresAt: expires},
			{Prefix: "acme", User: "Carol", Name: "laptop 💻"},
			{User: "bob", Name: "backup", AllowedIPs: []string{"10.1.2.3", "private_ranges"},
				Scope:     policy.Scope{ReadOnly: true, Methods: []string{"get"}, Paths: []string{"/rest/*"}},
				RateLimit: "600/1m"},
		}},
		{"many", func() []storage.NewToken {
			nts := make([]storage.NewToken, 500)
			for i := range nts {
				nts[i] = storage.NewToken{User: fmt.Sprintf("svc%d", i%7), Name: fmt.Sprintf("migrated-%d", i)}
			}
			return nts
		}()},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			toks, secrets, err := s.CreateBatch(ctx, tt.nts)
			if err != nil {
				t.Fatalf("CreateBatch: %v", err)
			}
			if len(toks) != len(tt.nts) || len(secrets) != len(tt.nts) {
				t.Fatalf("CreateBatch returned %d tokens and %d secrets for %d items", len(toks), len(secrets), len(tt.nts))
			}
			now := millis(clock.Now())
			for i, nt := range tt.nts {
				tok, secret := toks[i], secrets[i]
				prefix := nt.Prefix
				if prefix == "" {
					prefix = token.DefaultPrefix
				}
				if id, ok := token.Parse(secret); !ok || id != tok.ID || !strings.HasPrefix(secret, prefix+"_") {
					t.Fatalf("item %d: secret %q does not name token %s with prefix %s", i, secret, tok.ID, prefix)
				}
				if tok.User != nt.User || tok.Name != nt.Name || tok.Description != nt.Description ||
					!tok.CreatedAt.Equal(now) || !tok.ExpiresAt.Equal(millis(nt.ExpiresAt)) || tok.Hint != token.Hint(secret) {
					t.Errorf("item %d: token %+v does not match %+v", i, tok, nt)
				}
				// Stored as Create stores it, canonical rules included.
				got, err := s.Get(ctx, tok.ID)
				if err != nil {
					t.Fatalf("item %d: Get: %v", i, err)
				}
				if !reflect.DeepEqual(got, tok) {
					t.Errorf("item %d: Get returned\n%+v, CreateBatch\n%+v", i, got, tok)
				}
				// In the index at once, rules parsed.
				e, ok := s.Lookup(secret)
				if !ok || e.ID != tok.ID || e.User != nt.User || e.Revoked {
					t.Fatalf("item %d: Lookup = %+v, %v", i, e, ok)
				}
				checkEntryRules(t, e, tok)
			}
		})
	}

	t.Run("same rules as Create", func(t *testing.T) {
		nt := storage.NewToken{User: "dave", Name: "rules", AllowedIPs: []string{"private_ranges", "2001:db8::1"},
			Scope: policy.Scope{Methods: []string{"post"}, Hosts: []string{"jira.example.com"}}, RateLimit: "10/s"}
		single, _ := mustCreate(t, s, nt)
		nt.Name = "rules-batch"
		toks, _, err := s.CreateBatch(ctx, []storage.NewToken{nt})
		if err != nil {
			t.Fatal(err)
		}
		if !reflect.DeepEqual(rulesOf(toks[0]), rulesOf(single)) {
			t.Errorf("CreateBatch rules %+v, Create %+v", rulesOf(toks[0]), rulesOf(single))
		}
	})

	t.Run("reopen finds them", func(t *testing.T) {
		toks, secrets, err := s.CreateBatch(ctx, []storage.NewToken{{User: "erin", Name: "a"}, {User: "erin", Name: "b"}})
		if err != nil {
			t.Fatal(err)
		}
		s2 := openStore(t, path, Options{PollInterval: -1})
		for i, secret := range secrets {
			if e, ok := s2.Lookup(secret); !ok || e.ID != toks[i].ID {
				t.Errorf("a second store does not find item %d: %+v, %v", i, e, ok)
			}
		}
	})

	t.Run("empty", func(t *testing.T) {
		before := dumpTable(t, path)
		toks, secrets, err := s.CreateBatch(ctx, nil)
		if err != nil || toks == nil || secrets == nil || len(toks)+len(secrets) != 0 {
			t.Errorf("CreateBatch(nil) = %v, %v, %v; want empty slices and no error", toks, secrets, err)
		}
		if after := dumpTable(t, path); after != before {
			t.Error("an empty batch wrote something")
		}
	})
}

// TestCreateBatchAllOrNothing checks that one bad item anywhere in a batch
// fails the call with an error naming that item, and writes nothing: not
// the items before it, nor the index.
func TestCreateBatchAllOrNothing(t *testing.T) {
	s, _, path := newTestStore(t)
	ctx := t.Context()
	mustCreate(t, s, storage.NewToken{User: "alice", Name: "taken"})

	good := func(i int) storage.NewToken { return storage.NewToken{User: "bulk", Name: fmt.Sprintf("good-%d", i)} }
	tests := []struct {
		name    string
		bad     storage.NewToken
		at      int // index of the bad item in a batch of 5
		wantErr error
		wantMsg string
	}{
		{"no user", storage.NewToken{Name: "x"}, 0, ErrInvalid, "item 0: invalid input: user is required"},
		{"no name", storage.NewToken{User: "bob"}, 2, ErrInvalid, "item 2: invalid input: name is required"},
		{"colon in user", storage.NewToken{User: "a:b", Name: "x"}, 4, ErrInvalid, "item 4: invalid input: user \"a:b\""},
		{"control in name", storage.NewToken{User: "bob", Name: "a\x00b"}, 1, ErrInvalid, "item 1: invalid input: name"},
		{"bad prefix", storage.NewToken{Prefix: "Caddy", User: "bob", Name: "x"}, 3, ErrInvalid, "item 3: invalid input: prefix"},
		{"bad cidr", storage.NewToken{User: "bob", Name: "x", AllowedIPs: []string{"10.0.0.0/33"}}, 2, ErrInvalid, "item 2: invalid input: allowed_ips"},
		{"too many methods", storage.NewToken{User: "bob", Name: "x", Scope: policy.Scope{Methods: make([]string, maxScopeItems+1)}}, 2, ErrInvalid, "item 2: invalid input: scope: methods"},
		{"bad rate", storage.NewToken{User: "bob", Name: "x", RateLimit: "fast"}, 4, ErrInvalid, "item 4: invalid input: rate_limit"},
		{"name taken in the store", storage.NewToken{User: "ALICE", Name: "taken"}, 3, ErrConflict, "item 3: conflict"},
		{"name taken earlier in the batch", good(1), 3, ErrConflict, "item 3: conflict"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			nts := []storage.NewToken{good(0), good(1), good(2), good(3), good(4)}
			nts[tt.at] = tt.bad
			before := dumpTable(t, path)
			beforeCount := s.CountByState(time.Now())

			toks, secrets, err := s.CreateBatch(ctx, nts)
			if !errors.Is(err, tt.wantErr) || !strings.Contains(err.Error(), tt.wantMsg) {
				t.Fatalf("CreateBatch = %v; want %v containing %q", err, tt.wantErr, tt.wantMsg)
			}
			if toks != nil || secrets != nil {
				t.Errorf("a failed batch returned %d tokens, %d secrets", len(toks), len(secrets))
			}
			if after := dumpTable(t, path); after != before {
				t.Errorf("a failed batch wrote rows:\nbefore %s\nafter  %s", before, after)
			}
			if after := s.CountByState(time.Now()); !reflect.DeepEqual(after, beforeCount) {
				t.Errorf("a failed batch changed the index: %v, then %v", beforeCount, after)
			}
		})
	}
}

// TestCreateBatchSeenByPoller checks that another store sharing the file
// picks up a whole batch, written in one transaction.
func TestCreateBatchSeenByPoller(t *testing.T) {
	path := testDBPath(t)
	watcher := openStore(t, path, Options{PollInterval: 5 * time.Millisecond})
	writer := openStore(t, path, Options{PollInterval: -1})
	mustCreate(t, writer, storage.NewToken{User: "alice", Name: "before"})

	nts := make([]storage.NewToken, 50)
	for i := range nts {
		nts[i] = storage.NewToken{User: "svc", Name: fmt.Sprintf("n%d", i)}
	}
	_, secrets, err := writer.CreateBatch(t.Context(), nts)
	if err != nil {
		t.Fatal(err)
	}
	waitFor(t, "every token of the batch is known", func() bool {
		for _, secret := range secrets {
			if _, ok := watcher.Lookup(secret); !ok {
				return false
			}
		}
		return true
	})
	// A later single write is still seen: the batch's seqs did not confuse
	// the poller's high-water mark.
	_, secret := mustCreate(t, writer, storage.NewToken{User: "alice", Name: "after"})
	waitFor(t, "a later token is known", func() bool {
		_, ok := watcher.Lookup(secret)
		return ok
	})
}
