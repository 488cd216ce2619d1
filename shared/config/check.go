package config

import (
	"fmt"
	"slices"
	"strings"
)

// Checks collects the settings that are out of range, each named by its
// environment variable and value, so that a binary refuses a bad
// configuration at start with one error that lists them all, instead of
// misbehaving later (a batch size of 0, a negative linger, a log level
// silently taken as info).
type Checks []string

// Want records name=value as bad unless ok; want says what it must be.
func (c *Checks) Want(ok bool, name string, value any, want string) {
	if !ok {
		*c = append(*c, fmt.Sprintf("%s=%v must be %s", name, value, want))
	}
}

// Shared checks the settings both binaries share.
func (c *Checks) Shared(p Postgres, k Kafka, l Log, s Shutdown) {
	c.Want(p.MaxConns >= 0, "PG_MAX_CONNS", p.MaxConns, "0 (the driver's default) or more")
	c.Want(strings.TrimSpace(k.Brokers) != "", "KAFKA_BROKERS", k.Brokers, "a comma-separated list of host:port")
	c.Want(k.Topic != "", "KAFKA_TOPIC", k.Topic, "a topic name")
	c.Want(k.Partitions >= 1, "KAFKA_PARTITIONS", k.Partitions, "at least 1")
	c.Want(k.Replication >= 1, "KAFKA_REPLICATION", k.Replication, "at least 1")
	c.Want(slices.Contains(LogLevels, strings.ToLower(l.Level)), "LOG_LEVEL", l.Level, "one of "+strings.Join(LogLevels, ", "))
	c.Want(s.Timeout > 0, "SHUTDOWN_TIMEOUT", s.Timeout, "positive")
}

// LogLevels are the values LOG_LEVEL takes.
var LogLevels = []string{"debug", "info", "warn", "error"}

// Err is nil when every check passed, and otherwise one error naming every
// bad setting.
func (c Checks) Err() error {
	if len(c) == 0 {
		return nil
	}
	return fmt.Errorf("bad configuration: %s", strings.Join(c, "; "))
}
