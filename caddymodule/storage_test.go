package caddymodule

import (
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/caddyserver/caddy/v2"
)

// TestStorageConfig checks the JSON config's choice of storage module:
// an unknown module gets Caddy's own error, and database with storage is
// refused before anything is opened.
func TestStorageConfig(t *testing.T) {
	tests := []struct {
		name, app, want string
	}{
		{"unknown module", `{"storage":{"module":"nosuch"}}`, "unknown module: api_tokens.storage.nosuch"},
		{"database and storage", `{"database":"/nonexistent/x.db","storage":{"module":"sqlite"}}`, `database "/nonexistent/x.db" and storage are both set`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			cfg := &caddy.Config{AppsRaw: caddy.ModuleMap{"api_tokens": json.RawMessage(tt.app)}}
			err := caddy.Validate(cfg)
			if err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Fatalf("Validate: %v; want an error containing %q", err, tt.want)
			}
		})
	}
	t.Run("sqlite module", func(t *testing.T) {
		db := filepath.Join(t.TempDir(), "tokens.db")
		app, _ := json.Marshal(map[string]any{"storage": map[string]any{"module": "sqlite", "database": db}})
		if err := caddy.Validate(&caddy.Config{AppsRaw: caddy.ModuleMap{"api_tokens": app}}); err != nil {
			t.Fatalf("Validate: %v", err)
		}
		if _, err := os.Stat(db); err != nil {
			t.Errorf("the sqlite module did not open %s: %v", db, err)
		}
		if _, ok := stores.References(db); ok {
			t.Errorf("%s still open after the config was cleaned up", db)
		}
	})
}
