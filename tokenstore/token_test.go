package tokenstore

import (
	"testing"
	"time"

	"github.com/apitoken/caddy-apitoken/storage"
)

func TestTokenState(t *testing.T) {
	now := time.Date(2030, 1, 2, 3, 4, 5, 0, time.UTC)
	tests := []struct {
		name string
		tok  storage.Token
		want storage.State
	}{
		{"never expires", storage.Token{}, storage.StateActive},
		{"expires later", storage.Token{ExpiresAt: now.Add(time.Millisecond)}, storage.StateActive},
		{"expires now", storage.Token{ExpiresAt: now}, storage.StateExpired},
		{"expired", storage.Token{ExpiresAt: now.Add(-time.Hour)}, storage.StateExpired},
		{"revoked", storage.Token{RevokedAt: now.Add(-time.Hour)}, storage.StateRevoked},
		{"revoked and expired", storage.Token{ExpiresAt: now.Add(-time.Hour), RevokedAt: now.Add(-2 * time.Hour)}, storage.StateRevoked},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := tt.tok.State(now); got != tt.want {
				t.Errorf("Token.State = %q, want %q", got, tt.want)
			}
			e := storage.Entry{ExpiresAt: tt.tok.ExpiresAt, Revoked: !tt.tok.RevokedAt.IsZero()}
			if got := e.State(now); got != tt.want {
				t.Errorf("Entry.State = %q, want %q", got, tt.want)
			}
		})
	}
}
