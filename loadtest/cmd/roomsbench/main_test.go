package main

import (
	"io"
	"testing"
)

func TestParseFlags(t *testing.T) {
	tests := []struct {
		name        string
		args        []string
		ok          bool
		wantSources int
		wantUsers   int
	}{
		{"defaults on loopback", nil, true, 253, 1000},
		{"remote target: no source spreading", []string{"-targets", "http://10.1.2.3:8081", "-workloads", "resume"}, true, 0, 400},
		{"explicit range", []string{"-source-ips", "127.0.1.10-127.0.1.19", "-workloads", "chat", "-rooms", "2", "-clients", "3"}, true, 10, 6},
		{"bad range", []string{"-source-ips", "127.0.0.9-127.0.0.1"}, false, 0, 0},
		{"bad workload", []string{"-workloads", "chat,soak"}, false, 0, 0},
		{"bad step", []string{"-steps", "100,fast"}, false, 0, 0},
		{"payload too small", []string{"-payload", "10"}, false, 0, 0},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			cfg, err := parseFlags(tt.args, io.Discard)
			if (err == nil) != tt.ok {
				t.Fatalf("err = %v, want ok %v", err, tt.ok)
			}
			if !tt.ok {
				return
			}
			if len(cfg.Sources) != tt.wantSources {
				t.Errorf("sources = %d, want %d", len(cfg.Sources), tt.wantSources)
			}
			if got := cfg.usersNeeded(); got != tt.wantUsers {
				t.Errorf("usersNeeded = %d, want %d", got, tt.wantUsers)
			}
		})
	}
}
