package message_test

import (
	"bytes"
	"encoding/json"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"rooms/shared/message"
)

// TestGolden checks that every wire type encodes to exactly its golden file
// and decodes back to the same value; gateway and worker tests decode the
// same files.
func TestGolden(t *testing.T) {
	tests := []struct {
		file string
		val  any
		zero func() any
	}{
		{"message.golden.json", message.Message{
			ID: "0193a1b2-c3d4-7e5f-8a9b-0c1d2e3f4a5b", Seq: 42, RoomID: "7", UserID: "3",
			Nickname: "bob", Content: "hi", TimeCreated: "2026-11-26T14:00:00.123456Z", ClientMsgID: "c-1",
		}, func() any { return &message.Message{} }},
		{"message_unstored.golden.json", message.Message{
			ID: "0193a1b2-c3d4-7e5f-8a9b-0c1d2e3f4a5b", RoomID: "7", UserID: "3",
			Nickname: "bob", Content: "hi", TimeCreated: "2026-11-26T14:00:00.123456Z",
		}, func() any { return &message.Message{} }},
		{"presence.golden.json", message.Presence{
			RoomID: "7", Event: "join", UserID: "3", Nickname: "bob", TimeCreated: "2026-11-26T14:00:00.123456Z",
		}, func() any { return &message.Presence{} }},
		{"typing.golden.json", message.Typing{RoomID: "7", UserID: "3", Nickname: "bob"},
			func() any { return &message.Typing{} }},
	}
	for _, tt := range tests {
		t.Run(tt.file, func(t *testing.T) {
			want, err := os.ReadFile(filepath.Join("testdata", tt.file))
			if err != nil {
				t.Fatal(err)
			}
			want = bytes.TrimSpace(want)
			got, err := json.Marshal(tt.val)
			if err != nil {
				t.Fatal(err)
			}
			if !bytes.Equal(got, want) {
				t.Fatalf("encoding differs\n got %s\nwant %s", got, want)
			}
			back := tt.zero()
			if err := json.Unmarshal(want, back); err != nil {
				t.Fatal(err)
			}
			again, _ := json.Marshal(back)
			if !bytes.Equal(again, want) {
				t.Fatalf("round trip differs: %s", again)
			}
		})
	}
}

func TestFormatTime(t *testing.T) {
	tm := time.Date(2026, 11, 26, 15, 0, 0, 123456789, time.FixedZone("CET", 3600))
	if got, want := message.FormatTime(tm), "2026-11-26T14:00:00.123456Z"; got != want {
		t.Fatalf("got %s want %s", got, want)
	}
	if got, want := message.FormatTime(time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)), "2026-01-02T03:04:05.000000Z"; got != want {
		t.Fatalf("got %s want %s", got, want)
	}
}

func TestValidateContent(t *testing.T) {
	tests := []struct {
		name    string
		content string
		max     int
		code    string
	}{
		{"plain", "hi", 2000, ""},
		{"unicode at limit", strings.Repeat("é", 5), 5, ""},
		{"over limit in characters", strings.Repeat("é", 6), 5, message.CodeTooLong},
		{"empty", "", 2000, message.CodeInvalid},
		{"only whitespace", " \t\n\u00a0", 2000, message.CodeInvalid},
		{"nul", "a\x00b", 2000, message.CodeInvalid},
		{"invalid utf8", "a\xffb", 2000, message.CodeInvalid},
		{"sql metacharacters", "'; DROP TABLE messages; --", 2000, ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			err := message.ValidateContent(tt.content, tt.max)
			if tt.code == "" {
				if err != nil {
					t.Fatalf("unexpected error %v", err)
				}
				return
			}
			var me *message.Error
			if !errors.As(err, &me) || me.Code != tt.code {
				t.Fatalf("want code %s, got %v", tt.code, err)
			}
		})
	}
}

func TestValidateClientMsgID(t *testing.T) {
	tests := []struct {
		id string
		ok bool
	}{
		{"c-1", true},
		{strings.Repeat("x", 64), true},
		{strings.Repeat("x", 65), false},
		{"", false},
		{"a\nb", false},
		{"\xff", false},
	}
	for _, tt := range tests {
		if err := message.ValidateClientMsgID(tt.id); (err == nil) != tt.ok {
			t.Errorf("ValidateClientMsgID(%q) = %v, want ok=%v", tt.id, err, tt.ok)
		}
	}
}

func TestFanoutStreamIsStablePerRoom(t *testing.T) {
	keys := message.FanoutStreams("p:")
	if len(keys) != message.FanoutShards {
		t.Fatalf("got %d keys", len(keys))
	}
	for _, room := range []int64{1, 7, 16, 17, 1 << 40} {
		k := message.FanoutStream("p:", room)
		found := false
		for _, kk := range keys {
			found = found || kk == k
		}
		if !found {
			t.Fatalf("stream %s of room %d is not among FanoutStreams", k, room)
		}
	}
}

func FuzzValidateContent(f *testing.F) {
	for _, s := range []string{"hi", "", " ", "a\x00", "\xff", strings.Repeat("z", 2001)} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		err := message.ValidateContent(s, message.DefaultMaxContent)
		if err == nil {
			// Whatever is accepted must be storable and renderable as-is.
			if strings.IndexByte(s, 0) >= 0 || strings.TrimSpace(s) == "" {
				t.Fatalf("accepted %q", s)
			}
			b, jerr := json.Marshal(s)
			if jerr != nil {
				t.Fatal(jerr)
			}
			var back string
			if jerr := json.Unmarshal(b, &back); jerr != nil || back != s {
				t.Fatalf("JSON round trip changed %q to %q", s, back)
			}
		}
	})
}
