package config_test

import (
	"strings"
	"testing"
	"time"

	"rooms/shared/config"
)

type testConfig struct {
	config.Postgres
	config.Redis
	config.Shutdown
	Secret string `env:"TEST_SECRET" secret:"true"`
	Port   int    `env:"TEST_PORT" envDefault:"8081"`
}

func TestParseDefaultsAndOverrides(t *testing.T) {
	env := map[string]string{"TEST_PORT": "9000", "SHUTDOWN_TIMEOUT": "3s", "TEST_SECRET": "hunter2",
		"DATABASE_URL": "postgres://u:pw@db:5432/x"}
	cfg, err := config.Parse[testConfig](func(k string) string { return env[k] })
	if err != nil {
		t.Fatal(err)
	}
	if cfg.Port != 9000 || cfg.Shutdown.Timeout != 3*time.Second || cfg.Redis.Addr != "127.0.0.1:6379" || cfg.Redis.Prefix != "rooms:" {
		t.Fatalf("unexpected config %+v", cfg)
	}
	red := config.Redacted(cfg)
	if red["TEST_SECRET"] != "******" {
		t.Fatalf("secret not masked: %v", red["TEST_SECRET"])
	}
	if s, _ := red["DATABASE_URL"].(string); strings.Contains(s, "pw") || !strings.Contains(s, "db:5432") {
		t.Fatalf("url password not masked: %v", s)
	}
	if red["SHUTDOWN_TIMEOUT"] != "3s" || red["TEST_PORT"] != 9000 {
		t.Fatalf("unexpected redacted values %v", red)
	}
}

func TestParseRejectsBadValues(t *testing.T) {
	env := map[string]string{"TEST_PORT": "not-a-number"}
	if _, err := config.Parse[testConfig](func(k string) string { return env[k] }); err == nil {
		t.Fatal("want an error for a non-numeric port")
	}
}

// TestParseErrorsNameTheVariable checks that a bad value is reported with
// the environment variable and the value the user set, every bad one, not
// with the Go field that reads it.
func TestParseErrorsNameTheVariable(t *testing.T) {
	env := map[string]string{"TEST_PORT": "eighty", "SHUTDOWN_TIMEOUT": "soon", "REDIS_ADDR": "fine:1"}
	_, err := config.Parse[testConfig](func(k string) string { return env[k] })
	if err == nil {
		t.Fatal("want an error")
	}
	for _, want := range []string{`TEST_PORT="eighty"`, `SHUTDOWN_TIMEOUT="soon"`} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("error %q does not name %s", err, want)
		}
	}
	for _, field := range []string{`"Port"`, `"Timeout"`, "REDIS_ADDR"} {
		if strings.Contains(err.Error(), field) {
			t.Errorf("error %q names %s", err, field)
		}
	}
}

func TestNames(t *testing.T) {
	type nested struct {
		Inner string `env:"INNER,required"`
	}
	type cfg struct {
		config.Redis
		config.Log
		Own    int `env:"OWN"`
		Nested nested
		Skip   string
	}
	want := []string{"REDIS_ADDR", "REDIS_PASSWORD", "REDIS_DB", "REDIS_PREFIX", "LOG_LEVEL", "OWN", "INNER"}
	for _, c := range []struct {
		name string
		in   any
	}{{"value", cfg{}}, {"pointer", &cfg{}}} {
		t.Run(c.name, func(t *testing.T) {
			got := config.Names(c.in)
			if strings.Join(got, ",") != strings.Join(want, ",") {
				t.Fatalf("Names = %v, want %v", got, want)
			}
		})
	}
	if got := config.Names(42); len(got) != 0 {
		t.Fatalf("Names(int) = %v, want none", got)
	}
}
