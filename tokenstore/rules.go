package tokenstore

import (
	"bytes"
	"encoding/json"
	"fmt"
	"net/netip"
	"slices"
	"strings"
	"unicode/utf8"

	"github.com/apitoken/caddy-apitoken/policy"
	"github.com/apitoken/caddy-apitoken/storage"
)

// Limits on a token's rules.
const (
	maxAllowedIPs     = 100  // prefixes, once private_ranges is expanded
	maxScopeItems     = 50   // methods, paths or hosts, each
	maxPathPatternLen = 1024 // bytes
)

// compiled is a token's rules parsed for the gate. It is built once per
// version of a row, when the row is written or read; the index keeps one
// per distinct rule set (see tokenindex.RulesKey), shared read-only by
// every storage.Entry that Lookup returns with those rules.
type compiled struct {
	prefixes []netip.Prefix        // nil: any client address
	scope    *policy.CompiledScope // nil: unrestricted
	rate     policy.Rate           // zero: none set
}

// rules are the parsed rule fields of a storage.NewToken or storage.Patch: the canonical
// forms for Token and the database, and the compiled ones for the index.
type rules struct {
	allowedIPs []string
	scope      policy.Scope
	rateLimit  string
	compiled
}

// parseAllowedIPs checks an allow list (see policy.ParsePrefixes) and
// returns its canonical form, the masked prefixes with private_ranges
// expanded, and the parsed prefixes. An empty list gives nil for both.
func parseAllowedIPs(items []string) ([]string, []netip.Prefix, error) {
	if len(items) > maxAllowedIPs {
		return nil, nil, fmt.Errorf("%d entries, more than %d", len(items), maxAllowedIPs)
	}
	prefixes, err := policy.ParsePrefixes(items)
	if err != nil {
		return nil, nil, err
	}
	if len(prefixes) > maxAllowedIPs {
		return nil, nil, fmt.Errorf("%d prefixes once %s is expanded, more than %d",
			len(prefixes), policy.PrivateRanges, maxAllowedIPs)
	}
	if len(prefixes) == 0 {
		return nil, nil, nil
	}
	canon := make([]string, len(prefixes))
	for i, p := range prefixes {
		canon[i] = p.String()
	}
	// Clipped, so that an append by a reader of the shared slice copies.
	return canon, slices.Clip(prefixes), nil
}

// parseScope checks a scope (see policy.CompileScope) and returns its
// canonical form, methods uppercased and empty lists nil, and the compiled
// scope, nil if it restricts nothing.
func parseScope(sc policy.Scope) (policy.Scope, *policy.CompiledScope, error) {
	lists := []struct {
		field string
		items []string
	}{{"methods", sc.Methods}, {"paths", sc.Paths}, {"hosts", sc.Hosts}}
	for _, l := range lists {
		if len(l.items) > maxScopeItems {
			return policy.Scope{}, nil, fmt.Errorf("%s has %d entries, more than %d", l.field, len(l.items), maxScopeItems)
		}
	}
	for _, p := range sc.Paths {
		switch {
		case len(p) > maxPathPatternLen:
			return policy.Scope{}, nil, fmt.Errorf("path pattern %.32q…: %d bytes long, more than %d", p, len(p), maxPathPatternLen)
		case !utf8.ValidString(p):
			return policy.Scope{}, nil, fmt.Errorf("path pattern %q: not valid UTF-8", p)
		}
	}
	c, err := policy.CompileScope(sc)
	if err != nil {
		return policy.Scope{}, nil, err
	}
	canon := policy.Scope{ReadOnly: sc.ReadOnly, Paths: cloneList(sc.Paths), Hosts: cloneList(sc.Hosts)}
	if len(sc.Methods) > 0 {
		canon.Methods = make([]string, len(sc.Methods))
		for i, m := range sc.Methods {
			canon.Methods[i] = strings.ToUpper(m)
		}
	}
	if canon.IsZero() {
		return canon, nil, nil
	}
	return canon, &c, nil
}

// parseRateLimit checks a rate (see policy.ParseRate) and returns its
// canonical form and the parsed rate. "" means none and gives the zero Rate.
func parseRateLimit(s string) (string, policy.Rate, error) {
	if s == "" {
		return "", policy.Rate{}, nil
	}
	r, err := policy.ParseRate(s)
	if err != nil {
		return "", policy.Rate{}, err
	}
	return r.String(), r, nil
}

// cloneList copies a list so that the caller's later changes don't reach
// the store; an empty list becomes nil.
func cloneList(items []string) []string {
	if len(items) == 0 {
		return nil
	}
	return slices.Clone(items)
}

// parseRules checks the rules of a new token. The error wraps ErrInvalid and
// names the field and the bad value.
func parseRules(allowedIPs []string, scope policy.Scope, rateLimit string) (rules, error) {
	var r rules
	var err error
	if r.allowedIPs, r.prefixes, err = parseAllowedIPs(allowedIPs); err != nil {
		return rules{}, fmt.Errorf("%w: allowed_ips: %w", ErrInvalid, err)
	}
	if r.scope, r.compiled.scope, err = parseScope(scope); err != nil {
		return rules{}, fmt.Errorf("%w: scope: %w", ErrInvalid, err)
	}
	if r.rateLimit, r.rate, err = parseRateLimit(rateLimit); err != nil {
		return rules{}, fmt.Errorf("%w: rate_limit: %w", ErrInvalid, err)
	}
	return r, nil
}

// parsePatchRules checks the rules that p sets; the others are left zero.
// The scope fields p sets are checked on their own, in a scope that has
// only them (its fields are independent of each other); patchRules
// merges them into the token's scope.
func parsePatchRules(p storage.Patch) (rules, error) {
	var r rules
	var err error
	if p.AllowedIPs != nil {
		if r.allowedIPs, r.prefixes, err = parseAllowedIPs(*p.AllowedIPs); err != nil {
			return rules{}, fmt.Errorf("%w: allowed_ips: %w", ErrInvalid, err)
		}
	}
	if setsScope(p) {
		if r.scope, r.compiled.scope, err = parseScope(applyScope(p, policy.Scope{})); err != nil {
			return rules{}, fmt.Errorf("%w: scope: %w", ErrInvalid, err)
		}
	}
	if p.RateLimit != nil {
		if r.rateLimit, r.rate, err = parseRateLimit(*p.RateLimit); err != nil {
			return rules{}, fmt.Errorf("%w: rate_limit: %w", ErrInvalid, err)
		}
	}
	return r, nil
}

// setRules gives rec all of r.
func (rec *record) setRules(r rules) {
	rec.AllowedIPs, rec.Scope, rec.RateLimit = r.allowedIPs, r.scope, r.rateLimit
	rec.rules = r.compiled
}

// patchRules gives rec the rules that p sets, parsed into r by
// parsePatchRules. The scope fields p sets replace those of rec's scope,
// the others stay, and the merged scope is compiled anew.
func (rec *record) patchRules(p storage.Patch, r rules) error {
	if p.AllowedIPs != nil {
		rec.AllowedIPs, rec.rules.prefixes = r.allowedIPs, r.prefixes
	}
	if setsScope(p) {
		scope, compiled, err := parseScope(applyScope(p, rec.Scope))
		if err != nil {
			return fmt.Errorf("%w: scope: %w", ErrInvalid, err)
		}
		rec.Scope, rec.rules.scope = scope, compiled
	}
	if p.RateLimit != nil {
		rec.RateLimit, rec.rules.rate = r.rateLimit, r.rate
	}
	return nil
}

// encodeRules returns the stored forms of rec's allowed_ips and scope.
func encodeRules(rec record) (allowedIPs, scope string, err error) {
	ips := rec.AllowedIPs
	if ips == nil {
		ips = []string{} // "[]", not "null"
	}
	a, err := json.Marshal(ips)
	if err != nil {
		return "", "", fmt.Errorf("encoding allowed_ips: %w", err)
	}
	s, err := json.Marshal(rec.Scope)
	if err != nil {
		return "", "", fmt.Errorf("encoding scope: %w", err)
	}
	return string(a), string(s), nil
}

// decodeRules reads the stored rules of rec, checking them as a write
// would. A stored scope with a field this build does not know is refused
// rather than ignored: ignoring a restriction would widen the token.
func decodeRules(rec *record, allowedIPs, scope, rateLimit string) error {
	var ips []string
	if err := json.Unmarshal([]byte(allowedIPs), &ips); err != nil {
		return fmt.Errorf("token %s: allowed_ips: %w", rec.ID, err)
	}
	var sc policy.Scope
	dec := json.NewDecoder(bytes.NewReader([]byte(scope)))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&sc); err != nil {
		return fmt.Errorf("token %s: scope: %w", rec.ID, err)
	}
	if dec.More() {
		return fmt.Errorf("token %s: scope: data after the JSON object", rec.ID)
	}
	// Not ErrInvalid: the caller's input is fine, the stored row is not.
	r, err := parseRules(ips, sc, rateLimit)
	if err != nil {
		return fmt.Errorf("token %s: stored rules: %v", rec.ID, err)
	}
	rec.setRules(r)
	return nil
}
