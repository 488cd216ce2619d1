package retry_test

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"syscall"
	"testing"

	"github.com/jackc/pgx/v5/pgconn"
	"github.com/redis/go-redis/v9"

	"rooms/shared/retry"
)

func TestTransient(t *testing.T) {
	refused := &net.OpError{Op: "dial", Net: "tcp", Err: &net.AddrError{Err: "x"}}
	tests := []struct {
		name string
		err  error
		want bool
	}{
		{"nil", nil, false},
		{"plain", errors.New("plain"), false},
		{"deadline", context.DeadlineExceeded, true},
		{"wrapped deadline", fmt.Errorf("x: %w", context.DeadlineExceeded), true},
		{"canceled by the caller", context.Canceled, false},
		{"idle in transaction timeout", &pgconn.PgError{Code: "25P03"}, true},
		{"admin shutdown", &pgconn.PgError{Code: "57P01"}, true},
		{"too many connections", &pgconn.PgError{Code: "53300"}, true},
		{"statement timeout", &pgconn.PgError{Code: "57014"}, true},
		{"unique violation", &pgconn.PgError{Code: "23505"}, false},
		{"syntax error", &pgconn.PgError{Code: "42601"}, false},
		{"dial error", refused, true},
		{"refused", fmt.Errorf("x: %w", syscall.ECONNREFUSED), true},
		{"eof", io.EOF, true},
		{"redis pool timeout", redis.ErrPoolTimeout, true},
		{"redis nil", redis.Nil, false},
		{"redis loading", redisError("LOADING Redis is loading the dataset in memory"), true},
		{"redis wrong type", redisError("WRONGTYPE Operation against a key holding the wrong kind of value"), false},
	}
	for _, tt := range tests {
		if got := retry.Transient(tt.err); got != tt.want {
			t.Errorf("%s: Transient(%v) = %v, want %v", tt.name, tt.err, got, tt.want)
		}
	}
}

// redisError is an error as go-redis returns a server's error reply.
type redisError string

func (e redisError) Error() string { return string(e) }
func (redisError) RedisError()     {}
