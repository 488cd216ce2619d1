package testenv

import (
	"testing"

	"github.com/twmb/franz-go/pkg/kfake"
)

// Kafka starts an embedded Kafka-protocol broker (kfake) on a free loopback
// port and returns it; it is closed when the test ends. Extra options (for
// example kfake.DataDir or kfake.SeedTopics) are passed through.
func Kafka(t testing.TB, opts ...kfake.Opt) *kfake.Cluster {
	t.Helper()
	opts = append([]kfake.Opt{kfake.NumBrokers(1), kfake.Ports(0)}, opts...)
	c, err := kfake.NewCluster(opts...)
	if err != nil {
		t.Fatalf("testenv: start embedded Kafka broker: %v", err)
	}
	t.Cleanup(c.Close)
	return c
}
