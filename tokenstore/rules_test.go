//go:build cgo

package tokenstore

import (
	"errors"
	"fmt"
	"net/netip"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/apitoken/caddy-apitoken/policy"
	"github.com/apitoken/caddy-apitoken/storage"
)

// privateRanges is what "private_ranges" expands to, canonically.
var privateRanges = []string{"192.168.0.0/16", "172.16.0.0/12", "10.0.0.0/8", "127.0.0.0/8", "fd00::/8", "::1/128"}

func prefixStrings(ps []netip.Prefix) []string {
	if ps == nil {
		return nil
	}
	out := make([]string, len(ps))
	for i, p := range ps {
		out[i] = p.String()
	}
	return out
}

// rulesOf returns only the rule fields of tok.
func rulesOf(tok storage.Token) storage.Token {
	return storage.Token{AllowedIPs: tok.AllowedIPs, Scope: tok.Scope, RateLimit: tok.RateLimit}
}

// checkEntryRules checks that e carries tok's rules, parsed.
func checkEntryRules(t *testing.T, e storage.Entry, tok storage.Token) {
	t.Helper()
	if got := prefixStrings(e.AllowedIPs); !reflect.DeepEqual(got, tok.AllowedIPs) {
		t.Errorf("Entry.AllowedIPs = %q, want %q", got, tok.AllowedIPs)
	}
	if (e.Scope == nil) != tok.Scope.IsZero() {
		t.Errorf("Entry.Scope = %v for scope %+v; want nil exactly when the scope is zero", e.Scope, tok.Scope)
	}
	var rate policy.Rate
	if tok.RateLimit != "" {
		var err error
		if rate, err = policy.ParseRate(tok.RateLimit); err != nil {
			t.Fatalf("stored rate: %v", err)
		}
	}
	if e.RateLimit != rate {
		t.Errorf("Entry.RateLimit = %+v, want %+v", e.RateLimit, rate)
	}
}

func ptr[T any](v T) *T { return &v }

func TestCreateRules(t *testing.T) {
	s, _, _ := newTestStore(t)
	ctx := t.Context()
	tests := []struct {
		name     string
		nt       storage.NewToken // User and Name are filled in
		want     storage.Token    // the rule fields only
		wantRate policy.Rate
	}{
		{"none", storage.NewToken{}, storage.Token{}, policy.Rate{}},
		{"empty lists",
			storage.NewToken{AllowedIPs: []string{}, Scope: policy.Scope{Methods: []string{}, Paths: []string{}, Hosts: []string{}}},
			storage.Token{}, policy.Rate{}},
		{"bare IPv4", storage.NewToken{AllowedIPs: []string{"10.1.2.3"}}, storage.Token{AllowedIPs: []string{"10.1.2.3/32"}}, policy.Rate{}},
		{"bare IPv6", storage.NewToken{AllowedIPs: []string{"2001:db8::1"}}, storage.Token{AllowedIPs: []string{"2001:db8::1/128"}}, policy.Rate{}},
		{"masked", storage.NewToken{AllowedIPs: []string{"10.1.2.3/8"}}, storage.Token{AllowedIPs: []string{"10.0.0.0/8"}}, policy.Rate{}},
		{"IPv4-mapped", storage.NewToken{AllowedIPs: []string{"::ffff:10.0.0.0/104"}}, storage.Token{AllowedIPs: []string{"10.0.0.0/8"}}, policy.Rate{}},
		{"private ranges",
			storage.NewToken{AllowedIPs: []string{"private_ranges", "203.0.113.7"}},
			storage.Token{AllowedIPs: append(append([]string{}, privateRanges...), "203.0.113.7/32")}, policy.Rate{}},
		{"read only", storage.NewToken{Scope: policy.Scope{ReadOnly: true}}, storage.Token{Scope: policy.Scope{ReadOnly: true}}, policy.Rate{}},
		{"scope",
			storage.NewToken{Scope: policy.Scope{Methods: []string{"get", "Head"}, Paths: []string{"/api/*", "*.JSON"}, Hosts: []string{"API.example.com", "*.example.org"}}},
			storage.Token{Scope: policy.Scope{Methods: []string{"GET", "HEAD"}, Paths: []string{"/api/*", "*.JSON"}, Hosts: []string{"API.example.com", "*.example.org"}}},
			policy.Rate{}},
		{"rate", storage.NewToken{RateLimit: "600/1m"}, storage.Token{RateLimit: "600/1m"}, policy.Rate{Events: 600, Per: time.Minute}},
		{"rate with a bare unit", storage.NewToken{RateLimit: "10/s"}, storage.Token{RateLimit: "10/1s"}, policy.Rate{Events: 10, Per: time.Second}},
		{"rate in a larger unit", storage.NewToken{RateLimit: "60/60s"}, storage.Token{RateLimit: "60/1m"}, policy.Rate{Events: 60, Per: time.Minute}},
		{"everything",
			storage.NewToken{AllowedIPs: []string{"192.0.2.0/24"}, Scope: policy.Scope{ReadOnly: true, Paths: []string{"/v1/*"}}, RateLimit: "5/1s"},
			storage.Token{AllowedIPs: []string{"192.0.2.0/24"}, Scope: policy.Scope{ReadOnly: true, Paths: []string{"/v1/*"}}, RateLimit: "5/1s"},
			policy.Rate{Events: 5, Per: time.Second}},
	}
	for i, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			nt := tt.nt
			nt.User, nt.Name = "alice", fmt.Sprint("token", i)
			tok, secret := mustCreate(t, s, nt)
			if got := rulesOf(tok); !reflect.DeepEqual(got, tt.want) {
				t.Errorf("Create returned rules\n%+v, want\n%+v", got, tt.want)
			}
			if got, err := s.Get(ctx, tok.ID); err != nil || !reflect.DeepEqual(got, tok) {
				t.Errorf("Get = %+v, %v; want %+v", got, err, tok)
			}
			listed, err := s.List(ctx, storage.Filter{User: "alice"})
			if err != nil {
				t.Fatal(err)
			}
			found := false
			for _, l := range listed {
				if l.ID == tok.ID {
					found = true
					if !reflect.DeepEqual(l, tok) {
						t.Errorf("List has %+v, want %+v", l, tok)
					}
				}
			}
			if !found {
				t.Errorf("List lacks %s", tok.ID)
			}
			e, ok := s.Lookup(secret)
			if !ok {
				t.Fatal("Lookup failed")
			}
			checkEntryRules(t, e, tok)
			if e.RateLimit != tt.wantRate {
				t.Errorf("Entry.RateLimit = %+v, want %+v", e.RateLimit, tt.wantRate)
			}
		})
	}

	t.Run("the caller's slices are copied", func(t *testing.T) {
		nt := storage.NewToken{User: "bob", Name: "copy", AllowedIPs: []string{"10.0.0.0/8"}, Scope: policy.Scope{
			Methods: []string{"GET"}, Paths: []string{"/a"}, Hosts: []string{"a.example"},
		}}
		tok, _ := mustCreate(t, s, nt)
		want := rulesOf(tok)
		want.Scope = policy.Scope{Methods: []string{"GET"}, Paths: []string{"/a"}, Hosts: []string{"a.example"}}
		nt.AllowedIPs[0], nt.Scope.Methods[0], nt.Scope.Paths[0], nt.Scope.Hosts[0] = "x", "x", "x", "x"
		if got := rulesOf(tok); !reflect.DeepEqual(got, want) {
			t.Errorf("changing the NewToken changed the returned token: %+v", got)
		}
	})
}

// TestLookupRules: the Entry carries rules the gate can use as they are,
// parsed once, and changed by Update before it returns.
func TestLookupRules(t *testing.T) {
	s, _, _ := newTestStore(t)
	ctx := t.Context()
	tok, secret := mustCreate(t, s, storage.NewToken{
		User: "Alice", Name: "ci",
		AllowedIPs: []string{"10.0.0.0/8", "2001:db8::/32"},
		Scope:      policy.Scope{Methods: []string{"get"}, Paths: []string{"/api/*"}, Hosts: []string{"api.example.com"}},
		RateLimit:  "5/1s",
	})
	e, ok := s.Lookup(secret)
	if !ok {
		t.Fatal("Lookup failed")
	}
	if e.UserKey != "alice" {
		t.Errorf("UserKey = %q, want alice", e.UserKey)
	}
	if e.Scope == nil {
		t.Fatal("Entry.Scope is nil")
	}
	if e.RateLimit != (policy.Rate{Events: 5, Per: time.Second}) {
		t.Errorf("RateLimit = %+v", e.RateLimit)
	}
	decisions := []struct {
		name string
		got  policy.Reason
		want policy.Reason
	}{
		{"address inside", policy.CheckIP(netip.MustParseAddr("10.9.8.7"), true, e.AllowedIPs), policy.ReasonOK},
		{"IPv6 address inside", policy.CheckIP(netip.MustParseAddr("2001:db8::5"), true, e.AllowedIPs), policy.ReasonOK},
		{"address outside", policy.CheckIP(netip.MustParseAddr("192.0.2.1"), true, e.AllowedIPs), policy.ReasonIPNotAllowed},
		{"in scope", e.Scope.Check("GET", "api.example.com", "/api/users", true), policy.ReasonOK},
		{"other method", e.Scope.Check("POST", "api.example.com", "/api/users", false), policy.ReasonMethodNotAllowed},
		{"other path", e.Scope.Check("GET", "api.example.com", "/admin", true), policy.ReasonPathNotAllowed},
		{"other host", e.Scope.Check("GET", "www.example.com", "/api/users", true), policy.ReasonHostNotAllowed},
	}
	for _, d := range decisions {
		t.Run(d.name, func(t *testing.T) {
			if d.got != d.want {
				t.Errorf("decision = %s, want %s", d.got, d.want)
			}
		})
	}

	t.Run("parsed once", func(t *testing.T) {
		again, _ := s.Lookup(secret)
		if again.Scope != e.Scope || &again.AllowedIPs[0] != &e.AllowedIPs[0] {
			t.Error("two Lookups of the same version returned different parsed rules")
		}
	})
	t.Run("update applies at once", func(t *testing.T) {
		_, err := s.Update(ctx, tok.ID, storage.Patch{
			AllowedIPs: &[]string{"192.0.2.0/24"},
			Methods:    &[]string{"POST"},
			Paths:      &[]string{},
			Hosts:      &[]string{},
			RateLimit:  ptr("1/1m"),
		}, nil)
		if err != nil {
			t.Fatal(err)
		}
		e, _ := s.Lookup(secret)
		if got := policy.CheckIP(netip.MustParseAddr("192.0.2.1"), true, e.AllowedIPs); got != policy.ReasonOK {
			t.Errorf("new allowed address: %s", got)
		}
		if got := policy.CheckIP(netip.MustParseAddr("10.9.8.7"), true, e.AllowedIPs); got != policy.ReasonIPNotAllowed {
			t.Errorf("old allowed address: %s", got)
		}
		if e.Scope == nil || e.Scope.Check("POST", "any.example", "/anything", false) != policy.ReasonOK {
			t.Errorf("new scope not applied: %v", e.Scope)
		}
		if e.RateLimit != (policy.Rate{Events: 1, Per: time.Minute}) {
			t.Errorf("RateLimit = %+v", e.RateLimit)
		}
	})
	t.Run("cleared rules are nil", func(t *testing.T) {
		_, err := s.Update(ctx, tok.ID, storage.Patch{AllowedIPs: new([]string), ReadOnly: new(bool), Methods: new([]string), Paths: new([]string), Hosts: new([]string), RateLimit: ptr("")}, nil)
		if err != nil {
			t.Fatal(err)
		}
		e, _ := s.Lookup(secret)
		if e.AllowedIPs != nil || e.Scope != nil || !e.RateLimit.IsZero() {
			t.Errorf("Entry = %+v; want no rules", e)
		}
	})
}

func TestUpdateRules(t *testing.T) {
	s, clock, _ := newTestStore(t)
	ctx := t.Context()
	tok, secret := mustCreate(t, s, storage.NewToken{User: "alice", Name: "ci", Scope: policy.Scope{ReadOnly: true}, RateLimit: "5/1s"})

	steps := []struct {
		name  string
		patch storage.Patch
		want  storage.Token // the rule fields after the step
	}{
		{"set allowed_ips", storage.Patch{AllowedIPs: &[]string{"192.0.2.9"}},
			storage.Token{AllowedIPs: []string{"192.0.2.9/32"}, Scope: policy.Scope{ReadOnly: true}, RateLimit: "5/1s"}},
		{"set scope", storage.Patch{ReadOnly: new(bool), Methods: &[]string{"delete"}},
			storage.Token{AllowedIPs: []string{"192.0.2.9/32"}, Scope: policy.Scope{Methods: []string{"DELETE"}}, RateLimit: "5/1s"}},
		{"set paths keeps the methods", storage.Patch{Paths: &[]string{"/rest/*"}},
			storage.Token{AllowedIPs: []string{"192.0.2.9/32"}, Scope: policy.Scope{Methods: []string{"DELETE"}, Paths: []string{"/rest/*"}}, RateLimit: "5/1s"}},
		{"set hosts keeps the paths and methods", storage.Patch{Hosts: &[]string{"jira.example.com"}},
			storage.Token{AllowedIPs: []string{"192.0.2.9/32"}, Scope: policy.Scope{Methods: []string{"DELETE"}, Paths: []string{"/rest/*"}, Hosts: []string{"jira.example.com"}}, RateLimit: "5/1s"}},
		{"clear paths and hosts", storage.Patch{Paths: &[]string{}, Hosts: new([]string)},
			storage.Token{AllowedIPs: []string{"192.0.2.9/32"}, Scope: policy.Scope{Methods: []string{"DELETE"}}, RateLimit: "5/1s"}},
		{"set rate", storage.Patch{RateLimit: ptr("100/1h")},
			storage.Token{AllowedIPs: []string{"192.0.2.9/32"}, Scope: policy.Scope{Methods: []string{"DELETE"}}, RateLimit: "100/1h"}},
		{"other fields keep the rules", storage.Patch{Name: ptr("renamed"), Description: ptr("d")},
			storage.Token{AllowedIPs: []string{"192.0.2.9/32"}, Scope: policy.Scope{Methods: []string{"DELETE"}}, RateLimit: "100/1h"}},
		{"clear allowed_ips with a nil list", storage.Patch{AllowedIPs: new([]string)},
			storage.Token{Scope: policy.Scope{Methods: []string{"DELETE"}}, RateLimit: "100/1h"}},
		{"set allowed_ips to private_ranges", storage.Patch{AllowedIPs: &[]string{"private_ranges"}},
			storage.Token{AllowedIPs: privateRanges, Scope: policy.Scope{Methods: []string{"DELETE"}}, RateLimit: "100/1h"}},
		{"clear allowed_ips with an empty list", storage.Patch{AllowedIPs: &[]string{}},
			storage.Token{Scope: policy.Scope{Methods: []string{"DELETE"}}, RateLimit: "100/1h"}},
		{"clear scope", storage.Patch{Methods: &[]string{}},
			storage.Token{RateLimit: "100/1h"}},
		{"clear rate", storage.Patch{RateLimit: ptr("")},
			storage.Token{}},
	}
	for _, st := range steps {
		t.Run(st.name, func(t *testing.T) {
			clock.Advance(time.Second)
			before, err := s.Get(ctx, tok.ID)
			if err != nil {
				t.Fatal(err)
			}
			got, err := s.Update(ctx, tok.ID, st.patch, nil)
			if err != nil {
				t.Fatal(err)
			}
			if r := rulesOf(got); !reflect.DeepEqual(r, st.want) {
				t.Errorf("Update returned rules\n%+v, want\n%+v", r, st.want)
			}
			if !got.UpdatedAt.Equal(millis(clock.Now())) || !got.CreatedAt.Equal(before.CreatedAt) {
				t.Errorf("times: created %v updated %v", got.CreatedAt, got.UpdatedAt)
			}
			if stored, err := s.Get(ctx, tok.ID); err != nil || !reflect.DeepEqual(stored, got) {
				t.Errorf("Get = %+v, %v; want %+v", stored, err, got)
			}
			e, ok := s.Lookup(secret)
			if !ok {
				t.Fatal("Lookup failed")
			}
			checkEntryRules(t, e, got)
		})
	}

	t.Run("revoked", func(t *testing.T) {
		victim, _ := mustCreate(t, s, storage.NewToken{User: "alice", Name: "victim"})
		if _, _, err := s.Revoke(ctx, victim.ID, nil); err != nil {
			t.Fatal(err)
		}
		if _, err := s.Update(ctx, victim.ID, storage.Patch{RateLimit: ptr("1/1s")}, nil); !errors.Is(err, ErrConflict) {
			t.Errorf("Update error = %v, want ErrConflict", err)
		}
	})
}

func TestRotateKeepsRules(t *testing.T) {
	s, _, _ := newTestStore(t)
	ctx := t.Context()
	tok, oldSecret := mustCreate(t, s, storage.NewToken{
		User: "alice", Name: "ci",
		AllowedIPs: []string{"private_ranges"},
		Scope:      policy.Scope{ReadOnly: true, Hosts: []string{"*.example.com"}},
		RateLimit:  "600/1m",
	})
	old, _ := s.Lookup(oldSecret)
	rotated, secret, err := s.Rotate(ctx, tok.ID, "", nil)
	if err != nil {
		t.Fatal(err)
	}
	if !reflect.DeepEqual(rulesOf(rotated), rulesOf(tok)) {
		t.Errorf("Rotate returned rules %+v, want %+v", rulesOf(rotated), rulesOf(tok))
	}
	if got, err := s.Get(ctx, tok.ID); err != nil || !reflect.DeepEqual(rulesOf(got), rulesOf(tok)) {
		t.Errorf("Get = %+v, %v; want the rules kept", got, err)
	}
	e, ok := s.Lookup(secret)
	if !ok {
		t.Fatal("Lookup(new secret) failed")
	}
	checkEntryRules(t, e, tok)
	if e.Scope == nil || e.Scope.Check("POST", "api.example.com", "/", false) != policy.ReasonReadOnly {
		t.Errorf("the rotated token's scope does not apply")
	}
	if !reflect.DeepEqual(prefixStrings(e.AllowedIPs), prefixStrings(old.AllowedIPs)) {
		t.Errorf("AllowedIPs %v, before rotation %v", e.AllowedIPs, old.AllowedIPs)
	}
}

// TestRulesInvalid: every bad rule is refused with ErrInvalid and a message
// naming the value, by Create and by Update, and nothing is written.
func TestRulesInvalid(t *testing.T) {
	s, _, path := newTestStore(t)
	ctx := t.Context()
	existing, _ := mustCreate(t, s, storage.NewToken{User: "alice", Name: "existing", RateLimit: "1/1s"})
	before := dumpTable(t, path)

	many := func(n int, item func(int) string) []string {
		items := make([]string, n)
		for i := range items {
			items[i] = item(i)
		}
		return items
	}
	tests := []struct {
		name  string
		ips   []string
		scope *policy.Scope
		rate  *string
		want  []string // in the message
	}{
		{"CIDR bits out of range", []string{"10.0.0.0/8", "10.0.0.0/33"}, nil, nil, []string{"allowed_ips", `"10.0.0.0/33"`}},
		{"host name for an address", []string{"example.com"}, nil, nil, []string{"allowed_ips", `"example.com"`}},
		{"empty item", []string{""}, nil, nil, []string{"allowed_ips", `""`}},
		{"address with a zone", []string{"fe80::1%eth0"}, nil, nil, []string{`"fe80::1%eth0"`}},
		{"private ranges misspelt", []string{"private-ranges"}, nil, nil, []string{`"private-ranges"`}},
		{"too many CIDRs", many(maxAllowedIPs+1, func(i int) string { return fmt.Sprintf("10.0.%d.0/24", i) }), nil, nil,
			[]string{"allowed_ips", "101 entries, more than 100"}},
		{"too many once expanded", many(17, func(int) string { return "private_ranges" }), nil, nil,
			[]string{"allowed_ips", "102 prefixes once private_ranges is expanded, more than 100"}},
		{"rate without a period", nil, nil, ptr("600"), []string{"rate_limit", `"600"`}},
		{"rate of zero", nil, nil, ptr("0/1m"), []string{"rate_limit", `"0/1m"`}},
		{"rate with a negative period", nil, nil, ptr("5/-1s"), []string{"rate_limit", `"5/-1s"`}},
		{"rate unlimited", nil, nil, ptr("unlimited"), []string{"rate_limit", `"unlimited"`}},
		{"method with a space", nil, &policy.Scope{Methods: []string{"GET", "GE T"}}, nil, []string{"scope", `method "GE T"`}},
		{"empty method", nil, &policy.Scope{Methods: []string{""}}, nil, []string{"scope", `method ""`}},
		{"path without a slash", nil, &policy.Scope{Paths: []string{"api"}}, nil, []string{"scope", `"api"`}},
		{"path not UTF-8", nil, &policy.Scope{Paths: []string{"/\xff"}}, nil, []string{"scope", "not valid UTF-8"}},
		{"path too long", nil, &policy.Scope{Paths: []string{"/" + strings.Repeat("a", maxPathPatternLen)}}, nil,
			[]string{"scope", "1025 bytes long, more than 1024"}},
		{"bad host", nil, &policy.Scope{Hosts: []string{"bad host"}}, nil, []string{"scope", `host "bad host"`}},
		{"too many methods", nil, &policy.Scope{Methods: many(maxScopeItems+1, func(int) string { return "GET" })}, nil,
			[]string{"scope", "methods has 51 entries, more than 50"}},
		{"too many paths", nil, &policy.Scope{Paths: many(maxScopeItems+1, func(i int) string { return fmt.Sprint("/", i) })}, nil,
			[]string{"scope", "paths has 51 entries"}},
		{"too many hosts", nil, &policy.Scope{Hosts: many(maxScopeItems+1, func(i int) string { return fmt.Sprint("h", i, ".example") })}, nil,
			[]string{"scope", "hosts has 51 entries"}},
	}
	for _, tt := range tests {
		nt := storage.NewToken{User: "alice", Name: "new", AllowedIPs: tt.ips}
		var p storage.Patch
		if tt.ips != nil {
			p.AllowedIPs = &tt.ips
		}
		if tt.scope != nil {
			nt.Scope = *tt.scope
			if tt.scope.Methods != nil {
				p.Methods = &tt.scope.Methods
			}
			if tt.scope.Paths != nil {
				p.Paths = &tt.scope.Paths
			}
			if tt.scope.Hosts != nil {
				p.Hosts = &tt.scope.Hosts
			}
		}
		if tt.rate != nil {
			nt.RateLimit, p.RateLimit = *tt.rate, tt.rate
		}
		check := func(t *testing.T, err error) {
			t.Helper()
			if !errors.Is(err, ErrInvalid) {
				t.Fatalf("error = %v, want ErrInvalid", err)
			}
			for _, w := range tt.want {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("error %q does not mention %q", err, w)
				}
			}
			if after := dumpTable(t, path); after != before {
				t.Errorf("table changed:\n%s\nwant\n%s", after, before)
			}
		}
		t.Run("create/"+tt.name, func(t *testing.T) {
			_, secret, err := s.Create(ctx, nt, nil)
			check(t, err)
			if secret != "" {
				t.Error("Create returned a secret with an error")
			}
		})
		t.Run("update/"+tt.name, func(t *testing.T) {
			_, err := s.Update(ctx, existing.ID, p, nil)
			check(t, err)
		})
	}
}

// TestStoredRulesChecked: rows are checked when read, as when written. A
// stored scope with a field this build does not know is refused, not read
// as a wider scope.
func TestStoredRulesChecked(t *testing.T) {
	s, _, path := newTestStore(t)
	tok, _ := mustCreate(t, s, storage.NewToken{User: "alice", Name: "ci", Scope: policy.Scope{ReadOnly: true}})
	raw := rawDB(t, path)
	tests := []struct {
		name, column, value, want string
	}{
		{"unknown scope field", "scope", `{"read_only":true,"query":["a=b"]}`, `unknown field "query"`},
		{"bad prefix", "allowed_ips", `["10.0.0.0/33"]`, `"10.0.0.0/33"`},
		{"bad rate", "rate_limit", `fast`, `"fast"`},
	}
	// Fixed SQL for each column.
	get := map[string]string{
		"scope":       `SELECT scope FROM tokens WHERE id = ?`,
		"allowed_ips": `SELECT allowed_ips FROM tokens WHERE id = ?`,
		"rate_limit":  `SELECT rate_limit FROM tokens WHERE id = ?`,
	}
	update := map[string]string{
		"scope":       `UPDATE tokens SET scope = ? WHERE id = ?`,
		"allowed_ips": `UPDATE tokens SET allowed_ips = ? WHERE id = ?`,
		"rate_limit":  `UPDATE tokens SET rate_limit = ? WHERE id = ?`,
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var old string
			if err := raw.QueryRow(get[tt.column], tok.ID).Scan(&old); err != nil {
				t.Fatal(err)
			}
			if _, err := raw.Exec(update[tt.column], tt.value, tok.ID); err != nil {
				t.Fatal(err)
			}
			defer func() {
				if _, err := raw.Exec(update[tt.column], old, tok.ID); err != nil {
					t.Fatal(err)
				}
			}()
			_, err := s.Get(t.Context(), tok.ID)
			if err == nil {
				t.Fatal("Get succeeded")
			}
			if errors.Is(err, ErrInvalid) {
				t.Errorf("error %v wraps ErrInvalid, which would blame the caller", err)
			}
			for _, w := range []string{tok.ID, tt.want} {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("error %q does not mention %q", err, w)
				}
			}
		})
	}
	t.Run("restored", func(t *testing.T) {
		if got, err := s.Get(t.Context(), tok.ID); err != nil || !reflect.DeepEqual(got, tok) {
			t.Errorf("Get = %+v, %v", got, err)
		}
	})
	t.Run("JSON shape enforced by the schema", func(t *testing.T) {
		if _, err := raw.Exec(`UPDATE tokens SET allowed_ips = '{}' WHERE id = ?`, tok.ID); err == nil {
			t.Error("an object was accepted as allowed_ips")
		}
		if _, err := raw.Exec(`UPDATE tokens SET scope = '[]' WHERE id = ?`, tok.ID); err == nil {
			t.Error("an array was accepted as scope")
		}
	})
}
