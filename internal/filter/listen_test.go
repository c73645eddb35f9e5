package filter

import (
	"errors"
	"path/filepath"
	"testing"
)

func TestParseSpec(t *testing.T) {
	tests := []struct {
		spec, network, addr string
		bad                 bool
	}{
		{spec: "inet:127.0.0.1:8891", network: "tcp4", addr: "127.0.0.1:8891"},
		{spec: "inet:8891@127.0.0.1", network: "tcp4", addr: "127.0.0.1:8891"},
		{spec: "inet:localhost:8891", network: "tcp4", addr: "localhost:8891"},
		{spec: "inet6:[::1]:8891", network: "tcp6", addr: "[::1]:8891"},
		{spec: "unix:/run/bouncemilter/milter.sock", network: "unix", addr: "/run/bouncemilter/milter.sock"},
		{spec: "local:/tmp/x.sock", network: "unix", addr: "/tmp/x.sock"},
		{spec: "127.0.0.1:8891", bad: true},
		{spec: "inet:", bad: true},
		{spec: "inet:8891", bad: true},
		{spec: "tcp:1.2.3.4:5", bad: true},
	}
	for _, tt := range tests {
		network, addr, err := ParseSpec(tt.spec)
		if tt.bad {
			if !errors.Is(err, ErrBadSpec) {
				t.Errorf("ParseSpec(%q) = %q, %q, %v; want ErrBadSpec", tt.spec, network, addr, err)
			}
			continue
		}
		if err != nil || network != tt.network || addr != tt.addr {
			t.Errorf("ParseSpec(%q) = %q, %q, %v; want %q, %q", tt.spec, network, addr, err, tt.network, tt.addr)
		}
	}
}

func TestListenUnixReplacesStaleSocket(t *testing.T) {
	path := filepath.Join(t.TempDir(), "m.sock")
	ln, err := Listen("unix:" + path)
	if err != nil {
		t.Fatal(err)
	}
	// While it serves, a second listener must not steal the socket.
	if _, err := Listen("unix:" + path); err == nil {
		t.Fatal("second Listen on a live socket succeeded")
	}
	// Simulate a crash: the file stays behind.
	if ul, ok := ln.(interface{ SetUnlinkOnClose(bool) }); ok {
		ul.SetUnlinkOnClose(false)
	}
	ln.Close()
	ln, err = Listen("unix:" + path)
	if err != nil {
		t.Fatalf("Listen over a stale socket: %v", err)
	}
	ln.Close()
}
