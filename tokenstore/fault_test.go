//go:build cgo && linux

package tokenstore

// Fault tests: the store with its write lock held by another process, on a
// disk that fills up, and on files that can't be written any more. In each
// case writes must fail with a clear error and change nothing, Lookup must
// keep answering, and once the trouble is over the file must be sound and
// writable, holding every write that was acknowledged.

import (
	"context"
	"errors"
	"fmt"
	"maps"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/apitoken/caddy-apitoken/event"
	"github.com/apitoken/caddy-apitoken/internal/faulttest"
	"github.com/apitoken/caddy-apitoken/storage"
)

// auditByToken counts the stored audit events per token id and type.
func auditByToken(t *testing.T, path string) map[string]int {
	t.Helper()
	rows, err := rawDB(t, path).Query(`SELECT token_id, type, count(*) FROM audit_events GROUP BY 1, 2`)
	if err != nil {
		t.Fatal(err)
	}
	defer rows.Close()
	counts := map[string]int{}
	for rows.Next() {
		var id, typ string
		var n int
		if err := rows.Scan(&id, &typ, &n); err != nil {
			t.Fatal(err)
		}
		counts[id+" "+typ] = n
	}
	if err := rows.Err(); err != nil {
		t.Fatal(err)
	}
	return counts
}

func createdEvent() *event.Event {
	return &event.Event{Type: event.TypeTokenCreated, Outcome: event.OutcomeSuccess}
}

// TestFaultLockedByAnotherProcess: while another process holds the write
// lock, every write waits for the busy timeout and then fails with
// ErrBusy, a message naming the lock, and no change; reads, Lookup and the
// poller go on; once the lock is released, writes work and the other
// process's uncommitted row is gone.
func TestFaultLockedByAnotherProcess(t *testing.T) {
	path := testDBPath(t)
	const busy = 300 * time.Millisecond
	var pollErrs sync.Map
	s := openStore(t, path, Options{BusyTimeout: busy, PollInterval: 20 * time.Millisecond,
		OnPollError: func(err error) { pollErrs.Store(err.Error(), true) }})
	ctx := context.Background()
	tok, secret := mustCreate(t, s, storage.NewToken{User: "alice", Name: "before"})
	before := dumpTable(t, path)

	release := faulttest.HoldWriteLock(t, path)

	name := "renamed"
	writes := []struct {
		name string
		call func() error
	}{
		{"Create", func() error {
			_, _, err := s.Create(ctx, storage.NewToken{User: "alice", Name: "during"}, createdEvent())
			return err
		}},
		{"Update", func() error { _, err := s.Update(ctx, tok.ID, storage.Patch{Name: &name}, nil); return err }},
		{"Revoke", func() error { _, _, err := s.Revoke(ctx, tok.ID, nil); return err }},
		{"RevokeUser", func() error { _, err := s.RevokeUser(ctx, "alice", nil); return err }},
		{"Rotate", func() error { _, _, err := s.Rotate(ctx, tok.ID, "", nil); return err }},
	}
	for _, w := range writes {
		t.Run(w.name, func(t *testing.T) {
			start := time.Now()
			err := w.call()
			took := time.Since(start)
			if !errors.Is(err, ErrBusy) || !strings.Contains(err.Error(), "locked by another connection or process") {
				t.Errorf("error %v, want ErrBusy", err)
			}
			// It waited for the lock, and it gave up rather than hang; no
			// tighter bound on wall time, which a loaded machine stretches.
			if took < busy || took > 30*time.Second {
				t.Errorf("gave up after %v, want at least the busy timeout (%v) and no hang", took, busy)
			}
		})
	}
	// Reads and the hot path don't wait for the writer.
	if e, ok := s.Lookup(secret); !ok || e.Revoked || e.Name != "before" {
		t.Errorf("Lookup while locked: %+v %v", e, ok)
	}
	if toks, err := s.List(ctx, storage.Filter{}); err != nil || len(toks) != 1 {
		t.Errorf("List while locked: %d tokens, %v", len(toks), err)
	}

	release()
	if got := dumpTable(t, path); got != before {
		t.Errorf("failed writes changed the table:\nbefore %s\nafter  %s", before, got)
	}
	if g := s.GroupsOf("lock-holder"); len(g) != 0 {
		t.Errorf("the lock holder's uncommitted row is visible: %v", g)
	}
	// The poller ticked all through the locked writes (at least 5 × busy:
	// 75 ticks), and is still alive: a change another process commits
	// now reaches this store's memory.
	other := openStore(t, path, Options{PollInterval: -1})
	_, otherSecret := mustCreate(t, other, storage.NewToken{User: "bob", Name: "other process"})
	waitFor(t, "the poller to see the other store's token", func() bool {
		_, ok := s.Lookup(otherSecret)
		return ok
	})
	pollErrs.Range(func(k, _ any) bool {
		t.Errorf("poller while locked: %v", k)
		return true
	})
	after, afterSecret := mustCreate(t, s, storage.NewToken{User: "alice", Name: "after"})
	if _, _, err := s.Revoke(ctx, tok.ID, nil); err != nil {
		t.Errorf("Revoke after the lock: %v", err)
	}
	if e, ok := s.Lookup(afterSecret); !ok || e.ID != after.ID {
		t.Error("token created after the lock not found")
	}
	if e, ok := s.Lookup(secret); !ok || !e.Revoked {
		t.Error("token revoked after the lock not revoked")
	}
	if n := auditByToken(t, path); len(n) != 0 {
		t.Errorf("audit events of failed writes: %v", n)
	}
	faulttest.IntegrityOK(t, path)
}

// TestFaultDiskFull runs the store on a 1 MiB tmpfs that fills up during a
// series of creates: the kernel answers ENOSPC as a real full disk does, and
// SQLite SQLITE_FULL. From then on every write must tell the truth: it
// fails with a message saying the disk is full and changes nothing, or, if
// it fits in space SQLite already holds (the frames of the write that
// failed), succeeds. A create as big as the one that failed must fail
// again. Lookup goes on, the store can be reopened on the full disk (a
// restarted Caddy still serves its tokens), and once space is freed writes
// work. Every acknowledged write survives with its audit event; a failed
// one leaves neither.
func TestFaultDiskFull(t *testing.T) {
	dir := faulttest.MountTmpfs(t, "1m")
	path := filepath.Join(dir, "tokens.db")
	ctx := context.Background()
	s, err := Open(ctx, path, Options{PollInterval: -1})
	if err != nil {
		t.Fatal(err)
	}
	defer func() { s.Close() }()
	ev := func(typ event.Type) *event.Event { return &event.Event{Type: typ, Outcome: event.OutcomeSuccess} }
	victim, victimSecret := mustCreate(t, s, storage.NewToken{User: "bob", Name: "victim"})
	wantEvents := map[string]int{}

	filler := faulttest.FillDisk(t, dir, 256<<10)
	acked := map[string]string{victim.ID: victimSecret} // id: secret in force
	var fullErr error
	for i := 0; i < 1000 && fullErr == nil; i++ {
		tok, secret, err := s.Create(ctx, storage.NewToken{User: "alice", Name: fmt.Sprintf("t%d", i)}, ev(event.TypeTokenCreated))
		if err != nil {
			fullErr = err
			break
		}
		acked[tok.ID] = secret
		wantEvents[tok.ID+" token_created"] = 1
	}
	if fullErr == nil || !strings.Contains(fullErr.Error(), "database or disk is full") {
		t.Fatalf("1000 creates on a 1 MiB disk, the last: %v; want a full disk", fullErr)
	}
	t.Logf("%d creates acknowledged, then: %v", len(acked)-1, fullErr)
	before := dumpTable(t, path)
	if _, _, err := s.Create(ctx, storage.NewToken{User: "alice", Name: "again"}, ev(event.TypeTokenCreated)); err == nil || !strings.Contains(err.Error(), "database or disk is full") {
		t.Errorf("a second create on the full disk: %v", err)
	}
	if got := dumpTable(t, path); got != before {
		t.Errorf("a failed create changed the table")
	}

	// Smaller writes may fit where the failed one was; either way the
	// answer must match what the store and Lookup then say.
	truthful := func(what string, err error, changed func() bool) bool {
		t.Helper()
		switch {
		case err == nil && !changed():
			t.Errorf("%s succeeded on the full disk, but changed nothing", what)
		case err != nil && !strings.Contains(err.Error(), "database or disk is full"):
			t.Errorf("%s on the full disk: %v", what, err)
		case err != nil && changed():
			t.Errorf("%s failed on the full disk (%v), but changed the token", what, err)
		}
		t.Logf("%s on the full disk: %v", what, err)
		return err == nil
	}
	rotated, newSecret, err := s.Rotate(ctx, victim.ID, "", ev(event.TypeTokenRotated))
	if truthful("Rotate", err, func() bool { _, ok := s.Lookup(victimSecret); return !ok }) {
		acked[victim.ID] = newSecret
		wantEvents[victim.ID+" token_rotated"] = 1
		if e, ok := s.Lookup(newSecret); !ok || e.ID != rotated.ID {
			t.Error("the new secret of a rotation on the full disk is not found")
		}
	}
	_, _, err = s.Revoke(ctx, victim.ID, ev(event.TypeTokenRevoked))
	victimRevoked := truthful("Revoke", err, func() bool { e, _ := s.Lookup(acked[victim.ID]); return e.Revoked })
	if victimRevoked {
		wantEvents[victim.ID+" token_revoked"] = 1
	}
	for id, secret := range acked {
		if e, ok := s.Lookup(secret); !ok || e.ID != id || e.Revoked != (victimRevoked && id == victim.ID) {
			t.Errorf("Lookup of %s on the full disk: %+v %v", id, e, ok)
		}
	}

	// A restart on the still full disk.
	if err := s.Close(); err != nil {
		t.Errorf("Close on a full disk: %v", err)
	}
	s, err = Open(ctx, path, Options{PollInterval: -1})
	if err != nil {
		t.Fatalf("Open on a full disk: %v", err)
	}
	for id, secret := range acked {
		if e, ok := s.Lookup(secret); !ok || e.ID != id || e.Revoked != (victimRevoked && id == victim.ID) {
			t.Errorf("after reopening on a full disk, %s: %+v %v", id, e, ok)
		}
	}

	if err := os.Remove(filler); err != nil {
		t.Fatal(err)
	}
	after, afterSecret, err := s.Create(ctx, storage.NewToken{User: "alice", Name: "after"}, ev(event.TypeTokenCreated))
	if err != nil {
		t.Fatalf("Create after space was freed: %v", err)
	}
	wantEvents[after.ID+" token_created"] = 1
	if !victimRevoked {
		if _, _, err := s.Revoke(ctx, victim.ID, ev(event.TypeTokenRevoked)); err != nil {
			t.Errorf("Revoke after space was freed: %v", err)
		}
		wantEvents[victim.ID+" token_revoked"] = 1
	}
	if e, ok := s.Lookup(afterSecret); !ok || e.ID != after.ID {
		t.Error("token created after space was freed not found")
	}
	if toks, err := s.List(ctx, storage.Filter{}); err != nil || len(toks) != len(acked)+1 {
		t.Errorf("List: %d tokens (%v), want %d", len(toks), err, len(acked)+1)
	}
	if got := auditByToken(t, path); !maps.Equal(got, wantEvents) {
		t.Errorf("audit events %v, want %v (those of the acknowledged writes, no others)", got, wantEvents)
	}
	faulttest.IntegrityOK(t, path)
}

// TestFaultUnwritable makes the database and its -wal file immutable
// (chattr +i) under an open store: every write(2) to them fails with EPERM,
// as on a file system gone read-only under a running server (EROFS);
// SQLite answers SQLITE_IOERR_WRITE either way. (chmod would not do: the
// tests run as root, and the store's descriptors are open already.) Writes
// must fail and change nothing, Lookup go on; once the files are writable
// again, writes work and the file is sound.
func TestFaultUnwritable(t *testing.T) {
	chattr, err := exec.LookPath("chattr")
	if err != nil {
		faulttest.Unsupported(t, "needs chattr (e2fsprogs)")
	}
	path := testDBPath(t)
	set := func(flag string) error {
		for _, p := range []string{path, path + "-wal"} {
			if out, err := exec.Command(chattr, flag, p).CombinedOutput(); err != nil {
				return fmt.Errorf("chattr %s %s: %v: %s", flag, p, err, out)
			}
		}
		return nil
	}
	s := openStore(t, path, Options{PollInterval: -1})
	ctx := context.Background()
	tok, secret := mustCreate(t, s, storage.NewToken{User: "alice", Name: "before"})
	before := dumpTable(t, path)

	t.Cleanup(func() { _ = set("-i") }) // else t.TempDir can't remove them
	if err := set("+i"); err != nil {
		faulttest.Unsupported(t, "the file system or the user can't make files immutable: %v", err)
	}
	if _, _, err := s.Create(ctx, storage.NewToken{User: "alice", Name: "during"}, createdEvent()); err == nil || !strings.Contains(err.Error(), "disk I/O error") {
		t.Errorf("Create on an unwritable file: %v", err)
	}
	if _, _, err := s.Revoke(ctx, tok.ID, nil); err == nil || !strings.Contains(err.Error(), "disk I/O error") {
		t.Errorf("Revoke on an unwritable file: %v", err)
	}
	if e, ok := s.Lookup(secret); !ok || e.Revoked {
		t.Errorf("Lookup on an unwritable file: %+v %v", e, ok)
	}
	if err := set("-i"); err != nil {
		t.Fatal(err)
	}
	if got := dumpTable(t, path); got != before {
		t.Errorf("failed writes changed the table:\nbefore %s\nafter  %s", before, got)
	}
	if _, _, err := s.Create(ctx, storage.NewToken{User: "alice", Name: "after"}, nil); err != nil {
		t.Errorf("Create once writable again: %v", err)
	}
	if _, _, err := s.Revoke(ctx, tok.ID, nil); err != nil {
		t.Errorf("Revoke once writable again: %v", err)
	}
	if n := auditByToken(t, path); len(n) != 0 {
		t.Errorf("audit events of failed writes: %v", n)
	}
	faulttest.IntegrityOK(t, path)
}

// TestFaultOpenedReadOnly opens the store on a database file that can't be
// written (chattr +i, as on a read-only mount): SQLite then opens it
// read-only, without an error, and a connection opened so stays read-only.
// The store must say so (ReadOnly), serve reads and Lookup, and refuse
// writes as read-only, changing nothing; once the file is writable again,
// writes must work without a restart: the next write reopens the writer,
// and so does the poller by itself.
func TestFaultOpenedReadOnly(t *testing.T) {
	chattr, err := exec.LookPath("chattr")
	if err != nil {
		faulttest.Unsupported(t, "needs chattr (e2fsprogs)")
	}
	tests := []struct {
		name string
		poll time.Duration
	}{
		{"the next write reopens", -1},
		{"the poller reopens", 2 * time.Millisecond},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			path := testDBPath(t)
			ctx := context.Background()
			first := openStore(t, path, Options{PollInterval: -1})
			tok, secret := mustCreate(t, first, storage.NewToken{User: "alice", Name: "ci"})
			if err := first.Close(); err != nil {
				t.Fatal(err)
			}
			before := dumpTable(t, path)
			immutable := func(flag string) error {
				out, err := exec.Command(chattr, flag, path).CombinedOutput()
				if err != nil {
					return fmt.Errorf("chattr %s %s: %v: %s", flag, path, err, out)
				}
				return nil
			}
			t.Cleanup(func() { _ = immutable("-i") }) // else t.TempDir can't remove it
			if err := immutable("+i"); err != nil {
				faulttest.Unsupported(t, "the file system or the user can't make files immutable: %v", err)
			}

			var writable atomic.Int32
			s := openStore(t, path, Options{PollInterval: tt.poll, OnWritable: func() { writable.Add(1) }})
			if !s.ReadOnly() {
				t.Error("ReadOnly is false on an immutable file")
			}
			if e, ok := s.Lookup(secret); !ok || e.ID != tok.ID {
				t.Errorf("Lookup on a read-only file: %+v %v", e, ok)
			}
			_, _, err := s.Revoke(ctx, tok.ID, nil)
			// storage.Unavailable: the store wraps it, so that callers
			// need not know SQLite's codes.
			if reason, ok := storage.Unavailable(err); !ok || reason != "the database is read-only" {
				t.Errorf("Revoke on a read-only file: %v (%q), want the database is read-only", err, reason)
			}
			if _, _, err := s.AddMember(ctx, "ops", "alice", nil); err == nil {
				t.Error("AddMember on a read-only file succeeded")
			}

			if err := immutable("-i"); err != nil {
				t.Fatal(err)
			}
			if got := dumpTable(t, path); got != before {
				t.Errorf("failed writes changed the table:\nbefore %s\nafter  %s", before, got)
			}
			if tt.poll > 0 {
				waitFor(t, "the poller reopens the writer", func() bool { return !s.ReadOnly() })
			}
			if _, _, err := s.Revoke(ctx, tok.ID, nil); err != nil {
				t.Fatalf("Revoke once writable again: %v", err)
			}
			if e, ok := s.Lookup(secret); !ok || !e.Revoked {
				t.Errorf("Lookup after the revoke: %+v %v", e, ok)
			}
			if s.ReadOnly() || writable.Load() != 1 {
				t.Errorf("ReadOnly %v, OnWritable called %d times; want false, once", s.ReadOnly(), writable.Load())
			}
			if _, _, err := s.AddMember(ctx, "ops", "alice", nil); err != nil {
				t.Errorf("AddMember once writable again: %v", err)
			}
			other := openStore(t, path, Options{PollInterval: -1})
			if e, ok := other.Lookup(secret); !ok || !e.Revoked || other.ReadOnly() {
				t.Errorf("another store sees %+v %v, read-only %v; want the token revoked", e, ok, other.ReadOnly())
			}
			faulttest.IntegrityOK(t, path)
		})
	}
}
