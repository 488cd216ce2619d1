package message_test

import (
	"errors"
	"strings"
	"testing"
	"unicode"
	"unicode/utf8"

	"rooms/shared/message"
)

// FuzzContentRules checks ValidateContent against the rules of API.md,
// restated independently: 1..max characters, valid UTF-8, no NUL, not only
// whitespace; a refusal is a *message.Error with a documented code.
func FuzzContentRules(f *testing.F) {
	for _, s := range []string{"hi", "", " ", "\t\n\r\v\f", "\u00a0\u2028\u3000", "a\x00", "\xff", "\xed\xa0\x80",
		"héllo ✓ 👍🏽", strings.Repeat("x", 9), strings.Repeat("é", 8), "\u200b", "'; DROP TABLE rooms; --"} {
		f.Add(s, 8)
	}
	f.Fuzz(func(t *testing.T, content string, max int) {
		if max < 1 || max > 1<<16 {
			max = 8
		}
		err := message.ValidateContent(content, max)
		want := utf8.ValidString(content) && !strings.ContainsRune(content, 0) &&
			strings.IndexFunc(content, func(r rune) bool { return !unicode.IsSpace(r) }) >= 0 &&
			utf8.RuneCountInString(content) <= max
		if (err == nil) != want {
			t.Fatalf("ValidateContent(%q, %d) = %v, want valid %v", content, max, err, want)
		}
		if err == nil {
			return
		}
		var me *message.Error
		if !errors.As(err, &me) || me.Message == "" {
			t.Fatalf("error %v is not a *message.Error with a message", err)
		}
		if me.Code != message.CodeInvalid && me.Code != message.CodeTooLong {
			t.Fatalf("undocumented code %q", me.Code)
		}
		if me.Code == message.CodeTooLong && utf8.RuneCountInString(content) <= max {
			t.Fatalf("content_too_long for %d characters with max %d", utf8.RuneCountInString(content), max)
		}
	})
}

// FuzzValidateClientMsgID checks ValidateClientMsgID: 1..64 characters of
// valid UTF-8 without control characters.
func FuzzValidateClientMsgID(f *testing.F) {
	for _, s := range []string{"c-1", "", strings.Repeat("a", 64), strings.Repeat("a", 65), strings.Repeat("é", 64),
		"a\x00", "a\x7f", "a\u0085", "\xff", "id with spaces", "🙂"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, id string) {
		err := message.ValidateClientMsgID(id)
		want := id != "" && utf8.ValidString(id) && utf8.RuneCountInString(id) <= message.MaxClientMsgID &&
			strings.IndexFunc(id, unicode.IsControl) < 0
		if (err == nil) != want {
			t.Fatalf("ValidateClientMsgID(%q) = %v, want valid %v", id, err, want)
		}
		var me *message.Error
		if err != nil && (!errors.As(err, &me) || me.Code != message.CodeInvalid || me.Message == "") {
			t.Fatalf("error %v is not an invalid_message *message.Error", err)
		}
	})
}
