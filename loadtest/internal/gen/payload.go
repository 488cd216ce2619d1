package gen

import (
	"bytes"
	"encoding/json"
	"strconv"
	"strings"
)

// Payload is what a benchmark message carries in its content: the run it
// belongs to, the step it was sent in, its intended send time, its sender
// (index within the room) and that sender's counter. Its text form is
//
//	bench|<run>|<step>|<intended unix ns>|<sender>|<n>|<padding>
type Payload struct {
	Run      string
	Step     int
	Intended int64
	Sender   int
	N        int
}

const payloadPrefix = "bench|"

// AppendContent appends p's text form, padded with 'x' to at least size
// bytes.
func (p Payload) AppendContent(b []byte, size int) []byte {
	start := len(b)
	b = append(b, payloadPrefix...)
	b = append(b, p.Run...)
	b = append(b, '|')
	b = strconv.AppendInt(b, int64(p.Step), 10)
	b = append(b, '|')
	b = strconv.AppendInt(b, p.Intended, 10)
	b = append(b, '|')
	b = strconv.AppendInt(b, int64(p.Sender), 10)
	b = append(b, '|')
	b = strconv.AppendInt(b, int64(p.N), 10)
	b = append(b, '|')
	for len(b)-start < size {
		b = append(b, 'x')
	}
	return b
}

// ParseContent parses a content written by AppendContent; ok is false for
// any other content.
func ParseContent(s string) (p Payload, ok bool) {
	rest, found := strings.CutPrefix(s, payloadPrefix)
	if !found {
		return p, false
	}
	var f [6]string
	for i := range 5 {
		var cut bool
		f[i], rest, cut = strings.Cut(rest, "|")
		if !cut {
			return p, false
		}
	}
	var err error
	p.Run = f[0]
	if p.Step, err = strconv.Atoi(f[1]); err != nil {
		return p, false
	}
	if p.Intended, err = strconv.ParseInt(f[2], 10, 64); err != nil {
		return p, false
	}
	if p.Sender, err = strconv.Atoi(f[3]); err != nil {
		return p, false
	}
	if p.N, err = strconv.Atoi(f[4]); err != nil {
		return p, false
	}
	return p, true
}

// AppendClientMsgID appends the client_msg_id of a send: "<n>.<step>.<intended
// unix ns>", so that its ack names the message and its intended time.
func AppendClientMsgID(b []byte, n, step int, intended int64) []byte {
	b = strconv.AppendInt(b, int64(n), 10)
	b = append(b, '.')
	b = strconv.AppendInt(b, int64(step), 10)
	b = append(b, '.')
	return strconv.AppendInt(b, intended, 10)
}

// ParseClientMsgID parses a client_msg_id written by AppendClientMsgID.
func ParseClientMsgID(s string) (n, step int, intended int64, ok bool) {
	a, rest, ok1 := strings.Cut(s, ".")
	b, c, ok2 := strings.Cut(rest, ".")
	if !ok1 || !ok2 {
		return 0, 0, 0, false
	}
	var err1, err2, err3 error
	n, err1 = strconv.Atoi(a)
	step, err2 = strconv.Atoi(b)
	intended, err3 = strconv.ParseInt(c, 10, 64)
	return n, step, intended, err1 == nil && err2 == nil && err3 == nil
}

// AppendSendFrame appends the rooms.v2 send frame of p. The content and the
// client_msg_id need no JSON escaping (digits, letters, '|', '.', 'x').
func AppendSendFrame(b []byte, p Payload, size int) []byte {
	b = append(b, `{"type":"send","content":"`...)
	b = p.AppendContent(b, size)
	b = append(b, `","client_msg_id":"`...)
	b = AppendClientMsgID(b, p.N, p.Step, p.Intended)
	return append(b, `"}`...)
}

// Frame is the part of a server frame the benchmark looks at.
type Frame struct {
	Type        string `json:"type"`
	Seq         int64  `json:"seq"`
	Content     string `json:"content"`
	ClientMsgID string `json:"client_msg_id"`
	Code        string `json:"code"`
	LastSeq     int64  `json:"last_seq"`
	Recovered   bool   `json:"recovered"`
}

// ParseFrame decodes a server frame. Message and ack frames, the hot ones,
// are picked apart without a full JSON decode when their fields need no
// unescaping; anything else goes through encoding/json.
func ParseFrame(data []byte) (Frame, error) {
	var f Frame
	switch {
	case bytes.HasPrefix(data, []byte(`{"type":"message",`)):
		f.Type = "message"
		seq, okSeq := numberField(data, `"seq":`)
		content, okContent := stringField(data, `"content":"`)
		if okSeq && okContent {
			f.Seq, f.Content = seq, content
			f.ClientMsgID, _ = stringField(data, `"client_msg_id":"`)
			return f, nil
		}
	case bytes.HasPrefix(data, []byte(`{"type":"ack",`)):
		f.Type = "ack"
		if id, ok := stringField(data, `"client_msg_id":"`); ok {
			f.ClientMsgID = id
			return f, nil
		}
	}
	f = Frame{}
	err := json.Unmarshal(data, &f)
	return f, err
}

// numberField reads the integer after key.
func numberField(data []byte, key string) (int64, bool) {
	i := bytes.Index(data, []byte(key))
	if i < 0 {
		return 0, false
	}
	rest := data[i+len(key):]
	j := 0
	for j < len(rest) && rest[j] >= '0' && rest[j] <= '9' {
		j++
	}
	v, err := strconv.ParseInt(string(rest[:j]), 10, 64)
	return v, err == nil
}

// stringField reads the string after key (which ends with its opening
// quote); ok is false when the string has escapes.
func stringField(data []byte, key string) (string, bool) {
	i := bytes.Index(data, []byte(key))
	if i < 0 {
		return "", false
	}
	rest := data[i+len(key):]
	j := bytes.IndexAny(rest, "\"\\")
	if j < 0 || rest[j] != '"' {
		return "", false
	}
	return string(rest[:j]), true
}
