package app_test

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	"rooms/gateway/internal/app"
	"rooms/shared/config"
	"rooms/shared/testenv"
)

// TestEveryVariableIsDocumented checks that each environment variable the
// gateway reads is in the README's table of settings.
func TestEveryVariableIsDocumented(t *testing.T) {
	readme, err := os.ReadFile(filepath.Join(testenv.RepoRoot(t), "README.md"))
	if err != nil {
		t.Fatal(err)
	}
	names := config.EnvNames[app.Config]()
	if len(names) < 30 {
		t.Fatalf("only %d variables found: %v", len(names), names)
	}
	for _, name := range names {
		if !strings.Contains(string(readme), "`"+name+"`") {
			t.Errorf("%s is not documented in README.md", name)
		}
	}
}
