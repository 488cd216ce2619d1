// Package config holds the configuration sub-structs both binaries share and
// the helpers to parse them from the environment and to log them safely.
//
// Each binary defines one struct that embeds the parts it needs, parses it
// once at start with Parse and logs Redacted(cfg).
package config

import (
	"errors"
	"fmt"
	"net/url"
	"reflect"
	"strings"
	"time"

	"github.com/caarlos0/env/v11"
)

// Postgres configures the connection pool to the source of truth.
type Postgres struct {
	URL      string `env:"DATABASE_URL" envDefault:"postgres://rooms:rooms@127.0.0.1:5432/rooms?sslmode=disable" secret:"url"`
	MaxConns int32  `env:"PG_MAX_CONNS" envDefault:"16"`
}

// IdleInTransactionTimeout is the idle_in_transaction_session_timeout that
// PostgresSessionDefaults gives both binaries' sessions.
const IdleInTransactionTimeout = "10s"

// PostgresSessionDefaults sets, in a pool's run-time parameters, the
// session settings both binaries rely on, unless the connection string
// sets them.
//
// idle_in_transaction_session_timeout: a transaction holds row locks (a
// worker's batch its rooms', a gateway's token refresh its login's tokens)
// and leaves the server waiting on its client for well under a millisecond
// between round trips. A process that stops between them (its machine
// paused, or cut off without a reset) would hold the locks until its
// connection ended: for a peer that never answers, after the kernel's
// keepalive of two hours. The server ends such a session after 10 s, the
// same as the workers' session timeout in the consumer group
// (KAFKA_SESSION_TIMEOUT), so a worker's partitions and its rooms' locks
// come free together. A process that wakes after that finds its connection
// gone and retries (a fault test: TestFaultWorkerFrozenInTransaction).
func PostgresSessionDefaults(params map[string]string) {
	if _, ok := params["idle_in_transaction_session_timeout"]; !ok {
		params["idle_in_transaction_session_timeout"] = IdleInTransactionTimeout
	}
}

// Redis configures the fan-out bus, presence, tickets and rate limits.
type Redis struct {
	Addr     string `env:"REDIS_ADDR" envDefault:"127.0.0.1:6379"`
	Password string `env:"REDIS_PASSWORD" secret:"true"`
	DB       int    `env:"REDIS_DB" envDefault:"0"`
	// Prefix is put in front of every key, so several stacks (or tests) can
	// share one Redis server.
	Prefix string `env:"REDIS_PREFIX" envDefault:"rooms:"`
}

// Kafka configures the intake log.
type Kafka struct {
	Brokers    string `env:"KAFKA_BROKERS" envDefault:"127.0.0.1:9092"`
	Topic      string `env:"KAFKA_TOPIC" envDefault:"chat.messages"`
	Partitions int    `env:"KAFKA_PARTITIONS" envDefault:"8"`
	// Replication is the replication factor used when the topic is created.
	Replication int `env:"KAFKA_REPLICATION" envDefault:"1"`
}

// Log configures the structured logger.
type Log struct {
	Level string `env:"LOG_LEVEL" envDefault:"info"`
}

// Shutdown bounds how long a binary may take to stop.
type Shutdown struct {
	Timeout time.Duration `env:"SHUTDOWN_TIMEOUT" envDefault:"15s"`
}

// Parse fills cfg (a pointer to a struct) from getenv.
func Parse[T any](getenv func(string) string) (T, error) {
	var cfg T
	environ := map[string]string{}
	for _, name := range envNames(reflect.TypeOf(cfg)) {
		if v := getenv(name); v != "" {
			environ[name] = v
		}
	}
	if err := env.ParseWithOptions(&cfg, env.Options{Environment: environ}); err != nil {
		return cfg, fmt.Errorf("parse config: %w", named(err, reflect.TypeOf(cfg), environ))
	}
	return cfg, nil
}

// named rewrites the parse errors of err, which name a struct field
// ("parse error on field \"BatchLinger\""), to name the environment
// variable that was set and its value instead: that is what the user wrote.
// Errors of other kinds are kept as they are.
func named(err error, t reflect.Type, environ map[string]string) error {
	var agg env.AggregateError
	if !errors.As(err, &agg) {
		return err
	}
	var msgs []string
	for _, e := range agg.Errors {
		var pe env.ParseError
		if errors.As(e, &pe) {
			var set []string
			for _, f := range envFields(t) {
				if v, ok := environ[f.env]; ok && f.field == pe.Name {
					set = append(set, fmt.Sprintf("%s=%q", f.env, v))
				}
			}
			if len(set) > 0 {
				msgs = append(msgs, fmt.Sprintf("%s: %v", strings.Join(set, " or "), pe.Err))
				continue
			}
		}
		msgs = append(msgs, e.Error())
	}
	return errors.New(strings.Join(msgs, "; "))
}

// Names lists the environment variable names cfg (a struct or a pointer to
// one) reads, in field order, including those of embedded and nested
// structs. Deployment checks use it to reject settings no binary reads.
func Names(cfg any) []string {
	return envNames(reflect.TypeOf(cfg))
}

// EnvNames lists the environment variables the configuration struct T
// reads, in field order.
func EnvNames[T any]() []string { return envNames(reflect.TypeFor[T]()) }

func envNames(t reflect.Type) []string {
	var names []string
	for _, f := range envFields(t) {
		names = append(names, f.env)
	}
	return names
}

// envField is a struct field that reads an environment variable.
type envField struct{ field, env string }

// envFields lists the fields of t (a struct or a pointer to one) that read
// an environment variable, in field order, including those of embedded and
// nested structs.
func envFields(t reflect.Type) []envField {
	var fields []envField
	for t.Kind() == reflect.Pointer {
		t = t.Elem()
	}
	if t.Kind() != reflect.Struct {
		return nil
	}
	for i := 0; i < t.NumField(); i++ {
		f := t.Field(i)
		if name, ok := f.Tag.Lookup("env"); ok {
			fields = append(fields, envField{f.Name, strings.Split(name, ",")[0]})
			continue
		}
		if f.Type.Kind() == reflect.Struct && f.Type != reflect.TypeOf(time.Time{}) {
			fields = append(fields, envFields(f.Type)...)
		}
	}
	return fields
}

// Redacted returns the configuration as a flat map from environment variable
// name to value, for logging at start. Fields tagged secret:"true" are masked
// and fields tagged secret:"url" have the password of their URL masked.
func Redacted(cfg any) map[string]any {
	out := map[string]any{}
	redact(reflect.ValueOf(cfg), out)
	return out
}

func redact(v reflect.Value, out map[string]any) {
	for v.Kind() == reflect.Pointer {
		v = v.Elem()
	}
	if v.Kind() != reflect.Struct {
		return
	}
	t := v.Type()
	for i := 0; i < t.NumField(); i++ {
		f := t.Field(i)
		if !f.IsExported() {
			continue
		}
		name, ok := f.Tag.Lookup("env")
		if !ok {
			if f.Type.Kind() == reflect.Struct {
				redact(v.Field(i), out)
			}
			continue
		}
		name = strings.Split(name, ",")[0]
		val := v.Field(i).Interface()
		switch f.Tag.Get("secret") {
		case "true":
			if v.Field(i).IsZero() {
				val = ""
			} else {
				val = "******"
			}
		case "url":
			val = maskURL(fmt.Sprint(val))
		}
		if d, ok := val.(time.Duration); ok {
			val = d.String()
		}
		out[name] = val
	}
}

func maskURL(raw string) string {
	u, err := url.Parse(raw)
	if err != nil {
		return "******"
	}
	if _, has := u.User.Password(); has {
		u.User = url.UserPassword(u.User.Username(), "xxxxxx")
	}
	return u.Redacted()
}
