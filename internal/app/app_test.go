package app

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/emersion/go-milter"

	"github.com/bouncemilter/bouncemilter/internal/banner"
	"github.com/bouncemilter/bouncemilter/internal/mediagoblin/mgtest"
	"github.com/bouncemilter/bouncemilter/internal/registry"
	"github.com/bouncemilter/bouncemilter/internal/testenv"
)

const sender = "notice@media.example.org"

// postfix plays Postfix towards the milter with go-milter's client.
type postfix struct {
	t    *testing.T
	addr string
}

// send passes one message through the milter as Postfix would, from a
// client at ip:port, and returns the milter's final answer.
func (p postfix) send(host, ip string, port uint16, from, rcpt, queueID string, msg []byte) milter.ActionCode {
	t := p.t
	t.Helper()
	c := milter.NewClientWithOptions("tcp", p.addr, milter.ClientOptions{
		ActionMask: milter.OptAddHeader | milter.OptChangeBody | milter.OptAddRcpt | milter.OptRemoveRcpt |
			milter.OptChangeHeader | milter.OptQuarantine,
		ReadTimeout: 10 * time.Second, WriteTimeout: 10 * time.Second,
	})
	s, err := c.Session()
	if err != nil {
		t.Fatalf("milter session: %v", err)
	}
	defer s.Close()
	step := func(act *milter.Action, err error) bool {
		t.Helper()
		if err != nil {
			t.Fatalf("milter: %v", err)
		}
		return act.Code == milter.ActContinue
	}
	if port == 0 {
		// Postfix's bounce daemon's cleanup, as contrib/postfix/master.cf
		// names it.
		if err := s.Macros(milter.CodeConn, "{daemon_name}", "postfix-bounce"); err != nil {
			t.Fatal(err)
		}
	}
	if !step(s.Conn(host, milter.FamilyInet, port, ip)) || !step(s.Helo(host)) || !step(s.Mail(from, nil)) || !step(s.Rcpt(rcpt, nil)) {
		return milter.ActAccept
	}
	if err := s.Macros(milter.CodeData, "i", queueID); err != nil {
		t.Fatal(err)
	}
	raw := bytes.ReplaceAll(msg, []byte("\r\n"), []byte("\n"))
	head, body, _ := bytes.Cut(raw, []byte("\n\n"))
	var name, value string
	flush := func() bool {
		if name == "" {
			return true
		}
		ok := step(s.HeaderField(name, value))
		name = ""
		return ok
	}
	for _, l := range strings.Split(string(head), "\n") {
		if strings.HasPrefix(l, " ") || strings.HasPrefix(l, "\t") {
			value += "\n" + l
			continue
		}
		if !flush() {
			return milter.ActAccept
		}
		name, value, _ = strings.Cut(l, ":")
		value = strings.TrimPrefix(value, " ")
	}
	if !flush() || !step(s.HeaderEnd()) {
		return milter.ActAccept
	}
	if !step(s.BodyChunk(bytes.ReplaceAll(body, []byte("\n"), []byte("\r\n")))) {
		return milter.ActAccept
	}
	_, act, err := s.End()
	if err != nil {
		t.Fatalf("milter end: %v", err)
	}
	return act.Code
}

// serve runs Serve until stop is called, which returns what Serve did.
func serve(t *testing.T, cfg Config, log *slog.Logger) (pf postfix, stop func() error) {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	served := make(chan error, 1)
	go func() { served <- Serve(ctx, cfg, log) }()
	addr := strings.TrimPrefix(cfg.Listen, "inet:")
	testenv.WaitFor(t, 10*time.Second, "the milter to listen", func() bool {
		c, err := net.Dial("tcp", addr)
		if err == nil {
			c.Close()
		}
		return err == nil
	})
	return postfix{t, addr}, func() error { cancel(); return <-served }
}

func scrape(t *testing.T, addr string) string {
	t.Helper()
	resp, err := http.Get("http://" + addr + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return string(b)
}

// TestCommands runs the admin's whole day against a real registry and a
// real MediaGoblin database (its schema, on SQLite): the milter disables a
// sign-up whose verification mail bounced, the metrics count it, sync
// records its run, show tells the story, restore undoes it, and show,
// list and stats say so.
func TestCommands(t *testing.T) {
	ctx := context.Background()
	inst := mgtest.NewSQLite(t, sender)
	bot := inst.AddUser(t, mgtest.User{Username: "xk7bot", Email: "Xk7bot@example.net", Created: time.Now().Add(-time.Minute)})
	inst.AddUser(t, mgtest.User{Username: "alice", Email: "alice@example.org", Verified: true})
	dir := t.TempDir()
	var logs testenv.SyncBuffer
	log := slog.New(slog.NewTextHandler(&logs, nil))
	t.Cleanup(func() {
		if t.Failed() {
			t.Logf("log:\n%s", logs.String())
		}
	})

	cfg := Defaults()
	cfg.MediaGoblinConfig = inst.IniPath
	cfg.Registry = filepath.Join(dir, "registry.db")
	cfg.BanLog = filepath.Join(dir, "bans.log")
	cfg.Listen = "inet:" + testenv.FreeAddr(t, "127.0.0.1")
	cfg.MetricsListen = testenv.FreeAddr(t, "127.0.0.1")
	// Signing off: the bounce Postfix makes itself is authentic by its
	// path and the recorded send.
	cfg.SignReturnPath = false
	cfg.ShutdownGrace = 2 * time.Second

	pf, stop := serve(t, cfg, log)

	// MediaGoblin's verification mail, an ordinary message, then the
	// bounce Postfix makes when the remote server refuses the address.
	verify := []byte("Subject: GNU MediaGoblin - Verify your email!\nFrom: " + sender + "\nTo: Xk7bot@example.net\n\nhttps://media.example.org/auth/verify_email/?token=x\n")
	if got := pf.send("localhost", "127.0.0.1", 41000, sender, "Xk7bot@example.net", "OUT1", verify); got != milter.ActAccept {
		t.Fatalf("verification mail: %c", got)
	}
	if got := pf.send("mx.example.net", "192.0.2.25", 41001, "someone@example.net", "admin@media.example.org", "OTHER1", []byte("Subject: hi\n\nhello\n")); got != milter.ActAccept {
		t.Fatalf("ordinary mail: %c", got)
	}
	dsn, err := os.ReadFile(filepath.Join(testenv.RepoRoot(t), "internal", "bounce", "testdata", "local-userunknown.eml"))
	if err != nil {
		t.Fatal(err)
	}
	if got := pf.send("localhost", "127.0.0.1", 0, "", sender, "7C2E01A0B4", dsn); got != milter.ActDiscard {
		t.Fatalf("bounce: %c, want discard", got)
	}
	testenv.WaitFor(t, 10*time.Second, "the account ban", func() bool { ok, _ := inst.Banned(t, bot); return ok })
	testenv.WaitFor(t, 10*time.Second, "the worker to book it", func() bool {
		return strings.Contains(scrape(t, cfg.MetricsListen), `bouncemilter_actions_total{kind="ban-account",result="applied"} 1`)
	})
	metrics := scrape(t, cfg.MetricsListen)
	for _, want := range []string{
		`bouncemilter_messages_total{kind="bounce"} 1`,
		`bouncemilter_messages_total{kind="outgoing"} 1`,
		`bouncemilter_messages_total{kind="other"} 1`,
		`bouncemilter_bounces_total{verdict="acted"} 1`,
		`bouncemilter_decision_seconds_count 1`,
		`bouncemilter_parse_errors_total 0`,
		`bouncemilter_action_backlog 0`,
		`bouncemilter_last_sync_timestamp_seconds 0`,
	} {
		if !strings.Contains(metrics, want+"\n") {
			t.Errorf("metrics lack %q", want)
		}
	}
	if err := stop(); err != nil {
		t.Fatalf("Serve: %v", err)
	}

	// sync records its run: doctor and the metrics read it.
	var out bytes.Buffer
	if err := Sync(ctx, cfg, log, &out, nil); err != nil {
		t.Fatalf("Sync: %v", err)
	}
	reg, err := OpenExisting(ctx, cfg.Registry)
	if err != nil {
		t.Fatal(err)
	}
	if run, ok, err := reg.LastSync(ctx); !ok || err != nil || time.Since(run.At) > time.Minute {
		t.Errorf("last sync = %+v, %v, %v", run, ok, err)
	}
	reg.Close()

	show := func(who string) string {
		t.Helper()
		var b bytes.Buffer
		if err := Show(ctx, cfg, who, false, log, &b); err != nil {
			t.Fatalf("Show(%s): %v", who, err)
		}
		for _, l := range strings.Split(b.String(), "\n") {
			if n := len([]rune(l)); n > 80 {
				t.Errorf("line of %d columns: %q", n, l)
			}
		}
		return b.String()
	}
	got := show("xk7bot")
	for _, want := range []string{
		"xk7bot (user 1) <Xk7bot@example.net>",
		"mediagoblin  BANNED, verified no, privileges commenter,reporter,uploader",
		"queue OUT1",
		"queue 7C2E01A0B4  verdict acted",
		"reported by media.example.org",
		"Xk7bot@example.net: failed 5.1.1 userunknown",
		"authenticity: generated by this Postfix",
		"ban-account 1: applied",
		"allow-list (0)",
	} {
		if !strings.Contains(got, want) {
			t.Errorf("show lacks %q:\n%s", want, got)
		}
	}
	t.Logf("show:\n%s", got)
	if same := show("Xk7bot@EXAMPLE.net"); same != got {
		t.Errorf("show by address differs:\n%s", same)
	}

	// Restore, as root or not: the account ban is lifted at once, the IP
	// ban (none was linked) stays the milter's.
	cfg.Banner = banner.KindNone
	out.Reset()
	var errOut bytes.Buffer
	if err := Restore(ctx, cfg, []string{"xk7bot", "nobody"}, "complaint #12", log, &out, &errOut); err == nil || !errors.Is(err, registry.ErrNotFound) {
		t.Errorf("Restore of an unknown name: %v", err)
	}
	if ok, _ := inst.Banned(t, bot); ok {
		t.Error("still banned in MediaGoblin after restore")
	}
	got = show("xk7bot")
	for _, want := range []string{"mediagoblin  not banned", "ban-account 1: undone", "unban-account 1: applied", "allow-list (2)", "complaint #12"} {
		if !strings.Contains(got, want) {
			t.Errorf("show after restore lacks %q:\n%s", want, got)
		}
	}

	var list bytes.Buffer
	if n, err := List(ctx, cfg, registry.ListFilter{}, true, &list); err != nil || n != 0 || strings.TrimSpace(list.String()) != "[]" {
		t.Errorf("list --json after restore = %q, %d, %v", list.String(), n, err)
	}
	list.Reset()
	if n, err := List(ctx, cfg, registry.ListFilter{States: []registry.ActionState{registry.Undone}, Domain: "example.net"}, true, &list); err != nil || n != 1 {
		t.Errorf("list --state undone = %q, %d, %v", list.String(), n, err)
	}
	var rows []map[string]any
	if err := json.Unmarshal(list.Bytes(), &rows); err != nil || len(rows) != 1 || rows[0]["username"] != "xk7bot" {
		t.Errorf("list JSON = %v, %v", rows, err)
	}

	var stats bytes.Buffer
	if err := Stats(ctx, cfg, 7, false, &stats); err != nil {
		t.Fatal(err)
	}
	today := time.Now().UTC().Format(time.DateOnly)
	if !strings.Contains(stats.String(), today+"     1     1       0      0       0      0        1    0  ############\n") {
		t.Errorf("stats:\n%s", stats.String())
	}
	t.Logf("stats:\n%s", stats.String())
}

// TestDryRun: with --banner dry-run the milter journals and logs the bans
// it would make and makes none, in MediaGoblin or the firewall.
func TestDryRun(t *testing.T) {
	ctx := context.Background()
	inst := mgtest.NewSQLite(t, sender)
	created := time.Now().Add(-time.Minute)
	bot := inst.AddUser(t, mgtest.User{Username: "xk7bot", Email: "Xk7bot@example.net", Created: created})
	dir := t.TempDir()
	var logs testenv.SyncBuffer
	log := slog.New(slog.NewTextHandler(&logs, nil))

	cfg := Defaults()
	cfg.MediaGoblinConfig = inst.IniPath
	cfg.Registry = filepath.Join(dir, "registry.db")
	cfg.Banner = banner.KindDryRun
	cfg.Listen = "inet:" + testenv.FreeAddr(t, "127.0.0.1")
	cfg.SignReturnPath = false
	// The sign-up's IP is known: the IP ban is tried too.
	reg, err := registry.Open(ctx, cfg.Registry)
	if err != nil {
		t.Fatal(err)
	}
	err = reg.Tx(ctx, func(tx *registry.Tx) error {
		if err := tx.UpsertRegistration(ctx, registry.Registration{UserID: bot, Username: "xk7bot", Email: "Xk7bot@example.net", Created: created, Synced: time.Now()}); err != nil {
			return err
		}
		_, err := tx.SetIP(ctx, "xk7bot", "2001:db8:1:2::7", "signup-log")
		return err
	})
	if err != nil {
		t.Fatal(err)
	}
	reg.Close()

	pf, stop := serve(t, cfg, log)
	verify := []byte("Subject: GNU MediaGoblin - Verify your email!\nFrom: " + sender + "\nTo: Xk7bot@example.net\n\nx\n")
	pf.send("localhost", "127.0.0.1", 41000, sender, "Xk7bot@example.net", "OUT1", verify)
	dsn, _ := os.ReadFile(filepath.Join(testenv.RepoRoot(t), "internal", "bounce", "testdata", "local-userunknown.eml"))
	pf.send("localhost", "127.0.0.1", 0, "", sender, "7C2E01A0B4", dsn)
	testenv.WaitFor(t, 10*time.Second, "the dry run to refuse both bans", func() bool {
		return strings.Contains(logs.String(), "dry run: would ban")
	})
	if err := stop(); err != nil {
		t.Fatal(err)
	}
	if ok, _ := inst.Banned(t, bot); ok {
		t.Error("a dry run banned the account")
	}
	if _, err := os.Stat(cfg.BanLog); err == nil {
		if b, _ := os.ReadFile(cfg.BanLog); len(b) > 0 {
			t.Errorf("a dry run wrote the ban log: %s", b)
		}
	}
	if !strings.Contains(logs.String(), "ip=2001:db8:1:2::/64") {
		t.Errorf("the dry run does not say it would ban the /64:\n%s", logs.String())
	}
	var list bytes.Buffer
	if n, err := List(ctx, cfg, registry.ListFilter{States: []registry.ActionState{registry.Refused}}, false, &list); err != nil || n != 1 {
		t.Errorf("list --state refused = %d, %v\n%s", n, err, list.String())
	}
}

func TestUsageErrors(t *testing.T) {
	ctx := context.Background()
	log := slog.New(slog.DiscardHandler)
	for _, tc := range []struct {
		name string
		cfg  func(*Config)
	}{
		{"bad listen", func(c *Config) { c.Listen = "tcp:1" }},
		{"bad metrics listen", func(c *Config) { c.MetricsListen = "9464" }},
		{"trust headers with signing", func(c *Config) { c.TrustReturnedHeaders = true }},
	} {
		t.Run(tc.name, func(t *testing.T) {
			cfg := Defaults()
			cfg.Registry = filepath.Join(t.TempDir(), "never-created.db")
			tc.cfg(&cfg)
			if err := Serve(ctx, cfg, log); !errors.Is(err, ErrUsage) {
				t.Errorf("Serve = %v, want a usage error", err)
			}
			if _, err := os.Stat(cfg.Registry); err == nil {
				t.Error("a usage error created the registry")
			}
		})
	}
	if err := Stats(ctx, Defaults(), 0, false, io.Discard); !errors.Is(err, ErrUsage) {
		t.Errorf("Stats --days 0 = %v", err)
	}
}
