package caddymodule

import (
	"os"
	"testing"

	caddycmd "github.com/caddyserver/caddy/v2/cmd"

	"github.com/apitoken/caddy-apitoken/internal/faulttest"
)

// The test binary plays two other programs for the fault tests, chosen by
// an environment variable:
//
//   - childCaddyEnv=1: Caddy itself. The binary links Caddy's standard
//     modules (through caddytest) and this plugin, so `<test binary> run
//     --config …` or `reload …` is the Caddy that xcaddy builds with the
//     plugin (cmd/caddy's main is the same call), as a real process that a
//     test can SIGKILL.
//   - an operator's sqlite3 shell in the middle of a write transaction
//     (faulttest.HoldWriteLock, faulttest.LockHolderMain).
const childCaddyEnv = "CADDY_APITOKEN_TEST_CADDY"

func TestMain(m *testing.M) {
	if os.Getenv(childCaddyEnv) == "1" {
		caddycmd.Main()
		return
	}
	faulttest.LockHolderMain()
	os.Exit(m.Run())
}
