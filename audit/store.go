package audit

import (
	"context"
	"time"
)

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

// EventWriter stores audit events (tokenstore.Store implements it).
type EventWriter interface {
	// AppendAudit stores events in one transaction.
	AppendAudit(ctx context.Context, events []Event) error
	// PruneAudit deletes events older than before and reports how many.
	PruneAudit(ctx context.Context, before time.Time) (int64, error)
	// TrimAudit deletes the oldest request events (RequestTypes) beyond
	// the newest keep of them and reports how many; admin events stay.
	TrimAudit(ctx context.Context, keep int) (int64, error)
}

// IPSeen is a client IP and when a token was last used from it.
type IPSeen struct {
	IP       string    `json:"ip"`
	LastSeen time.Time `json:"last_seen"`
}

// MaxRecentIPs is how many distinct client IPs usage keeps per token.
const MaxRecentIPs = 5

// Usage is what is known of a token's use: stored totals, or a delta not
// yet flushed.
type Usage struct {
	TokenID    string
	LastUsedAt time.Time
	LastIP     string
	// Count is the number of uses (a delta, in a flush).
	Count int64
	// RecentIPs are the last distinct client IPs, most recent first, at
	// most MaxRecentIPs.
	RecentIPs []IPSeen
}

// UsageWriter stores usage deltas (tokenstore.Store implements it).
type UsageWriter interface {
	// FlushUsage adds the deltas to the stored usage in one transaction:
	// counts add up, the later last use wins, recent IPs merge.
	FlushUsage(ctx context.Context, deltas []Usage) error
}
