// Package storage holds what every token store has in common, whatever
// keeps the tokens: the records a store reads and writes (Token, NewToken,
// Patch, Filter, Entry, Member, GroupInfo) and the sentinel errors it
// returns (ErrNotFound, ErrConflict, ErrInvalid, ErrBusy, ErrUnavailable).
//
// A backend (tokenstore, on SQLite) speaks these types, so that the Caddy
// glue and a second backend on a database server need not import the
// SQLite one. Nothing here names a SQL dialect or a driver: the package
// uses only the standard library and the module's pure packages.
//
// The package is named for the concern, the token store's shared
// vocabulary; it is not called "store" or "tokens", the names callers give
// their variables.
package storage
