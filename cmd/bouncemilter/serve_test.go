package main

import (
	"bytes"
	"context"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

func TestServeRefusesBrokenSetups(t *testing.T) {
	dir := t.TempDir()
	broken := filepath.Join(dir, "mediagoblin.ini")
	if err := os.WriteFile(broken, []byte("[mediagoblin]\nsql_engine = nonsense\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	good := filepath.Join(dir, "good", "mediagoblin.ini")
	if err := os.MkdirAll(filepath.Dir(good), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(good, []byte("[mediagoblin]\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name string
		args []string
		code int
		says string
	}{
		{"bad listen spec", []string{"--listen", "127.0.0.1:8891"}, 2, "bad milter socket spec"},
		{"unknown flag", []string{"--no-such-flag"}, 2, "no-such-flag"},
		{"broken mediagoblin.ini", []string{"--mediagoblin-config", broken}, 1, "sql_engine"},
		{"unknown banner", []string{"--mediagoblin-config", "none", "--banner", "iptables"}, 1, "unknown banner"},
		// A mistyped path would leave the milter on defaults that never
		// match: an error, not a warning.
		{"mistyped mediagoblin.ini", []string{"--mediagoblin-config", filepath.Join(dir, "missing", "mediagoblin.ini")}, 1, "no such file"},
		{"bad mediagoblin-db", []string{"--mediagoblin-config", good, "--mediagoblin-db", "mysql://x/y"}, 1, "unsupported database"},
		{"bad socket mode", []string{"--socket-mode", "rw-rw----"}, 2, "not an octal permission"},
		{"returned headers with signing on", []string{"--trust-returned-headers"}, 2, "needs --sign-return-path=false"},
		// The signer would tag with "+" and the filter take no tagged
		// bounce for its own: every one delivered unread.
		{"signing without a delimiter", []string{"--recipient-delimiter", ""}, 2, "needs a --recipient-delimiter"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var stdout, stderr bytes.Buffer
			args := append([]string{"--registry", filepath.Join(dir, "r.db"), "--ban-log", filepath.Join(dir, "bans.log"), "--listen", "inet:127.0.0.1:0"}, tt.args...)
			code := runServe(context.Background(), args, &stdout, &stderr, slog.New(slog.DiscardHandler))
			if code != tt.code || !strings.Contains(stderr.String(), tt.says) {
				t.Errorf("serve %v = %d, %q; want %d saying %q", tt.args, code, stderr.String(), tt.code, tt.says)
			}
		})
	}
}

// First-run mode, asked for explicitly: serve runs without MediaGoblin, and
// stops cleanly when told to.
func TestServeStartsWithoutMediaGoblinAndStops(t *testing.T) {
	dir := t.TempDir()
	ln, err := net.Listen("tcp4", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	ln.Close()
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan int, 1)
	var stderr bytes.Buffer
	go func() {
		done <- runServe(ctx, []string{"--listen", "inet:" + addr, "--registry", filepath.Join(dir, "lib", "r.db"),
			"--ban-log", filepath.Join(dir, "bans.log"), "--mediagoblin-config", "none"},
			&bytes.Buffer{}, &stderr, slog.New(slog.DiscardHandler))
	}()
	deadline := time.Now().Add(10 * time.Second)
	for {
		c, err := net.Dial("tcp", addr)
		if err == nil {
			c.Close()
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("serve did not listen: %v", err)
		}
		time.Sleep(20 * time.Millisecond)
	}
	cancel()
	select {
	case code := <-done:
		if code != 0 {
			t.Fatalf("serve exited %d: %s", code, stderr.String())
		}
	case <-time.After(15 * time.Second):
		t.Fatal("serve did not stop")
	}
	for _, f := range []string{"lib/r.db", "lib/returnpath.keys", "bans.log"} {
		if _, err := os.Stat(filepath.Join(dir, f)); err != nil {
			t.Errorf("serve did not create %s: %v", f, err)
		}
	}
}
