package hostile_test

import (
	"encoding/json"
	"net/url"
	"strconv"
	"strings"
	"testing"

	"github.com/fasthttp/websocket"
)

// TestHostileFrames sends frames no honest client sends, in both
// protocols, and checks each gets its documented answer while the
// connection (and the process) stays up, except for the oversized frame,
// which closes with 1009.
func TestHostileFrames(t *testing.T) {
	s := start(t, opts{})
	sess := s.user("mallory")
	room := s.room(sess.AccessToken, "general")

	v2 := s.mustWS(room, sess.AccessToken, true)
	if f := v2.next(); f.Type != "welcome" {
		t.Fatalf("first frame %+v", f)
	}
	for _, tt := range []struct {
		name, frame, code, cmid string
	}{
		{"invalid UTF-8 in content", "{\"type\":\"send\",\"content\":\"a\xff\xfeb\",\"client_msg_id\":\"c1\"}", "invalid_message", ""},
		{"invalid UTF-8 outside strings", "{\"type\":\"send\",\xc0\"content\":\"x\",\"client_msg_id\":\"c1\"}", "invalid_message", ""},
		{"NUL escape in content", `{"type":"send","content":"a\u0000b","client_msg_id":"c2"}`, "invalid_message", "c2"},
		{"lone surrogate escape", `{"type":"send","content":"\ud800","client_msg_id":"c3"}`, "", ""},
		{"only whitespace", `{"type":"send","content":" \u00a0\u2028\t","client_msg_id":"c4"}`, "invalid_message", "c4"},
		{"content too long", `{"type":"send","content":"` + strings.Repeat("ü", 2001) + `","client_msg_id":"c5"}`, "content_too_long", "c5"},
		{"content of the wrong type", `{"type":"send","content":{"$gt":""},"client_msg_id":"c6"}`, "invalid_message", "c6"},
		{"control character in client_msg_id", `{"type":"send","content":"x","client_msg_id":"a\u0000"}`, "invalid_message", ""},
		{"client_msg_id too long", `{"type":"send","content":"x","client_msg_id":"` + strings.Repeat("i", 65) + `"}`, "invalid_message", ""},
		{"deeply nested JSON", strings.Repeat("[", 5000) + strings.Repeat("]", 5000), "invalid_message", ""},
		{"not JSON", "\x00\x01\x02", "invalid_message", ""},
		{"JSON null", "null", "invalid_message", ""},
		{"unknown type", `{"type":"admin","cmd":"drop"}`, "invalid_message", ""},
	} {
		t.Run("v2 "+tt.name, func(t *testing.T) {
			v2.write([]byte(tt.frame))
			f := v2.next()
			if tt.code == "" {
				// A lone surrogate decodes to U+FFFD: valid content, but the
				// message is only acked once stored; no worker runs here,
				// so either an ack or nothing. Skip past with a ping.
				v2.write([]byte(`{"type":"ping"}`))
				for f.Type != "pong" {
					f = v2.next()
				}
				return
			}
			if f.Type != "error" || f.Code != tt.code || f.ClientMsgID != tt.cmid || f.Message == "" {
				t.Fatalf("got %+v, want error %s with client_msg_id %q", f, tt.code, tt.cmid)
			}
		})
	}
	// Binary frames are read like text frames: same checks.
	if err := v2.c.WriteMessage(websocket.BinaryMessage, []byte("\xff\xfe")); err != nil {
		t.Fatal(err)
	}
	if f := v2.next(); f.Type != "error" || f.Code != "invalid_message" {
		t.Fatalf("binary garbage: %+v", f)
	}

	legacy := s.mustWS(room, sess.AccessToken, false)
	legacy.read() // history
	for _, tt := range []struct{ name, frame, code string }{
		{"invalid UTF-8", "caf\xe9", "invalid_message"},
		{"NUL byte", "a\x00b", "invalid_message"},
		{"only whitespace", " \t\r\n", "invalid_message"},
		{"too long", strings.Repeat("ж", 2001), "content_too_long"},
	} {
		t.Run("legacy "+tt.name, func(t *testing.T) {
			legacy.write([]byte(tt.frame))
			for {
				b := legacy.read()
				var f frame
				if err := json.Unmarshal(b, &f); err != nil {
					t.Fatalf("frame %q: %v", b, err)
				}
				if f.Type == "" {
					continue // a presence message
				}
				if f.Type != "error" || f.Code != tt.code || f.Message == "" {
					t.Fatalf("got %s, want error %s", b, tt.code)
				}
				return
			}
		})
	}

	// Over 16 KiB: closed with 1009, in both protocols; the others stay.
	big := s.mustWS(room, sess.AccessToken, true)
	big.next()
	big.write([]byte(`{"type":"send","content":"` + strings.Repeat("x", 17<<10) + `","client_msg_id":"big"}`))
	if code := big.closeCode(); code != 1009 {
		t.Fatalf("oversized v2 frame: close code %d, want 1009", code)
	}
	legacy.write([]byte(strings.Repeat("y", 17<<10)))
	if code := legacy.closeCode(); code != 1009 {
		t.Fatalf("oversized legacy frame: close code %d, want 1009", code)
	}
	v2.write([]byte(`{"type":"ping"}`))
	for f := v2.next(); f.Type != "pong"; f = v2.next() {
	}
}

// TestSQLMetacharactersStoredVerbatim stores room names and messages full
// of SQL, LIKE and format metacharacters through the whole pipeline
// (gateway → Kafka → worker → PostgreSQL → Redis → gateway) and reads them
// back unchanged over REST and both protocols.
func TestSQLMetacharactersStoredVerbatim(t *testing.T) {
	s := start(t, opts{worker: true})
	sess := s.user("bobby.tables")
	name := `Robert'); DROP TABLE rooms;-- %_\ $1`
	room := s.room(sess.AccessToken, name)
	var got struct{ Name string }
	if r := s.do("GET", "/api/chat/rooms/"+room, sess.AccessToken, nil); r.Status != 200 || jsonInto(r.Body, &got) != nil || got.Name != name {
		t.Fatalf("room read back: %d %s", r.Status, r.Body)
	}

	contents := []string{
		`'; DROP TABLE messages; --`,
		`' OR '1'='1`,
		`" OR ""="`,
		`1; SELECT pg_sleep(30)`,
		`%' AND content LIKE '%`,
		`_%\_\%`,
		`$1 $$ $tag$ :name ?`,
		`\x00 \u0000 \\ \'`,
		"E'\\\\'",
		`%s %d %v %!`,
		`{"$where":"1==1"}`,
		"\u202eRTL override\u202c and 🧨 emoji",
	}
	c := s.mustWS(room, sess.AccessToken, true)
	if f := c.next(); f.Type != "welcome" {
		t.Fatalf("first frame %+v", f)
	}
	for i, content := range contents {
		c.send(content, "m"+strconv.Itoa(i))
	}
	live := map[int64]string{}
	acks := 0
	for acks < len(contents) || len(live) < len(contents) {
		f := c.next()
		switch f.Type {
		case "ack":
			acks++
		case "message":
			live[f.Seq] = f.Content
		default:
			t.Fatalf("unexpected %+v", f)
		}
	}
	for i, content := range contents {
		if live[int64(i+1)] != content {
			t.Errorf("live seq %d = %q, want %q", i+1, live[int64(i+1)], content)
		}
	}

	var stored []frame
	r := s.do("GET", "/api/chat/rooms/"+room+"/messages?limit=200", sess.AccessToken, nil)
	if r.Status != 200 || jsonInto(r.Body, &stored) != nil || len(stored) != len(contents) {
		t.Fatalf("history: %d %s", r.Status, r.Body)
	}
	for i, m := range stored {
		if m.Content != contents[i] {
			t.Errorf("stored seq %d = %q, want %q", m.Seq, m.Content, contents[i])
		}
	}
	// Resume replays them from PostgreSQL byte for byte too.
	resumed, rr, err := s.dialWS(room, sess.AccessToken, true, url.Values{"since_seq": {"0"}}, nil)
	if err != nil {
		t.Fatalf("resume: %v %d %s", err, rr.Status, rr.Body)
	}
	resumed.next()
	for i := range contents {
		if f := resumed.next(); f.Type != "message" || f.Content != contents[i] {
			t.Fatalf("replayed %+v, want %q", f, contents[i])
		}
	}
	// Every table is still there and the rooms list answers.
	for _, table := range []string{"users", "rooms", "messages", "refresh_tokens"} {
		var n int
		if err := s.db.Pool.QueryRow(ctx(), "SELECT count(*) FROM "+table).Scan(&n); err != nil {
			t.Fatalf("table %s: %v", table, err)
		}
	}
	if r := s.do("GET", "/api/chat/rooms", sess.AccessToken, nil); r.Status != 200 {
		t.Fatalf("rooms list: %d %s", r.Status, r.Body)
	}
}
