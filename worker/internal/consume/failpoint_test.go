package consume_test

import (
	"testing"

	"rooms/worker/internal/consume"
)

func TestParseFailpoint(t *testing.T) {
	for _, tc := range []struct {
		spec    string
		off, ok bool
	}{
		{spec: "", off: true, ok: true},
		{spec: "in-tx", ok: true},
		{spec: "after-commit:3", ok: true},
		{spec: "in-tx:2:stop", ok: true},
		{spec: "in-tx:2:kill", ok: true},
		{spec: "in-tx:2:pause"},
		{spec: "after-commit:0"},
		{spec: "after-commit:x"},
		{spec: "elsewhere:1"},
	} {
		fp, err := consume.ParseFailpoint(tc.spec)
		if (err == nil) != tc.ok {
			t.Errorf("%q: err %v", tc.spec, err)
		}
		if tc.ok && (fp == nil) != tc.off {
			t.Errorf("%q: failpoint %v", tc.spec, fp)
		}
	}
	// A nil failpoint, and an armed one at another point, do nothing.
	var off *consume.Failpoint
	off.Hit(consume.FailInTx)
	fp, _ := consume.ParseFailpoint("in-tx:1")
	fp.Hit(consume.FailAfterCommit)
	if off.Stops() || fp.Stops() {
		t.Error("Stops without the stop action")
	}
	if fp, _ := consume.ParseFailpoint("in-tx:1:stop"); !fp.Stops() {
		t.Error("in-tx:1:stop: Stops false")
	}
}
