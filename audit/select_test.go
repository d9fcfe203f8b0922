package audit

import (
	"math"
	"slices"
	"strings"
	"testing"

	"github.com/apitoken/caddy-apitoken/event"
)

func TestParseSelection(t *testing.T) {
	tests := []struct {
		name        string
		classes     []string
		sample      float64
		wantClasses []event.Class
		wantSample  float64
		wantErr     string // substring; "" for no error
	}{
		{name: "nil is default", wantClasses: []event.Class{event.ClassAdmin, event.ClassFailure, event.ClassDenied}, wantSample: 1},
		{name: "empty is default", classes: []string{}, wantClasses: []event.Class{event.ClassAdmin, event.ClassFailure, event.ClassDenied}, wantSample: 1},
		{name: "admin", classes: []string{"admin"}, wantClasses: []event.Class{event.ClassAdmin}, wantSample: 1},
		{name: "failure", classes: []string{"failure"}, wantClasses: []event.Class{event.ClassFailure}, wantSample: 1},
		{name: "denied", classes: []string{"denied"}, wantClasses: []event.Class{event.ClassDenied}, wantSample: 1},
		{name: "success", classes: []string{"success"}, wantClasses: []event.Class{event.ClassSuccess}, wantSample: 1},
		{name: "all in any order", classes: []string{"success", "denied", "admin", "failure"}, wantClasses: []event.Class{event.ClassAdmin, event.ClassFailure, event.ClassDenied, event.ClassSuccess}, wantSample: 1},
		{name: "duplicates", classes: []string{"denied", "denied"}, wantClasses: []event.Class{event.ClassDenied}, wantSample: 1},
		{name: "sample", classes: []string{"success"}, sample: 0.25, wantClasses: []event.Class{event.ClassSuccess}, wantSample: 0.25},
		{name: "sample one keeps all", classes: []string{"success"}, sample: 1, wantClasses: []event.Class{event.ClassSuccess}, wantSample: 1},
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
		want    []event.Class
	}{
		{"default", nil, []event.Class{event.ClassAdmin, event.ClassFailure, event.ClassDenied}},
		{"admin", []string{"admin"}, []event.Class{event.ClassAdmin}},
		{"failure", []string{"failure"}, []event.Class{event.ClassFailure}},
		{"denied", []string{"denied"}, []event.Class{event.ClassDenied}},
		{"success", []string{"success"}, []event.Class{event.ClassSuccess}},
		{"failure and success", []string{"failure", "success"}, []event.Class{event.ClassFailure, event.ClassSuccess}},
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
		typ     event.Type
		rnd     func() float64
		want    bool
	}{
		{"unselected success", nil, 0.5, event.TypeAuthSucceeded, noRand, false},
		{"failure is never sampled", []string{"failure", "success"}, 0.01, event.TypeAuthFailed, noRand, true},
		{"admin is never sampled", []string{"admin", "success"}, 0.01, event.TypeTokenCreated, noRand, true},
		{"sample 0 keeps all", []string{"success"}, 0, event.TypeAuthSucceeded, noRand, true},
		{"sample 1 keeps all", []string{"success"}, 1, event.TypeAuthSucceeded, noRand, true},
		{"below fraction kept", []string{"success"}, 0.25, event.TypeAuthSucceeded, fixed(0.1), true},
		{"zero draw kept", []string{"success"}, 0.25, event.TypeAuthSucceeded, fixed(0), true},
		{"at fraction dropped", []string{"success"}, 0.25, event.TypeAuthSucceeded, fixed(0.25), false},
		{"above fraction dropped", []string{"success"}, 0.25, event.TypeAuthSucceeded, fixed(0.9), false},
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
