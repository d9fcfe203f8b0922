package tokenstore

import (
	"os"
	"testing"

	"github.com/apitoken/caddy-apitoken/internal/faulttest"
)

// TestMain lets the test binary play the other process of the lock tests:
// see faulttest.HoldWriteLock.
func TestMain(m *testing.M) {
	faulttest.LockHolderMain()
	os.Exit(m.Run())
}
