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
// on the way.
//
// KEYS: presence set, fan-out stream. ARGV: member, score, now ms, user id,
// payload, stream maxlen, key ttl ms.
var joinScript = redis.NewScript(`
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', '(' .. ARGV[3])
local live = redis.call('ZRANGEBYSCORE', KEYS[1], ARGV[3], '+inf')
local first = 1
for _, m in ipairs(live) do
  if m ~= ARGV[1] and string.match(m, '^[^|]*|[^|]*|([^|]*)|') == ARGV[4] then
    first = 0
    break
  end
end
redis.call('ZADD', KEYS[1], ARGV[2], ARGV[1])
redis.call('PEXPIRE', KEYS[1], ARGV[7])
if first == 1 then
  redis.call('XADD', KEYS[2], 'MAXLEN', '~', ARGV[6], '*', 'k', 'presence', 'd', ARGV[5])
end
return first
`)

// leaveScript removes a connection and, when the user has no other live
// connection in the room, appends a leave entry. Same KEYS and ARGV as
// joinScript without score and ttl.
var leaveScript = redis.NewScript(`
redis.call('ZREM', KEYS[1], ARGV[1])
local live = redis.call('ZRANGEBYSCORE', KEYS[1], ARGV[3], '+inf')
for _, m in ipairs(live) do
  if string.match(m, '^[^|]*|[^|]*|([^|]*)|') == ARGV[4] then
    return 0
  end
end
redis.call('XADD', KEYS[2], 'MAXLEN', '~', ARGV[6], '*', 'k', 'presence', 'd', ARGV[5])
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
	local map[string]int64 // member → room id, this gateway's live entries
}

// NewRegistry returns the registry of gateway gatewayID (unique per running
// instance, without '|').
func NewRegistry(rdb redis.UniversalClient, prefix, gatewayID string, logger *slog.Logger) *Registry {
	return &Registry{
		rdb: rdb, prefix: prefix, gatewayID: gatewayID,
		maxLen: message.DefaultFanoutMaxLen, logger: logger,
		local: map[string]int64{},
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
	r.local[m] = c.RoomID
	r.mu.Unlock()
	now := time.Now()
	n, err := joinScript.Run(ctx, r.rdb,
		[]string{Key(r.prefix, c.RoomID), message.FanoutStream(r.prefix, c.RoomID)},
		m, now.Add(TTL).UnixMilli(), now.UnixMilli(), c.UserID, r.payload(c, EventJoin, now),
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
	n, err := leaveScript.Run(ctx, r.rdb,
		[]string{Key(r.prefix, c.RoomID), message.FanoutStream(r.prefix, c.RoomID)},
		m, 0, now.UnixMilli(), c.UserID, r.payload(c, EventLeave, now), r.maxLen,
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
	rooms := map[int64]bool{}
	for m, room := range entries {
		pipe.ZAdd(ctx, Key(r.prefix, room), redis.Z{Score: score, Member: m})
		rooms[room] = true
	}
	for room := range rooms {
		pipe.PExpire(ctx, Key(r.prefix, room), 2*TTL)
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
