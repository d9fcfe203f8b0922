//go:build cgo

package tokenstore

import (
	"errors"

	"github.com/mattn/go-sqlite3"
)

// cgoEnabled reports whether the SQLite driver is the real one. Without cgo,
// github.com/mattn/go-sqlite3 compiles to a stub whose every call fails.
const cgoEnabled = true

// isBusy reports whether err is SQLITE_BUSY: a lock could not be had.
func isBusy(err error) bool {
	var serr sqlite3.Error
	return errors.As(err, &serr) && serr.Code == sqlite3.ErrBusy
}

// isReadOnly reports whether err is SQLITE_READONLY, with any extended
// code: the connection can't write to the file.
func isReadOnly(err error) bool {
	var serr sqlite3.Error
	return errors.As(err, &serr) && serr.Code == sqlite3.ErrReadonly
}

// isUniqueViolation reports whether err is a UNIQUE constraint failure.
func isUniqueViolation(err error) bool {
	var serr sqlite3.Error
	return errors.As(err, &serr) && serr.ExtendedCode == sqlite3.ErrConstraintUnique
}

// storageTrouble says what kept SQLite from writing, if it was the disk or
// the file rather than the request: full, read-only, or an I/O error.
func storageTrouble(err error) (string, bool) {
	var serr sqlite3.Error
	if !errors.As(err, &serr) {
		return "", false
	}
	switch serr.Code {
	case sqlite3.ErrFull:
		return "the disk is full", true
	case sqlite3.ErrReadonly:
		return "the database is read-only", true
	case sqlite3.ErrIoErr:
		return "disk I/O error", true
	case sqlite3.ErrCantOpen:
		return "the database file cannot be opened", true
	}
	return "", false
}
