package deploytest

import (
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"sort"
	"testing"

	"gopkg.in/yaml.v3"

	"rooms/shared/config"
	"rooms/worker/internal/app"
)

// Docker compose itself (`docker compose config`) cannot run here: there is
// no container engine. This test checks what can be checked from the file.

// service is the part of a compose service this test reads.
type service struct {
	Build *struct {
		Context    string `yaml:"context"`
		Dockerfile string `yaml:"dockerfile"`
	} `yaml:"build"`
	Environment map[string]any `yaml:"environment"`
	DependsOn   map[string]struct {
		Condition string `yaml:"condition"`
	} `yaml:"depends_on"`
	Deploy *struct {
		Replicas *int `yaml:"replicas"`
	} `yaml:"deploy"`
}

// TestComposeWorkerEnv: every setting given to a worker is one the worker
// reads, the required ones are set and parse, there are at least two
// workers, and they start after the databases, Kafka, the migrations and
// the topic.
func TestComposeWorkerEnv(t *testing.T) {
	raw, err := os.ReadFile("../../../compose/compose.yaml")
	if err != nil {
		t.Fatal(err)
	}
	var doc struct {
		Services map[string]service `yaml:"services"`
	}
	if err := yaml.Unmarshal(raw, &doc); err != nil {
		t.Fatalf("parse compose/compose.yaml: %v", err)
	}
	var workers []string
	for name, svc := range doc.Services {
		if svc.Build != nil && filepath.Join("compose", svc.Build.Context, svc.Build.Dockerfile) == "worker/Dockerfile" {
			workers = append(workers, name)
		}
	}
	sort.Strings(workers)
	if len(workers) == 0 {
		t.Fatal("no service is built from worker/Dockerfile")
	}

	known := config.Names(app.Config{})
	// Values are checked for parsing with ${...} references replaced by a
	// placeholder: the secrets' values do not matter to the worker.
	ref := regexp.MustCompile(`\$\{[^}]*\}`)
	replicas := 0
	for _, name := range workers {
		svc := doc.Services[name]
		replicas++
		if svc.Deploy != nil && svc.Deploy.Replicas != nil {
			replicas += *svc.Deploy.Replicas - 1
		}
		env := map[string]string{}
		for k, v := range svc.Environment {
			if !slices.Contains(known, k) {
				t.Errorf("service %s: %s is not a worker setting (app.Config reads %v)", name, k, known)
			}
			if v != nil {
				env[k] = ref.ReplaceAllString(fmt.Sprint(v), "example")
			}
		}
		for _, k := range []string{"DATABASE_URL", "REDIS_ADDR", "REDIS_PASSWORD", "KAFKA_BROKERS", "KAFKA_TOPIC",
			"KAFKA_PARTITIONS", "KAFKA_REPLICATION", "KAFKA_GROUP"} {
			if env[k] == "" {
				t.Errorf("service %s: %s must be set", name, k)
			}
		}
		cfg, err := config.Parse[app.Config](func(k string) string { return env[k] })
		if err != nil {
			t.Errorf("service %s: the worker refuses its configuration: %v", name, err)
		} else if cfg.Replication != 3 {
			t.Errorf("service %s: KAFKA_REPLICATION=%d, want 3", name, cfg.Replication)
		}

		want := map[string]string{
			"postgres": "service_healthy", "redis": "service_healthy",
			"migrate": "service_completed_successfully", "kafka-init": "service_completed_successfully",
		}
		for dep, s := range doc.Services {
			if _, ok := s.Environment["KAFKA_NODE_ID"]; ok {
				want[dep] = "service_healthy"
			}
		}
		for dep, cond := range want {
			if got := svc.DependsOn[dep].Condition; got != cond {
				t.Errorf("service %s: depends_on %s: condition %q, want %q", name, dep, got, cond)
			}
		}
	}
	if replicas < 2 {
		t.Errorf("want at least 2 workers, got %d", replicas)
	}
}
