package storage

import (
	"errors"

	"github.com/apitoken/caddy-apitoken/token"
)

// Errors returned by a token store, wrapped with detail: test with
// errors.Is. Every backend returns these, so that callers map them to
// answers without knowing which backend they talk to.
var (
	// ErrNotFound: no token has that id (or the id is malformed).
	ErrNotFound = errors.New("token not found")
	// ErrConflict: the change clashes with the stored state, e.g. an
	// unrevoked token with the same user and name exists, or a revoked
	// token can't be updated or rotated.
	ErrConflict = errors.New("conflict")
	// ErrInvalid: an argument is malformed; the message names the field.
	// It is token.ErrInvalid, so a malformed token prefix is one too.
	ErrInvalid = token.ErrInvalid
	// ErrBusy: another connection or process held the store's write lock
	// for longer than the store waits. Nothing was written; the change can
	// be tried again.
	ErrBusy = errors.New("token store is locked by another connection or process")
	// ErrUnavailable: the store could not write for a reason outside the
	// request (see UnavailableError). Nothing was written.
	ErrUnavailable = errors.New("token store cannot write")
)

// UnavailableError is an error that kept the store from writing for a
// reason outside the request — the disk is full, the database is
// read-only or unreachable, or an I/O error. Nothing was written; tokens
// already issued keep working (requests are judged from memory), and the
// change can be tried again once the trouble is fixed. errors.Is(err,
// ErrUnavailable) holds for it.
type UnavailableError struct {
	// Reason says what the trouble is, in a few words for a message,
	// e.g. "the disk is full".
	Reason string
	// Err is the backend's own error.
	Err error
}

// Error returns the backend's message: Reason is for callers that
// explain it (see Unavailable).
func (e *UnavailableError) Error() string { return e.Err.Error() }

// Unwrap returns the backend's error.
func (e *UnavailableError) Unwrap() error { return e.Err }

// Is makes errors.Is(e, ErrUnavailable) hold.
func (e *UnavailableError) Is(target error) bool { return target == ErrUnavailable }

// Unavailable reports whether err is, or wraps, an UnavailableError, and
// says why.
func Unavailable(err error) (reason string, ok bool) {
	var u *UnavailableError
	if errors.As(err, &u) {
		return u.Reason, true
	}
	return "", false
}
