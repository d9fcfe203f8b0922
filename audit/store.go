package audit

import (
	"context"
	"time"

	"github.com/apitoken/caddy-apitoken/event"
)

// EventWriter stores audit events (tokenstore.Store implements it).
type EventWriter interface {
	// AppendAudit stores events in one transaction.
	AppendAudit(ctx context.Context, events []event.Event) error
	// PruneAudit deletes events older than before and reports how many.
	PruneAudit(ctx context.Context, before time.Time) (int64, error)
	// TrimAudit deletes the oldest request events (event.RequestTypes) beyond
	// the newest keep of them and reports how many; admin events stay.
	TrimAudit(ctx context.Context, keep int) (int64, error)
}

// UsageWriter stores usage deltas (tokenstore.Store implements it).
type UsageWriter interface {
	// FlushUsage adds the deltas to the stored usage in one transaction:
	// counts add up, the later last use wins, recent IPs merge.
	FlushUsage(ctx context.Context, deltas []event.Usage) error
}
