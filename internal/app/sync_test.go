package app

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/bouncemilter/bouncemilter/internal/mediagoblin/mgtest"
	"github.com/bouncemilter/bouncemilter/internal/testenv"
)

// sync --every follows the web logs while its feeds are slow: a peer that
// answers nothing holds up its pull for the whole --feed-timeout, and a
// StopForumSpam run takes minutes. They keep their own loop, so a bot's
// sign-up line is still linked within a poll, not once the pull gives up.
func TestSyncFollowsLogsWhileAPeerStalls(t *testing.T) {
	inst := mgtest.NewSQLite(t, "mg@example.org")
	inst.AddUser(t, mgtest.User{Username: "bot", Email: "bot@nowhere.example", Created: time.Now().UTC()})
	dir := t.TempDir()
	_, pub := keygen(t, dir)
	stalled := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		<-r.Context().Done() // until the pull is cancelled
	}))
	defer stalled.Close()
	signups := filepath.Join(dir, "signup.log")
	if err := os.WriteFile(signups, nil, 0o644); err != nil {
		t.Fatal(err)
	}

	cfg := Defaults()
	cfg.MediaGoblinConfig = inst.IniPath
	cfg.Registry = filepath.Join(dir, "registry.db")
	cfg.SignupLogs = []string{signups}
	cfg.Every = time.Minute
	cfg.Follow = 20 * time.Millisecond
	cfg.FeedPeerLines = []string{"stalled " + stalled.URL + "/feed.json " + pub}
	cfg.FeedTimeout = time.Minute
	// Made before sync starts: the two would race to create its tables.
	reg, err := openRegistry(context.Background(), cfg.Registry)
	if err != nil {
		t.Fatal(err)
	}
	defer reg.Close()
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- Sync(ctx, cfg, slog.New(slog.NewTextHandler(io.Discard, nil)), io.Discard, nil) }()
	defer func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("Sync: %v", err)
		}
	}()
	testenv.WaitFor(t, 10*time.Second, "the first sync", func() bool {
		_, ok, _ := reg.LastSync(context.Background())
		return ok
	})
	line := fmt.Sprintf(`bouncemilter-signup/1 192.0.2.7 [%s] "POST /auth/register/ HTTP/1.1" 302 "https://media.example.org/u/bot/" "-"`+"\n",
		time.Now().UTC().Format(time.RFC3339))
	f, err := os.OpenFile(signups, os.O_APPEND|os.O_WRONLY, 0)
	if err != nil {
		t.Fatal(err)
	}
	f.WriteString(line)
	f.Close()
	testenv.WaitFor(t, 3*time.Second, "the sign-up's IP linked while the peer stalls", func() bool {
		r, err := reg.RegistrationByName(context.Background(), "bot")
		return err == nil && r.IP == "192.0.2.7"
	})
}
