package caddymodule

import (
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/caddyserver/caddy/v2"
	"github.com/caddyserver/caddy/v2/caddyconfig"
)

// TestExamplesAdapt: the Caddyfiles the README and examples/ tell people to
// run adapt without warnings and use the gate; Caddyfile.example (the
// README's first command) also validates, on a database of the test's own.
func TestExamplesAdapt(t *testing.T) {
	files, err := filepath.Glob("../examples/*.Caddyfile")
	if err != nil || len(files) == 0 {
		t.Fatalf("no example Caddyfiles: %v", err)
	}
	files = append(files, "../Caddyfile.example")
	for _, file := range files {
		t.Run(filepath.Base(file), func(t *testing.T) {
			body, err := os.ReadFile(file)
			if err != nil {
				t.Fatal(err)
			}
			out, warnings, err := caddyconfig.GetAdapter("caddyfile").Adapt(body, map[string]any{"filename": file})
			if err != nil {
				t.Fatalf("adapting %s: %v", file, err)
			}
			if len(warnings) > 0 {
				t.Errorf("adapting %s warned: %v", file, warnings)
			}
			if !strings.Contains(string(out), `"handler":"api_token"`) {
				t.Errorf("%s does not use the api_token handler", file)
			}
			if filepath.Base(file) != "Caddyfile.example" {
				return
			}
			var cfg map[string]any
			if err := json.Unmarshal(out, &cfg); err != nil {
				t.Fatal(err)
			}
			apps := cfg["apps"].(map[string]any)
			apps["api_tokens"].(map[string]any)["database"] = filepath.Join(t.TempDir(), "tokens.db")
			delete(cfg, "admin") // Validate starts no admin endpoint, but keep the test off localhost:2019
			var c caddy.Config
			raw, err := json.Marshal(cfg)
			if err != nil {
				t.Fatal(err)
			}
			if err := json.Unmarshal(raw, &c); err != nil {
				t.Fatal(err)
			}
			if err := caddy.Validate(&c); err != nil {
				t.Errorf("validating %s: %v", file, err)
			}
		})
	}
}
