package message

import "strconv"

// DefaultTopic is the Kafka topic chat messages are produced to.
const DefaultTopic = "chat.messages"

// FanoutShards is the number of Redis fan-out streams. A room always maps to
// the same stream, so per-room order in a stream is the order of seq.
const FanoutShards = 16

// FanoutStream is the Redis stream key, under prefix, that carries the
// messages and events of roomID.
func FanoutStream(prefix string, roomID int64) string {
	return prefix + "fanout:" + strconv.FormatInt(roomID%FanoutShards, 10)
}

// FanoutStreams lists every fan-out stream key under prefix.
func FanoutStreams(prefix string) []string {
	keys := make([]string, FanoutShards)
	for i := range keys {
		keys[i] = prefix + "fanout:" + strconv.Itoa(i)
	}
	return keys
}
