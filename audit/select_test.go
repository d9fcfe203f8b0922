package audit

import (
	"math"
	"slices"
	"strings"
	"testing"
)

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

func TestParseSelection(t *testing.T) {
	tests := []struct {
		name        string
		classes     []string
		sample      float64
		wantClasses []Class
		wantSample  float64
		wantErr     string // substring; "" for no error
	}{
		{name: "nil is default", wantClasses: []Class{ClassAdmin, ClassFailure, ClassDenied}, wantSample: 1},
		{name: "empty is default", classes: []string{}, wantClasses: []Class{ClassAdmin, ClassFailure, ClassDenied}, wantSample: 1},
		{name: "admin", classes: []string{"admin"}, wantClasses: []Class{ClassAdmin}, wantSample: 1},
		{name: "failure", classes: []string{"failure"}, wantClasses: []Class{ClassFailure}, wantSample: 1},
		{name: "denied", classes: []string{"denied"}, wantClasses: []Class{ClassDenied}, wantSample: 1},
		{name: "success", classes: []string{"success"}, wantClasses: []Class{ClassSuccess}, wantSample: 1},
		{name: "all in any order", classes: []string{"success", "denied", "admin", "failure"}, wantClasses: []Class{ClassAdmin, ClassFailure, ClassDenied, ClassSuccess}, wantSample: 1},
		{name: "duplicates", classes: []string{"denied", "denied"}, wantClasses: []Class{ClassDenied}, wantSample: 1},
		{name: "sample", classes: []string{"success"}, sample: 0.25, wantClasses: []Class{ClassSuccess}, wantSample: 0.25},
		{name: "sample one keeps all", classes: []string{"success"}, sample: 1, wantClasses: []Class{ClassSuccess}, wantSample: 1},
		{name: "unknown class", classes: []string{"admin", "sucess"}, wantErr: `"sucess"`},
		{name: "case matters", classes: []string{"Admin"}, wantErr: `"Admin"`},
		{name: "empty class", classes: []string{""}, wantErr: `""`},
		{name: "negative sample", sample: -0.5, wantErr: "-0.5"},
		{name: "sample above one", sample: 1.5, wantErr: "1.5"},
		{name: "NaN sample", sample: math.NaN(), wantErr: "NaN"},
		{name: "infinite sample", sample: math.Inf(1), wantErr: "+Inf"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			s, err := ParseSelection(tt.classes, tt.sample)
			if tt.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
					t.Fatalf("error = %v, want one containing %s", err, tt.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if got := s.Classes(); !slices.Equal(got, tt.wantClasses) {
				t.Errorf("Classes() = %v, want %v", got, tt.wantClasses)
			}
			if got := s.SampleSuccess(); got != tt.wantSample {
				t.Errorf("SampleSuccess() = %v, want %v", got, tt.wantSample)
			}
		})
	}
}

func TestSelectionWants(t *testing.T) {
	mustParse := func(t *testing.T, classes ...string) Selection {
		t.Helper()
		s, err := ParseSelection(classes, 0)
		if err != nil {
			t.Fatal(err)
		}
		return s
	}
	tests := []struct {
		name    string
		classes []string
		want    []Class
	}{
		{"default", nil, []Class{ClassAdmin, ClassFailure, ClassDenied}},
		{"admin", []string{"admin"}, []Class{ClassAdmin}},
		{"failure", []string{"failure"}, []Class{ClassFailure}},
		{"denied", []string{"denied"}, []Class{ClassDenied}},
		{"success", []string{"success"}, []Class{ClassSuccess}},
		{"failure and success", []string{"failure", "success"}, []Class{ClassFailure, ClassSuccess}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			s := mustParse(t, tt.classes...)
			for _, typ := range allTypes {
				want := slices.Contains(tt.want, typ.Class())
				if got := s.Wants(typ); got != want {
					t.Errorf("Wants(%s) = %v, want %v", typ, got, want)
				}
			}
			if s.Wants("token_exploded") {
				t.Error("an unknown type is wanted")
			}
		})
	}
	t.Run("zero value is default", func(t *testing.T) {
		var zero Selection
		def := mustParse(t)
		for _, typ := range allTypes {
			if zero.Wants(typ) != def.Wants(typ) {
				t.Errorf("zero Selection Wants(%s) = %v, default says %v", typ, zero.Wants(typ), def.Wants(typ))
			}
		}
	})
}

func TestSelectionKeep(t *testing.T) {
	noRand := func() float64 {
		t.Helper()
		t.Fatal("rand called where no sampling applies")
		return 0
	}
	fixed := func(v float64) func() float64 { return func() float64 { return v } }
	tests := []struct {
		name    string
		classes []string
		sample  float64
		typ     Type
		rnd     func() float64
		want    bool
	}{
		{"unselected success", nil, 0.5, TypeAuthSucceeded, noRand, false},
		{"failure is never sampled", []string{"failure", "success"}, 0.01, TypeAuthFailed, noRand, true},
		{"admin is never sampled", []string{"admin", "success"}, 0.01, TypeTokenCreated, noRand, true},
		{"sample 0 keeps all", []string{"success"}, 0, TypeAuthSucceeded, noRand, true},
		{"sample 1 keeps all", []string{"success"}, 1, TypeAuthSucceeded, noRand, true},
		{"below fraction kept", []string{"success"}, 0.25, TypeAuthSucceeded, fixed(0.1), true},
		{"zero draw kept", []string{"success"}, 0.25, TypeAuthSucceeded, fixed(0), true},
		{"at fraction dropped", []string{"success"}, 0.25, TypeAuthSucceeded, fixed(0.25), false},
		{"above fraction dropped", []string{"success"}, 0.25, TypeAuthSucceeded, fixed(0.9), false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			s, err := ParseSelection(tt.classes, tt.sample)
			if err != nil {
				t.Fatal(err)
			}
			if got := s.Keep(tt.typ, tt.rnd); got != tt.want {
				t.Errorf("Keep(%s) = %v, want %v", tt.typ, got, tt.want)
			}
		})
	}
}
