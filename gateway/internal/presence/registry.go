package presence

import (
	"context"
	"encoding/json"
	"fmt"
	"log/slog"
	"strconv"
	"sync"
	"time"

	"github.com/redis/go-redis/v9"

	"rooms/shared/message"
)

// RefreshInterval is how often a Registry re-scores its live entries; well
// under TTL so a short Redis hiccup does not make users vanish.
const RefreshInterval = 10 * time.Second

// Events of a message.Presence entry.
const (
	EventJoin  = "join"
	EventLeave = "leave"
)

// joinScript adds a connection and, when no other live connection of the same
// user is in the room (on any gateway), appends a join entry to the room's
// fan-out stream. Doing both in one script makes "first connection"
// atomic across gateways. Stale entries (of gateways that died) are dropped
// on the way. It reads only the user's own set, so a join costs the same in
// a room of 10 and of 10 000 (reading the whole room for every join and
// leave made a big room filling or emptying stall Redis for everyone: about
// half a second for 1000 clients leaving one room).
//
// KEYS: room set, user set, fan-out stream. ARGV: member, score, now ms,
// payload, stream maxlen, key ttl ms.
var joinScript = redis.NewScript(`
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', '(' .. ARGV[3])
redis.call('ZREMRANGEBYSCORE', KEYS[2], '-inf', '(' .. ARGV[3])
local others = redis.call('ZCARD', KEYS[2])
if redis.call('ZSCORE', KEYS[2], ARGV[1]) then
  others = others - 1
end
redis.call('ZADD', KEYS[1], ARGV[2], ARGV[1])
redis.call('ZADD', KEYS[2], ARGV[2], ARGV[1])
redis.call('PEXPIRE', KEYS[1], ARGV[6])
redis.call('PEXPIRE', KEYS[2], ARGV[6])
if others == 0 then
  redis.call('XADD', KEYS[3], 'MAXLEN', '~', ARGV[5], '*', 'k', 'presence', 'd', ARGV[4])
  return 1
end
return 0
`)

// leaveScript removes a connection and, when the user has no other live
// connection in the room, appends a leave entry.
//
// KEYS: room set, user set, fan-out stream. ARGV: member, now ms, payload,
// stream maxlen.
var leaveScript = redis.NewScript(`
redis.call('ZREM', KEYS[1], ARGV[1])
redis.call('ZREM', KEYS[2], ARGV[1])
if redis.call('ZCOUNT', KEYS[2], ARGV[2], '+inf') > 0 then
  return 0
end
redis.call('XADD', KEYS[3], 'MAXLEN', '~', ARGV[4], '*', 'k', 'presence', 'd', ARGV[3])
return 1
`)

// Registry records the connections of one gateway in Redis, keeps their
// entries fresh, and publishes join, leave and typing events to the rooms'
// fan-out streams. It is safe for concurrent use.
type Registry struct {
	rdb       redis.UniversalClient
	prefix    string
	gatewayID string
	maxLen    int64
	logger    *slog.Logger

	mu    sync.Mutex
	local map[string]Conn // member → connection, this gateway's live entries
}

// NewRegistry returns the registry of gateway gatewayID (unique per running
// instance, without '|').
func NewRegistry(rdb redis.UniversalClient, prefix, gatewayID string, logger *slog.Logger) *Registry {
	return &Registry{
		rdb: rdb, prefix: prefix, gatewayID: gatewayID,
		maxLen: message.DefaultFanoutMaxLen, logger: logger,
		local: map[string]Conn{},
	}
}

// Conn identifies one open connection.
type Conn struct {
	RoomID   int64
	ConnID   string
	UserID   string
	Nickname string
}

func (r *Registry) member(c Conn) string { return Member(r.gatewayID, c.ConnID, c.UserID, c.Nickname) }

// keys are the KEYS of the join and leave scripts for c.
func (r *Registry) keys(c Conn) []string {
	return []string{Key(r.prefix, c.RoomID), UserKey(r.prefix, c.RoomID, c.UserID), message.FanoutStream(r.prefix, c.RoomID)}
}

func (r *Registry) payload(c Conn, event string, now time.Time) string {
	b, _ := json.Marshal(message.Presence{
		RoomID: strconv.FormatInt(c.RoomID, 10), Event: event,
		UserID: c.UserID, Nickname: c.Nickname, TimeCreated: message.FormatTime(now),
	})
	return string(b)
}

// Join records c and reports whether it is the user's first live connection
// to the room, in which case a join event has been published. The entry is
// kept for refreshing even when Redis fails, so it reappears once Redis
// answers again.
func (r *Registry) Join(ctx context.Context, c Conn) (first bool, err error) {
	m := r.member(c)
	r.mu.Lock()
	r.local[m] = c
	r.mu.Unlock()
	now := time.Now()
	n, err := joinScript.Run(ctx, r.rdb, r.keys(c),
		m, now.Add(TTL).UnixMilli(), now.UnixMilli(), r.payload(c, EventJoin, now),
		r.maxLen, (2 * TTL).Milliseconds(),
	).Int()
	if err != nil {
		return false, fmt.Errorf("presence join room %d: %w", c.RoomID, err)
	}
	return n == 1, nil
}

// Leave removes c and reports whether it was the user's last live
// connection to the room, in which case a leave event has been published.
func (r *Registry) Leave(ctx context.Context, c Conn) (last bool, err error) {
	m := r.member(c)
	r.mu.Lock()
	delete(r.local, m)
	r.mu.Unlock()
	now := time.Now()
	n, err := leaveScript.Run(ctx, r.rdb, r.keys(c),
		m, now.UnixMilli(), r.payload(c, EventLeave, now), r.maxLen,
	).Int()
	if err != nil {
		return false, fmt.Errorf("presence leave room %d: %w", c.RoomID, err)
	}
	return n == 1, nil
}

// Typing publishes a typing event of c's user to the room.
func (r *Registry) Typing(ctx context.Context, c Conn) error {
	b, _ := json.Marshal(message.Typing{RoomID: strconv.FormatInt(c.RoomID, 10), UserID: c.UserID, Nickname: c.Nickname})
	err := r.rdb.XAdd(ctx, &redis.XAddArgs{
		Stream: message.FanoutStream(r.prefix, c.RoomID),
		MaxLen: r.maxLen, Approx: true,
		Values: []string{message.FieldKind, message.KindTyping, message.FieldData, string(b)},
	}).Err()
	if err != nil {
		return fmt.Errorf("publish typing in room %d: %w", c.RoomID, err)
	}
	return nil
}

// Refresh re-scores every live entry of this gateway to now+TTL.
func (r *Registry) Refresh(ctx context.Context) error {
	// The lock is held across the round trip so a Leave cannot remove an
	// entry in Redis between our snapshot and our ZADD (which would re-add a
	// closed connection); Leave waits for at most one pipeline.
	r.mu.Lock()
	defer r.mu.Unlock()
	entries := r.local
	if len(entries) == 0 {
		return nil
	}
	score := float64(time.Now().Add(TTL).UnixMilli())
	pipe := r.rdb.Pipeline()
	sets := map[string]bool{} // every room and user set touched, to expire once
	for m, c := range entries {
		for _, k := range []string{Key(r.prefix, c.RoomID), UserKey(r.prefix, c.RoomID, c.UserID)} {
			pipe.ZAdd(ctx, k, redis.Z{Score: score, Member: m})
			sets[k] = true
		}
	}
	for k := range sets {
		pipe.PExpire(ctx, k, 2*TTL)
	}
	if _, err := pipe.Exec(ctx); err != nil {
		return fmt.Errorf("refresh %d presence entries: %w", len(entries), err)
	}
	return nil
}

// Run refreshes the entries every RefreshInterval until ctx ends.
func (r *Registry) Run(ctx context.Context) error {
	t := time.NewTicker(RefreshInterval)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return nil
		case <-t.C:
			rctx, cancel := context.WithTimeout(ctx, 5*time.Second)
			err := r.Refresh(rctx)
			cancel()
			if err != nil && ctx.Err() == nil {
				r.logger.Warn("presence refresh failed", "error", err)
			}
		}
	}
}
