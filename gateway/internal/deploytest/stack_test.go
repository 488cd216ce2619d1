package deploytest

import (
	"bufio"
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"sort"
	"strconv"
	"strings"
	"testing"

	"gopkg.in/yaml.v3"
)

// root is the repository root, seen from this package's folder.
const root = "../../.."

// stack is compose/compose.yaml as docker compose reads it (anchors and
// merge keys resolved, nothing interpolated yet), with the example values
// of compose/.env.example to interpolate with.
type stack struct {
	raw      string
	services map[string]service
	example  map[string]string
}

// service is one entry of services:, in the shapes this file uses.
type service struct {
	Image       string         `yaml:"image"`
	Build       *build         `yaml:"build"`
	Restart     string         `yaml:"restart"`
	Environment map[string]any `yaml:"environment"`
	DependsOn   map[string]struct {
		Condition string `yaml:"condition"`
	} `yaml:"depends_on"`
	Healthcheck *struct {
		Test    stringList `yaml:"test"`
		Disable bool       `yaml:"disable"`
	} `yaml:"healthcheck"`
	Ports   []string   `yaml:"ports"`
	Volumes []string   `yaml:"volumes"`
	Command stringList `yaml:"command"`
	Deploy  *struct {
		Replicas *int `yaml:"replicas"`
	} `yaml:"deploy"`
}

// stringList is a compose field written either as a list or as one string
// (a string becomes a list of one).
type stringList []string

func (l *stringList) UnmarshalYAML(n *yaml.Node) error {
	if n.Kind == yaml.ScalarNode {
		*l = stringList{n.Value}
		return nil
	}
	var items []string
	if err := n.Decode(&items); err != nil {
		return err
	}
	*l = items
	return nil
}

type build struct {
	Context    string `yaml:"context"`
	Dockerfile string `yaml:"dockerfile"`
}

func loadStack(t *testing.T) *stack {
	t.Helper()
	raw, err := os.ReadFile(filepath.Join(root, "compose/compose.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	var doc struct {
		Services map[string]service `yaml:"services"`
	}
	if err := yaml.Unmarshal(raw, &doc); err != nil {
		t.Fatalf("parse compose/compose.yaml: %v", err)
	}
	if len(doc.Services) == 0 {
		t.Fatal("compose/compose.yaml has no services")
	}
	return &stack{raw: string(raw), services: doc.Services, example: loadEnvFile(t, filepath.Join(root, "compose/.env.example"))}
}

// loadEnvFile reads a KEY=value file (comments and blank lines skipped).
func loadEnvFile(t *testing.T, path string) map[string]string {
	t.Helper()
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	out := map[string]string{}
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		line := strings.TrimSpace(sc.Text())
		if line == "" || strings.HasPrefix(line, "#") {
			continue
		}
		k, v, ok := strings.Cut(line, "=")
		if !ok {
			t.Fatalf("%s: not KEY=value: %q", path, line)
		}
		out[k] = v
	}
	if err := sc.Err(); err != nil {
		t.Fatal(err)
	}
	return out
}

// builtFrom lists the services built from the Dockerfile at path (relative
// to the repository root), sorted. A build context is relative to compose/,
// its Dockerfile relative to the context.
func (s *stack) builtFrom(path string) []string {
	var names []string
	for name, svc := range s.services {
		if svc.Build != nil && filepath.Join("compose", svc.Build.Context, svc.Build.Dockerfile) == filepath.Clean(path) {
			names = append(names, name)
		}
	}
	sort.Strings(names)
	return names
}

// sortedNames returns the service names, sorted, for stable test output.
func (s *stack) sortedNames() []string {
	names := make([]string, 0, len(s.services))
	for name := range s.services {
		names = append(names, name)
	}
	sort.Strings(names)
	return names
}

// rawEnv returns a service's environment values as written (strings, not
// interpolated).
func rawEnv(svc service) map[string]string {
	out := map[string]string{}
	for k, v := range svc.Environment {
		if v == nil {
			out[k] = ""
			continue
		}
		out[k] = fmt.Sprint(v)
	}
	return out
}

// env returns a service's environment interpolated with the example values,
// as the container would see it.
func (s *stack) env(t *testing.T, name string) map[string]string {
	t.Helper()
	out := map[string]string{}
	for k, v := range rawEnv(s.services[name]) {
		iv, err := interpolate(v, s.example)
		if err != nil {
			t.Fatalf("service %s: %s: %v", name, k, err)
		}
		out[k] = iv
	}
	return out
}

// varRef matches what docker compose interpolates: $$, ${NAME},
// ${NAME:-default}, ${NAME-default}, ${NAME:?error}, ${NAME?error},
// ${NAME:+alt}, ${NAME+alt} and $NAME.
var varRef = regexp.MustCompile(`\$\$|\$\{([A-Za-z_][A-Za-z0-9_]*)(?:(:?[-?+])([^}]*))?\}|\$([A-Za-z_][A-Za-z0-9_]*)`)

// interpolate resolves s the way docker compose does, with vars as the
// environment. A required variable that is missing is an error.
func interpolate(s string, vars map[string]string) (string, error) {
	var err error
	out := varRef.ReplaceAllStringFunc(s, func(m string) string {
		if m == "$$" {
			return "$"
		}
		sub := varRef.FindStringSubmatch(m)
		name, op, arg := sub[1], sub[2], sub[3]
		if name == "" {
			name = sub[4]
		}
		val, set := vars[name]
		switch op {
		case ":-":
			if val == "" {
				return arg
			}
		case "-":
			if !set {
				return arg
			}
		case ":?", "?":
			if !set || (op == ":?" && val == "") {
				err = fmt.Errorf("required variable %s is missing: %s", name, arg)
			}
		case ":+":
			if val != "" {
				return arg
			}
			return ""
		case "+":
			if set {
				return arg
			}
			return ""
		}
		return val
	})
	return out, err
}

// requiredRef reports whether v is exactly one ${NAME:?message} reference,
// and its NAME.
func requiredRef(v string) (string, bool) {
	m := regexp.MustCompile(`^\$\{([A-Za-z_][A-Za-z0-9_]*):\?[^}]*\}$`).FindStringSubmatch(v)
	if m == nil {
		return "", false
	}
	return m[1], true
}

// hostPort splits "host:port" and checks the port is a number.
func hostPort(t *testing.T, what, addr string) (string, int) {
	t.Helper()
	i := strings.LastIndex(addr, ":")
	if i < 0 {
		t.Fatalf("%s: %q is not host:port", what, addr)
	}
	port, err := strconv.Atoi(addr[i+1:])
	if err != nil {
		t.Fatalf("%s: %q has no numeric port", what, addr)
	}
	return addr[:i], port
}
