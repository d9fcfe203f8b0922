package policy

import (
	"strings"
	"time"
)

// TokenFacts is what the store knows of the token a credential names.
type TokenFacts struct {
	// Found is false when no token matches the presented secret.
	Found   bool
	Revoked bool
	// Owner is the user the token belongs to.
	Owner string
	// ExpiresAt is the zero time for a token that never expires.
	ExpiresAt time.Time
}

// CheckToken decides whether the token behind cred may be used at now.
// Problems with the token itself (unknown, revoked, expired) are reported
// before a wrong Basic user, so the audit trail says what matters most about
// a leaked token. Basic user names compare case-insensitively; Bearer,
// header and query credentials carry no user, nor does a Basic credential
// with the token as its user-id (UserToken).
func CheckToken(now time.Time, t TokenFacts, cred Credential) Reason {
	switch {
	case !t.Found:
		return ReasonUnknownToken
	case t.Revoked:
		return ReasonRevoked
	case !t.ExpiresAt.IsZero() && !now.Before(t.ExpiresAt):
		return ReasonExpired
	case cred.Scheme == SchemeBasic && !cred.UserToken && !strings.EqualFold(cred.User, t.Owner):
		return ReasonWrongUser
	}
	return ReasonOK
}

// Validity holds the creation rules for token lifetimes.
type Validity struct {
	// Default is the lifetime of a token whose create call names no expiry.
	Default time.Duration
	// Max is the longest lifetime a token may have. A negative Max means
	// unlimited, which is also the only case in which a token may be
	// created without an expiry.
	Max time.Duration
}

// ExpiryRequest is what a create or update call asks for. At most one of
// In, At and Never may be set; none means the default validity.
type ExpiryRequest struct {
	In    time.Duration
	At    time.Time
	Never bool
}

// IsZero reports whether the request names no expiry at all.
func (r ExpiryRequest) IsZero() bool {
	return r.In == 0 && r.At.IsZero() && !r.Never
}

// ResolveExpiry turns a request into an expiry time under the rules v. The
// zero time means the token never expires. The Reason is ReasonOK or says
// why the request was refused.
func ResolveExpiry(now time.Time, req ExpiryRequest, v Validity) (time.Time, Reason) {
	set := 0
	for _, b := range []bool{req.In != 0, !req.At.IsZero(), req.Never} {
		if b {
			set++
		}
	}
	if set > 1 {
		return time.Time{}, ReasonExpiryConflict
	}

	var exp time.Time
	switch {
	case req.Never:
		if v.Max >= 0 {
			return time.Time{}, ReasonNoExpiryNotAllowed
		}
		return time.Time{}, ReasonOK
	case req.In != 0:
		if req.In < 0 {
			return time.Time{}, ReasonExpiryInPast
		}
		exp = now.Add(req.In)
	case !req.At.IsZero():
		if !req.At.After(now) {
			return time.Time{}, ReasonExpiryInPast
		}
		exp = req.At
	default:
		if v.Default <= 0 {
			if v.Max >= 0 {
				return time.Time{}, ReasonNoExpiryNotAllowed
			}
			return time.Time{}, ReasonOK
		}
		exp = now.Add(v.Default)
	}
	if v.Max >= 0 && exp.After(now.Add(v.Max)) {
		return time.Time{}, ReasonExpiryTooLong
	}
	return exp, ReasonOK
}
