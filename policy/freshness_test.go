package policy

import (
	"testing"
	"time"
)

func TestCheckFreshness(t *testing.T) {
	tests := []struct {
		name       string
		age, limit time.Duration
		want       Reason
	}{
		{"current", 0, 30 * time.Second, ReasonOK},
		{"at the bound", 30 * time.Second, 30 * time.Second, ReasonOK},
		{"past the bound", 30*time.Second + time.Millisecond, 30 * time.Second, ReasonStoreStale},
		{"no bound", time.Hour, 0, ReasonOK},
		{"bound off", time.Hour, -1, ReasonOK},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := CheckFreshness(tt.age, tt.limit); got != tt.want {
				t.Errorf("CheckFreshness(%v, %v) = %q, want %q", tt.age, tt.limit, got, tt.want)
			}
		})
	}
}
