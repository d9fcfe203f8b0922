package event

import "time"

// Query selects stored events, newest first. Zero fields don't filter.
type Query struct {
	Types    []Type
	Outcome  Outcome
	User     string // case-insensitive
	TokenID  string
	ClientIP string    // unmapped before it is compared (UnmapIP)
	Since    time.Time // inclusive
	Until    time.Time // exclusive
	// Cursor continues a previous query: pass the NextCursor it returned.
	Cursor string
	// Limit caps the page; 0 means DefaultQueryLimit, at most MaxQueryLimit.
	Limit int
}

// Page sizes of Query.
const (
	DefaultQueryLimit = 100
	MaxQueryLimit     = 1000
)

// Page is one page of a query's answer.
type Page struct {
	Events []Event
	// NextCursor fetches the next (older) page; empty on the last page.
	NextCursor string
}
