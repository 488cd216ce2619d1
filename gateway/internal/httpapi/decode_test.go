package httpapi

import (
	"strings"
	"testing"
)

func TestValidNickname(t *testing.T) {
	tests := []struct {
		in string
		ok bool
	}{
		{"bob", true},
		{"Bob_the-2nd.x", true},
		{"Zoë", true},
		{"Лена", true},
		{"名前です", true},
		{"١٢٣", true}, // Arabic-Indic digits
		{strings.Repeat("a", 50), true},
		{strings.Repeat("é", 50), true},
		{"ab", false},
		{"", false},
		{strings.Repeat("a", 51), false},
		{"bob by", false},
		{"bob!", false},
		{"bob|x", false},
		{"bob\x00", false},
		{"bo\u200b", false}, // zero-width space
		{"a😀b", false},
		{"\xff\xfebob", false},
	}
	for _, tt := range tests {
		if err := validNickname(tt.in); (err == nil) != tt.ok {
			t.Errorf("validNickname(%q) = %v, want ok=%v", tt.in, err, tt.ok)
		}
	}
}

func TestValidPassword(t *testing.T) {
	tests := []struct {
		in string
		ok bool
	}{
		{"12345678", true},
		{strings.Repeat("p", 128), true},
		{strings.Repeat("ü", 128), true},
		{"1234567", false},
		{"", false},
		{strings.Repeat("p", 129), false},
	}
	for _, tt := range tests {
		if err := validPassword(tt.in); (err == nil) != tt.ok {
			t.Errorf("validPassword(%d chars) = %v, want ok=%v", len(tt.in), err, tt.ok)
		}
	}
}

func TestCleanRoomName(t *testing.T) {
	tests := []struct {
		in, want string
		ok       bool
	}{
		{"general", "general", true},
		{"  spaced out \t\n", "spaced out", true},
		{"x", "x", true},
		{strings.Repeat("я", 50), strings.Repeat("я", 50), true},
		{" " + strings.Repeat("a", 50) + " ", strings.Repeat("a", 50), true},
		{"emoji 🎉", "emoji 🎉", true},
		{"", "", false},
		{"   ", "", false},
		{strings.Repeat("a", 51), "", false},
		{"a\nb", "", false},
		{"a\x00b", "", false},
		{"a\u0085b", "", false},
		{"\xffab", "", false},
	}
	for _, tt := range tests {
		got, err := cleanRoomName(tt.in)
		if (err == nil) != tt.ok || got != tt.want {
			t.Errorf("cleanRoomName(%q) = %q, %v; want %q ok=%v", tt.in, got, err, tt.want, tt.ok)
		}
	}
}

func TestParseID(t *testing.T) {
	tests := []struct {
		in   string
		want int64
		ok   bool
	}{
		{"1", 1, true},
		{"42", 42, true},
		{"9223372036854775807", 9223372036854775807, true},
		{"9223372036854775808", 0, false},
		{"99999999999999999999", 0, false},
		{"0", 0, false},
		{"-1", 0, false},
		{"+1", 0, false},
		{"1.0", 0, false},
		{"abc", 0, false},
		{"", 0, false},
		{" 1", 0, false},
		{"１", 0, false}, // full-width digit
	}
	for _, tt := range tests {
		got, ok := parseID(tt.in)
		if ok != tt.ok || got != tt.want {
			t.Errorf("parseID(%q) = %d, %v; want %d, %v", tt.in, got, ok, tt.want, tt.ok)
		}
	}
}
