package main

import (
	"bytes"
	"context"
	"encoding/json"
	"log/slog"
	"os"
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

// MediaGoblin lowercases every username it is given (registration and
// login alike: normalize_user_or_email_field), so "Alice" names the
// account alice: accounts allow --user Alice protects her and cancels her
// waiting ban.
func TestAllowUserInOtherCase(t *testing.T) {
	ctx := context.Background()
	path := filepath.Join(t.TempDir(), "registry.db")
	reg, err := registry.Open(ctx, path)
	if err != nil {
		t.Fatal(err)
	}
	now := time.Now().UTC().Truncate(time.Second)
	if err := reg.Tx(ctx, func(tx *registry.Tx) error {
		return tx.UpsertRegistration(ctx, registry.Registration{UserID: 7, Username: "alice", Email: "alice@example.net", Created: now, Synced: now})
	}); err != nil {
		t.Fatal(err)
	}
	if _, err := reg.RecordBounce(ctx, registry.Bounce{Received: now, Verdict: registry.VerdictActed, Report: "{}"},
		[]registry.Action{{UserID: 7, Kind: registry.BanAccount, Target: "7", Reason: "bouncemilter: bounced"}}); err != nil {
		t.Fatal(err)
	}
	reg.Close()
	var stdout, stderr bytes.Buffer
	if code := runAccounts(ctx, []string{"allow", "--registry", path, "--user", "Alice"}, &stdout, &stderr, slog.New(slog.DiscardHandler)); code != 0 {
		t.Fatalf("accounts allow = %d: %s", code, stderr.String())
	}
	reg, err = registry.Open(ctx, path)
	if err != nil {
		t.Fatal(err)
	}
	defer reg.Close()
	if ok, err := reg.Allowed(ctx, registry.Registration{Username: "alice", Email: "alice@example.net"}); err != nil || !ok {
		t.Errorf("after %q, alice is not allow-listed (%v)", stdout.String(), err)
	}
	acts, err := reg.Actions(ctx, 7)
	if err != nil {
		t.Fatal(err)
	}
	for _, a := range acts {
		if a.Kind == registry.BanAccount && a.State == registry.Pending {
			t.Errorf("alice's waiting ban is still pending after allow --user Alice: %+v", a)
		}
	}
}

// `accounts allow --registry PATH` with a mistyped PATH (registry.sqlite
// for registry.db) fails, as list, show and restore do: a new empty
// registry there would take the entry, and the office NAT the admin meant
// to protect would be banned at the next bounce.
func TestAllowNeedsARegistry(t *testing.T) {
	w := newRestoreWorld(t)
	typo := filepath.Join(filepath.Dir(w.regPath), "registry.sqlite")
	var stdout, stderr strings.Builder
	code := runAccounts(context.Background(), []string{"allow", "--registry", typo, "--ip", "198.51.100.1"}, &stdout, &stderr, slog.New(slog.DiscardHandler))
	if code == 0 {
		_, statErr := os.Stat(typo)
		t.Errorf("accounts allow --registry %s (no such file) = 0, said %q; a new registry was created: %v", filepath.Base(typo), strings.TrimSpace(stdout.String()), statErr == nil)
	}
}
