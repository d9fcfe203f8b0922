package tokenstore

import (
	"testing"
	"time"
)

func TestTokenState(t *testing.T) {
	now := time.Date(2030, 1, 2, 3, 4, 5, 0, time.UTC)
	tests := []struct {
		name string
		tok  Token
		want State
	}{
		{"never expires", Token{}, StateActive},
		{"expires later", Token{ExpiresAt: now.Add(time.Millisecond)}, StateActive},
		{"expires now", Token{ExpiresAt: now}, StateExpired},
		{"expired", Token{ExpiresAt: now.Add(-time.Hour)}, StateExpired},
		{"revoked", Token{RevokedAt: now.Add(-time.Hour)}, StateRevoked},
		{"revoked and expired", Token{ExpiresAt: now.Add(-time.Hour), RevokedAt: now.Add(-2 * time.Hour)}, StateRevoked},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := tt.tok.State(now); got != tt.want {
				t.Errorf("Token.State = %q, want %q", got, tt.want)
			}
			e := Entry{ExpiresAt: tt.tok.ExpiresAt, Revoked: !tt.tok.RevokedAt.IsZero()}
			if got := e.State(now); got != tt.want {
				t.Errorf("Entry.State = %q, want %q", got, tt.want)
			}
		})
	}
}
