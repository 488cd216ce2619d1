package ws

import (
	"encoding/json"
	"strings"
	"testing"
	"unicode/utf8"

	"rooms/shared/message"
)

// fuzzMaxContent is a small content limit, so the fuzzer reaches the
// too-long branch with short inputs.
const fuzzMaxContent = 16

// checkRefusal checks what both protocols promise about a refused frame:
// a documented code, a message, a client_msg_id only when it is valid, and
// an error frame that encodes to JSON a client can read back.
func checkRefusal(t *testing.T, rerr *requestError) {
	t.Helper()
	if rerr.Code != message.CodeInvalid && rerr.Code != message.CodeTooLong {
		t.Fatalf("undocumented code %q", rerr.Code)
	}
	if rerr.Message == "" {
		t.Fatal("error without a message")
	}
	if rerr.ClientMsgID != "" {
		if err := message.ValidateClientMsgID(rerr.ClientMsgID); err != nil {
			t.Fatalf("error echoes an invalid client_msg_id %q: %v", rerr.ClientMsgID, err)
		}
	}
	var back errorFrame
	if err := json.Unmarshal(encodeError(rerr.Code, rerr.Message, rerr.ClientMsgID), &back); err != nil {
		t.Fatalf("error frame does not decode: %v", err)
	}
	if back.Type != "error" || back.Code != rerr.Code || back.ClientMsgID != rerr.ClientMsgID {
		t.Fatalf("error frame round trip: %+v", back)
	}
}

func FuzzParseLegacy(f *testing.F) {
	for _, s := range []string{"hi", "", " \t\n", "a\x00b", "a\xffb", "\u00a0", strings.Repeat("é", fuzzMaxContent+1),
		"'; DROP TABLE messages; --", "{\"type\":\"send\"}", "\u2028\u2029"} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		req, rerr := parseLegacy(data, fuzzMaxContent)
		if rerr != nil {
			checkRefusal(t, rerr)
			if rerr.ClientMsgID != "" {
				t.Fatalf("legacy error with a client_msg_id %q", rerr.ClientMsgID)
			}
			if message.ValidateContent(string(data), fuzzMaxContent) == nil {
				t.Fatalf("valid content %q refused: %+v", data, rerr)
			}
			return
		}
		if req.Type != "send" || req.Content != string(data) || req.ClientMsgID != "" {
			t.Fatalf("accepted %q as %+v", data, req)
		}
		if err := message.ValidateContent(req.Content, fuzzMaxContent); err != nil {
			t.Fatalf("accepted invalid content %q: %v", req.Content, err)
		}
	})
}

func FuzzParseV2(f *testing.F) {
	for _, s := range []string{
		`{"type":"send","content":"hi","client_msg_id":"c-1"}`,
		`{"type":"send","content":"hi"}`,
		`{"type":"send","client_msg_id":"c"}`,
		`{"type":"send","content":"a\u0000b","client_msg_id":"c"}`,
		`{"type":"send","content":"   ","client_msg_id":"c"}`,
		`{"type":"send","content":"` + strings.Repeat("é", fuzzMaxContent+1) + `","client_msg_id":"c"}`,
		`{"type":"send","content":"x","client_msg_id":"` + strings.Repeat("a", 65) + `"}`,
		`{"type":"send","content":"x","client_msg_id":"a\u0007"}`,
		"{\"type\":\"send\",\"content\":\"a\xffb\",\"client_msg_id\":\"c\"}",
		`{"type":"send","content":5,"client_msg_id":"c"}`,
		`{"type":"send","content":"\ud800","client_msg_id":"c"}`,
		`{"type":"typing"}`, `{"type":"ping"}`, `{"type":"dance"}`, `{}`, `null`, `[]`, `"send"`, `{`, ``,
		`{"type":"send","content":"hi","client_msg_id":"c","type":"ping"}`,
		`{"TYPE":"send","Content":"hi","Client_Msg_ID":"c"}`,
	} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		req, rerr := parseV2(data, fuzzMaxContent)
		if rerr != nil {
			checkRefusal(t, rerr)
			return
		}
		if !utf8.Valid(data) || !json.Valid(data) {
			t.Fatalf("accepted a frame that is not valid UTF-8 JSON: %q", data)
		}
		switch req.Type {
		case "send":
			if err := message.ValidateContent(req.Content, fuzzMaxContent); err != nil {
				t.Fatalf("accepted invalid content %q: %v", req.Content, err)
			}
			if err := message.ValidateClientMsgID(req.ClientMsgID); err != nil {
				t.Fatalf("accepted invalid client_msg_id %q: %v", req.ClientMsgID, err)
			}
			// What is accepted is exactly what the client sent.
			var f struct {
				Content     string `json:"content"`
				ClientMsgID string `json:"client_msg_id"`
			}
			if err := json.Unmarshal(data, &f); err != nil || f.Content != req.Content || f.ClientMsgID != req.ClientMsgID {
				t.Fatalf("accepted %+v from %q (decoded %+v, %v)", req, data, f, err)
			}
		case "typing", "ping":
			if req.Content != "" || req.ClientMsgID != "" {
				t.Fatalf("%s request with fields %+v", req.Type, req)
			}
		default:
			t.Fatalf("accepted unknown type %q", req.Type)
		}
	})
}
