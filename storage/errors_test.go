package storage

import (
	"errors"
	"fmt"
	"testing"
)

// TestUnavailable checks that an UnavailableError, however wrapped, is
// ErrUnavailable, keeps the backend's error and message, and gives its
// reason; and that other errors are not.
func TestUnavailable(t *testing.T) {
	backend := errors.New("disk I/O error")
	err := fmt.Errorf("creating token: %w", &UnavailableError{Reason: "the disk is full", Err: backend})
	if !errors.Is(err, ErrUnavailable) || !errors.Is(err, backend) {
		t.Errorf("%v: errors.Is ErrUnavailable %v, backend %v; want both", err,
			errors.Is(err, ErrUnavailable), errors.Is(err, backend))
	}
	if got, want := err.Error(), "creating token: disk I/O error"; got != want {
		t.Errorf("Error() = %q; want %q", got, want)
	}
	if reason, ok := Unavailable(err); !ok || reason != "the disk is full" {
		t.Errorf("Unavailable = %q, %v; want the reason, true", reason, ok)
	}
	for _, other := range []error{nil, ErrBusy, fmt.Errorf("x: %w", ErrConflict)} {
		if reason, ok := Unavailable(other); ok || errors.Is(other, ErrUnavailable) {
			t.Errorf("Unavailable(%v) = %q, %v; want false", other, reason, ok)
		}
	}
}
