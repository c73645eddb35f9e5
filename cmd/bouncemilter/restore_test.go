package main

import (
	"bytes"
	"context"
	"log/slog"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/bouncemilter/bouncemilter/internal/app"
	"github.com/bouncemilter/bouncemilter/internal/banner"
	"github.com/bouncemilter/bouncemilter/internal/mediagoblin/mgtest"
	"github.com/bouncemilter/bouncemilter/internal/registry"
	"github.com/bouncemilter/bouncemilter/internal/testenv"
)

const (
	restoredIP = "203.0.113.7"
	otherIP    = "203.0.113.8"
)

// restoreWorld is a registry where bouncemilter banned the account
// "spambot" and its IP (both applied), and has another account's IP ban
// still pending: the running milter's business, which restore must not
// touch.
type restoreWorld struct {
	regPath string
	inst    *mgtest.Instance
	bot     int64
	otherID int64
}

func newRestoreWorld(t *testing.T) *restoreWorld {
	t.Helper()
	ctx := context.Background()
	w := &restoreWorld{regPath: filepath.Join(t.TempDir(), "registry.db"), inst: mgtest.NewSQLite(t, "notice@media.example.org")}
	now := time.Now().UTC()
	w.bot = w.inst.AddUser(t, mgtest.User{Username: "spambot", Email: "spambot@nowhere.example", Created: now.Add(-time.Hour)})
	w.otherID = w.inst.AddUser(t, mgtest.User{Username: "other", Email: "other@nowhere.example", Created: now.Add(-time.Hour)})
	w.inst.Ban(t, w.bot, "bouncemilter: mail to spambot@nowhere.example bounced")
	reg, err := registry.Open(ctx, w.regPath)
	if err != nil {
		t.Fatal(err)
	}
	defer reg.Close()
	err = reg.Tx(ctx, func(tx *registry.Tx) error {
		for _, r := range []registry.Registration{
			{UserID: w.bot, Username: "spambot", Email: "spambot@nowhere.example", Created: now.Add(-time.Hour), Synced: now},
			{UserID: w.otherID, Username: "other", Email: "other@nowhere.example", Created: now.Add(-time.Hour), Synced: now},
		} {
			if err := tx.UpsertRegistration(ctx, r); err != nil {
				return err
			}
		}
		if _, err := tx.SetIP(ctx, "spambot", restoredIP, "combined"); err != nil {
			return err
		}
		_, err := tx.SetIP(ctx, "other", otherIP, "combined")
		return err
	})
	if err != nil {
		t.Fatal(err)
	}
	_, err = reg.RecordBounce(ctx, registry.Bounce{Received: now, Verdict: registry.VerdictActed, Report: "{}"}, []registry.Action{
		{UserID: w.bot, Kind: registry.BanAccount, Target: registry.UserTarget(w.bot), Reason: "bounced"},
		{UserID: w.bot, Kind: registry.BanIP, Target: restoredIP, Reason: "bounced"},
	})
	if err != nil {
		t.Fatal(err)
	}
	acts, err := reg.Actions(ctx, w.bot)
	if err != nil {
		t.Fatal(err)
	}
	for _, a := range acts {
		if err := reg.MarkApplied(ctx, a.ID, now, ""); err != nil {
			t.Fatal(err)
		}
	}
	_, err = reg.RecordBounce(ctx, registry.Bounce{Received: now, Verdict: registry.VerdictActed, Report: "{}"}, []registry.Action{
		{UserID: w.otherID, Kind: registry.BanIP, Target: otherIP, Reason: "bounced"},
	})
	if err != nil {
		t.Fatal(err)
	}
	return w
}

func (w *restoreWorld) restore(t *testing.T, extra ...string) (string, int) {
	var stdout, stderr bytes.Buffer
	args := append([]string{"restore", "--registry", w.regPath, "--mediagoblin-config", w.inst.IniPath}, extra...)
	code := runAccounts(context.Background(), append(args, "spambot"), &stdout, &stderr, slog.New(slog.DiscardHandler))
	return stdout.String() + stderr.String(), code
}

// states returns "kind target state" for every action of user.
func (w *restoreWorld) states(t *testing.T, user int64) map[string]registry.ActionState {
	reg, err := app.OpenExisting(context.Background(), w.regPath)
	if err != nil {
		t.Fatal(err)
	}
	defer reg.Close()
	acts, err := reg.Actions(context.Background(), user)
	if err != nil {
		t.Fatal(err)
	}
	out := map[string]registry.ActionState{}
	for _, a := range acts {
		out[string(a.Kind)+" "+a.Target] = a.State
	}
	return out
}

// check asserts what every restore must leave: the account ban lifted in
// MediaGoblin, the IP unban in state ipUnban, and the other account's
// pending IP ban untouched.
func (w *restoreWorld) check(t *testing.T, ipUnban registry.ActionState) {
	t.Helper()
	if banned, _ := w.inst.Banned(t, w.bot); banned {
		t.Error("spambot still banned in MediaGoblin")
	}
	st := w.states(t, w.bot)
	if got := st["unban-account "+registry.UserTarget(w.bot)]; got != registry.Applied {
		t.Errorf("unban-account is %s, want applied", got)
	}
	if got := st["unban-ip "+restoredIP]; got != ipUnban {
		t.Errorf("unban-ip %s is %s, want %s", restoredIP, got, ipUnban)
	}
	if got := w.states(t, w.otherID)["ban-ip "+otherIP]; got != registry.Pending {
		t.Errorf("another account's pending IP ban is %s after restore, want pending", got)
	}
}

// accounts restore, for every --banner value (issue 9 §5): it applies only
// what it queued, and leaves the rest of the journal to the milter.
func TestAccountsRestoreBanners(t *testing.T) {
	t.Run("none", func(t *testing.T) {
		w := newRestoreWorld(t)
		out, code := w.restore(t, "--banner", "none")
		if code != 0 {
			t.Fatalf("restore = %d: %s", code, out)
		}
		// Nothing was unbanned: the IP unban waits for the milter.
		w.check(t, registry.Pending)
		if !strings.Contains(out, "unban-ip "+restoredIP+" not done yet") {
			t.Errorf("restore does not say the IP unban is left to the milter:\n%s", out)
		}
	})
	t.Run("fail2ban", func(t *testing.T) {
		w := newRestoreWorld(t)
		f2b := testenv.StartFail2ban(t, "")
		f2b.Client(t, "set", "bouncemilter", "banip", restoredIP)
		f2b.Client(t, "set", "bouncemilter", "banip", otherIP)
		out, code := w.restore(t, "--banner", "fail2ban", "--fail2ban-socket", f2b.Socket)
		if code != 0 {
			t.Fatalf("restore = %d: %s", code, out)
		}
		w.check(t, registry.Applied)
		banned := f2b.Banned(t, "bouncemilter")
		if strings.Contains(strings.Join(banned, " "), restoredIP) || !strings.Contains(strings.Join(banned, " "), otherIP) {
			t.Errorf("fail2ban bans %q after restore; want %s lifted, %s kept", banned, restoredIP, otherIP)
		}
	})
	t.Run("nftables", func(t *testing.T) {
		w := newRestoreWorld(t)
		out, code, set := w.restoreInNetns(t, []string{restoredIP, otherIP}, "--banner", "nftables")
		if code != 0 {
			t.Fatalf("restore = %d: %s", code, out)
		}
		w.check(t, registry.Applied)
		if strings.Contains(set, restoredIP) || !strings.Contains(set, otherIP) {
			t.Errorf("the nftables set after restore; want %s lifted, %s kept:\n%s", restoredIP, otherIP, set)
		}
	})
	for _, kind := range []string{"iptables", "nft"} {
		t.Run(kind, func(t *testing.T) {
			w := newRestoreWorld(t)
			out, code := w.restore(t, "--banner", kind)
			if code != 2 {
				t.Fatalf("restore --banner %s = %d; want a usage error: %s", kind, code, out)
			}
			// Refused before anything changed.
			if banned, _ := w.inst.Banned(t, w.bot); !banned {
				t.Error("spambot unbanned by a refused restore")
			}
			if st := w.states(t, w.bot); len(st) != 2 {
				t.Errorf("a refused restore queued actions: %v", st)
			}
		})
	}
}

func errString(err error) string {
	if err == nil {
		return ""
	}
	return err.Error()
}

// Commands that only read never create a registry: a mistyped path is an
// error (issue 9 §5).
func TestReadOnlyCommandsNeedARegistry(t *testing.T) {
	dir := t.TempDir()
	missing := filepath.Join(dir, "missing", "registry.db")
	for _, args := range [][]string{
		{"list", "--registry", missing},
		{"list", "--registry", dir},
		{"restore", "--registry", missing, "--banner", "none", "spambot"},
	} {
		var stdout, stderr bytes.Buffer
		if code := runAccounts(context.Background(), args, &stdout, &stderr, slog.New(slog.DiscardHandler)); code != 1 {
			t.Errorf("accounts %v = %d, want 1: %s", args, code, stderr.String())
		}
	}
	if _, err := os.Stat(filepath.Dir(missing)); err == nil {
		t.Error("a read-only command created the registry's directory")
	}
}

// TestRestoreUsesConfiguredBanner: the milter runs with `banner = nftables`
// in bouncemilter.conf, and contrib/install.sh also installed fail2ban's
// bouncemilter jail, which runs. `accounts restore spambot --config FILE`
// (no --banner) lifts the IP ban where serve put it: through fail2ban,
// whose unbanip of an address it never banned succeeds, the nftables
// element would stay for its whole timeout.
func TestRestoreUsesConfiguredBanner(t *testing.T) {
	w := newRestoreWorld(t)
	f2b := testenv.StartFail2ban(t, "")
	conf := filepath.Join(t.TempDir(), "bouncemilter.conf")
	if err := os.WriteFile(conf, []byte("banner = nftables\nfail2ban-socket = "+f2b.Socket+"\n"), 0o640); err != nil {
		t.Fatal(err)
	}
	out, code, set := w.restoreInNetns(t, []string{restoredIP}, "--config", conf)
	if code != 0 {
		t.Fatalf("restore = %d: %s", code, out)
	}
	if strings.Contains(set, restoredIP) {
		t.Errorf("restore (banner = nftables in the configuration) left %s in the nftables set; unban-ip is %s:\n%s",
			restoredIP, w.states(t, w.bot)["unban-ip "+restoredIP], set)
	}
}

// restoreInNetns bans ips with nftables, then runs restore with args, all
// on one OS thread moved into a network namespace of its own, so that the
// nft that restore starts never sees the machine's firewall (the thread is
// never unlocked: Go ends it with the goroutine). It returns restore's
// output and exit status, and the nftables table after it.
func (w *restoreWorld) restoreInNetns(t *testing.T, ips []string, args ...string) (out string, code int, set string) {
	t.Helper()
	testenv.Require(t, os.Geteuid() == 0, "nftables in a network namespace needs root")
	_, err := exec.LookPath("nft")
	testenv.Require(t, err == nil, "nft is not installed (apt-get install nftables)")
	done := make(chan error)
	go func() {
		runtime.LockOSThread()
		err := syscall.Unshare(syscall.CLONE_NEWNET)
		defer func() { done <- err }()
		if err != nil {
			return
		}
		n := &banner.NFTables{}
		ctx := context.Background()
		for _, ip := range ips {
			if err = n.Ban(ctx, netip.MustParseAddr(ip), "test"); err != nil {
				return
			}
		}
		out, code = w.restore(t, args...)
		var b []byte
		b, err = exec.Command("nft", "list", "table", "inet", banner.DefaultTable).CombinedOutput()
		set = string(b)
	}()
	err = <-done
	testenv.Require(t, err == nil, "nftables does not work in a network namespace here: "+errString(err))
	return out, code, set
}
