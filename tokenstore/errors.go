package tokenstore

import (
	"errors"

	"github.com/apitoken/caddy-apitoken/token"
)

// Errors returned by the store, wrapped with detail: test with errors.Is.
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
	// ErrNoCgo: the program was built without cgo, so the SQLite driver is
	// a stub that can't open anything.
	ErrNoCgo = errors.New("the sqlite3 driver was compiled without cgo")
	// ErrSchemaNewer: the database was migrated by a newer build, whose
	// schema this build does not know. Open refuses it rather than guess.
	ErrSchemaNewer = errors.New("database schema is newer than this build")
	// ErrBusy: another connection or process held the database's write
	// lock for longer than the busy timeout (e.g. a sqlite3 shell in the
	// middle of a write transaction). Nothing was written; the change can
	// be tried again.
	ErrBusy = errors.New("token store is locked by another connection or process")
)

// Unavailable reports whether err means the store could not write for a
// reason outside the request — the disk is full, the database file is
// read-only or unreadable, or an I/O error — and says which. Nothing was
// written; tokens already issued keep working (requests never touch the
// database), and the change can be tried again once the disk is fixed.
func Unavailable(err error) (reason string, ok bool) {
	return storageTrouble(err)
}
