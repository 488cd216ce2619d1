package retry

import (
	"context"
	"errors"
	"io"
	"net"
	"strings"
	"syscall"

	"github.com/jackc/pgx/v5/pgconn"
	"github.com/redis/go-redis/v9"
)

// Transient reports whether err means a dependency (PostgreSQL or Redis)
// cannot answer right now rather than that the request itself is wrong:
// the server unreachable, restarting or shutting down, out of connections,
// a serialization failure or deadlock, or a timeout. The worker retries
// such errors without limit; the gateway answers them 503 unavailable.
func Transient(err error) bool {
	if err == nil {
		return false
	}
	var pgErr *pgconn.PgError
	if errors.As(err, &pgErr) {
		switch {
		case strings.HasPrefix(pgErr.Code, "08"), // connection exception
			strings.HasPrefix(pgErr.Code, "53"),  // insufficient resources (too many connections)
			strings.HasPrefix(pgErr.Code, "57P"), // admin/crash shutdown, cannot connect now
			pgErr.Code == "40001",                // serialization_failure
			pgErr.Code == "40P01",                // deadlock_detected
			pgErr.Code == "55P03",                // lock_not_available
			pgErr.Code == "25P03",                // idle_in_transaction_session_timeout (config.PostgresSessionDefaults)
			pgErr.Code == "57014":                // query_canceled (statement timeout)
			return true
		}
		return false
	}
	var connErr *pgconn.ConnectError
	var netErr net.Error
	switch {
	case errors.Is(err, context.DeadlineExceeded),
		pgconn.Timeout(err),
		pgconn.SafeToRetry(err),
		errors.As(err, &connErr),
		errors.As(err, &netErr),
		errors.Is(err, syscall.ECONNREFUSED),
		errors.Is(err, syscall.ECONNRESET),
		errors.Is(err, syscall.EPIPE),
		errors.Is(err, io.EOF),
		errors.Is(err, io.ErrUnexpectedEOF),
		errors.Is(err, redis.ErrPoolTimeout),
		errors.Is(err, redis.ErrPoolExhausted):
		return true
	}
	var redisErr redis.Error
	if errors.As(err, &redisErr) {
		// A Redis server still loading its data, a replica without its
		// primary, a cluster mid-failover.
		for _, p := range []string{"LOADING ", "MASTERDOWN ", "TRYAGAIN ", "CLUSTERDOWN "} {
			if strings.HasPrefix(redisErr.Error(), p) {
				return true
			}
		}
		return false
	}
	// pgx reports a connection closed under a running query as a plain
	// error; treat it like the others of its kind.
	msg := err.Error()
	return strings.Contains(msg, "conn closed") || strings.Contains(msg, "connection reset") ||
		strings.Contains(msg, "unexpected EOF")
}
