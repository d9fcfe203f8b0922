// Package event defines the records of the audit trail: the events the
// gate and the admin API produce, the queries that read them back and the
// usage kept per token. It uses only the standard library, so that a store
// can keep these records without the sinks and loggers of package audit.
//
// No event ever carries a secret: not a token, not its hash, not a
// password, not an Authorization value, not a query string.
package event

import (
	"net/netip"
	"strings"
	"time"
)

// Type names what happened. The set is closed and the strings are stable.
type Type string

// Event types.
const (
	TypeTokenCreated       Type = "token_created"
	TypeTokenUpdated       Type = "token_updated"
	TypeTokenRotated       Type = "token_rotated"
	TypeTokenRevoked       Type = "token_revoked"
	TypeUserTokensRevoked  Type = "user_tokens_revoked"
	TypeGroupMemberAdded   Type = "group_member_added"
	TypeGroupMemberRemoved Type = "group_member_removed"
	TypeAuthSucceeded      Type = "auth_succeeded"
	TypeAuthFailed         Type = "auth_failed"
	TypePasswordPassedOn   Type = "password_passed"
	// TypeDenied: the request was refused for a reason other than its
	// credential: path, client IP, holder, scope, throttling, rate limit.
	TypeDenied Type = "denied"
	// TypeWouldDeny: report_only let through a request that would have
	// been refused; Reason and Status say how.
	TypeWouldDeny Type = "would_deny"
)

// Outcome is the verdict an event records.
type Outcome string

// Outcomes.
const (
	OutcomeSuccess Outcome = "success"
	OutcomeFailure Outcome = "failure"
	// OutcomePassed: the gate let the request through without deciding,
	// as with passwords pass.
	OutcomePassed Outcome = "passed"
	// OutcomeDenied: refused by policy rather than for a bad credential.
	OutcomeDenied Outcome = "denied"
	// OutcomeReported: report_only let through what it would have refused.
	OutcomeReported Outcome = "reported"
)

// Event is one audit record. Reason is a policy reason constant.
type Event struct {
	// ID is the stored event's sequence number (0 until stored).
	ID      int64
	Time    time.Time
	Type    Type
	Outcome Outcome
	Reason  string
	// User is the token's owner when the token was identified, otherwise
	// the user name the request presented (if any).
	User string
	// ClaimedUser is the user name the request presented when the token
	// was identified and is another user's (as the gate compares names):
	// the name that was tried, as in `-u mallory:<alice's token>`.
	ClaimedUser string
	TokenID     string
	// Scheme is how the credential was presented (basic, bearer, …).
	Scheme string
	// ClientIP is the client's address, an IPv4-mapped IPv6 address
	// unmapped (see UnmapIP).
	ClientIP string
	Method   string
	Host     string
	// Path is the request path without its query string.
	Path   string
	Status int
	// Actor is the admin client's address, for admin events.
	Actor string
	// Changed lists the fields an admin call changed.
	Changed []string
	// Count is the number of tokens affected, for bulk admin events, and
	// the number of refusals a summary stands for (see IsSummary).
	Count int
	// Group is the group of a membership event.
	Group string
	// Rule names the path rule that refused a request.
	Rule string
	// TopClients and TopUsers, on a summary, are the most frequent client
	// addresses and presented users among the refusals it stands for, most
	// frequent first, at most audit.TopReported each; the first of each is also
	// the summary's ClientIP and User.
	TopClients []Tally
	TopUsers   []Tally
}

// UnmapIP returns the text of an IPv4-mapped IPv6 address as the IPv4
// address (::ffff:198.51.100.20 as 198.51.100.20), and any other string as
// it is, so that a client's address is recorded, and filtered on, in one
// form whichever way a listener reported it.
func UnmapIP(s string) string {
	if strings.IndexByte(s, ':') < 0 {
		return s // IPv4, or not an address: not worth parsing
	}
	a, err := netip.ParseAddr(s)
	if err != nil || !a.Is4In6() {
		return s
	}
	return a.Unmap().String()
}

// Tally is a value and how many of a summary's events had it.
type Tally struct {
	Value string `json:"value"`
	Count int    `json:"count"`
}

// IsSummary reports whether e stands for several refusals recorded beyond
// the detail limit (audit.DetailLimit): a request event of the failure or
// denied class with a Count. (Only bulk admin events otherwise have a
// Count.)
func (e Event) IsSummary() bool {
	c := e.Type.Class()
	return e.Count > 0 && (c == ClassFailure || c == ClassDenied)
}

// Class groups event types for selection: an operator chooses which classes
// are recorded, not which types.
type Class string

// Classes.
const (
	// ClassAdmin: a change made through the admin API.
	ClassAdmin Class = "admin"
	// ClassFailure: a request the gate did not authenticate by token, either
	// because its credential was bad or because it was passed on as a
	// password (administrators watch these during a password migration).
	ClassFailure Class = "failure"
	// ClassDenied: a request refused, or one report_only would have refused,
	// for a reason other than its credential.
	ClassDenied Class = "denied"
	// ClassSuccess: a request authenticated by token and let through. By far
	// the bulk of the traffic, so not selected by default.
	ClassSuccess Class = "success"
)

// Class reports the class t belongs to, or "" for a type outside the
// closed set (which no audit.Selection wants).
func (t Type) Class() Class {
	switch t {
	case TypeTokenCreated, TypeTokenUpdated, TypeTokenRotated, TypeTokenRevoked,
		TypeUserTokensRevoked, TypeGroupMemberAdded, TypeGroupMemberRemoved:
		return ClassAdmin
	case TypeAuthFailed, TypePasswordPassedOn:
		return ClassFailure
	case TypeDenied, TypeWouldDeny:
		return ClassDenied
	case TypeAuthSucceeded:
		return ClassSuccess
	}
	return ""
}

// RequestTypes returns the types of the events about requests: every
// class but ClassAdmin. These are the events a bound on the stored trail's
// size may delete; admin events are kept.
func RequestTypes() []Type {
	return []Type{TypeAuthSucceeded, TypeAuthFailed, TypePasswordPassedOn, TypeDenied, TypeWouldDeny}
}
