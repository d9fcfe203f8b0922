package tokenstore

import (
	"fmt"
	"strings"
	"unicode"
	"unicode/utf8"

	"github.com/apitoken/caddy-apitoken/policy"
	"github.com/apitoken/caddy-apitoken/storage"
	"github.com/apitoken/caddy-apitoken/token"
)

// Limits on the fields of a token, in bytes.
const (
	maxUserLen        = 256
	maxNameLen        = 128
	maxDescriptionLen = 1024
)

// setsScope reports whether p changes any of the scope's fields.
func setsScope(p storage.Patch) bool {
	return p.ReadOnly != nil || p.Methods != nil || p.Paths != nil || p.Hosts != nil
}

// applyScope returns sc with the scope fields that p sets.
func applyScope(p storage.Patch, sc policy.Scope) policy.Scope {
	if p.ReadOnly != nil {
		sc.ReadOnly = *p.ReadOnly
	}
	if p.Methods != nil {
		sc.Methods = *p.Methods
	}
	if p.Paths != nil {
		sc.Paths = *p.Paths
	}
	if p.Hosts != nil {
		sc.Hosts = *p.Hosts
	}
	return sc
}

// userKey is the form of a user name that comparisons use.
func userKey(user string) string { return strings.ToLower(user) }

// validateNewToken checks nt and returns its rules, parsed.
func validateNewToken(nt storage.NewToken) (rules, error) {
	if err := token.ValidPrefix(nt.Prefix); err != nil {
		return rules{}, err
	}
	if err := validateUser(nt.User); err != nil {
		return rules{}, err
	}
	if err := validateName(nt.Name); err != nil {
		return rules{}, err
	}
	if err := validateDescription(nt.Description); err != nil {
		return rules{}, err
	}
	return parseRules(nt.AllowedIPs, nt.Scope, nt.RateLimit)
}

// validatePatch checks p and returns the rules it sets, parsed.
func validatePatch(p storage.Patch) (rules, error) {
	if p.Name == nil && p.Description == nil && p.ExpiresAt == nil &&
		p.AllowedIPs == nil && !setsScope(p) && p.RateLimit == nil {
		return rules{}, fmt.Errorf("%w: nothing to update", ErrInvalid)
	}
	if p.Name != nil {
		if err := validateName(*p.Name); err != nil {
			return rules{}, err
		}
	}
	if p.Description != nil {
		if err := validateDescription(*p.Description); err != nil {
			return rules{}, err
		}
	}
	return parsePatchRules(p)
}

func validateFilter(f storage.Filter) error {
	switch f.State {
	case "", storage.StateActive, storage.StateExpired, storage.StateRevoked:
		return nil
	default:
		return fmt.Errorf("%w: state %q is not one of %q, %q, %q",
			ErrInvalid, f.State, storage.StateActive, storage.StateExpired, storage.StateRevoked)
	}
}

// validateUser checks a user name. A user travels as the user part of HTTP
// Basic credentials, so it can't contain ':'. It is shown to operators and
// recorded, so it can't contain control or format characters (bidi
// overrides, zero width spaces) or look like a token (token.Redact): the
// error never quotes a token.
func validateUser(user string) error {
	switch {
	case user == "":
		return fmt.Errorf("%w: user is required", ErrInvalid)
	case len(user) > maxUserLen:
		return fmt.Errorf("%w: user is %d bytes long, more than %d", ErrInvalid, len(user), maxUserLen)
	case token.Redact(user) != user:
		return fmt.Errorf("%w: user looks like an API token (%q): give the user's name", ErrInvalid, token.Redact(user))
	case !utf8.ValidString(user):
		return fmt.Errorf("%w: user %q is not valid UTF-8", ErrInvalid, user)
	case strings.Contains(user, ":"):
		return fmt.Errorf("%w: user %q must not contain ':'", ErrInvalid, user)
	case hasControl(user):
		return fmt.Errorf("%w: user %q must not contain control characters or format characters (Unicode Cc, Cf)", ErrInvalid, user)
	case strings.TrimSpace(user) != user:
		return fmt.Errorf("%w: user %q must not begin or end with a space", ErrInvalid, user)
	}
	return nil
}

// validateName checks a token's name, held to the rules of a user name
// but for ':' and spaces.
func validateName(name string) error {
	switch {
	case name == "":
		return fmt.Errorf("%w: name is required", ErrInvalid)
	case len(name) > maxNameLen:
		return fmt.Errorf("%w: name is %d bytes long, more than %d", ErrInvalid, len(name), maxNameLen)
	case token.Redact(name) != name:
		return fmt.Errorf("%w: name looks like an API token (%q): never name a token by its secret", ErrInvalid, token.Redact(name))
	case !utf8.ValidString(name):
		return fmt.Errorf("%w: name %q is not valid UTF-8", ErrInvalid, name)
	case hasControl(name):
		return fmt.Errorf("%w: name %q must not contain control characters or format characters (Unicode Cc, Cf)", ErrInvalid, name)
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

// hasControl reports whether s has a control (Cc) or format (Cf) character.
func hasControl(s string) bool {
	return strings.ContainsFunc(s, func(r rune) bool { return unicode.IsControl(r) || unicode.Is(unicode.Cf, r) })
}
