// Package faulttest holds what the fault tests of tokenstore and
// caddymodule share: a second process that holds a database's write lock,
// a small tmpfs to fill up, and the integrity check that ends every fault
// test. Only tests import it.
package faulttest

import (
	"bufio"
	"context"
	"database/sql"
	"fmt"
	"net/url"
	"os"
	"strings"
	"sync"
	"testing"

	_ "github.com/mattn/go-sqlite3" // the driver the store uses
)

// lockHolderEnv names the database that the test binary, re-run by
// HoldWriteLock, locks instead of running tests (see LockHolderMain).
const lockHolderEnv = "CADDY_APITOKEN_TEST_HOLD_LOCK"

// LockHolderMain makes the test binary the lock holder when HoldWriteLock
// started it: it plays an operator's sqlite3 shell that has begun a write
// transaction and not finished it. It takes the write lock with BEGIN
// IMMEDIATE, writes a row it never commits, prints "locked", rolls back
// when its stdin closes and exits. Otherwise it returns at once. Call it
// first in TestMain.
func LockHolderMain() {
	path := os.Getenv(lockHolderEnv)
	if path == "" {
		return
	}
	if err := holdLock(path); err != nil {
		fmt.Fprintln(os.Stderr, "lock holder:", err)
		os.Exit(2)
	}
	os.Exit(0)
}

func holdLock(path string) error {
	db, err := open(path)
	if err != nil {
		return err
	}
	defer db.Close()
	ctx := context.Background()
	conn, err := db.Conn(ctx)
	if err != nil {
		return err
	}
	defer conn.Close()
	if _, err := conn.ExecContext(ctx, `BEGIN IMMEDIATE`); err != nil {
		return err
	}
	if _, err := conn.ExecContext(ctx, `INSERT INTO group_members (group_name, user_key, user, added_at)
VALUES ('lock-holder', 'lock-holder', 'lock-holder', 0)`); err != nil {
		return err
	}
	fmt.Println("locked")
	_, _ = bufio.NewReader(os.Stdin).ReadString('\n') // returns when stdin closes
	_, err = conn.ExecContext(ctx, `ROLLBACK`)
	return err
}

func open(path string) (*sql.DB, error) {
	u := url.URL{Scheme: "file", Path: path, RawQuery: "_busy_timeout=5000"}
	return sql.Open("sqlite3", u.String())
}

// Output collects a child process's output: safe for the writes of its
// copier goroutines and the reads of the test at the same time.
type Output struct {
	mu sync.Mutex
	b  strings.Builder
}

func (l *Output) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}

func (l *Output) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.String()
}

// RequireEnv is the environment variable that makes a fault test fail
// where it would otherwise be skipped because the machine can't stage its
// fault (no tmpfs mount, no chattr, a file system without immutable
// files). CI sets it, so that a green run means every fault test ran.
const RequireEnv = "CADDY_APITOKEN_REQUIRE_FAULT_TESTS"

// Unsupported skips t, for a fault this machine can't stage, with the
// reason given; if RequireEnv is 1 it fails t instead.
func Unsupported(t testing.TB, format string, args ...any) {
	t.Helper()
	if os.Getenv(RequireEnv) == "1" {
		t.Fatalf(format+" (and "+RequireEnv+"=1 requires every fault test to run)", args...)
	}
	t.Skipf(format, args...)
}

// IntegrityOK fails t unless PRAGMA integrity_check finds the database at
// path sound.
func IntegrityOK(t testing.TB, path string) {
	t.Helper()
	db, err := open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	var res string
	if err := db.QueryRow(`PRAGMA integrity_check`).Scan(&res); err != nil || res != "ok" {
		t.Errorf("integrity_check of %s: %q %v", path, res, err)
	}
}
