package filter

import (
	"errors"
	"os"
	"os/user"
	"path/filepath"
	"syscall"
	"testing"

	"github.com/bouncemilter/bouncemilter/internal/testenv"
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
	ln, err := Listen("unix:"+path, Socket{})
	if err != nil {
		t.Fatal(err)
	}
	// While it serves, a second listener must not steal the socket.
	if _, err := Listen("unix:"+path, Socket{}); err == nil {
		t.Fatal("second Listen on a live socket succeeded")
	}
	// Simulate a crash: the file stays behind.
	if ul, ok := ln.(interface{ SetUnlinkOnClose(bool) }); ok {
		ul.SetUnlinkOnClose(false)
	}
	ln.Close()
	ln, err = Listen("unix:"+path, Socket{})
	if err != nil {
		t.Fatalf("Listen over a stale socket: %v", err)
	}
	ln.Close()
}

// The unix socket is reachable by its owner and its group only (Postfix's,
// in contrib/postfix): another local user could otherwise pass the milter
// forged bounces as Postfix's own (issue 9 §1).
func TestListenUnixSocketPermissions(t *testing.T) {
	testenv.Require(t, os.Geteuid() == 0, "giving a socket another group needs root")
	g, err := user.LookupGroupId("65534")
	testenv.Require(t, err == nil, "no group 65534 (nogroup)")
	for _, tt := range []struct {
		sock Socket
		gid  int
		mode os.FileMode
	}{
		{Socket{}, 0, 0o660},
		{Socket{Group: g.Name}, 65534, 0o660},
		{Socket{Group: "65534", Mode: 0o600}, 65534, 0o600},
	} {
		path := filepath.Join(t.TempDir(), "m.sock")
		ln, err := Listen("unix:"+path, tt.sock)
		if err != nil {
			t.Fatal(err)
		}
		fi, err := os.Stat(path)
		if err != nil {
			t.Fatal(err)
		}
		st := fi.Sys().(*syscall.Stat_t)
		if int(st.Gid) != tt.gid || fi.Mode().Perm() != tt.mode {
			t.Errorf("%+v: socket group %d mode %v, want %d %v", tt.sock, st.Gid, fi.Mode().Perm(), tt.gid, tt.mode)
		}
		ln.Close()
	}
	if _, err := Listen("unix:"+filepath.Join(t.TempDir(), "m.sock"), Socket{Group: "no-such-group-here"}); err == nil {
		t.Error("Listen with an unknown group succeeded")
	}
}
