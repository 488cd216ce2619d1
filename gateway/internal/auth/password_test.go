package auth_test

import (
	"context"
	"errors"
	"strings"
	"testing"

	"rooms/gateway/internal/auth"
)

func TestHashRoundTrip(t *testing.T) {
	h := auth.NewHasher(2)
	ctx := context.Background()
	for _, pw := range []string{"password1", "pässwörd ✓", strings.Repeat("x", 128)} {
		enc, err := h.Hash(ctx, pw)
		if err != nil {
			t.Fatal(err)
		}
		if !strings.HasPrefix(enc, "$argon2id$v=19$m=19456,t=2,p=1$") {
			t.Fatalf("encoding %q", enc)
		}
		if ok, err := h.Verify(ctx, pw, enc); err != nil || !ok {
			t.Fatalf("Verify(right) = %v, %v", ok, err)
		}
		if ok, err := h.Verify(ctx, pw+"x", enc); err != nil || ok {
			t.Fatalf("Verify(wrong) = %v, %v", ok, err)
		}
		enc2, _ := h.Hash(ctx, pw)
		if enc2 == enc {
			t.Fatal("two hashes of one password are equal: salt not random")
		}
	}
}

func TestVerifyMalformed(t *testing.T) {
	h := auth.NewHasher(1)
	good, err := h.Hash(context.Background(), "password1")
	if err != nil {
		t.Fatal(err)
	}
	parts := strings.Split(good, "$")
	for name, enc := range map[string]string{
		"empty":        "",
		"bcrypt":       "$2a$10$abcdefghijklmnopqrstuv",
		"argon2i":      strings.Replace(good, "argon2id", "argon2i", 1),
		"version":      strings.Replace(good, "v=19", "v=16", 1),
		"huge memory":  strings.Replace(good, "m=19456", "m=99999999", 1),
		"zero time":    strings.Replace(good, "t=2", "t=0", 1),
		"bad salt":     strings.Join([]string{"", parts[1], parts[2], parts[3], "!!!", parts[5]}, "$"),
		"short key":    strings.Join([]string{"", parts[1], parts[2], parts[3], parts[4], "AAAA"}, "$"),
		"missing part": strings.Join(parts[:5], "$"),
	} {
		if _, err := h.Verify(context.Background(), "password1", enc); !errors.Is(err, auth.ErrMalformedHash) {
			t.Errorf("%s: err = %v, want ErrMalformedHash", name, err)
		}
	}
}
