package caddymodule

import (
	"context"
	"time"

	"github.com/caddyserver/caddy/v2"

	"github.com/apitoken/caddy-apitoken/audit"
	"github.com/apitoken/caddy-apitoken/event"
	"github.com/apitoken/caddy-apitoken/storage"
)

// StorageOpener is what a module in the api_tokens.storage namespace
// implements: it opens the token store that the api_tokens app works
// through. api_tokens.storage.sqlite is the default.
type StorageOpener interface {
	// OpenStorage returns the store for the config of ctx, and release,
	// which the app calls once, from its Cleanup, when that config no
	// longer uses it. A store that holds a database open should share it
	// between configs (Caddy provisions the new config before it cleans up
	// the old one) and close it when the last config releases it. Requests
	// of a config that has released the store may still use it for a
	// moment, until the new config's store takes over.
	OpenStorage(ctx caddy.Context) (store Storage, release func() error, err error)
}

// Storage is the contract of a token-store backend: everything the app,
// the gate, the admin API and the audit trail ask of the store. Its
// records and errors are package storage's: a backend returns
// storage.ErrNotFound, ErrConflict, ErrInvalid, ErrBusy and, for trouble
// outside the request, a storage.UnavailableError, each wrapped with
// detail, so that callers never see a driver's errors or a SQL dialect.
type Storage interface {
	TokenLookup
	TokenAdmin
	GroupAdmin
	AuditReader
	ExpiryClaimer
	audit.EventWriter
	audit.UsageWriter
	StoreHealth
}

// TokenLookup answers the gate on the request path, from memory: it must
// not touch a database and must be safe for concurrent use.
type TokenLookup interface {
	// LookupID returns the token whose id is id, if secret is its whole
	// token string (id is what token.Parse or token.ParseShape returned
	// for secret); a miss costs what a hit costs.
	LookupID(id, secret string) (storage.Entry, bool)
	// GroupsOf returns the groups of the user whose lowercased name is
	// userKey; the caller must not modify the slice.
	GroupsOf(userKey string) []string
}

// TokenAdmin creates, reads and changes tokens for the admin API. The
// methods that take an *event.Event store it (if not nil) in the change's
// own transaction, completed with the change's time and token.
type TokenAdmin interface {
	// Create stores a new token and returns it with its secret, shown once.
	Create(ctx context.Context, nt storage.NewToken, ev *event.Event) (storage.Token, string, error)
	Get(ctx context.Context, id string) (storage.Token, error)
	List(ctx context.Context, f storage.Filter) ([]storage.Token, error)
	// Update applies p to the token as it reads it inside its write, so
	// that concurrent patches of different fields all take effect.
	Update(ctx context.Context, id string, p storage.Patch, ev *event.Event) (storage.Token, error)
	// Revoke revokes a token; the bool says whether this call did.
	Revoke(ctx context.Context, id string, ev *event.Event) (storage.Token, bool, error)
	// RevokeUser revokes every unrevoked token of user and returns them.
	RevokeUser(ctx context.Context, user string, ev *event.Event) ([]storage.Token, error)
	// Rotate gives a token a new secret, with prefix, and returns it.
	Rotate(ctx context.Context, id, prefix string, ev *event.Event) (storage.Token, string, error)
}

// GroupAdmin manages the groups that holders lists name.
type GroupAdmin interface {
	Groups(ctx context.Context) ([]storage.GroupInfo, error)
	Members(ctx context.Context, group string) ([]storage.Member, error)
	// AddMember adds user to group; the bool says whether this call did.
	AddMember(ctx context.Context, group, user string, ev *event.Event) (storage.Member, bool, error)
	// RemoveMember removes user from group; the bool says whether this
	// call did.
	RemoveMember(ctx context.Context, group, user string, ev *event.Event) (bool, error)
}

// AuditReader answers the admin API's audit queries.
type AuditReader interface {
	QueryAudit(ctx context.Context, q event.Query) (event.Page, error)
}

// ExpiryClaimer hands the expiry sweep the tokens to warn about.
type ExpiryClaimer interface {
	// ClaimExpiring returns the tokens due an "expiring soon" warning
	// (unrevoked, unexpired, expiring at or before before, not warned
	// about yet) and marks them warned in the same write, so that each
	// warning is sent once even by several Caddy instances on one store.
	ClaimExpiring(ctx context.Context, before time.Time) ([]storage.Token, error)
}

// StoreHealth says how the store is doing, for the gate's staleness
// check, the startup warning and the metrics.
type StoreHealth interface {
	// ReadOnly reports whether the store can only be read at the moment.
	ReadOnly() bool
	// Staleness is how old, at now, the in-memory view of the changes
	// other processes make is: below the store's poll interval while it
	// reads them, growing while it cannot.
	Staleness(now time.Time) time.Duration
	// PollFailures counts the failed reads of those changes so far.
	PollFailures() uint64
	// CountByState counts the tokens by state at now, from memory.
	CountByState(now time.Time) map[storage.State]int
}
