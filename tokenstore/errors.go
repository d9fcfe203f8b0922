package tokenstore

import "errors"

// Errors returned by the store, wrapped with detail: test with errors.Is.
var (
	// ErrNotFound: no token has that id (or the id is malformed).
	ErrNotFound = errors.New("token not found")
	// ErrConflict: the change clashes with the stored state, e.g. an
	// unrevoked token with the same user and name exists, or a revoked
	// token can't be updated or rotated.
	ErrConflict = errors.New("conflict")
	// ErrInvalid: an argument is malformed; the message names the field.
	ErrInvalid = errors.New("invalid input")
	// ErrNoCgo: the program was built without cgo, so the SQLite driver is
	// a stub that can't open anything.
	ErrNoCgo = errors.New("the sqlite3 driver was compiled without cgo")
	// ErrSchemaNewer: the database was migrated by a newer build, whose
	// schema this build does not know. Open refuses it rather than guess.
	ErrSchemaNewer = errors.New("database schema is newer than this build")
)
