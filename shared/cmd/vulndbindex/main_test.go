package main

import (
	"encoding/json"
	"io"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// Two entries as golang.org/x/vulndb's data/osv holds them (zero modified).
const (
	entryA = `{
  "schema_version": "1.3.1",
  "id": "GO-2026-0001",
  "modified": "0001-01-01T00:00:00Z",
  "aliases": ["CVE-2026-1"],
  "summary": "a <b> & c",
  "affected": [
    {"package": {"name": "example.com/a", "ecosystem": "Go"},
     "ranges": [{"type": "SEMVER", "events": [{"introduced": "0"}, {"fixed": "1.2.0"}, {"introduced": "1.3.0"}, {"fixed": "1.3.4"}]}]},
    {"package": {"name": "stdlib", "ecosystem": "Go"},
     "ranges": [{"type": "SEMVER", "events": [{"introduced": "0"}, {"fixed": "1.25.9"}, {"introduced": "1.26.0-0"}, {"fixed": "1.26.10"}]}]}
  ]
}`
	entryB = `{
  "id": "GO-2026-0002",
  "modified": "2025-06-01T10:00:00Z",
  "affected": [
    {"package": {"name": "example.com/a", "ecosystem": "Go"},
     "ranges": [{"type": "SEMVER", "events": [{"introduced": "0"}]}]}
  ]
}`
)

func TestRun(t *testing.T) {
	osvDir := t.TempDir()
	writeFile(t, filepath.Join(osvDir, "GO-2026-0001.json"), entryA)
	writeFile(t, filepath.Join(osvDir, "GO-2026-0002.json"), entryB)
	writeFile(t, filepath.Join(osvDir, "README.md"), "not an entry")
	out := filepath.Join(t.TempDir(), "db")

	var stdout strings.Builder
	if err := run([]string{"-osv", osvDir, "-out", out, "-modified", "2026-11-05T23:49:57Z"}, &stdout); err != nil {
		t.Fatalf("run: %v", err)
	}
	if want := "wrote 2 entries of 2 modules"; !strings.Contains(stdout.String(), want) {
		t.Errorf("stdout = %q, want it to contain %q", stdout.String(), want)
	}

	tests := []struct {
		file string
		want string
	}{
		{"index/db.json", `{"modified":"2026-11-05T23:49:57Z"}`},
		{"index/modules.json", `[` +
			`{"path":"example.com/a","vulns":[` +
			`{"id":"GO-2026-0001","modified":"2026-11-05T23:49:57Z","fixed":"1.3.4"},` +
			`{"id":"GO-2026-0002","modified":"2025-06-01T10:00:00Z"}]},` +
			`{"path":"stdlib","vulns":[{"id":"GO-2026-0001","modified":"2026-11-05T23:49:57Z","fixed":"1.26.10"}]}]`},
		{"index/vulns.json", `[` +
			`{"id":"GO-2026-0001","modified":"2026-11-05T23:49:57Z","aliases":["CVE-2026-1"]},` +
			`{"id":"GO-2026-0002","modified":"2025-06-01T10:00:00Z"}]`},
	}
	for _, tt := range tests {
		t.Run(tt.file, func(t *testing.T) {
			got, err := os.ReadFile(filepath.Join(out, tt.file))
			if err != nil {
				t.Fatal(err)
			}
			if string(got) != tt.want {
				t.Errorf("%s =\n%s\nwant\n%s", tt.file, got, tt.want)
			}
		})
	}

	// The entry is written back whole, with the zero modified time replaced.
	b, err := os.ReadFile(filepath.Join(out, "ID", "GO-2026-0001.json"))
	if err != nil {
		t.Fatal(err)
	}
	var got map[string]any
	if err := json.Unmarshal(b, &got); err != nil {
		t.Fatal(err)
	}
	if got["modified"] != "2026-11-05T23:49:57Z" || got["summary"] != "a <b> & c" || got["schema_version"] != "1.3.1" {
		t.Errorf("ID/GO-2026-0001.json = %s", b)
	}
	if _, err := os.Stat(filepath.Join(out, "ID", "README.json")); err == nil {
		t.Error("a non-JSON file became an entry")
	}
}

func TestRunErrors(t *testing.T) {
	tests := []struct {
		name  string
		files map[string]string // the OSV folder's files; nil: no -osv and -out flags
		extra []string          // more flags
		want  string
	}{
		{"no flags", nil, nil, "usage"},
		{"bad modified", map[string]string{"GO-2026-0002.json": entryB}, []string{"-modified", "yesterday"}, "parse -modified"},
		{"missing folder", map[string]string{}, []string{"-osv", "/nonexistent"}, "read OSV folder"},
		{"empty folder", map[string]string{"README.md": "x"}, nil, "no OSV entries"},
		{"name mismatch", map[string]string{"GO-2026-9999.json": entryB}, nil, "want file name GO-2026-0002.json"},
		{"not JSON", map[string]string{"GO-2026-0002.json": "{"}, nil, "decode OSV entry"},
		{"no id", map[string]string{"GO-2026-0002.json": `{"affected":[]}`}, nil, "has no id"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var args []string
			if tt.files != nil {
				osvDir := t.TempDir()
				for name, body := range tt.files {
					writeFile(t, filepath.Join(osvDir, name), body)
				}
				args = []string{"-osv", osvDir, "-out", filepath.Join(t.TempDir(), "db")}
			}
			args = append(args, tt.extra...)
			err := run(args, io.Discard)
			if err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Errorf("run(%q) = %v, want an error containing %q", args, err, tt.want)
			}
		})
	}
}

func TestRunRefusesNonEmptyOutput(t *testing.T) {
	osvDir := t.TempDir()
	writeFile(t, filepath.Join(osvDir, "GO-2026-0002.json"), entryB)
	out := t.TempDir()
	writeFile(t, filepath.Join(out, "old"), "x")
	err := run([]string{"-osv", osvDir, "-out", out}, io.Discard)
	if err == nil || !strings.Contains(err.Error(), "not empty") {
		t.Errorf("run = %v, want an error about the non-empty output folder", err)
	}
}

func TestNonSupersededFix(t *testing.T) {
	type ev = struct {
		Introduced string `json:"introduced,omitempty"`
		Fixed      string `json:"fixed,omitempty"`
	}
	tests := []struct {
		name   string
		ranges []osvRange
		want   string
	}{
		{"none", nil, ""},
		{"never fixed", []osvRange{{Type: "SEMVER", Events: []ev{{Introduced: "0"}}}}, ""},
		{"one fix", []osvRange{{Type: "SEMVER", Events: []ev{{Introduced: "0"}, {Fixed: "1.2.3"}}}}, "1.2.3"},
		{"latest of several", []osvRange{{Type: "SEMVER", Events: []ev{{Introduced: "0"}, {Fixed: "1.10.0"}, {Introduced: "1.9.0"}, {Fixed: "1.9.5"}}}}, "1.10.0"},
		{"reintroduced", []osvRange{{Type: "SEMVER", Events: []ev{{Introduced: "0"}, {Fixed: "1.2.0"}, {Introduced: "2.0.0"}}}}, ""},
		{"pseudo-versions", []osvRange{{Type: "SEMVER", Events: []ev{
			{Introduced: "0.0.0-20250721152936-fe86ceb2c3fa"}, {Fixed: "0.0.0-20260626085133-7cb96ac80a6d"}}}}, "0.0.0-20260626085133-7cb96ac80a6d"},
		{"prerelease below release", []osvRange{{Type: "SEMVER", Events: []ev{{Introduced: "0"}, {Fixed: "1.26.0-rc.2"}, {Fixed: "1.26.0"}}}}, "1.26.0"},
		{"non-SEMVER ignored", []osvRange{{Type: "GIT", Events: []ev{{Fixed: "abc"}}}}, ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := nonSupersededFix(tt.ranges); got != tt.want {
				t.Errorf("nonSupersededFix = %q, want %q", got, tt.want)
			}
		})
	}
}

func writeFile(t *testing.T, path, body string) {
	t.Helper()
	if err := os.WriteFile(path, []byte(body), 0o644); err != nil {
		t.Fatal(err)
	}
}
