package store

import (
	"context"
	"log/slog"
	"time"

	"rooms/shared/retry"
)

// fanoutChannel is the PostgreSQL notification channel on which gateways
// whose fan-out reader reads Redis say so (ws.Server's step-aside).
const fanoutChannel = "rooms_fanout_ok"

// NotifyFanoutOK tells the other gateways, through PostgreSQL's NOTIFY,
// that gatewayID's fan-out reader reads Redis.
func (s *Store) NotifyFanoutOK(ctx context.Context, gatewayID string) error {
	_, err := s.pool.Exec(ctx, "SELECT pg_notify($1, $2)", fanoutChannel, gatewayID)
	return err
}

// ListenFanoutOK calls fn with the id of each gateway that reports its
// fan-out reader reading (NotifyFanoutOK), until ctx ends. It holds one
// connection of the pool for LISTEN, and takes a new one, after a capped
// backoff, when that connection fails.
func (s *Store) ListenFanoutOK(ctx context.Context, log *slog.Logger, fn func(gatewayID string)) {
	for try := 1; ctx.Err() == nil; try++ {
		err := s.listen(ctx, fn)
		if ctx.Err() != nil {
			return
		}
		log.Warn("listen for fan-out reports failed", "error", err)
		if retry.Sleep(ctx, retry.Backoff(100*time.Millisecond, 5*time.Second, try)) != nil {
			return
		}
	}
}

func (s *Store) listen(ctx context.Context, fn func(string)) error {
	conn, err := s.pool.Acquire(ctx)
	if err != nil {
		return err
	}
	// A connection that was listening goes back closed, not to the pool.
	defer func() {
		_ = conn.Conn().Close(context.Background())
		conn.Release()
	}()
	if _, err := conn.Exec(ctx, "LISTEN "+fanoutChannel); err != nil {
		return err
	}
	for {
		n, err := conn.Conn().WaitForNotification(ctx)
		if err != nil {
			return err
		}
		fn(n.Payload)
	}
}
