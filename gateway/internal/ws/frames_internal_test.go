package ws

import "testing"

// A refused rooms.v2 frame says what is wrong with it, and carries the
// client_msg_id only for a send whose own client_msg_id is valid.
func TestParseV2Refusals(t *testing.T) {
	for _, c := range []struct {
		frame, message, clientMsgID string
	}{
		{`not json`, "frame is not a JSON object", ""},
		{`[]`, "frame is not a JSON object", ""},
		{`"send"`, "frame is not a JSON object", ""},
		{` null `, "frame is not a JSON object", ""},
		{`{"type":"send","content":5,"client_msg_id":"c-1"}`, "content must be a string", "c-1"},
		{`{"type":"send","content":{"a":1},"client_msg_id":"c-2"}`, "content must be a string", "c-2"},
		{`{"type":"send","content":"hi","client_msg_id":7}`, "client_msg_id must be a string", ""},
		{`{"type":"send","content":5,"client_msg_id":""}`, "content must be a string", ""},
		{`{"type":5,"content":"hi","client_msg_id":"c-3"}`, "type must be a string", ""},
		{`{"type":"ping","content":5}`, "content must be a string", ""},
		{`{}`, "unknown frame type", ""},
		{`{"type":"send","content":"hi"}`, "client_msg_id is required", ""},
		{`{"type":"send","client_msg_id":"c-4"}`, "content is required", "c-4"},
	} {
		req, rerr := parseV2([]byte(c.frame), 2000)
		if rerr == nil {
			t.Errorf("%s: accepted as %+v", c.frame, req)
			continue
		}
		if rerr.Code != "invalid_message" || rerr.Message != c.message || rerr.ClientMsgID != c.clientMsgID {
			t.Errorf("%s: refused with %+v, want invalid_message %q with client_msg_id %q", c.frame, *rerr, c.message, c.clientMsgID)
		}
	}
}
