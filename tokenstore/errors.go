package tokenstore

import (
	"errors"

	"github.com/apitoken/caddy-apitoken/storage"
)

// Errors returned by the store, wrapped with detail: test with errors.Is.
// The first four are package storage's, which every backend returns.
var (
	ErrNotFound = storage.ErrNotFound
	ErrConflict = storage.ErrConflict
	ErrInvalid  = storage.ErrInvalid
	// ErrBusy: another connection or process held the database's write
	// lock for longer than the busy timeout (e.g. a sqlite3 shell in the
	// middle of a write transaction).
	ErrBusy = storage.ErrBusy
	// ErrNoCgo: the program was built without cgo, so the SQLite driver is
	// a stub that can't open anything.
	ErrNoCgo = errors.New("the sqlite3 driver was compiled without cgo")
	// ErrSchemaNewer: the database was migrated by a newer build, whose
	// schema this build does not know. Open refuses it rather than guess.
	ErrSchemaNewer = errors.New("database schema is newer than this build")
)

// Unavailable reports whether err means the store could not write for a
// reason outside the request — the disk is full, the database file is
// read-only or unreadable, or an I/O error — and says which (see
// storage.UnavailableError, in which the store's methods wrap such errors).
func Unavailable(err error) (reason string, ok bool) {
	if reason, ok := storage.Unavailable(err); ok {
		return reason, true
	}
	return storageTrouble(err)
}

// classify wraps *err in a storage.UnavailableError if it kept SQLite from
// writing for a reason outside the request, so that callers need not know
// SQLite's error codes. The store's exported methods defer it.
func classify(err *error) {
	if *err == nil || errors.Is(*err, storage.ErrUnavailable) {
		return
	}
	if reason, ok := storageTrouble(*err); ok {
		*err = &storage.UnavailableError{Reason: reason, Err: *err}
	}
}
