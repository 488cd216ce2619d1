package message

// A fan-out stream entry has two fields: FieldKind, one of the Kind values,
// and FieldData, the JSON of the payload for that kind:
//
//	KindMessage  → Message (with its seq), appended by workers after storing
//	KindPresence → Presence, appended by gateways on a user's first join / last leave
//	KindTyping   → Typing, appended by gateways
//
// Workers may append a stored message more than once (a batch is re-broadcast
// when a worker restarts before storing its offsets), so readers de-duplicate
// by seq per room and repair a seq jump from PostgreSQL.
const (
	FieldKind = "k"
	FieldData = "d"

	KindMessage  = "message"
	KindPresence = "presence"
	KindTyping   = "typing"
)

// Presence is the payload of a KindPresence entry.
type Presence struct {
	RoomID   string `json:"room_id"`
	Event    string `json:"event"` // "join" or "leave"
	UserID   string `json:"user_id"`
	Nickname string `json:"nickname"`
	// TimeCreated lets the legacy protocol render the event message-shaped.
	TimeCreated string `json:"time_created"`
}

// Typing is the payload of a KindTyping entry.
type Typing struct {
	RoomID   string `json:"room_id"`
	UserID   string `json:"user_id"`
	Nickname string `json:"nickname"`
}

// DefaultFanoutMaxLen is the approximate cap (XADD MAXLEN ~) of each stream.
const DefaultFanoutMaxLen = 10000
