package caddymodule

import (
	"bytes"
	"encoding/json"
	"net/http"
	"path/filepath"
	"regexp"
	"strings"
	"testing"

	"github.com/spf13/cobra"
)

// runCLI runs `caddy api-token <args>` against the test Caddy's admin API.
func runCLI(t *testing.T, args ...string) (string, error) {
	t.Helper()
	root := &cobra.Command{Use: "api-token", SilenceUsage: true, SilenceErrors: true}
	configureCommand(root)
	var out bytes.Buffer
	root.SetOut(&out)
	root.SetErr(&out)
	root.SetArgs(append(args, "--address", "localhost:2999"))
	err := root.Execute()
	return out.String(), err
}

func TestCommand(t *testing.T) {
	db := filepath.Join(t.TempDir(), "tokens.db")
	tester := startGate(t, gateConfig(db, "", ""))

	out, err := runCLI(t, "create", "--user", "lena", "--name", "jira-sync", "--expires-in", "30d", "--description", "nightly export")
	if err != nil {
		t.Fatalf("create: %v\n%s", err, out)
	}
	secret := regexp.MustCompile(`caddytok_[a-z2-7]{12}[0-9A-Za-z]{49}`).FindString(out)
	if secret == "" || !strings.Contains(out, "shown only this once") || !strings.Contains(out, "jira-sync of lena") {
		t.Fatalf("create output:\n%s", out)
	}
	if status, _, body := do(t, tester, http.MethodGet, siteURL+"/rest/x", "", "Authorization", basicAuth("lena", secret)); status != 200 {
		t.Fatalf("CLI-made token refused: %d %s", status, body)
	}

	out, err = runCLI(t, "create", "--user", "lena", "--name", "scripted", "--json")
	if err != nil {
		t.Fatalf("create --json: %v\n%s", err, out)
	}
	var created tokenJSON
	if err := json.Unmarshal([]byte(out), &created); err != nil || created.Token == "" {
		t.Fatalf("create --json output %q: %v", out, err)
	}

	out, err = runCLI(t, "list", "--user", "LENA")
	if err != nil || !strings.Contains(out, "jira-sync") || !strings.Contains(out, "scripted") || strings.Contains(out, secret) {
		t.Fatalf("list: %v\n%s", err, out)
	}
	if !strings.HasPrefix(out, "ID") {
		t.Errorf("list has no header row:\n%s", out)
	}

	out, err = runCLI(t, "show", created.ID)
	if err != nil || !strings.Contains(out, "scripted") || !strings.Contains(out, "State:") || strings.Contains(out, created.Token) {
		t.Fatalf("show: %v\n%s", err, out)
	}

	out, err = runCLI(t, "rotate", created.ID, "--json")
	if err != nil {
		t.Fatalf("rotate: %v\n%s", err, out)
	}
	var rotated tokenJSON
	if err := json.Unmarshal([]byte(out), &rotated); err != nil || rotated.Token == "" || rotated.Token == created.Token {
		t.Fatalf("rotate output %q: %v", out, err)
	}

	out, err = runCLI(t, "revoke", created.ID)
	if err != nil || !strings.Contains(out, "Revoked token "+created.ID) {
		t.Fatalf("revoke: %v\n%s", err, out)
	}
	out, err = runCLI(t, "revoke", "--user", "lena")
	if err != nil || !strings.Contains(out, "Revoked 1 token(s) of lena") {
		t.Fatalf("revoke --user: %v\n%s", err, out)
	}
	if status, _, _ := do(t, tester, http.MethodGet, siteURL+"/rest/x", "", "Authorization", basicAuth("lena", secret)); status != 401 {
		t.Errorf("revoked token accepted: %d", status)
	}

	t.Run("errors are the admin API's message", func(t *testing.T) {
		_, err := runCLI(t, "create", "--user", "lena", "--name", "x", "--expires-in", "400d")
		if err == nil || !strings.Contains(err.Error(), "HTTP 400: the expiry is beyond max_validity (365d)") {
			t.Errorf("error = %v", err)
		}
		if _, err := runCLI(t, "create", "--name", "x"); err == nil || !strings.Contains(err.Error(), `"user" not set`) {
			t.Errorf("missing --user: %v", err)
		}
		if _, err := runCLI(t, "revoke"); err == nil || !strings.Contains(err.Error(), "either a token id or --user") {
			t.Errorf("revoke without target: %v", err)
		}
		if _, err := runCLI(t, "show", "aaaaaaaaaaaa"); err == nil || !strings.Contains(err.Error(), "HTTP 404") {
			t.Errorf("show unknown: %v", err)
		}
	})
}
