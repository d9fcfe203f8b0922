package caddymodule

import (
	"bufio"
	"context"
	"database/sql"
	"fmt"
	"net/url"
	"os"
	"testing"

	caddycmd "github.com/caddyserver/caddy/v2/cmd"
)

// The test binary plays two other programs for the fault tests, chosen by
// an environment variable:
//
//   - childCaddyEnv=1: Caddy itself. The binary links Caddy's standard
//     modules (through caddytest) and this plugin, so `<test binary> run
//     --config …` or `reload …` is the Caddy that xcaddy builds with the
//     plugin (cmd/caddy's main is the same call), as a real process that a
//     test can SIGKILL.
//   - lockHolderEnv=<database path>: an operator's sqlite3 shell in the
//     middle of a write transaction (see holdLock).
const (
	childCaddyEnv = "CADDY_APITOKEN_TEST_CADDY"
	lockHolderEnv = "CADDY_APITOKEN_TEST_HOLD_LOCK"
)

func TestMain(m *testing.M) {
	if os.Getenv(childCaddyEnv) == "1" {
		caddycmd.Main()
		return
	}
	if path := os.Getenv(lockHolderEnv); path != "" {
		if err := holdLock(path); err != nil {
			fmt.Fprintln(os.Stderr, "lock holder:", err)
			os.Exit(2)
		}
		os.Exit(0)
	}
	os.Exit(m.Run())
}

// holdLock takes the write lock of the database at path as an operator's
// `sqlite3` shell does on BEGIN IMMEDIATE followed by a write it has not
// committed yet, prints "locked", and holds it until its stdin is closed;
// then it rolls back.
func holdLock(path string) error {
	u := url.URL{Scheme: "file", Path: path, RawQuery: "_busy_timeout=5000"}
	db, err := sql.Open("sqlite3", u.String())
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
