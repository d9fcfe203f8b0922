package policy

import (
	"fmt"
	"strings"
)

// GroupPrefix marks a group in a holders list: "group:jira-users".
const GroupPrefix = "group:"

// Holders says who may own tokens: users by name, and members of groups.
// An empty list allows everyone.
type Holders struct {
	users  map[string]struct{} // lowercased user names
	groups map[string]struct{} // group names
}

// ParseHolders parses a holders list of user names and "group:<name>"
// entries. User names compare case-insensitively; group names are
// lowercase (see ValidGroupName).
func ParseHolders(items []string) (Holders, error) {
	var h Holders
	for _, it := range items {
		if g, ok := strings.CutPrefix(it, GroupPrefix); ok {
			if err := ValidGroupName(g); err != nil {
				return Holders{}, fmt.Errorf("holders %q: %w", it, err)
			}
			if h.groups == nil {
				h.groups = make(map[string]struct{})
			}
			h.groups[g] = struct{}{}
			continue
		}
		if it == "" || strings.ContainsAny(it, ":\x00\r\n") {
			return Holders{}, fmt.Errorf("holders %q: not a user name", it)
		}
		if h.users == nil {
			h.users = make(map[string]struct{})
		}
		h.users[strings.ToLower(it)] = struct{}{}
	}
	return h, nil
}

// Restricted reports whether the list limits who may hold tokens.
func (h Holders) Restricted() bool {
	return len(h.users) > 0 || len(h.groups) > 0
}

// Check decides whether the user (lowercased, as userKey) who is a member
// of groups may hold tokens.
func (h Holders) Check(userKey string, groups []string) Reason {
	if !h.Restricted() {
		return ReasonOK
	}
	if _, ok := h.users[userKey]; ok {
		return ReasonOK
	}
	for _, g := range groups {
		if _, ok := h.groups[g]; ok {
			return ReasonOK
		}
	}
	return ReasonHolderNotAllowed
}

// ValidGroupName checks a group name: 1 to 64 characters of lowercase
// letters, digits, '.', '_' and '-', starting with a letter or digit.
func ValidGroupName(g string) error {
	if g == "" || len(g) > 64 {
		return fmt.Errorf("group name %q: must be 1 to 64 characters", g)
	}
	for i := 0; i < len(g); i++ {
		c := g[i]
		switch {
		case 'a' <= c && c <= 'z', '0' <= c && c <= '9':
		case (c == '.' || c == '_' || c == '-') && i > 0:
		default:
			return fmt.Errorf("group name %q: only lowercase letters, digits, '.', '_' and '-', starting with a letter or digit", g)
		}
	}
	return nil
}

// ValidityFor returns the lifetime rules for a member of groups: those of
// the most generous group that sets its own (the longest Max, unlimited
// first; then the longest Default), or the global rules if none does. A
// group that sets only one of the two inherits the other from global; an
// inherited default longer than the group's Max is cut to that Max.
func ValidityFor(global Validity, groups []string, perGroup map[string]Validity) Validity {
	best, found := global, false
	for _, g := range groups {
		v, ok := perGroup[g]
		if !ok {
			continue
		}
		if v.Max == 0 {
			v.Max = global.Max
		}
		if v.Default == 0 {
			v.Default = global.Default
			if v.Max >= 0 && v.Default > v.Max {
				v.Default = v.Max
			}
		}
		if !found || moreGenerous(v, best) {
			best, found = v, true
		}
	}
	return best
}

func moreGenerous(a, b Validity) bool {
	switch {
	case a.Max < 0 && b.Max >= 0:
		return true
	case b.Max < 0 && a.Max >= 0:
		return false
	case a.Max != b.Max:
		return a.Max > b.Max
	}
	return a.Default > b.Default
}
