package tokenstore

import (
	"fmt"
	"strings"
	"time"
	"unicode"
	"unicode/utf8"
)

// Limits on the fields of a token, in bytes.
const (
	maxUserLen        = 256
	maxNameLen        = 128
	maxDescriptionLen = 1024
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
	Hint        string // e.g. "caddytok_…AbCd"; see Hint

	CreatedAt time.Time
	UpdatedAt time.Time
	ExpiresAt time.Time // zero: never expires
	RevokedAt time.Time // zero: not revoked
	RotatedAt time.Time // zero: never rotated
}

// State returns the token's state at now. A token expires at ExpiresAt
// exactly: from that instant on it is StateExpired.
func (t Token) State(now time.Time) State {
	return state(!t.RevokedAt.IsZero(), t.ExpiresAt, now)
}

func state(revoked bool, expiresAt, now time.Time) State {
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
	Prefix      string    // empty: DefaultPrefix
	User        string    // required; see Create for the rules
	Name        string    // required; unique among the user's unrevoked tokens
	Description string    // optional
	ExpiresAt   time.Time // zero: never expires (limits are the caller's policy)
}

// Patch lists the fields Update changes; a nil field stays as it is.
type Patch struct {
	Name        *string
	Description *string
	ExpiresAt   *time.Time // pointer to the zero time: never expires
}

// Filter selects tokens for List; an empty field matches any token.
type Filter struct {
	User  string // compared case-insensitively
	State State  // judged at the store's current time
}

// userKey is the form of a user name that comparisons use.
func userKey(user string) string { return strings.ToLower(user) }

func validateNewToken(nt NewToken) error {
	if err := ValidPrefix(nt.Prefix); err != nil {
		return err
	}
	if err := validateUser(nt.User); err != nil {
		return err
	}
	if err := validateName(nt.Name); err != nil {
		return err
	}
	return validateDescription(nt.Description)
}

func validatePatch(p Patch) error {
	if p.Name == nil && p.Description == nil && p.ExpiresAt == nil {
		return fmt.Errorf("%w: nothing to update", ErrInvalid)
	}
	if p.Name != nil {
		if err := validateName(*p.Name); err != nil {
			return err
		}
	}
	if p.Description != nil {
		return validateDescription(*p.Description)
	}
	return nil
}

func validateFilter(f Filter) error {
	switch f.State {
	case "", StateActive, StateExpired, StateRevoked:
		return nil
	default:
		return fmt.Errorf("%w: state %q is not one of %q, %q, %q",
			ErrInvalid, f.State, StateActive, StateExpired, StateRevoked)
	}
}

// validateUser checks a user name. A user travels as the user part of HTTP
// Basic credentials, so it can't contain ':'.
func validateUser(user string) error {
	switch {
	case user == "":
		return fmt.Errorf("%w: user is required", ErrInvalid)
	case len(user) > maxUserLen:
		return fmt.Errorf("%w: user is %d bytes long, more than %d", ErrInvalid, len(user), maxUserLen)
	case !utf8.ValidString(user):
		return fmt.Errorf("%w: user %q is not valid UTF-8", ErrInvalid, user)
	case strings.Contains(user, ":"):
		return fmt.Errorf("%w: user %q must not contain ':'", ErrInvalid, user)
	case hasControl(user):
		return fmt.Errorf("%w: user %q must not contain control characters", ErrInvalid, user)
	case strings.TrimSpace(user) != user:
		return fmt.Errorf("%w: user %q must not begin or end with a space", ErrInvalid, user)
	}
	return nil
}

func validateName(name string) error {
	switch {
	case name == "":
		return fmt.Errorf("%w: name is required", ErrInvalid)
	case len(name) > maxNameLen:
		return fmt.Errorf("%w: name is %d bytes long, more than %d", ErrInvalid, len(name), maxNameLen)
	case !utf8.ValidString(name):
		return fmt.Errorf("%w: name %q is not valid UTF-8", ErrInvalid, name)
	case hasControl(name):
		return fmt.Errorf("%w: name %q must not contain control characters", ErrInvalid, name)
	}
	return nil
}

func validateDescription(desc string) error {
	switch {
	case len(desc) > maxDescriptionLen:
		return fmt.Errorf("%w: description is %d bytes long, more than %d", ErrInvalid, len(desc), maxDescriptionLen)
	case !utf8.ValidString(desc):
		return fmt.Errorf("%w: description is not valid UTF-8", ErrInvalid)
	}
	return nil
}

func hasControl(s string) bool {
	return strings.ContainsFunc(s, unicode.IsControl)
}
