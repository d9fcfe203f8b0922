package storage

import (
	"net/netip"
	"time"

	"github.com/apitoken/caddy-apitoken/event"
	"github.com/apitoken/caddy-apitoken/policy"
)

// State is where a token is in its life.
type State string

// States of a token. A revoked token is StateRevoked even after its expiry.
const (
	StateActive  State = "active"
	StateExpired State = "expired"
	StateRevoked State = "revoked"
)

// Token is the public view of a stored token. It never carries the secret
// or its hash. Times are UTC with millisecond precision, as stored.
type Token struct {
	ID          string
	User        string
	Name        string
	Description string
	Hint        string // e.g. "caddytok_…AbCd"; see token.Hint

	CreatedAt time.Time
	UpdatedAt time.Time
	ExpiresAt time.Time // zero: never expires
	RevokedAt time.Time // zero: not revoked
	RotatedAt time.Time // zero: never rotated

	// The token's rules, in canonical form; the zero values restrict
	// nothing. See NewToken.
	AllowedIPs []string     // masked prefixes, e.g. "10.1.2.3/32"; nil: any address
	Scope      policy.Scope // methods uppercased, empty lists nil
	RateLimit  string       // e.g. "600/1m" (policy.Rate.String); "": none set

	// Usage, as last flushed (FlushUsage); the zero values: never used.
	LastUsedAt time.Time
	LastUsedIP string
	UseCount   int64
	RecentIPs  []event.IPSeen // most recent first, at most event.MaxRecentIPs; nil: none
}

// State returns the token's state at now. A token expires at ExpiresAt
// exactly: from that instant on it is StateExpired.
func (t Token) State(now time.Time) State {
	return StateAt(!t.RevokedAt.IsZero(), t.ExpiresAt, now)
}

// StateAt is the state at now of a token that is revoked or not and
// expires at expiresAt (never if zero).
func StateAt(revoked bool, expiresAt, now time.Time) State {
	switch {
	case revoked:
		return StateRevoked
	case !expiresAt.IsZero() && !now.Before(expiresAt):
		return StateExpired
	default:
		return StateActive
	}
}

// NewToken is what Create needs.
type NewToken struct {
	Prefix      string    // empty: token.DefaultPrefix
	User        string    // required; see Create for the rules
	Name        string    // required; unique among the user's unrevoked tokens
	Description string    // optional
	ExpiresAt   time.Time // zero: never expires (limits are the caller's policy)

	// AllowedIPs are the client address ranges the token may be used
	// from: CIDRs, bare addresses (read as /32 or /128) and
	// "private_ranges", at most 100 prefixes once expanded (see
	// policy.ParsePrefixes). Empty: any address.
	AllowedIPs []string
	// Scope restricts the methods, paths and hosts the token may be used
	// for, at most 50 of each (see policy.CompileScope). Zero: unrestricted.
	Scope policy.Scope
	// RateLimit is the token's own request rate, e.g. "600/1m" (see
	// policy.ParseRate). Empty: none, the gate's default applies.
	RateLimit string
}

// Patch lists the fields Update changes; a nil field stays as it is.
// Update applies them to the row as it reads it inside its write
// transaction, so concurrent patches of different fields all take effect.
// The scope's fields are patched one by one for the same reason: a patch
// that sets Paths leaves Methods as they are, even if another patch
// changed them a moment before.
type Patch struct {
	Name        *string
	Description *string
	ExpiresAt   *time.Time // pointer to the zero time: never expires
	AllowedIPs  *[]string  // pointer to an empty list: any address
	ReadOnly    *bool      // Scope.ReadOnly
	Methods     *[]string  // Scope.Methods; pointer to an empty list: any method
	Paths       *[]string  // Scope.Paths; pointer to an empty list: any path
	Hosts       *[]string  // Scope.Hosts; pointer to an empty list: any host
	RateLimit   *string    // pointer to "": none
}

// Filter selects tokens for List; an empty field matches any token.
type Filter struct {
	User  string // compared case-insensitively
	State State  // judged at the store's current time
}

// Entry is what Lookup knows about a token: enough for the gateway to decide,
// nothing secret. The rules are parsed once, when the token's row is written
// or read, and shared by every Entry for that version of the row, and by
// those of every other token with the same rules: callers must not modify
// AllowedIPs or the scope.
type Entry struct {
	ID string
	// Key is ID read as a base-32 number (60 bits, token.Key), for maps
	// kept per token such as limit.RateLimiter's: distinct ids that
	// token.Parse accepts have distinct keys. An id it refuses (a row
	// written by other means) has Key 0, as does the id of twelve "a"s.
	Key       uint64
	User      string
	UserKey   string // strings.ToLower(User), for policy.Holders.Check and GroupsOf
	Name      string
	ExpiresAt time.Time // zero: never expires
	Revoked   bool

	AllowedIPs []netip.Prefix        // nil: any client address (policy.CheckIP)
	Scope      *policy.CompiledScope // nil: unrestricted
	RateLimit  policy.Rate           // zero: none set, the gate's default applies
}

// State returns the entry's state at now, as Token.State does.
func (e Entry) State(now time.Time) State {
	return StateAt(e.Revoked, e.ExpiresAt, now)
}

// Member is one user's membership of a group.
type Member struct {
	Group   string
	User    string    // as first given; users compare case-insensitively
	AddedAt time.Time // UTC, millisecond precision
}

// GroupInfo describes a group that has members.
type GroupInfo struct {
	Name    string
	Members int
}
