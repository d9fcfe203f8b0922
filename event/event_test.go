package event

import (
	"slices"
	"testing"
)

// allTypes lists every event type.
var allTypes = []Type{
	TypeTokenCreated, TypeTokenUpdated, TypeTokenRotated, TypeTokenRevoked,
	TypeUserTokensRevoked, TypeGroupMemberAdded, TypeGroupMemberRemoved,
	TypeAuthSucceeded, TypeAuthFailed, TypePasswordPassedOn, TypeDenied, TypeWouldDeny,
}

func TestTypeClass(t *testing.T) {
	tests := []struct {
		typ  Type
		want Class
	}{
		{TypeTokenCreated, ClassAdmin},
		{TypeTokenUpdated, ClassAdmin},
		{TypeTokenRotated, ClassAdmin},
		{TypeTokenRevoked, ClassAdmin},
		{TypeUserTokensRevoked, ClassAdmin},
		{TypeGroupMemberAdded, ClassAdmin},
		{TypeGroupMemberRemoved, ClassAdmin},
		{TypeAuthFailed, ClassFailure},
		{TypePasswordPassedOn, ClassFailure},
		{TypeDenied, ClassDenied},
		{TypeWouldDeny, ClassDenied},
		{TypeAuthSucceeded, ClassSuccess},
		{"", ""},
		{"token_exploded", ""},
	}
	if len(tests)-2 != len(allTypes) {
		t.Fatalf("table covers %d types, there are %d", len(tests)-2, len(allTypes))
	}
	for _, tt := range tests {
		t.Run(string(tt.typ), func(t *testing.T) {
			if got := tt.typ.Class(); got != tt.want {
				t.Errorf("Class() = %q, want %q", got, tt.want)
			}
		})
	}
}

// TestRequestTypes: the request types are exactly the types of every
// class but admin, so that bounding the trail's size keeps admin events.
func TestRequestTypes(t *testing.T) {
	for _, typ := range allTypes {
		t.Run(string(typ), func(t *testing.T) {
			want := typ.Class() != ClassAdmin
			if got := slices.Contains(RequestTypes(), typ); got != want {
				t.Errorf("in RequestTypes: %v, want %v (class %s)", got, want, typ.Class())
			}
		})
	}
	if n := len(RequestTypes()); n != len(slices.Compact(slices.Sorted(slices.Values(RequestTypes())))) {
		t.Errorf("RequestTypes has duplicates: %v", RequestTypes())
	}
}
