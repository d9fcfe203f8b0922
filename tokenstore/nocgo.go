//go:build !cgo

package tokenstore

// cgoEnabled reports whether the SQLite driver is the real one. Without cgo,
// github.com/mattn/go-sqlite3 compiles to a stub whose every call fails, and
// Open refuses to start with an error wrapping ErrNoCgo.
const cgoEnabled = false

// isUniqueViolation, isBusy, isReadOnly and storageTrouble are never reached without
// cgo: Open fails first.
func isUniqueViolation(error) bool { return false }

func isBusy(error) bool { return false }

func isReadOnly(error) bool { return false }

func storageTrouble(error) (string, bool) { return "", false }
