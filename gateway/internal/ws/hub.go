package ws

import (
	"sync"

	"rooms/shared/message"
)

const hubShards = 32

// tracker is the part of the fan-out reader the hub drives: a room is
// tracked while it has local sockets.
type tracker interface {
	Track(roomID int64)
	Untrack(roomID int64)
}

// hub is this gateway's registry of open connections, sharded by room so
// that delivery to one room does not contend with joins in another. It
// implements fanout.Sink: each fanned-out message is encoded once per
// protocol and the same bytes are queued to every local socket.
type hub struct {
	tracker tracker
	shards  [hubShards]hubShard
}

type hubShard struct {
	mu    sync.Mutex
	rooms map[int64]map[*conn]struct{}
}

func newHub(t tracker) *hub {
	h := &hub{tracker: t}
	for i := range h.shards {
		h.shards[i].rooms = map[int64]map[*conn]struct{}{}
	}
	return h
}

func (h *hub) shard(roomID int64) *hubShard {
	return &h.shards[uint64(roomID)%hubShards]
}

// add registers c for live delivery. The room becomes tracked under the
// shard lock, so a concurrent remove of the room's last other socket cannot
// untrack it after this add.
func (h *hub) add(c *conn) {
	s := h.shard(c.roomID)
	s.mu.Lock()
	defer s.mu.Unlock()
	set := s.rooms[c.roomID]
	if set == nil {
		set = map[*conn]struct{}{}
		s.rooms[c.roomID] = set
		h.tracker.Track(c.roomID)
	}
	set[c] = struct{}{}
}

func (h *hub) remove(c *conn) {
	s := h.shard(c.roomID)
	s.mu.Lock()
	defer s.mu.Unlock()
	set := s.rooms[c.roomID]
	if _, ok := set[c]; !ok {
		return
	}
	delete(set, c)
	if len(set) == 0 {
		delete(s.rooms, c.roomID)
		h.tracker.Untrack(c.roomID)
	}
}

func (h *hub) room(roomID int64) []*conn {
	s := h.shard(roomID)
	s.mu.Lock()
	defer s.mu.Unlock()
	set := s.rooms[roomID]
	out := make([]*conn, 0, len(set))
	for c := range set {
		out = append(out, c)
	}
	return out
}

// all returns every open connection.
func (h *hub) all() []*conn {
	var out []*conn
	for i := range h.shards {
		s := &h.shards[i]
		s.mu.Lock()
		for _, set := range s.rooms {
			for c := range set {
				out = append(out, c)
			}
		}
		s.mu.Unlock()
	}
	return out
}

// Messages delivers msgs to the room's sockets: each message is encoded
// once per protocol, and each socket gets all of them at once, so that
// they go out in one write (deliver.go).
func (h *hub) Messages(roomID int64, msgs []message.Message) {
	conns := h.room(roomID)
	if len(conns) == 0 || len(msgs) == 0 {
		return
	}
	var v2, legacy []frame
	for _, c := range conns {
		fs := &legacy
		if c.v2 {
			fs = &v2
		}
		if *fs == nil {
			*fs = messageFrames(msgs, c.v2)
		}
		c.deliver(*fs)
	}
}

// messageFrames encodes msgs for one protocol.
func messageFrames(msgs []message.Message, v2 bool) []frame {
	fs := make([]frame, len(msgs))
	for i, m := range msgs {
		fs[i] = frame{seq: m.Seq, data: encodeMessage(m, v2), born: acceptedAt(m)}
	}
	return fs
}

// Presence delivers a join or leave event to the room's sockets.
func (h *hub) Presence(roomID int64, p message.Presence) {
	conns := h.room(roomID)
	var v2, legacy []frame
	for _, c := range conns {
		if c.v2 {
			if v2 == nil {
				v2 = []frame{{data: encodeV2Presence(p)}}
			}
			c.deliver(v2)
		} else {
			if legacy == nil {
				legacy = []frame{{data: encodeLegacyPresence(roomID, p)}}
			}
			c.deliver(legacy)
		}
	}
}

// Typing delivers a typing event to the room's v2 sockets of other users.
func (h *hub) Typing(roomID int64, t message.Typing) {
	conns := h.room(roomID)
	var v2 []frame
	for _, c := range conns {
		if !c.v2 || c.userID == t.UserID {
			continue
		}
		if v2 == nil {
			v2 = []frame{{data: encodeV2Typing(t)}}
		}
		c.deliver(v2)
	}
}
