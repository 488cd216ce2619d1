// Package presence records which users have an open WebSocket in which room,
// across every gateway instance, in Redis.
//
// Each room has one sorted set, Key(prefix, roomID). A member is one open
// connection, "gatewayID|connID|userID|nickname" (none of these contain '|'),
// and its score is the time in Unix milliseconds after which the entry is
// stale. The owning gateway refreshes its entries well before they go stale,
// so the connections of a gateway that died stop being listed within the TTL.
// Each user in a room also has a sorted set of their own connections there,
// UserKey(prefix, roomID, userID), with the same members and scores: whether
// a join or a leave is the user's first or last connection is read from it,
// at a cost that does not grow with the room.
package presence

import (
	"context"
	"fmt"
	"sort"
	"strconv"
	"strings"
	"time"

	"github.com/redis/go-redis/v9"
)

// TTL is how long an entry stays live without a refresh.
const TTL = 30 * time.Second

// Key is the sorted set holding the connections of roomID.
func Key(prefix string, roomID int64) string {
	return prefix + "presence:" + strconv.FormatInt(roomID, 10)
}

// UserKey is the sorted set holding the connections of userID in roomID.
func UserKey(prefix string, roomID int64, userID string) string {
	return Key(prefix, roomID) + ":user:" + userID
}

// Member encodes one connection as a sorted-set member.
func Member(gatewayID, connID, userID, nickname string) string {
	return gatewayID + "|" + connID + "|" + userID + "|" + nickname
}

// Client is a user with at least one live connection in a room.
type Client struct {
	UserID   string `json:"user_id"`
	Nickname string `json:"nickname"`
}

// List returns the distinct users with a live connection in roomID, ordered
// by user id.
func List(ctx context.Context, rdb redis.Cmdable, prefix string, roomID int64, now time.Time) ([]Client, error) {
	members, err := rdb.ZRangeByScore(ctx, Key(prefix, roomID), &redis.ZRangeBy{
		Min: strconv.FormatInt(now.UnixMilli(), 10),
		Max: "+inf",
	}).Result()
	if err != nil {
		return nil, fmt.Errorf("list presence of room %d: %w", roomID, err)
	}
	seen := map[string]bool{}
	clients := []Client{}
	for _, m := range members {
		parts := strings.SplitN(m, "|", 4)
		if len(parts) != 4 || seen[parts[2]] {
			continue
		}
		seen[parts[2]] = true
		clients = append(clients, Client{UserID: parts[2], Nickname: parts[3]})
	}
	sort.Slice(clients, func(i, j int) bool {
		a, _ := strconv.ParseInt(clients[i].UserID, 10, 64)
		b, _ := strconv.ParseInt(clients[j].UserID, 10, 64)
		return a < b
	})
	return clients, nil
}
