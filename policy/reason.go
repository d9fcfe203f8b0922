// Package policy holds the gate's decisions as pure functions of plain
// values: which credential a request carries, whether a token may be used
// now, how long a new token may live. It uses only the standard library and
// knows nothing of HTTP servers, loggers, clocks or databases: callers pass
// the time and the facts in, and get back a Reason from the closed set below.
// The Reason is what the audit trail records and what tests assert.
package policy

// Reason says why the gate decided what it did. The set is closed: every
// decision function in this package returns one of the constants below, and
// the strings are stable because audit records and metrics carry them.
type Reason string

// Reasons for authentication decisions.
const (
	// ReasonOK: the request may go on.
	ReasonOK Reason = "ok"
	// ReasonNoCredentials: the request carries no credential the gate reads.
	ReasonNoCredentials Reason = "no_credentials"
	// ReasonMalformedHeader: an Authorization header (or the configured
	// header or query parameter) is present but cannot be parsed.
	ReasonMalformedHeader Reason = "malformed_header"
	// ReasonMalformedToken: a Bearer, header or query credential does not
	// have the shape of a token (prefix, length, alphabet or checksum).
	ReasonMalformedToken Reason = "malformed_token"
	// ReasonUnknownToken: well-formed, but no token with that secret exists.
	ReasonUnknownToken Reason = "unknown_token"
	// ReasonWrongUser: the token exists but the Basic user is not its owner.
	ReasonWrongUser Reason = "wrong_user"
	// ReasonExpired: the token's expiry time has passed.
	ReasonExpired Reason = "expired"
	// ReasonRevoked: the token has been revoked.
	ReasonRevoked Reason = "revoked"
	// ReasonAmbiguousCredentials: the request carries more than one
	// credential (Authorization and the configured header, a token as
	// both user-id and password), or one carrier twice (two Authorization
	// headers, the query parameter repeated): the gate does not guess which
	// one the backend would read.
	ReasonAmbiguousCredentials Reason = "ambiguous_credentials"
	// ReasonPasswordBlocked: a Basic credential whose password is not a
	// token, refused because password authentication is blocked.
	ReasonPasswordBlocked Reason = "password_blocked"
	// ReasonPasswordPassed: a Basic credential whose password is not a
	// token, handed on untouched (passwords pass) for the backend to check.
	ReasonPasswordPassed Reason = "password_passed"
)

// Reasons for creation decisions.
const (
	// ReasonExpiryInPast: a requested expiry is not in the future.
	ReasonExpiryInPast Reason = "expiry_in_past"
	// ReasonExpiryTooLong: a requested expiry lies beyond the maximum validity.
	ReasonExpiryTooLong Reason = "expiry_too_long"
	// ReasonNoExpiryNotAllowed: a token without expiry was asked for while
	// the maximum validity is limited.
	ReasonNoExpiryNotAllowed Reason = "no_expiry_not_allowed"
	// ReasonExpiryConflict: both a relative and an absolute expiry were given.
	ReasonExpiryConflict Reason = "expiry_conflict"
)

// Reasons for refusals by the limits (package limit).
const (
	// ReasonThrottled: the client's address failed authentication too often
	// and is refused (429 with Retry-After) until its cool-down ends.
	ReasonThrottled Reason = "throttled"
	// ReasonRateLimited: the token has used up its request rate and is refused
	// (429 with Retry-After) until the next request fits.
	ReasonRateLimited Reason = "rate_limited"
)
