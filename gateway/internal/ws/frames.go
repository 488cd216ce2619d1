package ws

import (
	"bytes"
	"encoding/json"
	"errors"
	"strconv"
	"unicode/utf8"

	"github.com/google/uuid"

	"rooms/shared/message"
)

// Subprotocol is the WebSocket subprotocol of the versioned protocol; a
// connection that does not request it speaks the legacy protocol.
const Subprotocol = "rooms.v2"

// Close codes sent by the server (see API.md).
const (
	CloseGoingAway      = 1001
	ClosePolicy         = 1008
	CloseTooBig         = 1009
	CloseInternal       = 1011
	CloseTryAgainLater  = 1013
	CloseTokenExpired   = 4001
	CloseTooSlow        = 4008
	CloseRateLimited    = 4029
	legacyJoinedContent = "joined the room"
	legacyLeftContent   = "left the room"
)

type welcomeFrame struct {
	Type      string `json:"type"`
	RoomID    string `json:"room_id"`
	UserID    string `json:"user_id"`
	Nickname  string `json:"nickname"`
	LastSeq   int64  `json:"last_seq"`
	Recovered bool   `json:"recovered"`
}

type messageFrame struct {
	Type string `json:"type"`
	message.Message
}

type ackFrame struct {
	Type        string `json:"type"`
	ClientMsgID string `json:"client_msg_id"`
}

type errorFrame struct {
	Type        string `json:"type"`
	Code        string `json:"code"`
	Message     string `json:"message"`
	ClientMsgID string `json:"client_msg_id,omitempty"`
}

type presenceFrame struct {
	Type     string `json:"type"`
	Event    string `json:"event"`
	UserID   string `json:"user_id"`
	Nickname string `json:"nickname"`
}

type typingFrame struct {
	Type     string `json:"type"`
	UserID   string `json:"user_id"`
	Nickname string `json:"nickname"`
}

// clientFrame is any v2 client frame.
type clientFrame struct {
	Type        string  `json:"type"`
	Content     *string `json:"content"`
	ClientMsgID *string `json:"client_msg_id"`
}

var pongBytes = []byte(`{"type":"pong"}`)

// request is a client frame that passed every check: a send with valid
// content (and, in v2, a valid client_msg_id), a typing event or a ping.
type request struct {
	Type        string // "send", "typing" or "ping"
	Content     string
	ClientMsgID string
}

// requestError is a refused client frame: the error frame to answer, with
// the client_msg_id when the frame carried a valid one.
type requestError struct {
	Code        string
	Message     string
	ClientMsgID string
}

func invalid(msg, clientMsgID string) *requestError {
	return &requestError{Code: message.CodeInvalid, Message: msg, ClientMsgID: clientMsgID}
}

// contentError turns a message.ValidateContent failure into its error frame.
func contentError(err error, clientMsgID string) *requestError {
	var me *message.Error
	if errors.As(err, &me) {
		return &requestError{Code: me.Code, Message: me.Message, ClientMsgID: clientMsgID}
	}
	return invalid("invalid message", clientMsgID)
}

// parseLegacy checks a legacy client frame, whose whole text is the
// content, against the content rules (maxContent characters).
func parseLegacy(data []byte, maxContent int) (request, *requestError) {
	content := string(data)
	if err := message.ValidateContent(content, maxContent); err != nil {
		return request{}, contentError(err, "")
	}
	return request{Type: "send", Content: content}, nil
}

// notAnObject answers a rooms.v2 frame that is not a JSON object.
const notAnObject = "frame is not a JSON object"

// parseV2 decodes and checks a rooms.v2 client frame. A frame that is not
// valid UTF-8 is refused as a whole: encoding/json would otherwise replace
// the invalid bytes and accept content the client never sent.
func parseV2(data []byte, maxContent int) (request, *requestError) {
	if !utf8.Valid(data) {
		return request{}, invalid("frame is not valid UTF-8", "")
	}
	var f clientFrame
	if err := json.Unmarshal(data, &f); err != nil {
		var typeErr *json.UnmarshalTypeError
		if !errors.As(err, &typeErr) || typeErr.Field == "" {
			return request{}, invalid(notAnObject, "")
		}
		// An object with a field of the wrong type (every field is a
		// string). encoding/json still decodes the other fields, so a send
		// whose client_msg_id is fine gets it back: the client knows which
		// message was refused, and may send it again corrected.
		id := ""
		if f.Type == "send" && f.ClientMsgID != nil && typeErr.Field != "client_msg_id" && message.ValidateClientMsgID(*f.ClientMsgID) == nil {
			id = *f.ClientMsgID
		}
		return request{}, invalid(typeErr.Field+" must be a string", id)
	}
	if bytes.HasPrefix(bytes.TrimLeft(data, " \t\r\n"), []byte("null")) {
		// null decodes into the struct as nothing at all.
		return request{}, invalid(notAnObject, "")
	}
	switch f.Type {
	case "send":
		if f.ClientMsgID == nil {
			return request{}, invalid("client_msg_id is required", "")
		}
		if err := message.ValidateClientMsgID(*f.ClientMsgID); err != nil {
			return request{}, contentError(err, "")
		}
		if f.Content == nil {
			return request{}, invalid("content is required", *f.ClientMsgID)
		}
		if err := message.ValidateContent(*f.Content, maxContent); err != nil {
			return request{}, contentError(err, *f.ClientMsgID)
		}
		return request{Type: "send", Content: *f.Content, ClientMsgID: *f.ClientMsgID}, nil
	case "typing", "ping":
		return request{Type: f.Type}, nil
	default:
		return request{}, invalid("unknown frame type", "")
	}
}

func mustJSON(v any) []byte {
	b, err := json.Marshal(v)
	if err != nil {
		panic(err) // only fixed wire types are encoded here
	}
	return b
}

func encodeV2Message(m message.Message) []byte {
	return mustJSON(messageFrame{Type: "message", Message: m})
}

func encodeLegacyMessage(m message.Message) []byte { return mustJSON(m) }

// encodeMessage encodes m for a socket of either protocol.
func encodeMessage(m message.Message, v2 bool) []byte {
	if v2 {
		return encodeV2Message(m)
	}
	return encodeLegacyMessage(m)
}

func encodeError(code, msg, clientMsgID string) []byte {
	return mustJSON(errorFrame{Type: "error", Code: code, Message: msg, ClientMsgID: clientMsgID})
}

func encodeAck(clientMsgID string) []byte {
	return mustJSON(ackFrame{Type: "ack", ClientMsgID: clientMsgID})
}

// encodeLegacyHistory renders the legacy first frame: msgs (ascending) as a
// JSON array, newest first.
func encodeLegacyHistory(msgs []message.Message) []byte {
	rev := make([]message.Message, len(msgs))
	for i, m := range msgs {
		rev[len(msgs)-1-i] = m
	}
	return mustJSON(rev)
}

func encodeV2Presence(p message.Presence) []byte {
	return mustJSON(presenceFrame{Type: "presence", Event: p.Event, UserID: p.UserID, Nickname: p.Nickname})
}

// encodeLegacyPresence renders a join or leave as the message-shaped object
// legacy clients expect: no seq, a fresh id.
func encodeLegacyPresence(roomID int64, p message.Presence) []byte {
	content := legacyJoinedContent
	if p.Event == "leave" {
		content = legacyLeftContent
	}
	id, err := uuid.NewV7()
	if err != nil {
		id = uuid.New()
	}
	return mustJSON(message.Message{
		ID: id.String(), RoomID: strconv.FormatInt(roomID, 10), UserID: p.UserID,
		Nickname: p.Nickname, Content: content, TimeCreated: p.TimeCreated,
	})
}

func encodeV2Typing(t message.Typing) []byte {
	return mustJSON(typingFrame{Type: "typing", UserID: t.UserID, Nickname: t.Nickname})
}
