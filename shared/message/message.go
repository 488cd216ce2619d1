// Package message defines the chat message as it travels everywhere (REST,
// both WebSocket protocols, Kafka, Redis), its validation, and the names of
// the topic and streams it travels through.
package message

import (
	"strings"
	"time"
	"unicode"
	"unicode/utf8"
)

// Message is the one wire shape of a chat message. Seq is zero until the
// message is stored (records in Kafka carry none) and is then omitted.
type Message struct {
	ID          string `json:"id"`
	Seq         int64  `json:"seq,omitempty"`
	RoomID      string `json:"room_id"`
	UserID      string `json:"user_id"`
	Nickname    string `json:"nickname"`
	Content     string `json:"content"`
	TimeCreated string `json:"time_created"`
	ClientMsgID string `json:"client_msg_id,omitempty"`
}

// TimeLayout is RFC 3339 in UTC with microseconds, the precision PostgreSQL
// keeps, so a time survives a round trip through the database unchanged.
const TimeLayout = "2006-01-02T15:04:05.000000Z"

// FormatTime renders t the way every time is rendered on the wire.
func FormatTime(t time.Time) string {
	return t.UTC().Truncate(time.Microsecond).Format(TimeLayout)
}

// DefaultMaxContent is the default content limit in characters.
const DefaultMaxContent = 2000

// MaxClientMsgID is the longest client_msg_id accepted, in characters.
const MaxClientMsgID = 64

// Validation error codes, as documented in API.md.
const (
	CodeInvalid = "invalid_message"
	CodeTooLong = "content_too_long"
	CodeRate    = "rate_limited"
	CodeUnavail = "unavailable"
)

// Error is a validation failure with its wire code and a safe message.
type Error struct {
	Code    string
	Message string
}

func (e *Error) Error() string { return e.Code + ": " + e.Message }

// ValidateContent checks content against the rules of API.md: 1..max
// characters, valid UTF-8, no NUL bytes, not only whitespace.
func ValidateContent(content string, max int) error {
	if !utf8.ValidString(content) {
		return &Error{CodeInvalid, "content is not valid UTF-8"}
	}
	if strings.IndexByte(content, 0) >= 0 {
		return &Error{CodeInvalid, "content contains a NUL byte"}
	}
	if strings.TrimFunc(content, unicode.IsSpace) == "" {
		return &Error{CodeInvalid, "content is empty"}
	}
	if utf8.RuneCountInString(content) > max {
		return &Error{CodeTooLong, "content is longer than the limit"}
	}
	return nil
}

// ValidateClientMsgID checks a client_msg_id: 1..64 characters of valid
// UTF-8 without control characters.
func ValidateClientMsgID(id string) error {
	if id == "" {
		return &Error{CodeInvalid, "client_msg_id is required"}
	}
	if !utf8.ValidString(id) || utf8.RuneCountInString(id) > MaxClientMsgID {
		return &Error{CodeInvalid, "client_msg_id must be 1-64 characters"}
	}
	for _, r := range id {
		if unicode.IsControl(r) {
			return &Error{CodeInvalid, "client_msg_id contains a control character"}
		}
	}
	return nil
}
