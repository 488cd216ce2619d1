package app_test

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	"rooms/shared/config"
	"rooms/shared/testenv"
	"rooms/worker/internal/app"
)

// TestEveryVariableIsDocumented checks that each environment variable the
// worker reads is in the README's table of settings, but for the fault
// tests' failpoint, which docs/reliability.md describes.
func TestEveryVariableIsDocumented(t *testing.T) {
	root := testenv.RepoRoot(t)
	readme, err := os.ReadFile(filepath.Join(root, "README.md"))
	if err != nil {
		t.Fatal(err)
	}
	reliability, err := os.ReadFile(filepath.Join(root, "docs", "reliability.md"))
	if err != nil {
		t.Fatal(err)
	}
	names := config.EnvNames[app.Config]()
	if len(names) < 20 {
		t.Fatalf("only %d variables found: %v", len(names), names)
	}
	for _, name := range names {
		doc := readme
		if name == "ROOMS_FAILPOINT" {
			doc = reliability
		}
		if !strings.Contains(string(doc), "`"+name) {
			t.Errorf("%s is not documented", name)
		}
	}
}
