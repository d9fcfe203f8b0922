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

// isUniqueViolation reports whether err is a UNIQUE constraint failure.
func isUniqueViolation(err error) bool {
	var serr sqlite3.Error
	return errors.As(err, &serr) && serr.ExtendedCode == sqlite3.ErrConstraintUnique
}
