// Command vulndbindex turns a folder of OSV entries (the data/osv folder of
// the golang.org/x/vulndb module) into a Go vulnerability database in the v1
// layout that govulncheck reads with -db file:///abs/path:
//
//	index/db.json       {"modified": …}, the latest modification of any entry
//	index/modules.json  per module: its vulnerabilities, their modification
//	                    time and the version that fixes them for good
//	index/vulns.json    per vulnerability: its modification time and aliases
//	ID/<ID>.json        the OSV entries themselves
//
// It lets the checks run without reaching vuln.go.dev: scripts/vulndb.sh
// fetches golang.org/x/vulndb through the Go module proxy and runs this
// command on it.
//
// The OSV files in golang.org/x/vulndb carry a zero "modified" time (the real
// database derives it from the repository's history). -modified replaces a
// zero time, so the database reports when its data was published (the
// module version's commit time) instead of year 1.
//
// Usage:
//
//	vulndbindex -osv DIR -out DIR [-modified RFC3339]
//
// -out must not exist yet or be empty. The index is computed the way
// golang.org/x/vuln computes it for a folder of bare OSV files, so govulncheck
// gives the same answers with either.
package main

import (
	"bytes"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"time"

	"golang.org/x/mod/semver"
)

func main() {
	if err := run(os.Args[1:], os.Stdout); err != nil {
		fmt.Fprintln(os.Stderr, "vulndbindex:", err)
		os.Exit(1)
	}
}

// run parses the flags, reads every OSV entry of -osv and writes the database
// to -out, then prints a one-line summary to stdout.
func run(args []string, stdout io.Writer) error {
	fs := flag.NewFlagSet("vulndbindex", flag.ContinueOnError)
	fs.SetOutput(io.Discard)
	osvDir := fs.String("osv", "", "folder of OSV entries named <ID>.json")
	outDir := fs.String("out", "", "folder to write the database to (absent or empty)")
	modified := fs.String("modified", "", "RFC 3339 time that replaces a zero modified time of an entry")
	if err := fs.Parse(args); err != nil {
		return fmt.Errorf("parse flags: %w", err)
	}
	if *osvDir == "" || *outDir == "" || fs.NArg() > 0 {
		return errors.New("usage: vulndbindex -osv DIR -out DIR [-modified RFC3339]")
	}
	var fallback time.Time
	if *modified != "" {
		t, err := time.Parse(time.RFC3339, *modified)
		if err != nil {
			return fmt.Errorf("parse -modified: %w", err)
		}
		fallback = t.UTC()
	}

	entries, err := load(*osvDir, fallback)
	if err != nil {
		return err
	}
	if err := write(*outDir, entries); err != nil {
		return err
	}
	fmt.Fprintf(stdout, "vulndbindex: wrote %d entries of %d modules to %s\n",
		len(entries), len(modulesIndex(entries)), *outDir)
	return nil
}

// entry is one OSV entry: the fields the index needs, and the whole document,
// which is written back unchanged apart from a replaced zero modified time.
type entry struct {
	ID       string    `json:"id"`
	Modified time.Time `json:"modified"`
	Aliases  []string  `json:"aliases,omitempty"`
	Affected []struct {
		Package struct {
			Name string `json:"name"`
		} `json:"package"`
		Ranges []osvRange `json:"ranges"`
	} `json:"affected"`

	raw map[string]json.RawMessage
}

type osvRange struct {
	Type   string `json:"type"`
	Events []struct {
		Introduced string `json:"introduced,omitempty"`
		Fixed      string `json:"fixed,omitempty"`
	} `json:"events"`
}

// load reads every *.json file of dir (not its subfolders). A file that is
// not an OSV entry named after its ID is an error, and so is a folder without
// entries: an empty database would silently report no vulnerabilities.
func load(dir string, fallback time.Time) ([]*entry, error) {
	files, err := os.ReadDir(dir)
	if err != nil {
		return nil, fmt.Errorf("read OSV folder: %w", err)
	}
	var entries []*entry
	for _, f := range files {
		if f.IsDir() || filepath.Ext(f.Name()) != ".json" {
			continue
		}
		e, err := loadEntry(filepath.Join(dir, f.Name()), fallback)
		if err != nil {
			return nil, err
		}
		if f.Name() != e.ID+".json" {
			return nil, fmt.Errorf("%s holds entry %q: want file name %s.json", f.Name(), e.ID, e.ID)
		}
		entries = append(entries, e)
	}
	if len(entries) == 0 {
		return nil, fmt.Errorf("no OSV entries (*.json) in %s", dir)
	}
	return entries, nil
}

func loadEntry(path string, fallback time.Time) (*entry, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("read OSV entry: %w", err)
	}
	e := &entry{}
	if err := json.Unmarshal(b, e); err != nil {
		return nil, fmt.Errorf("decode OSV entry %s: %w", path, err)
	}
	if err := json.Unmarshal(b, &e.raw); err != nil {
		return nil, fmt.Errorf("decode OSV entry %s: %w", path, err)
	}
	if e.ID == "" {
		return nil, fmt.Errorf("OSV entry %s has no id", path)
	}
	if e.Modified.IsZero() && !fallback.IsZero() {
		e.Modified = fallback
		m, err := json.Marshal(fallback)
		if err != nil {
			return nil, fmt.Errorf("encode modified time: %w", err)
		}
		e.raw["modified"] = m
	}
	e.Modified = e.Modified.UTC()
	return e, nil
}

// The v1 index documents. Field names and order follow golang.org/x/vuln's
// client (internal/client/schema.go) and golang.org/x/vulndb's writer.
type (
	dbMeta struct {
		Modified time.Time `json:"modified"`
	}
	moduleMeta struct {
		Path  string       `json:"path"`
		Vulns []moduleVuln `json:"vulns"`
	}
	moduleVuln struct {
		ID       string    `json:"id"`
		Modified time.Time `json:"modified"`
		Fixed    string    `json:"fixed,omitempty"`
	}
	vulnMeta struct {
		ID       string    `json:"id"`
		Modified time.Time `json:"modified"`
		Aliases  []string  `json:"aliases,omitempty"`
	}
)

// write writes the index documents and the entries into dir.
func write(dir string, entries []*entry) error {
	if files, err := os.ReadDir(dir); err == nil && len(files) > 0 {
		return fmt.Errorf("output folder %s is not empty", dir)
	}
	for _, sub := range []string{"index", "ID"} {
		if err := os.MkdirAll(filepath.Join(dir, sub), 0o755); err != nil {
			return fmt.Errorf("create output folder: %w", err)
		}
	}

	var db dbMeta
	vulns := make([]vulnMeta, 0, len(entries))
	for _, e := range entries {
		if e.Modified.After(db.Modified) {
			db.Modified = e.Modified
		}
		vulns = append(vulns, vulnMeta{ID: e.ID, Modified: e.Modified, Aliases: e.Aliases})
		if err := writeJSON(filepath.Join(dir, "ID", e.ID+".json"), e.raw); err != nil {
			return err
		}
	}
	slices.SortFunc(vulns, func(a, b vulnMeta) int { return strings.Compare(a.ID, b.ID) })

	if err := writeJSON(filepath.Join(dir, "index", "db.json"), db); err != nil {
		return err
	}
	if err := writeJSON(filepath.Join(dir, "index", "modules.json"), modulesIndex(entries)); err != nil {
		return err
	}
	return writeJSON(filepath.Join(dir, "index", "vulns.json"), vulns)
}

// modulesIndex lists every module some entry affects, sorted by path, each
// with its vulnerabilities sorted by ID.
func modulesIndex(entries []*entry) []*moduleMeta {
	byPath := map[string]*moduleMeta{}
	for _, e := range entries {
		for _, a := range e.Affected {
			m := byPath[a.Package.Name]
			if m == nil {
				m = &moduleMeta{Path: a.Package.Name, Vulns: []moduleVuln{}}
				byPath[a.Package.Name] = m
			}
			m.Vulns = append(m.Vulns, moduleVuln{ID: e.ID, Modified: e.Modified, Fixed: nonSupersededFix(a.Ranges)})
		}
	}
	modules := make([]*moduleMeta, 0, len(byPath))
	for _, m := range byPath {
		slices.SortStableFunc(m.Vulns, func(a, b moduleVuln) int { return strings.Compare(a.ID, b.ID) })
		modules = append(modules, m)
	}
	slices.SortFunc(modules, func(a, b *moduleMeta) int { return strings.Compare(a.Path, b.Path) })
	return modules
}

// nonSupersededFix returns the latest fixed version of the SEMVER ranges,
// or "" if the vulnerability is introduced again after it (or never fixed).
// govulncheck fetches an entry only when the module's version is below this
// version, so it must match golang.org/x/vuln's internal/semver
// NonSupersededFix exactly; an error here hides vulnerabilities.
func nonSupersededFix(ranges []osvRange) string {
	var latest string
	for _, r := range ranges {
		if r.Type != "SEMVER" {
			continue
		}
		for _, e := range r.Events {
			if e.Fixed != "" && less(latest, e.Fixed) {
				latest = e.Fixed
			}
		}
		for _, e := range r.Events {
			if e.Introduced != "" && e.Introduced != "0" && less(latest, e.Introduced) {
				latest = ""
				break
			}
		}
	}
	return latest
}

// less reports whether v1 < v2 for versions with a "v", "go" or no prefix.
func less(v1, v2 string) bool {
	return semver.Compare(canonical(v1), canonical(v2)) < 0
}

func canonical(v string) string {
	v = strings.TrimPrefix(v, "v")
	v = strings.TrimPrefix(v, "go")
	return "v" + v
}

// writeJSON writes v as compact JSON, the form the v1 database serves.
func writeJSON(path string, v any) error {
	var buf bytes.Buffer
	enc := json.NewEncoder(&buf)
	enc.SetEscapeHTML(false)
	if err := enc.Encode(v); err != nil {
		return fmt.Errorf("encode %s: %w", filepath.Base(path), err)
	}
	b := bytes.TrimSuffix(buf.Bytes(), []byte("\n"))
	if err := os.WriteFile(path, b, 0o644); err != nil {
		return fmt.Errorf("write %s: %w", filepath.Base(path), err)
	}
	return nil
}
