package httpapi

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"strconv"
	"strings"
	"unicode"
	"unicode/utf8"

	"github.com/gofiber/fiber/v2"
)

// notAnObject answers a body that is empty or not a JSON object.
const notAnObject = "request body must be a JSON object"

// decode parses the request body as one JSON object into dst. The content
// type is not checked (a missing or different one is accepted); unknown
// fields are ignored. The raw body is used: a Content-Encoding is not
// undone (so a small compressed body cannot expand past the size limit).
// Malformed JSON is invalid_json; JSON that is not an object (null
// included) is validation_failed, and so is a field of the wrong type,
// naming the field.
func decode(c *fiber.Ctx, dst any) error {
	body := c.Request().Body()
	if len(bytes.TrimSpace(body)) == 0 {
		return NewError(KindInvalidJSON, notAnObject)
	}
	// JSON text is UTF-8 (RFC 8259); encoding/json would silently turn
	// invalid bytes into U+FFFD, so refuse them here.
	if !utf8.Valid(body) {
		return NewError(KindInvalidJSON, "request body is not valid UTF-8")
	}
	dec := json.NewDecoder(bytes.NewReader(body))
	if err := dec.Decode(dst); err != nil {
		var typeErr *json.UnmarshalTypeError
		if errors.As(err, &typeErr) {
			if typeErr.Field == "" {
				return validation(notAnObject)
			}
			return validation(fmt.Sprintf("%s must be a %s", typeErr.Field, jsonKind(typeErr.Type.Kind().String())))
		}
		return NewError(KindInvalidJSON, "request body is not valid JSON")
	}
	if _, err := dec.Token(); !errors.Is(err, io.EOF) {
		return NewError(KindInvalidJSON, "request body has data after the JSON object")
	}
	// A bare null decodes into a struct as nothing at all; it is no more an
	// object than [] or 5, which fail above with this same answer.
	if bytes.HasPrefix(bytes.TrimLeft(body, " \t\r\n"), []byte("null")) {
		return validation(notAnObject)
	}
	return nil
}

func jsonKind(goKind string) string {
	switch goKind {
	case "string":
		return "string"
	case "int", "int64", "int32", "float64":
		return "number"
	case "bool":
		return "boolean"
	case "slice":
		return "array"
	default:
		return "object"
	}
}

// validNickname checks the nickname rules: 3-50 characters, each a
// (Unicode) letter, digit, '_', '-' or '.'.
func validNickname(s string) error {
	if !utf8.ValidString(s) {
		return validation("nickname must be valid UTF-8")
	}
	if n := utf8.RuneCountInString(s); n < 3 || n > 50 {
		return validation("nickname must be 3-50 characters")
	}
	for _, r := range s {
		if !unicode.IsLetter(r) && !unicode.IsDigit(r) && r != '_' && r != '-' && r != '.' {
			return validation("nickname may contain only letters, digits, '_', '-' and '.'")
		}
	}
	return nil
}

// validPassword checks the password rules: 8-128 characters.
func validPassword(s string) error {
	if n := utf8.RuneCountInString(s); n < 8 || n > 128 {
		return validation("password must be 8-128 characters")
	}
	return nil
}

// cleanRoomName trims name and checks the room name rules: 1-50 characters
// after trimming, valid UTF-8, no control characters.
func cleanRoomName(name string) (string, error) {
	if !utf8.ValidString(name) {
		return "", validation("name must be valid UTF-8")
	}
	name = strings.TrimFunc(name, unicode.IsSpace)
	if n := utf8.RuneCountInString(name); n < 1 || n > 50 {
		return "", validation("name must be 1-50 characters")
	}
	for _, r := range name {
		if unicode.IsControl(r) {
			return "", validation("name must not contain control characters")
		}
	}
	return name, nil
}

// parseID parses a positive decimal id (as in a path); ok is false for
// anything else, including values that overflow int64.
func parseID(s string) (int64, bool) {
	if s == "" || len(s) > 19 {
		return 0, false
	}
	for i := 0; i < len(s); i++ {
		if s[i] < '0' || s[i] > '9' {
			return 0, false
		}
	}
	id, err := strconv.ParseInt(s, 10, 64)
	if err != nil || id <= 0 {
		return 0, false
	}
	return id, true
}

// queryInt parses an optional non-negative integer query parameter. present
// is false when the parameter is absent.
func queryInt(c *fiber.Ctx, name string) (v int64, present bool, err error) {
	args := c.Context().QueryArgs()
	if !args.Has(name) {
		return 0, false, nil
	}
	s := string(args.Peek(name))
	if s == "" || len(s) > 19 {
		return 0, true, validation(name + " must be a non-negative integer")
	}
	for i := 0; i < len(s); i++ {
		if s[i] < '0' || s[i] > '9' {
			return 0, true, validation(name + " must be a non-negative integer")
		}
	}
	v, perr := strconv.ParseInt(s, 10, 64)
	if perr != nil {
		return 0, true, validation(name + " is out of range")
	}
	return v, true, nil
}

func itoa(n int) string { return strconv.Itoa(n) }
