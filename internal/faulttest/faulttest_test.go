package faulttest

import (
	"os"
	"os/exec"
	"strings"
	"testing"
)

// TestUnsupported runs itself as a child that calls Unsupported: without
// RequireEnv the child's test is skipped, with RequireEnv=1 it fails and
// says why.
func TestUnsupported(t *testing.T) {
	if os.Getenv("FAULTTEST_UNSUPPORTED_CHILD") == "1" {
		Unsupported(t, "cannot stage %s", "the fault")
		t.Fatal("Unsupported returned")
	}
	exe, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name, require, want string
		fails               bool
	}{
		{"skips by default", "", "--- SKIP: TestUnsupported", false},
		{"fails where required", "1", "cannot stage the fault (and " + RequireEnv + "=1 requires every fault test to run)", true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			cmd := exec.Command(exe, "-test.run", "^TestUnsupported$", "-test.v")
			cmd.Env = append(os.Environ(), "FAULTTEST_UNSUPPORTED_CHILD=1", RequireEnv+"="+tt.require)
			out, err := cmd.CombinedOutput()
			if failed := err != nil; failed != tt.fails || !strings.Contains(string(out), tt.want) {
				t.Errorf("child exited with %v, want failure %v and output containing %q:\n%s", err, tt.fails, tt.want, out)
			}
		})
	}
}
