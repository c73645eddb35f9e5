package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"flag"
	"io"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/bouncemilter/bouncemilter/internal/app"
	"github.com/bouncemilter/bouncemilter/internal/mediagoblin/mgtest"
	"github.com/bouncemilter/bouncemilter/internal/registry"
	"github.com/bouncemilter/bouncemilter/internal/testenv"
)

func runCLI(args ...string) (stdout, stderr string, code int) {
	var o, e bytes.Buffer
	code = run(args, &o, &e)
	return o.String(), e.String(), code
}

// Every command and subcommand answers --help with its usage and exit
// status 0, wherever --help stands.
func TestHelpExitsZero(t *testing.T) {
	for _, args := range [][]string{
		{"--help"}, {"help"},
		{"serve", "--help"}, {"sync", "--help"}, {"doctor", "--help"}, {"parse", "--help"},
		{"accounts", "--help"}, {"accounts", "list", "--help"}, {"accounts", "show", "--help"},
		{"accounts", "stats", "--help"}, {"accounts", "restore", "--help"}, {"accounts", "allow", "--help"},
		{"accounts", "restore", "alice", "--help"}, {"accounts", "show", "-h"},
		{"keys", "rotate", "--help"}, {"feed", "keygen", "--help"}, {"feed", "export", "--help"},
		{"feed", "pull", "--help"}, {"feed", "status", "--help"},
	} {
		out, errOut, code := runCLI(args...)
		if code != 0 {
			t.Errorf("%q = %d, want 0: %s", args, code, errOut)
		}
		if !strings.Contains(out+errOut, "Usage") {
			t.Errorf("%q printed no usage", args)
		}
		if all := out + errOut; strings.Contains(all, "\n  -") && !strings.Contains(all, "\n  --") || strings.Contains(all, "-  -") {
			t.Errorf("%q does not show the flags as pflag reads them (--name):\n%s", args, all)
		}
	}
}

func TestUsageErrorsExitTwo(t *testing.T) {
	reg := filepath.Join(t.TempDir(), "registry.db")
	for _, args := range [][]string{
		{}, {"nosuchcommand"}, {"serve", "--nope"}, {"serve", "stray"}, {"serve", "--listen", "tcp:1", "--registry", reg},
		{"serve", "--metrics-listen", "9464", "--registry", reg},
		{"sync", "--every"}, {"doctor", "--nope"}, {"accounts"}, {"accounts", "nosuch"},
		{"accounts", "show", "--registry", reg}, {"accounts", "list", "--state", "gone", "--registry", reg},
		{"accounts", "list", "--since", "yesterday", "--registry", reg}, {"accounts", "list", "--ip", "300.1.2.3", "--registry", reg},
		{"accounts", "stats", "--days", "0", "--registry", reg}, {"accounts", "restore", "--registry", reg},
		{"accounts", "restore", "alice", "--banner", "iptables", "--registry", reg},
		{"serve", "--log-format", "xml"},
	} {
		if _, errOut, code := runCLI(args...); code != 2 {
			t.Errorf("%q = %d, want 2: %s", args, code, errOut)
		}
	}
	if _, err := os.Stat(reg); err == nil {
		t.Error("a usage error created the registry")
	}
}

// seedRegistry is a registry holding one disabled sign-up, alice, with its
// evidence; MediaGoblin's database holds her account, banned.
func seedRegistry(t *testing.T) (regPath string, inst *mgtest.Instance) {
	t.Helper()
	ctx := context.Background()
	inst = mgtest.NewSQLite(t, "notice@media.example.org")
	id := inst.AddUser(t, mgtest.User{Username: "alice", Email: "alice@nowhere.example"})
	inst.Ban(t, id, "bouncemilter: mail to alice@nowhere.example bounced permanently (5.1.1 userunknown)")
	regPath = filepath.Join(t.TempDir(), "registry.db")
	reg, err := registry.Open(ctx, regPath)
	if err != nil {
		t.Fatal(err)
	}
	defer reg.Close()
	now := time.Now()
	err = reg.Tx(ctx, func(tx *registry.Tx) error {
		if err := tx.UpsertRegistration(ctx, registry.Registration{UserID: id, Username: "alice", Email: "alice@nowhere.example", Created: now, Synced: now}); err != nil {
			return err
		}
		_, err := tx.SetIP(ctx, "alice", "2001:db8:1:2::7", "signup-log")
		return err
	})
	if err != nil {
		t.Fatal(err)
	}
	reg.RecordSends(ctx, []registry.Send{{Recipient: "alice@nowhere.example", Sent: now, QueueID: "4Q1", Subject: "GNU MediaGoblin - Verify your email!"}})
	_, err = reg.RecordBounce(ctx, registry.Bounce{Received: now, QueueID: "4B1", Verdict: registry.VerdictActed,
		Detail: "alice@nowhere.example: alice disabled (signed return path)",
		Report: `{"bounce":true,"reporting_mta":"mx.nowhere.example","recipients":[{"address":"alice@nowhere.example","literal":true,"action":"failed","status":"5.1.1","reason":"userunknown","diagnostic":"550 5.1.1 no such user"}]}`},
		[]registry.Action{{UserID: id, Kind: registry.BanAccount, Target: registry.UserTarget(id), Reason: "5.1.1"}})
	if err != nil {
		t.Fatal(err)
	}
	due, _ := reg.DueActions(ctx, now, 10)
	for _, a := range due {
		reg.MarkApplied(ctx, a.ID, now, "")
	}
	return regPath, inst
}

// Flags after the names, as admins type them: `accounts restore alice
// --registry PATH` restores alice in that registry (the standard flag
// package took --registry and PATH for two more usernames, and worked on
// the default registry).
func TestFlagsAfterNames(t *testing.T) {
	regPath, inst := seedRegistry(t)
	out, errOut, code := runCLI("accounts", "restore", "alice", "--registry", regPath, "--mediagoblin-config", inst.IniPath, "--banner", "none", "--note", "complaint #12")
	if code != 0 || !strings.Contains(out, "alice: restored and allow-listed") {
		t.Fatalf("restore = %d: %s%s", code, out, errOut)
	}
	out, errOut, code = runCLI("accounts", "show", "alice", "--mediagoblin-config", inst.IniPath, "--registry", regPath)
	if code != 0 {
		t.Fatalf("show = %d: %s", code, errOut)
	}
	for _, want := range []string{"mediagoblin  not banned", "ban-account 1: undone", "unban-account 1: applied", "complaint #12",
		"authenticity: signed return path", "2001:db8:1:2::7 (signup-log)"} {
		if !strings.Contains(out, want) {
			t.Errorf("show after restore lacks %q:\n%s", want, out)
		}
	}
	for _, l := range strings.Split(out, "\n") {
		if len([]rune(l)) > 80 {
			t.Errorf("show: a line of %d columns: %q", len([]rune(l)), l)
		}
	}
	// An IP shows every sign-up from it; JSON is an array.
	out, _, code = runCLI("accounts", "show", "--json", "2001:db8:1:2::7", "--registry", regPath)
	var shown []map[string]any
	if code != 0 || json.Unmarshal([]byte(out), &shown) != nil || len(shown) != 1 || shown[0]["username"] != "alice" {
		t.Errorf("show --json by IP = %d: %s", code, out)
	}
	if _, errOut, code := runCLI("accounts", "show", "bob", "--registry", regPath); code != 1 || !strings.Contains(errOut, `no sign-up of "bob"`) {
		t.Errorf("show of an unknown name = %d: %s", code, errOut)
	}

	out, _, code = runCLI("accounts", "list", "--json", "--registry", regPath)
	if code != 0 || strings.TrimSpace(out) != "[]" {
		t.Errorf("list --json after restore = %d: %q", code, out)
	}
	out, _, code = runCLI("accounts", "list", "--registry", regPath, "--state", "undone", "--ip", "2001:db8::/32", "--since", "1d", "--domain", "nowhere.example")
	if code != 0 || !strings.Contains(out, "alice") {
		t.Errorf("list --state undone = %d: %q", code, out)
	}
	out, _, code = runCLI("accounts", "stats", "--registry", regPath, "--days", "3")
	if code != 0 || !strings.Contains(out, "2001:db8:1::/48") || !strings.Contains(out, "nowhere.example") {
		t.Errorf("stats = %d:\n%s", code, out)
	}
	for _, l := range strings.Split(out, "\n") {
		if len([]rune(l)) > 80 {
			t.Errorf("stats: a line of %d columns: %q", len([]rune(l)), l)
		}
	}
	out, _, code = runCLI("accounts", "stats", "--json", "--registry", regPath)
	var st map[string]any
	if code != 0 || json.Unmarshal([]byte(out), &st) != nil || len(st["days"].([]any)) != 14 {
		t.Errorf("stats --json = %d: %s", code, out)
	}
}

// The configuration file holds serve's and sync's settings; a flag on the
// command line wins; a setting nobody has is an error.
func TestConfigFile(t *testing.T) {
	regPath, inst := seedRegistry(t)
	dir := t.TempDir()
	conf := filepath.Join(dir, "bouncemilter.conf")
	write := func(s string) {
		t.Helper()
		if err := os.WriteFile(conf, []byte(s), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	write(`# bouncemilter
registry = ` + regPath + `
mediagoblin-config = "` + inst.IniPath + `"
; sync's settings are skipped by the commands that do not have them
every = 1m
signup-log = /var/log/nginx/one.log
signup-log = /var/log/nginx/two.log
listen = inet:127.0.0.1:1
`)
	// accounts read where things are from it.
	out, errOut, code := runCLI("accounts", "show", "alice", "--config", conf)
	if code != 0 || !strings.Contains(out, "mediagoblin  BANNED") {
		t.Errorf("show with the config's registry and MediaGoblin = %d: %s%s", code, out, errOut)
	}
	// A flag wins over the file: the milter listens where the flag says.
	var cfgDoctor bytes.Buffer
	code = run([]string{"doctor", "--config", conf, "--listen", "inet:127.0.0.1:2", "--postconf", "/bin/false"}, &cfgDoctor, &cfgDoctor)
	if code != 1 || !strings.Contains(cfgDoctor.String(), "inet:127.0.0.1:2") || strings.Contains(cfgDoctor.String(), "inet:127.0.0.1:1") {
		t.Errorf("doctor with --listen over the file's = %d:\n%s", code, cfgDoctor.String())
	}
	if !strings.Contains(cfgDoctor.String(), "/var/log/nginx/one.log") || !strings.Contains(cfgDoctor.String(), "/var/log/nginx/two.log") {
		t.Errorf("doctor did not take both signup-log lines:\n%s", cfgDoctor.String())
	}

	write("registry = " + regPath + "\nregistyr = /tmp/x\n")
	if _, errOut, code := runCLI("serve", "--config", conf); code != 2 || !strings.Contains(errOut, `bouncemilter.conf:2: unknown setting "registyr"`) {
		t.Errorf("a typo in the file = %d: %s", code, errOut)
	}
	write("window = soon\n")
	if _, errOut, code := runCLI("serve", "--config", conf); code != 2 || !strings.Contains(errOut, "bouncemilter.conf:1: window") {
		t.Errorf("a bad value in the file = %d: %s", code, errOut)
	}
	if _, errOut, code := runCLI("sync", "--config", filepath.Join(dir, "missing.conf")); code != 2 || !strings.Contains(errOut, "missing.conf") {
		t.Errorf("a missing --config = %d: %s", code, errOut)
	}

	// --log-format json, from the flag or the file.
	write("log-format = json\nregistry = " + filepath.Join(dir, "new.db") + "\nmediagoblin-config = " + inst.IniPath + "\n")
	_, errOut, code = runCLI("sync", "--config", conf)
	if code != 0 || !strings.Contains(errOut, `{"time":`) || !strings.Contains(errOut, `"msg":"sync done"`) {
		t.Errorf("sync with log-format = json in the file = %d:\n%s", code, errOut)
	}
	_, errOut, _ = runCLI("sync", "--registry", filepath.Join(dir, "new.db"), "--mediagoblin-config", inst.IniPath, "--log-format=json")
	if !strings.Contains(errOut, `"msg":"sync done"`) {
		t.Errorf("sync --log-format=json:\n%s", errOut)
	}
}

// contrib/bouncemilter.conf names every setting of serve and sync (most
// commented out, at their defaults), and serve, sync and doctor read it.
func TestSampleConfig(t *testing.T) {
	path := filepath.Join(testenv.RepoRoot(t), "contrib", "bouncemilter.conf")
	data, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	for _, define := range []func(*flag.FlagSet){defineServe, defineSync} {
		fs := flag.NewFlagSet("", flag.ContinueOnError)
		define(fs)
		fs.VisitAll(func(f *flag.Flag) {
			if !regexp.MustCompile(`(?m)^(# )?` + regexp.QuoteMeta(f.Name) + ` =( |$)`).Match(data) {
				t.Errorf("the sample lacks %s", f.Name)
			}
		})
	}
	for _, cmd := range []string{"serve", "sync", "doctor"} {
		fs := flag.NewFlagSet(cmd, flag.ContinueOnError)
		var errOut bytes.Buffer
		fs.SetOutput(&errOut)
		cfg := app.Defaults()
		switch cmd {
		case "serve":
			bindCommon(fs, &cfg)
			bindServe(fs, &cfg)
		case "sync":
			bindCommon(fs, &cfg)
			bindSync(fs, &cfg, true)
		case "doctor":
			bindDoctor(fs, &cfg)
		}
		if err := parseFlags(fs, []string{"--config", path}, allKeys); err != nil {
			t.Errorf("%s with the sample: %v: %s", cmd, err, errOut.String())
		}
	}
}

// FuzzConfigFile: whatever the file holds, reading it gives settings or an
// error naming the line, never a panic.
func FuzzConfigFile(f *testing.F) {
	sample, err := os.ReadFile(filepath.Join("..", "..", "contrib", "bouncemilter.conf"))
	if err == nil {
		f.Add(string(sample))
	}
	f.Add("registry = \"/x\"\nnever-ban = 10.0.0.0/8\nnever-ban = ::1\n")
	f.Add("window = \"\\x\"\n= \n;\n#\nlisten=\n")
	f.Fuzz(func(t *testing.T, content string) {
		path := filepath.Join(t.TempDir(), "c.conf")
		if err := os.WriteFile(path, []byte(content), 0o600); err != nil {
			t.Fatal(err)
		}
		fs := flag.NewFlagSet("serve", flag.ContinueOnError)
		fs.SetOutput(io.Discard)
		cfg := app.Defaults()
		bindCommon(fs, &cfg)
		bindServe(fs, &cfg)
		err := parseFlags(fs, []string{"--config", path}, allKeys)
		if err != nil && !errors.Is(err, errUsage) {
			t.Fatalf("an error that is not a usage error: %v", err)
		}
	})
}
