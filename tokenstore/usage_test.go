//go:build cgo

package tokenstore

import (
	"errors"
	"fmt"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/apitoken/caddy-apitoken/event"
	"github.com/apitoken/caddy-apitoken/storage"
)

func mustFlush(t *testing.T, s *Store, deltas ...event.Usage) {
	t.Helper()
	if err := s.FlushUsage(t.Context(), deltas); err != nil {
		t.Fatalf("FlushUsage: %v", err)
	}
}

// usageOf returns the usage fields of a token as Get returns them.
func usageOf(t *testing.T, s *Store, id string) event.Usage {
	t.Helper()
	tok, err := s.Get(t.Context(), id)
	if err != nil {
		t.Fatal(err)
	}
	return event.Usage{TokenID: id, LastUsedAt: tok.LastUsedAt, LastIP: tok.LastUsedIP, Count: tok.UseCount, RecentIPs: tok.RecentIPs}
}

func TestFlushUsage(t *testing.T) {
	s, clock, path := newTestStore(t)
	ctx := t.Context()
	a, secret := mustCreate(t, s, storage.NewToken{User: "alice", Name: "a"})
	b, _ := mustCreate(t, s, storage.NewToken{User: "bob", Name: "b"})
	t0 := clock.Now()
	at := func(sec int) time.Time { return t0.Add(time.Duration(sec) * time.Second) }
	seen := func(ip string, sec int) event.IPSeen { return event.IPSeen{IP: ip, LastSeen: millis(at(sec))} }

	t.Run("never used", func(t *testing.T) {
		if got := usageOf(t, s, a.ID); !reflect.DeepEqual(got, event.Usage{TokenID: a.ID}) {
			t.Errorf("usage = %+v, want zero", got)
		}
	})

	steps := []struct {
		name   string
		deltas []event.Usage
		want   event.Usage // of token a
	}{
		{"first flush",
			[]event.Usage{{TokenID: a.ID, Count: 3, LastUsedAt: at(10), LastIP: "192.0.2.1",
				RecentIPs: []event.IPSeen{{IP: "192.0.2.1", LastSeen: at(10)}, {IP: "192.0.2.2", LastSeen: at(5)}}}},
			event.Usage{Count: 3, LastUsedAt: at(10), LastIP: "192.0.2.1",
				RecentIPs: []event.IPSeen{seen("192.0.2.1", 10), seen("192.0.2.2", 5)}}},
		{"counts add, an older flush does not win",
			[]event.Usage{{TokenID: a.ID, Count: 2, LastUsedAt: at(7), LastIP: "192.0.2.3",
				RecentIPs: []event.IPSeen{{IP: "192.0.2.3", LastSeen: at(7)}, {IP: "192.0.2.1", LastSeen: at(1)}}}},
			event.Usage{Count: 5, LastUsedAt: at(10), LastIP: "192.0.2.1",
				RecentIPs: []event.IPSeen{seen("192.0.2.1", 10), seen("192.0.2.3", 7), seen("192.0.2.2", 5)}}},
		{"a later use wins, an IP seen again moves up",
			[]event.Usage{{TokenID: a.ID, Count: 1, LastUsedAt: at(20), LastIP: "192.0.2.2",
				RecentIPs: []event.IPSeen{{IP: "192.0.2.2", LastSeen: at(20)}}}},
			event.Usage{Count: 6, LastUsedAt: at(20), LastIP: "192.0.2.2",
				RecentIPs: []event.IPSeen{seen("192.0.2.2", 20), seen("192.0.2.1", 10), seen("192.0.2.3", 7)}}},
		{"the last IP counts as recent",
			[]event.Usage{{TokenID: a.ID, Count: 1, LastUsedAt: at(21), LastIP: "2001:db8::1"}},
			event.Usage{Count: 7, LastUsedAt: at(21), LastIP: "2001:db8::1",
				RecentIPs: []event.IPSeen{seen("2001:db8::1", 21), seen("192.0.2.2", 20), seen("192.0.2.1", 10), seen("192.0.2.3", 7)}}},
		{"capped, most recent kept",
			[]event.Usage{{TokenID: a.ID, Count: 4, LastUsedAt: at(30), LastIP: "198.51.100.4",
				RecentIPs: []event.IPSeen{
					{IP: "198.51.100.4", LastSeen: at(30)}, {IP: "198.51.100.3", LastSeen: at(29)},
					{IP: "198.51.100.2", LastSeen: at(28)}, {IP: "198.51.100.1", LastSeen: at(2)},
				}}},
			event.Usage{Count: 11, LastUsedAt: at(30), LastIP: "198.51.100.4",
				RecentIPs: []event.IPSeen{seen("198.51.100.4", 30), seen("198.51.100.3", 29), seen("198.51.100.2", 28),
					seen("2001:db8::1", 21), seen("192.0.2.2", 20)}}},
		{"several deltas for one token in a flush, and unknown tokens",
			[]event.Usage{
				{TokenID: "zzzzzzzzzzzz", Count: 5, LastUsedAt: at(99), LastIP: "203.0.113.9"},
				{TokenID: a.ID, Count: 1, LastUsedAt: at(31), LastIP: "198.51.100.3"},
				{TokenID: "not an id", Count: 5, LastUsedAt: at(99)},
				{TokenID: a.ID, Count: 2, LastUsedAt: at(30), LastIP: "198.51.100.9"},
			},
			event.Usage{Count: 14, LastUsedAt: at(31), LastIP: "198.51.100.3",
				RecentIPs: []event.IPSeen{seen("198.51.100.3", 31), seen("198.51.100.4", 30), seen("198.51.100.9", 30),
					seen("198.51.100.2", 28), seen("2001:db8::1", 21)}}},
		{"nanoseconds are dropped, as for every stored time",
			[]event.Usage{{TokenID: a.ID, Count: 1, LastUsedAt: at(40).Add(123_456_789), LastIP: "198.51.100.3"}},
			event.Usage{Count: 15, LastUsedAt: millis(at(40).Add(123_456_789)), LastIP: "198.51.100.3",
				RecentIPs: []event.IPSeen{{IP: "198.51.100.3", LastSeen: millis(at(40).Add(123_456_789))}, seen("198.51.100.4", 30),
					seen("198.51.100.9", 30), seen("198.51.100.2", 28), seen("2001:db8::1", 21)}}},
	}
	for _, st := range steps {
		t.Run(st.name, func(t *testing.T) {
			mustFlush(t, s, st.deltas...)
			want := st.want
			want.TokenID = a.ID
			if got := usageOf(t, s, a.ID); !reflect.DeepEqual(got, want) {
				t.Errorf("usage\n%+v, want\n%+v", got, want)
			}
		})
	}

	t.Run("other tokens untouched", func(t *testing.T) {
		if got := usageOf(t, s, b.ID); !reflect.DeepEqual(got, event.Usage{TokenID: b.ID}) {
			t.Errorf("usage of b = %+v, want zero", got)
		}
		var n int
		if err := rawDB(t, path).QueryRow(`SELECT COUNT(*) FROM token_usage`).Scan(&n); err != nil || n != 1 {
			t.Errorf("token_usage has %d rows (%v), want 1: unknown tokens are skipped", n, err)
		}
	})
	t.Run("List shows usage", func(t *testing.T) {
		mustFlush(t, s, event.Usage{TokenID: b.ID, Count: 1, LastUsedAt: at(50), LastIP: "192.0.2.7"})
		toks, err := s.List(ctx, storage.Filter{})
		if err != nil {
			t.Fatal(err)
		}
		for _, tok := range toks {
			want := usageOf(t, s, tok.ID)
			got := event.Usage{TokenID: tok.ID, LastUsedAt: tok.LastUsedAt, LastIP: tok.LastUsedIP, Count: tok.UseCount, RecentIPs: tok.RecentIPs}
			if !reflect.DeepEqual(got, want) || got.Count == 0 {
				t.Errorf("List: %s usage %+v, want %+v", tok.Name, got, want)
			}
		}
	})
	t.Run("usage is not a change to the token", func(t *testing.T) {
		before, _ := s.Get(ctx, a.ID)
		e, _ := s.Lookup(secret)
		seq, _ := indexSeq(s, a.ID)
		mustFlush(t, s, event.Usage{TokenID: a.ID, Count: 1, LastUsedAt: at(60), LastIP: "192.0.2.1"})
		after, _ := s.Get(ctx, a.ID)
		if !after.UpdatedAt.Equal(before.UpdatedAt) {
			t.Errorf("UpdatedAt moved from %v to %v", before.UpdatedAt, after.UpdatedAt)
		}
		var stored int64
		if err := rawDB(t, path).QueryRow(`SELECT seq FROM tokens WHERE id = ?`, a.ID).Scan(&stored); err != nil || stored != seq {
			t.Errorf("seq = %d (%v), want %d", stored, err, seq)
		}
		if e2, _ := s.Lookup(secret); !reflect.DeepEqual(e, e2) {
			t.Errorf("Lookup changed: %+v, want %+v", e2, e)
		}
	})
	t.Run("write methods return and keep usage", func(t *testing.T) {
		want := usageOf(t, s, a.ID)
		updated, err := s.Update(ctx, a.ID, storage.Patch{Description: ptr("d")}, nil)
		if err != nil {
			t.Fatal(err)
		}
		revoked, _, err := s.Revoke(ctx, a.ID, nil)
		if err != nil {
			t.Fatal(err)
		}
		for name, tok := range map[string]storage.Token{"Update": updated, "Revoke": revoked} {
			got := event.Usage{TokenID: tok.ID, LastUsedAt: tok.LastUsedAt, LastIP: tok.LastUsedIP, Count: tok.UseCount, RecentIPs: tok.RecentIPs}
			if !reflect.DeepEqual(got, want) {
				t.Errorf("%s returned usage %+v, want %+v", name, got, want)
			}
		}
		if got := usageOf(t, s, a.ID); !reflect.DeepEqual(got, want) {
			t.Errorf("usage after the writes %+v, want %+v", got, want)
		}
	})
}

func TestFlushUsageInvalid(t *testing.T) {
	s, clock, path := newTestStore(t)
	a, _ := mustCreate(t, s, storage.NewToken{User: "alice", Name: "a"})
	before := dumpQuery(t, path, `SELECT * FROM token_usage`)
	err := s.FlushUsage(t.Context(), []event.Usage{
		{TokenID: a.ID, Count: 1, LastUsedAt: clock.Now()},
		{TokenID: a.ID, Count: -2, LastUsedAt: clock.Now()},
	})
	if !errors.Is(err, ErrInvalid) {
		t.Fatalf("FlushUsage error = %v, want ErrInvalid", err)
	}
	if want := fmt.Sprintf("token %s: count -2", a.ID); !strings.Contains(err.Error(), want) {
		t.Errorf("error %q does not mention %q", err, want)
	}
	if after := dumpQuery(t, path, `SELECT * FROM token_usage`); after != before {
		t.Errorf("token_usage changed:\n%s", after)
	}
	t.Run("nothing to flush", func(t *testing.T) {
		if err := s.FlushUsage(t.Context(), nil); err != nil {
			t.Error(err)
		}
	})
}

// TestRecentIPs covers the merge on its own: dedupe, order, cap, empty IPs.
func TestRecentIPs(t *testing.T) {
	t0 := time.Date(2030, 1, 1, 0, 0, 0, 0, time.UTC)
	at := func(sec int) time.Time { return t0.Add(time.Duration(sec) * time.Second) }
	ip := func(addr string, t time.Time) event.IPSeen { return event.IPSeen{IP: addr, LastSeen: t} }
	tests := []struct {
		name string
		in   []event.IPSeen
		want []event.IPSeen
	}{
		{"none", nil, nil},
		{"only empty IPs", []event.IPSeen{{LastSeen: at(1)}}, nil},
		{"latest of a duplicate wins", []event.IPSeen{ip("a", at(1)), ip("b", at(2)), ip("a", at(3)), ip("a", at(0))},
			[]event.IPSeen{ip("a", at(3)), ip("b", at(2))}},
		{"ties by IP", []event.IPSeen{ip("c", at(1)), ip("a", at(1)), ip("b", at(1))},
			[]event.IPSeen{ip("a", at(1)), ip("b", at(1)), ip("c", at(1))}},
		{"capped", []event.IPSeen{ip("1", at(1)), ip("2", at(2)), ip("3", at(3)), ip("4", at(4)), ip("5", at(5)), ip("6", at(6)), ip("7", at(7))},
			[]event.IPSeen{ip("7", at(7)), ip("6", at(6)), ip("5", at(5)), ip("4", at(4)), ip("3", at(3))}},
		{"milliseconds, UTC", []event.IPSeen{ip("a", at(1).Add(1500*time.Microsecond).In(time.FixedZone("X", 3600)))},
			[]event.IPSeen{ip("a", at(1).Add(time.Millisecond))}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got := recentIPs(tt.in)
			if !reflect.DeepEqual(got, tt.want) {
				t.Errorf("recentIPs = %+v, want %+v", got, tt.want)
			}
			if len(got) > event.MaxRecentIPs {
				t.Errorf("%d IPs, more than %d", len(got), event.MaxRecentIPs)
			}
		})
	}
}
