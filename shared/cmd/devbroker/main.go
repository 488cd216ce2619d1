// Command devbroker runs a single-node Kafka-protocol broker for the local
// stack: franz-go's embedded kfake cluster, listening on one address and
// persisting its log, topics and committed offsets to a data folder, so a
// restarted stack finds its records again.
//
// It stands in for a real Kafka cluster on machines without one; the gateway
// and worker talk to it with the same client and settings they use against
// real brokers. Topics are not created automatically (as on a production
// cluster): the binaries create the topic they need at start.
//
// Environment:
//
//	DEVBROKER_ADDR           host:port to listen on and advertise (default 127.0.0.1:9092)
//	DEVBROKER_DATA_DIR       folder holding the persisted state (default .run/kafka)
//	DEVBROKER_TRIM_INTERVAL  how often committed records are trimmed (default 1m; 0: never)
//	DEVBROKER_KEEP           how long committed records are kept (default 15m)
//	LOG_LEVEL                debug, info, warn or error (default info)
//
// Records every consumer group has committed and older than DEVBROKER_KEEP
// are deleted (trim.go), so the data folder does not grow without bound.
// A group member that died while joining a rebalance is removed once its
// session times out (reap.go), as Kafka does and kfake alone does not.
//
// SIGINT or SIGTERM stops it cleanly: connections are closed and the state
// is flushed to the data folder.
package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"os/signal"
	"strconv"
	"sync"
	"syscall"
	"time"

	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kfake"
	"github.com/twmb/franz-go/pkg/kgo"

	"rooms/shared/config"
	"rooms/shared/logging"
)

// reapInterval is how often the reaper looks for dead group members.
const reapInterval = 5 * time.Second

// segmentBytes is the size of the log's segment files (Kafka's default is
// 1 GiB, kfake's 100 MiB).
const segmentBytes = 16 << 20

// settings are the broker's environment.
type settings struct {
	Addr         string        `env:"DEVBROKER_ADDR" envDefault:"127.0.0.1:9092"`
	DataDir      string        `env:"DEVBROKER_DATA_DIR" envDefault:".run/kafka"`
	TrimInterval time.Duration `env:"DEVBROKER_TRIM_INTERVAL" envDefault:"1m"`
	Keep         time.Duration `env:"DEVBROKER_KEEP" envDefault:"15m"`
	config.Log
}

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	if err := run(ctx, os.Getenv, os.Stdout); err != nil {
		fmt.Fprintln(os.Stderr, "devbroker:", err)
		os.Exit(1)
	}
}

// run starts the broker and serves until ctx is done, then closes it, which
// flushes its state to the data folder.
func run(ctx context.Context, getenv func(string) string, stdout io.Writer) error {
	cfg, err := config.Parse[settings](getenv)
	if err != nil {
		return err
	}
	if cfg.TrimInterval < 0 || cfg.Keep < 0 {
		return errors.New("DEVBROKER_TRIM_INTERVAL and DEVBROKER_KEEP must not be negative")
	}
	log := logging.New(stdout, cfg.Level, "devbroker")
	addr, dir := cfg.Addr, cfg.DataDir

	host, port, err := splitAddr(addr)
	if err != nil {
		return err
	}
	// kfake listens on 127.0.0.1 by default; ListenFn lets DEVBROKER_ADDR choose
	// the interface. The listener's address is what the broker advertises in
	// metadata, so clients reconnect to exactly this host.
	listen := func(network, _ string) (net.Listener, error) {
		return net.Listen(network, net.JoinHostPort(host, strconv.Itoa(port)))
	}
	c, err := kfake.NewCluster(
		kfake.NumBrokers(1),
		kfake.Ports(port),
		kfake.ListenFn(listen),
		kfake.DataDir(dir),
		kfake.ClusterID("rooms-dev"),
		// Trimmed records leave the disk a whole segment at a time, and
		// the active segment stays: small segments keep what stays small.
		kfake.BrokerConfigs(map[string]string{"log.segment.bytes": strconv.Itoa(segmentBytes)}),
		kfake.WithLogger(slogAdapter{log}),
	)
	if err != nil {
		return fmt.Errorf("start broker on %s with data in %s: %w", addr, dir, err)
	}
	log.Info("broker listening", "addr", c.ListenAddrs()[0], "data_dir", dir)

	// The trim and the reaper (reap.go) run over an admin client of the
	// broker itself.
	admin, err := kgo.NewClient(kgo.SeedBrokers(c.ListenAddrs()[0]))
	if err != nil {
		c.Close()
		return fmt.Errorf("admin client: %w", err)
	}
	reaped := startReaper(ctx, c, admin, reapInterval, log)
	var trimmed sync.WaitGroup
	if cfg.TrimInterval > 0 {
		trimmed.Go(func() { trimLoop(ctx, kadm.NewClient(admin), cfg.TrimInterval, cfg.Keep, log) })
	}

	<-ctx.Done()
	trimmed.Wait()
	reaped.Wait()
	admin.Close()
	c.Close()
	log.Info("broker stopped", "data_dir", dir)
	return nil
}

// splitAddr parses host:port. An empty host means loopback: the broker
// advertises its listener's host, and a wildcard address is not one a client
// can connect to.
func splitAddr(addr string) (string, int, error) {
	host, p, err := net.SplitHostPort(addr)
	if err != nil {
		return "", 0, fmt.Errorf("parse DEVBROKER_ADDR %q: %w", addr, err)
	}
	port, err := strconv.Atoi(p)
	if err != nil || port < 0 || port > 65535 {
		return "", 0, fmt.Errorf("parse DEVBROKER_ADDR %q: %w", addr, errors.New("port must be 0-65535"))
	}
	if host == "" {
		host = "127.0.0.1"
	}
	return host, port, nil
}

// slogAdapter passes the broker's own logs to slog. Its info and debug logs
// describe single requests, so they are logged at debug level.
type slogAdapter struct{ log *slog.Logger }

func (a slogAdapter) Logf(level kfake.LogLevel, format string, args ...any) {
	l := slog.LevelDebug
	switch level {
	case kfake.LogLevelError:
		l = slog.LevelError
	case kfake.LogLevelWarn:
		l = slog.LevelWarn
	case kfake.LogLevelNone:
		return
	}
	// Format only what is logged (its info and debug lines are dropped at
	// the default level).
	if !a.log.Enabled(context.Background(), l) {
		return
	}
	a.log.Log(context.Background(), l, fmt.Sprintf(format, args...), "component", "kfake")
}
