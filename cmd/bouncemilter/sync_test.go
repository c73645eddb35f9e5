package main

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/bouncemilter/bouncemilter/internal/mediagoblin/mgtest"
	"github.com/bouncemilter/bouncemilter/internal/registry"
	"github.com/bouncemilter/bouncemilter/internal/testenv"
)

func syncCmd(t *testing.T, ctx context.Context, args ...string) (int, string, string) {
	t.Helper()
	var stdout, stderr bytes.Buffer
	code := runSync(ctx, args, &stdout, &stderr, slog.New(slog.NewTextHandler(io.Discard, nil)))
	return code, stdout.String(), stderr.String()
}

func TestSyncCommand(t *testing.T) {
	for _, backend := range []string{"sqlite", "postgres"} {
		t.Run(backend, func(t *testing.T) {
			var inst *mgtest.Instance
			if backend == "sqlite" {
				inst = mgtest.NewSQLite(t, "mg@example.org")
			} else {
				inst = mgtest.NewPostgres(t, testenv.Postgres(t), "mg@example.org")
			}
			now := time.Now().UTC()
			inst.AddUser(t, mgtest.User{Username: "bot", Email: "bot@nowhere.example", Created: now})
			inst.AddUser(t, mgtest.User{Username: "admin", Email: "admin@example.org", Created: now, Admin: true})
			dir := t.TempDir()
			logPath := filepath.Join(dir, "access.log")
			stamp := now.Format("02/Jan/2006:15:04:05 -0700")
			os.WriteFile(logPath, []byte(fmt.Sprintf(
				"203.0.113.5 - - [%s] \"POST /auth/register/ HTTP/1.1\" 302 0 \"-\" \"UA\"\n"+
					"203.0.113.5 - - [%s] \"GET /u/bot/ HTTP/1.1\" 200 10 \"-\" \"UA\"\n", stamp, stamp)), 0o644)
			regPath := filepath.Join(dir, "registry.db")

			code, out, errOut := syncCmd(t, context.Background(), "--mediagoblin-config", inst.IniPath, "--registry", regPath, "--access-log", logPath)
			if code != 0 {
				t.Fatalf("exit %d: %s", code, errOut)
			}
			if !strings.Contains(out, "added 2") || !strings.Contains(out, "linked 1") {
				t.Errorf("summary: %q", out)
			}
			reg, err := registry.Open(context.Background(), regPath)
			if err != nil {
				t.Fatal(err)
			}
			defer reg.Close()
			r, err := reg.RegistrationByName(context.Background(), "bot")
			if err != nil || r.IP != "203.0.113.5" || r.IPSource != "combined-log" {
				t.Errorf("bot = %+v, %v", r, err)
			}
			// Twice copies nothing twice.
			if code, out, _ := syncCmd(t, context.Background(), "--mediagoblin-config", inst.IniPath, "--registry", regPath, "--access-log", logPath); code != 0 || !strings.Contains(out, "added 0") {
				t.Errorf("second run: %d %q", code, out)
			}
		})
	}
}

func TestSyncCommandFailures(t *testing.T) {
	inst := mgtest.NewSQLite(t, "mg@example.org")
	dir := t.TempDir()
	reg := filepath.Join(dir, "registry.db")
	garbled := filepath.Join(dir, "garbled.log")
	os.WriteFile(garbled, []byte("this is not\nan access log\n"), 0o644)
	downIni := filepath.Join(dir, "down", "mediagoblin.ini")
	os.MkdirAll(filepath.Dir(downIni), 0o755)
	// Port 1 on loopback: nothing listens there.
	os.WriteFile(downIni, []byte("[mediagoblin]\nsql_engine = postgresql://mg:pw@127.0.0.1:1/mediagoblin?connect_timeout=2\n"), 0o644)

	tests := []struct {
		name string
		args []string
		code int
		want string
	}{
		{"help", []string{"--help"}, 0, "-access-log"},
		{"bad flag", []string{"--nope"}, 2, "unknown flag: --nope"},
		{"bad proxy", []string{"--trusted-proxy", "nowhere"}, 2, "not an address"},
		{"missing config", []string{"--mediagoblin-config", filepath.Join(dir, "none", "mediagoblin.ini"), "--registry", reg}, 1, "no such file"},
		{"database down", []string{"--mediagoblin-config", downIni, "--registry", reg}, 1, "unavailable"},
		{"garbled log", []string{"--mediagoblin-config", inst.IniPath, "--registry", reg, "--access-log", garbled}, 1, "malformed"},
		{"missing log", []string{"--mediagoblin-config", inst.IniPath, "--registry", reg, "--access-log", filepath.Join(dir, "none.log")}, 1, "no such file"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			code, out, errOut := syncCmd(t, context.Background(), tt.args...)
			if code != tt.code || !strings.Contains(out+errOut, tt.want) {
				t.Errorf("exit %d, want %d; output %q, want it to hold %q", code, tt.code, out+errOut, tt.want)
			}
		})
	}
}

// With --every the command keeps going through a database outage and stops
// cleanly when cancelled.
func TestSyncCommandEvery(t *testing.T) {
	inst := mgtest.NewSQLite(t, "mg@example.org")
	inst.AddUser(t, mgtest.User{Username: "bot", Email: "bot@nowhere.example"})
	regPath := filepath.Join(t.TempDir(), "registry.db")
	// MediaGoblin's database is away when the command starts, and back a
	// moment later.
	dbPath := filepath.Join(inst.Dir, "mediagoblin.db")
	if err := os.Rename(dbPath, dbPath+".away"); err != nil {
		t.Fatal(err)
	}
	back := time.AfterFunc(300*time.Millisecond, func() { os.Rename(dbPath+".away", dbPath) })
	defer back.Stop()
	ctx, cancel := context.WithTimeout(context.Background(), 2500*time.Millisecond)
	defer cancel()
	code, _, errOut := syncCmd(t, ctx, "--mediagoblin-config", inst.IniPath, "--registry", regPath, "--every", "100ms")
	if code != 0 {
		t.Fatalf("exit %d: %s", code, errOut)
	}
	reg, err := registry.Open(context.Background(), regPath)
	if err != nil {
		t.Fatal(err)
	}
	defer reg.Close()
	if n, _ := reg.CountRegistrations(context.Background()); n != 1 {
		t.Errorf("registry holds %d", n)
	}
}
