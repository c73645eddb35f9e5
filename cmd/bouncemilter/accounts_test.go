package main

import (
	"bytes"
	"context"
	"encoding/json"
	"log/slog"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/bouncemilter/bouncemilter/internal/registry"
)

func TestAccountsListAndAllow(t *testing.T) {
	ctx := context.Background()
	path := filepath.Join(t.TempDir(), "registry.db")
	reg, err := registry.Open(ctx, path)
	if err != nil {
		t.Fatal(err)
	}
	now := time.Now().UTC().Truncate(time.Second)
	err = reg.Tx(ctx, func(tx *registry.Tx) error {
		if err := tx.UpsertRegistration(ctx, registry.Registration{UserID: 7, Username: "spambot", Email: "spambot@nowhere.example", Created: now, Synced: now}); err != nil {
			return err
		}
		_, err := tx.SetIP(ctx, "spambot", "203.0.113.7", "combined-log")
		return err
	})
	if err != nil {
		t.Fatal(err)
	}
	_, err = reg.RecordBounce(ctx, registry.Bounce{Received: now, QueueID: "4F0B4985FFD", Verdict: registry.VerdictActed, Report: "{}"},
		[]registry.Action{{UserID: 7, Kind: registry.BanAccount, Target: "7", Reason: "bouncemilter: mail to spambot@nowhere.example bounced permanently (5.1.1 userunknown)"}})
	if err != nil {
		t.Fatal(err)
	}
	reg.Close()

	run := func(args ...string) (string, string, int) {
		var stdout, stderr bytes.Buffer
		code := runAccounts(ctx, args, &stdout, &stderr, slog.New(slog.DiscardHandler))
		return stdout.String(), stderr.String(), code
	}

	out, errOut, code := run("list", "--registry", path)
	if code != 0 {
		t.Fatalf("accounts list = %d: %s", code, errOut)
	}
	for _, want := range []string{"USERNAME", "spambot", "spambot@nowhere.example", "203.0.113.7", "pending", "5.1.1"} {
		if !strings.Contains(out, want) {
			t.Errorf("accounts list does not show %q:\n%s", want, out)
		}
	}

	out, errOut, code = run("list", "--registry", path, "--json")
	if code != 0 {
		t.Fatalf("accounts list --json = %d: %s", code, errOut)
	}
	var list []struct {
		Username, IP string
		QueueID      string `json:"queue_id"`
		Disabled     time.Time
	}
	if err := json.Unmarshal([]byte(out), &list); err != nil || len(list) != 1 {
		t.Fatalf("accounts list --json printed %q: %v", out, err)
	}
	got := list[0]
	if got.Username != "spambot" || got.IP != "203.0.113.7" || got.QueueID != "4F0B4985FFD" || !got.Disabled.Equal(now) {
		t.Errorf("accounts list --json = %+v", got)
	}

	if _, _, code := run("allow", "--registry", path, "--ip", "not-an-ip"); code != 2 {
		t.Errorf("allow --ip not-an-ip = %d; want 2", code)
	}
	if _, _, code := run("allow", "--registry", path); code != 2 {
		t.Errorf("allow with nothing to allow = %d; want 2", code)
	}
	out, errOut, code = run("allow", "--registry", path, "--note", "the admin's friend", "--user", "alice", "--email", "Bob@Example.org", "--ip", "::ffff:198.51.100.20")
	if code != 0 {
		t.Fatalf("accounts allow = %d: %s", code, errOut)
	}
	if !strings.Contains(out, "allow-listed ip 198.51.100.20") {
		t.Errorf("accounts allow printed %q", out)
	}
	reg, err = registry.Open(ctx, path)
	if err != nil {
		t.Fatal(err)
	}
	defer reg.Close()
	for _, r := range []registry.Registration{
		{Username: "alice", Email: "a@x.example"},
		{Username: "bob", Email: "bob@example.org"},
		{Username: "carol", Email: "c@x.example", IP: "198.51.100.20"},
	} {
		if ok, err := reg.Allowed(ctx, r); err != nil || !ok {
			t.Errorf("%s not allow-listed (%v)", r.Username, err)
		}
	}
	if ok, _ := reg.Allowed(ctx, registry.Registration{Username: "mallory", Email: "m@x.example", IP: "203.0.113.7"}); ok {
		t.Error("an entry nobody allow-listed is allowed")
	}
}
