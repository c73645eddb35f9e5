package main

import (
	"bytes"
	"context"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/bouncemilter/bouncemilter/internal/app"
	"github.com/bouncemilter/bouncemilter/internal/mediagoblin/mgtest"
	"github.com/bouncemilter/bouncemilter/internal/registry"
)

// proveBot journals, in the registry at regPath, what a bounce proved of
// the sign-up bot@spam.example from 192.0.2.1; applied: as the worker has
// applied its bans.
func proveBot(t *testing.T, regPath string, applied bool) {
	t.Helper()
	ctx := context.Background()
	reg, err := registry.Open(ctx, regPath)
	if err != nil {
		t.Fatal(err)
	}
	defer reg.Close()
	now := time.Now()
	err = reg.Tx(ctx, func(tx *registry.Tx) error {
		if err := tx.UpsertRegistration(ctx, registry.Registration{UserID: 1, Username: "bot", Email: "bot@spam.example", Created: now, Synced: now}); err != nil {
			return err
		}
		_, err := tx.SetIP(ctx, "bot", "192.0.2.1", "signup-log")
		return err
	})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := reg.RecordBounce(ctx, registry.Bounce{Received: now, Verdict: registry.VerdictActed, Report: "{}"}, []registry.Action{
		{UserID: 1, Kind: registry.BanAccount, Target: "1", Reason: "t"}, {UserID: 1, Kind: registry.BanIP, Target: "192.0.2.1", Reason: "t"}}); err != nil {
		t.Fatal(err)
	}
	if applied {
		acts, _ := reg.Actions(ctx, 1)
		for _, a := range acts {
			reg.MarkApplied(ctx, a.ID, now, "")
		}
	}
}

// TestFeedCommands: two instances publish with keygen and export, a third
// pulls both with the peers file and shows their status.
func TestFeedCommands(t *testing.T) {
	ctx := context.Background()
	dir := t.TempDir()
	run := func(args ...string) string {
		t.Helper()
		var stdout, stderr bytes.Buffer
		if code := runFeed(ctx, args, &stdout, &stderr, newLogger(&stderr, "text")); code != 0 {
			t.Fatalf("feed %v = %d: %s%s", args, code, stdout.String(), stderr.String())
		}
		return stdout.String()
	}
	var peers strings.Builder
	for _, name := range []string{"a", "b"} {
		regPath := filepath.Join(dir, name, "registry.db")
		proveBot(t, regPath, false)
		key := filepath.Join(dir, name, "feed.key")
		if out := run("keygen", "--key", key); !strings.Contains(out, "public key") {
			t.Errorf("keygen said %q", out)
		}
		www := filepath.Join(dir, name, "www")
		if out := run("export", "--registry", regPath, "--key", key, "--name", name+".example", "--out", www); !strings.Contains(out, "1 IPs, 1 addresses") {
			t.Errorf("export said %q", out)
		}
		srv := httptest.NewServer(http.FileServer(http.Dir(www)))
		defer srv.Close()
		pub, _ := os.ReadFile(key + ".pub")
		lines := strings.Split(strings.TrimSpace(string(pub)), "\n")
		peers.WriteString(name + " " + srv.URL + "/feed.json " + lines[len(lines)-1] + "\n")
	}
	peersFile := filepath.Join(dir, "peers")
	os.WriteFile(peersFile, []byte(peers.String()), 0o644)
	regC := filepath.Join(dir, "c", "registry.db")
	if out := run("pull", "--registry", regC, "--peers", peersFile); !strings.Contains(out, "2 feeds accepted, 0 unchanged, 0 failed; 1 IPs banned") {
		t.Errorf("pull said %q", out)
	}
	out := run("status", "--registry", regC, "--peers", peersFile)
	if !strings.Contains(out, "PEER") || strings.Count(out, "\n") != 3 || strings.Contains(out, "never") {
		t.Errorf("status:\n%s", out)
	}
	if out := run("status", "--registry", regC, "--json"); strings.Count(out, `"entries":2`) != 2 {
		t.Errorf("status --json:\n%s", out)
	}

	// The same peers as feed-peer lines of the configuration file that
	// serve and sync read: feed pull and status use them too.
	var conf strings.Builder
	for _, l := range strings.Split(strings.TrimSpace(peers.String()), "\n") {
		conf.WriteString("feed-peer = " + l + "\n")
	}
	confFile := filepath.Join(dir, "bouncemilter.conf")
	os.WriteFile(confFile, []byte(conf.String()), 0o644)
	regD := filepath.Join(dir, "d", "registry.db")
	if out := run("pull", "--registry", regD, "--config", confFile); !strings.Contains(out, "2 feeds accepted, 0 unchanged, 0 failed; 1 IPs banned") {
		t.Errorf("pull with the configuration file said %q", out)
	}
	if out := run("status", "--registry", regD, "--config", confFile); strings.Count(out, "\n") != 3 {
		t.Errorf("status with the configuration file:\n%s", out)
	}
}

// TestSyncExportsAndPulls: sync with the feed flags exports this
// instance's feed and pulls the peers' after its run, also when the sync
// itself fails (MediaGoblin's database gone).
func TestSyncExportsAndPulls(t *testing.T) {
	ctx := context.Background()
	dir := t.TempDir()
	inst := mgtest.NewSQLite(t, "mg@example.org")
	regPath := filepath.Join(dir, "registry.db")
	key := filepath.Join(dir, "feed.key")
	var stdout, stderr bytes.Buffer
	if code := runFeed(ctx, []string{"keygen", "--key", key}, &stdout, &stderr, newLogger(&stderr, "text")); code != 0 {
		t.Fatal(stderr.String())
	}
	www := filepath.Join(dir, "www")
	srv := httptest.NewServer(http.FileServer(http.Dir(www)))
	defer srv.Close()
	pub, _ := os.ReadFile(key + ".pub")
	lines := strings.Split(strings.TrimSpace(string(pub)), "\n")
	peers := filepath.Join(dir, "peers")
	os.WriteFile(peers, []byte("self "+srv.URL+"/feed.json "+lines[len(lines)-1]+"\n"), 0o644)

	// One confirmed vandal, for StopForumSpam (a local server plays it).
	proveBot(t, regPath, true)
	var reports []string
	sfsAPI := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		r.ParseForm()
		reports = append(reports, r.PostForm.Get("api_key")+" "+r.PostForm.Get("username")+" "+r.PostForm.Get("ip_addr"))
	}))
	defer sfsAPI.Close()
	keyFile := filepath.Join(dir, "sfs.key")
	os.WriteFile(keyFile, []byte("SECRET\n"), 0o600)

	args := []string{"--mediagoblin-config", inst.IniPath, "--registry", regPath,
		"--feed-key", key, "--feed-name", "media.example.org", "--feed-out", www, "--feed-peers", peers,
		"--report-stopforumspam", "@" + keyFile, "--stopforumspam-url", sfsAPI.URL}
	if code, _, errOut := syncCmd(t, ctx, args...); code != 0 {
		t.Fatalf("sync = %d: %s", code, errOut)
	}
	if len(reports) != 1 || reports[0] != "SECRET bot 192.0.2.1" {
		t.Errorf("StopForumSpam got %q", reports)
	}
	data, err := os.ReadFile(filepath.Join(www, "feed.json"))
	if err != nil || !strings.Contains(string(data), `"name": "media.example.org"`) {
		t.Fatalf("feed.json %q, %v", data, err)
	}
	reg, err := registry.Open(ctx, regPath)
	if err != nil {
		t.Fatal(err)
	}
	st, _ := reg.FeedPeerState(ctx, "self")
	reg.Close()
	if st.LastAccepted.IsZero() {
		t.Errorf("sync did not pull: %+v", st)
	}

	// MediaGoblin's database is gone: the sync fails, the feed is still
	// made anew.
	os.Remove(filepath.Join(inst.Dir, "mediagoblin.db"))
	os.Chmod(inst.Dir, 0o500)
	defer os.Chmod(inst.Dir, 0o755)
	time.Sleep(1100 * time.Millisecond) // a new made time
	code, _, errOut := syncCmd(t, ctx, args...)
	after, _ := os.ReadFile(filepath.Join(www, "feed.json"))
	if code == 0 {
		t.Logf("sync succeeded without MediaGoblin's database: %s", errOut)
	}
	if string(after) == string(data) {
		t.Errorf("the feed was not exported again when the sync failed (exit %d: %s)", code, errOut)
	}
}

// Peers named on the command line replace the configuration file's, but the
// instance's own settings there (here ipv6-prefix, which serve bans with)
// still count: feed pull must group networks as the banner does.
func TestPeersFromConfigKeepsInstanceSettings(t *testing.T) {
	conf := filepath.Join(t.TempDir(), "bouncemilter.conf")
	if err := os.WriteFile(conf, []byte("ipv6-prefix = 48\nfeed-threshold = 3\nfeed-peers = /from/the/file\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	cfg := app.Defaults()
	cfg.FeedPeers = "/on/the/command/line"
	if err := peersFromConfig(&cfg, conf); err != nil {
		t.Fatal(err)
	}
	if cfg.FeedPeers != "/on/the/command/line" || cfg.IPv6Prefix != 48 || cfg.FeedThreshold != 3 {
		t.Errorf("peers %q, ipv6-prefix %d, threshold %v; want the command line's peers and the file's 48 and 3", cfg.FeedPeers, cfg.IPv6Prefix, cfg.FeedThreshold)
	}
}
