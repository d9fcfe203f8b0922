// Package audit holds the gate's audit events and the sinks that record
// them. The gate and the admin API only build events and hand them to a
// Sink; what is kept, and where, is decided here.
//
// No event ever carries a secret: not a token, not its hash, not a
// password, not an Authorization value, not a query string.
package audit

import (
	"net/netip"
	"strings"
	"time"

	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"
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
	// frequent first, at most TopReported each; the first of each is also
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

// Sink records events. Record must be safe for concurrent use and must not
// block the request that produced the event.
type Sink interface {
	Record(Event)
}

// ZapSink writes events to a zap logger. Failures and admin events are
// logged at INFO, successes at DEBUG (they are the bulk of the traffic).
type ZapSink struct {
	Logger *zap.Logger
}

// Record implements Sink.
func (s ZapSink) Record(e Event) {
	level := zapcore.InfoLevel
	if e.Type == TypeAuthSucceeded {
		level = zapcore.DebugLevel
	}
	c := s.Logger.Check(level, string(e.Type))
	if c == nil {
		return
	}
	fields := make([]zap.Field, 0, 16)
	fields = append(fields, zap.String("outcome", string(e.Outcome)))
	add := func(key, v string) {
		if v != "" {
			fields = append(fields, zap.String(key, v))
		}
	}
	add("reason", e.Reason)
	add("user", e.User)
	add("claimed_user", e.ClaimedUser)
	add("token_id", e.TokenID)
	add("scheme", e.Scheme)
	add("client_ip", e.ClientIP)
	add("method", e.Method)
	add("host", e.Host)
	add("path", e.Path)
	add("actor", e.Actor)
	add("group", e.Group)
	add("rule", e.Rule)
	if e.Status != 0 {
		fields = append(fields, zap.Int("status", e.Status))
	}
	if len(e.Changed) > 0 {
		fields = append(fields, zap.Strings("changed", e.Changed))
	}
	if e.Count != 0 {
		fields = append(fields, zap.Int("count", e.Count))
	}
	if len(e.TopClients) > 0 {
		fields = append(fields, zap.Array("top_clients", tallies(e.TopClients)))
	}
	if len(e.TopUsers) > 0 {
		fields = append(fields, zap.Array("top_users", tallies(e.TopUsers)))
	}
	c.Write(fields...)
}

// tallies logs a top list as an array of {"value": …, "count": …}, the
// form the database and the admin API use.
type tallies []Tally

func (ts tallies) MarshalLogArray(enc zapcore.ArrayEncoder) error {
	for _, t := range ts {
		if err := enc.AppendObject(tallyLog(t)); err != nil {
			return err
		}
	}
	return nil
}

// tallyLog logs a Tally.
type tallyLog Tally

func (t tallyLog) MarshalLogObject(enc zapcore.ObjectEncoder) error {
	enc.AddString("value", t.Value)
	enc.AddInt("count", t.Count)
	return nil
}
