//go:build !cgo

package tokenstore

import (
	"errors"
	"path/filepath"
	"testing"
)

func TestOpenWithoutCgo(t *testing.T) {
	path := filepath.Join(t.TempDir(), "tokens.db")
	s, err := Open(t.Context(), path, Options{})
	if !errors.Is(err, ErrNoCgo) {
		t.Fatalf("Open error = %v, want ErrNoCgo", err)
	}
	if s != nil {
		t.Error("Open returned a store with an error")
	}
}
