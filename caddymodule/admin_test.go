package caddymodule

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/caddyserver/caddy/v2"
	"github.com/caddyserver/caddy/v2/modules/caddyevents"

	"github.com/apitoken/caddy-apitoken/storage"
)

// TestAdminUpdateConcurrentFields sends concurrent PATCHes of the same
// token through the admin API, each changing a different field, and checks
// that every edit survived: the merge of a PATCH into the token happens
// inside the store's write transaction, so no PATCH writes back a field it
// did not send. (Before, the handler read the scope and sent the whole of
// it back: a concurrent PATCH of paths and one of methods lost one of the
// two, and a dropped paths restriction left a token working everywhere.)
func TestAdminUpdateConcurrentFields(t *testing.T) {
	f := newAdminFixture(t, t.TempDir())
	t.Cleanup(func() { f.store.Close() })

	expires := f.clock.Now().Add(48 * time.Hour).UTC().Truncate(time.Second)
	edits := []struct {
		name string
		body string
		ok   func(tokenJSON) bool
	}{
		{"name", `{"name":"renamed"}`, func(t tokenJSON) bool { return strings.HasPrefix(t.Name, "renamed") }},
		{"description", `{"description":"edited"}`, func(t tokenJSON) bool { return t.Description == "edited" }},
		{"allowed_ips", `{"allowed_ips":["10.0.0.0/8"]}`, func(t tokenJSON) bool { return slices.Equal(t.AllowedIPs, []string{"10.0.0.0/8"}) }},
		{"read_only", `{"read_only":true}`, func(t tokenJSON) bool { return t.ReadOnly }},
		{"methods", `{"methods":["get","post"]}`, func(t tokenJSON) bool { return slices.Equal(t.Methods, []string{"GET", "POST"}) }},
		{"paths", `{"paths":["/rest/*"]}`, func(t tokenJSON) bool { return slices.Equal(t.Paths, []string{"/rest/*"}) }},
		{"hosts", `{"hosts":["jira.example.com"]}`, func(t tokenJSON) bool { return slices.Equal(t.Hosts, []string{"jira.example.com"}) }},
		{"rate_limit", `{"rate_limit":"60/1m"}`, func(t tokenJSON) bool { return t.RateLimit == "60/1m" }},
		{"expires_at", fmt.Sprintf(`{"expires_at":%q}`, expires.Format(time.RFC3339)),
			func(t tokenJSON) bool { return t.ExpiresAt != nil && t.ExpiresAt.Equal(expires) }},
	}

	const rounds = 40
	lost := make(map[string]int)
	lostRounds := 0
	for round := range rounds {
		res := f.create([]byte(fmt.Sprintf(`{"user":"alice","name":"r%d"}`, round)))
		if res.status != http.StatusCreated {
			t.Fatalf("creating the token: %d %s", res.status, res.err)
		}
		var tok tokenJSON
		if err := json.Unmarshal(res.body, &tok); err != nil {
			t.Fatal(err)
		}

		start := make(chan struct{})
		var wg sync.WaitGroup
		results := make([]adminResult, len(edits))
		for i, e := range edits {
			wg.Add(1)
			go func() {
				defer wg.Done()
				<-start
				body := e.body
				if e.name == "name" { // names are unique among alice's tokens
					body = fmt.Sprintf(`{"name":"renamed %d"}`, round)
				}
				results[i] = f.update(tok.ID, []byte(body))
			}()
		}
		close(start)
		wg.Wait()
		for i, e := range edits {
			if results[i].status != http.StatusOK {
				t.Fatalf("round %d: PATCH %s answered %d (%s)", round, e.name, results[i].status, results[i].err)
			}
		}

		got, err := f.store.Get(t.Context(), tok.ID)
		if err != nil {
			t.Fatal(err)
		}
		final := f.app.tokenJSON(got, f.clock.Now())
		roundLost := false
		for _, e := range edits {
			if !e.ok(final) {
				lost[e.name]++
				roundLost = true
			}
		}
		if roundLost {
			lostRounds++
		}
	}
	if lostRounds > 0 {
		t.Errorf("%d of %d rounds lost an edit; lost per field: %v", lostRounds, rounds, lost)
	}
}

// expiryWarnings is an events handler that records the token ids of the
// api_token_expiring events it sees and, on the first one, runs during.
type expiryWarnings struct {
	mu     sync.Mutex
	ids    []string
	during func()
}

func (w *expiryWarnings) Handle(_ context.Context, e caddy.Event) error {
	w.mu.Lock()
	w.ids = append(w.ids, fmt.Sprint(e.Data["token_id"]))
	during := w.during
	w.during = nil
	w.mu.Unlock()
	if during != nil {
		during()
	}
	return nil
}

// TestExpiryWarningOnce runs the expiry sweeps of two apps on one database
// file, as two Caddy instances sharing it would, and checks that each
// token's api_token_expiring event is emitted exactly once. The second
// sweep runs while the first is emitting its event: the moment a sweep
// that reads, emits and only then marks would let the other warn again.
func TestExpiryWarningOnce(t *testing.T) {
	dir := t.TempDir()
	a, b := newAdminFixture(t, dir), newAdminFixture(t, dir)
	t.Cleanup(func() {
		a.store.Close()
		b.store.Close()
	})
	cctx, cancel := caddy.NewContext(caddy.Context{Context: context.Background()})
	t.Cleanup(cancel)
	events := new(caddyevents.App)
	if err := events.Provision(cctx); err != nil {
		t.Fatal(err)
	}
	warnings := new(expiryWarnings)
	if err := events.On(eventExpiring, warnings); err != nil {
		t.Fatal(err)
	}
	for _, f := range []*adminFixture{a, b} {
		f.app.auditState.events, f.app.auditState.ctx = events, cctx
	}

	tests := []struct {
		name   string
		first  *adminFixture
		second *adminFixture
	}{
		{"b sweeps while a emits", a, b},
		{"a sweeps while b emits", b, a},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			tok, _, err := a.store.Create(t.Context(), storage.NewToken{User: "alice", Name: tt.name,
				ExpiresAt: a.clock.Now().Add(time.Hour)}, nil)
			if err != nil {
				t.Fatal(err)
			}
			warnings.mu.Lock()
			warnings.ids = nil
			warnings.during = func() { tt.second.app.sweepExpiringOnce(t.Context()) }
			warnings.mu.Unlock()

			tt.first.app.sweepExpiringOnce(t.Context())
			tt.second.app.sweepExpiringOnce(t.Context())
			tt.first.app.sweepExpiringOnce(t.Context())

			warnings.mu.Lock()
			defer warnings.mu.Unlock()
			if !slices.Equal(warnings.ids, []string{tok.ID}) {
				t.Errorf("api_token_expiring for %v, want once for %s", warnings.ids, tok.ID)
			}
		})
	}
}
