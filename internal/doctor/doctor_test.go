package doctor

import (
	"bytes"
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/bouncemilter/bouncemilter/internal/bounce"
	"github.com/bouncemilter/bouncemilter/internal/filter"
	"github.com/bouncemilter/bouncemilter/internal/mediagoblin/mgtest"
	"github.com/bouncemilter/bouncemilter/internal/registry"
	"github.com/bouncemilter/bouncemilter/internal/returnpath"
	"github.com/bouncemilter/bouncemilter/internal/testenv"
)

const sender = "notice@media.example.org"

// setup is a complete, correct installation: a private Postfix configured
// with contrib/postfix's lines, the real milter on a loopback port,
// MediaGoblin on SQLite, a registry that sync filled, a signing key, a
// fail2ban whose jail watches the ban log, and a web log; every file owned
// as install.sh leaves it, for the service user nobody.
type setup struct {
	// contribMilter is contrib/postfix/main.cf's smtpd_milters.
	contribMilter string
	cfg           Config
	postfix       *testenv.Postfix
	f2b           *testenv.Fail2ban
	reg           *registry.DB
	dir           string
}

func newSetup(t *testing.T) *setup {
	t.Helper()
	ctx := context.Background()
	testenv.Require(t, os.Geteuid() == 0, "doctor's file checks as another user need root")
	_, err := exec.LookPath("fail2ban-client")
	testenv.Require(t, err == nil, "fail2ban is not installed (apt-get install fail2ban)")
	s := &setup{}

	// Postfix with contrib's settings as they are: the milter on a unix
	// socket under the queue directory.
	var main []string
	contrib, err := os.ReadFile(filepath.Join(testenv.RepoRoot(t), "contrib", "postfix", "main.cf"))
	if err != nil {
		t.Fatal(err)
	}
	for _, l := range strings.Split(string(contrib), "\n") {
		if l = strings.TrimSpace(l); l == "" || strings.HasPrefix(l, "#") {
			continue
		}
		if name, v, _ := strings.Cut(l, "="); strings.TrimSpace(name) == "smtpd_milters" {
			s.contribMilter = strings.TrimSpace(v)
		}
		main = append(main, l)
	}
	s.postfix = testenv.StartPostfix(t, testenv.PostfixConfig{Main: main})

	// The real milter, where Postfix looks for it.
	rel, ok := strings.CutPrefix(s.contribMilter, "unix:")
	if !ok || filepath.IsAbs(rel) {
		t.Fatalf("contrib/postfix/main.cf names %q, not a socket under the queue directory", s.contribMilter)
	}
	sock := filepath.Join(s.postfix.Queue, rel)
	os.MkdirAll(filepath.Dir(sock), 0o750)
	listen := "unix:" + sock
	ln, err := filter.Listen(listen, filter.Socket{Group: "postfix"})
	if err != nil {
		t.Fatal(err)
	}

	// Files a service user reads: a directory every user can reach.
	s.dir, err = os.MkdirTemp("", "doctor")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(s.dir) })
	os.Chmod(s.dir, 0o755)

	inst := mgtest.NewSQLite(t, sender)
	for d := inst.Dir; d != filepath.Dir(d) && d != os.TempDir(); d = filepath.Dir(d) {
		os.Chmod(d, 0o755)
	}
	chown(t, inst.Dir)
	id := inst.AddUser(t, mgtest.User{Username: "bot", Email: "bot@nowhere.example"})

	regPath := filepath.Join(s.dir, "lib", "registry.db")
	s.reg, err = registry.Open(ctx, regPath)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.reg.Close() })
	keys := filepath.Join(s.dir, "lib", "returnpath.keys")
	if _, err := returnpath.LoadOrCreate(keys); err != nil {
		t.Fatal(err)
	}
	err = s.reg.Tx(ctx, func(tx *registry.Tx) error {
		if err := tx.UpsertRegistration(ctx, registry.Registration{UserID: id, Username: "bot", Email: "bot@nowhere.example", Created: time.Now(), Synced: time.Now()}); err != nil {
			return err
		}
		_, err := tx.SetIP(ctx, "bot", "203.0.113.7", "signup-log")
		return err
	})
	if err != nil {
		t.Fatal(err)
	}
	if err := s.reg.RecordSync(ctx, registry.SyncRun{At: time.Now(), Added: 1, Linked: 1, Lines: 1}); err != nil {
		t.Fatal(err)
	}
	webLog := filepath.Join(s.dir, "signup.log")
	if err := os.WriteFile(webLog, nil, 0o640); err != nil {
		t.Fatal(err)
	}
	banLog := filepath.Join(s.dir, "log", "bans.log")
	os.MkdirAll(filepath.Dir(banLog), 0o755)
	if err := os.WriteFile(banLog, nil, 0o640); err != nil {
		t.Fatal(err)
	}
	chown(t, s.dir)

	h := &bounce.Handler{Journal: s.reg, Policy: bounce.DefaultPolicy(), Sender: sender}
	f, err := filter.New(filter.Config{Sender: sender, Delimiter: "+"}, h, s.reg, nil, nil)
	if err != nil {
		t.Fatal(err)
	}
	mctx, stop := context.WithCancel(ctx)
	done := make(chan struct{})
	go func() { f.Serve(mctx, ln, time.Second); close(done) }()
	t.Cleanup(func() { stop(); <-done })

	// fail2ban with contrib's jail on the ban log and the real actions:
	// contrib's bouncemilter-nftables and the stock nftables-multiport it
	// builds on. doctor reads the commands they would run; the jail runs
	// them with nft replaced by true (setJailAction): a test must not touch
	// the machine's firewall.
	s.f2b = testenv.StartFail2ban(t, banLog)
	for _, name := range []string{"nftables.conf", "nftables-multiport.conf"} {
		b, err := os.ReadFile(filepath.Join(stockActions, name))
		testenv.Require(t, err == nil, "fail2ban's stock "+name+" is not installed")
		putFile(t, filepath.Join(s.f2b.Dir, "action.d", name), string(b))
	}
	for _, name := range []string{"bouncemilter-nftables.conf", "bouncemilter-nftables-allports.conf"} {
		b, err := os.ReadFile(filepath.Join(testenv.RepoRoot(t), "contrib", "fail2ban", "action.d", name))
		if err != nil {
			t.Fatal(err)
		}
		putFile(t, filepath.Join(s.f2b.Dir, "action.d", name), string(b))
	}
	s.setJailAction(t, "bouncemilter-nftables")

	s.cfg = Config{
		Listen:            listen,
		Postconf:          []string{"postconf", "-c", s.postfix.Dir},
		Delimiter:         "+",
		MediaGoblinConfig: inst.IniPath,
		Registry:          regPath,
		KeyFile:           keys,
		ServiceUser:       "nobody",
		Banner:            "log",
		BanLog:            banLog,
		Fail2banConfig:    s.f2b.Dir,
		BanDuration:       7 * 24 * time.Hour,
		IPv6Prefix:        64,
		SignupLogs:        []string{webLog},
	}
	return s
}

// stockActions is where Debian's fail2ban package installs its actions.
const stockActions = "/etc/fail2ban/action.d"

// setJailAction gives the jail action (none if ""), running true for nft.
func (s *setup) setJailAction(t *testing.T, action string) {
	t.Helper()
	if action != "" {
		action += "[nftables=true]"
	}
	putFile(t, filepath.Join(s.f2b.Dir, "jail.d", "zz-doctor.local"), "[bouncemilter]\naction = "+action+"\n")
	// --restart: a plain reload keeps the jail's old actions.
	s.f2b.Client(t, "reload", "--restart", "bouncemilter")
}

func chown(t *testing.T, dir string) {
	t.Helper()
	if out, err := exec.Command("chown", "-R", "nobody", dir).CombinedOutput(); err != nil {
		t.Fatalf("chown: %v: %s", err, out)
	}
}

func putFile(t *testing.T, path, content string) {
	t.Helper()
	os.MkdirAll(filepath.Dir(path), 0o755)
	if err := os.WriteFile(path, []byte(content), 0o644); err != nil {
		t.Fatal(err)
	}
}

func (s *setup) postconf(t *testing.T, line string) {
	t.Helper()
	if out, err := exec.Command("postconf", "-c", s.postfix.Dir, "-e", line).CombinedOutput(); err != nil {
		t.Fatalf("postconf -e %s: %v: %s", line, err, out)
	}
}

func report(results []Result) string {
	var b bytes.Buffer
	Write(&b, results)
	return b.String()
}

func TestDoctor(t *testing.T) {
	ctx := context.Background()
	s := newSetup(t)

	results := Run(ctx, s.cfg)
	for _, r := range results {
		if r.Status != OK {
			t.Errorf("the good setup: %s %s: %s", r.Status, r.Check, r.Detail)
		}
	}
	if len(results) < 15 {
		t.Errorf("only %d checks", len(results))
	}
	t.Logf("the good setup:\n%s", report(results))

	// Each broken setup is made from the good one and repaired after.
	for _, tc := range []struct {
		name   string
		brk    func(t *testing.T, cfg *Config) (repair func())
		check  string
		status Status
		fix    string
	}{
		{"milter default action tempfail", func(t *testing.T, cfg *Config) func() {
			s.postconf(t, "milter_default_action = tempfail")
			return func() { s.postconf(t, "milter_default_action = accept") }
		}, "postfix milter_default_action", Fail, "'milter_default_action = accept'"},
		{"bounces Postfix makes are not filtered", func(t *testing.T, cfg *Config) func() {
			s.postconf(t, "non_smtpd_milters =")
			s.postconf(t, "internal_mail_filter_classes =")
			return func() {
				s.postconf(t, "non_smtpd_milters = "+s.contribMilter)
				s.postconf(t, "internal_mail_filter_classes = bounce")
			}
		}, "postfix non_smtpd_milters", Fail, "non_smtpd_milters = " + s.contribMilter},
		{"no recipient delimiter", func(t *testing.T, cfg *Config) func() {
			s.postconf(t, "recipient_delimiter =")
			return func() { s.postconf(t, "recipient_delimiter = +") }
		}, "postfix recipient_delimiter", Fail, "recipient_delimiter = +"},
		{"milter down", func(t *testing.T, cfg *Config) func() {
			cfg.Listen = "inet:" + testenv.FreeAddr(t, "127.0.0.1")
			return func() {}
		}, "milter handshake", Fail, "systemctl start bouncemilter"},
		{"something else on the milter's port", func(t *testing.T, cfg *Config) func() {
			// A connect succeeds; only the protocol shows it is no milter.
			smtp := testenv.StartSMTPServer(t, "127.0.0.1:0", nil)
			cfg.Listen = "inet:" + smtp.Addr
			return func() {}
		}, "milter handshake", Fail, ""},
		{"no MediaGoblin config", func(t *testing.T, cfg *Config) func() {
			cfg.MediaGoblinConfig = filepath.Join(t.TempDir(), "mediagoblin.ini")
			return func() {}
		}, "mediagoblin config", Fail, "--mediagoblin-config"},
		{"MediaGoblin database not writable by the service user", func(t *testing.T, cfg *Config) func() {
			db := filepath.Join(filepath.Dir(cfg.MediaGoblinConfig), "mediagoblin.db")
			os.Chown(db, 0, 0)
			return func() { os.Chown(db, 65534, 0) }
		}, "mediagoblin database rights", Fail, "chmod g+w"},
		{"signing key unreadable by the service user", func(t *testing.T, cfg *Config) func() {
			os.Chown(cfg.KeyFile, 0, 0)
			return func() { os.Chown(cfg.KeyFile, 65534, 0) }
		}, "signing key", Fail, "chown nobody"},
		{"registry not writable", func(t *testing.T, cfg *Config) func() {
			os.Chmod(filepath.Dir(cfg.Registry), 0o555)
			return func() { os.Chmod(filepath.Dir(cfg.Registry), 0o750) }
		}, "registry", Fail, "install -d -o nobody"},
		{"no fail2ban jail", func(t *testing.T, cfg *Config) func() {
			cfg.Jail = "nosuchjail"
			return func() {}
		}, "fail2ban jail", Fail, "contrib/fail2ban"},
		{"jail watches another log", func(t *testing.T, cfg *Config) func() {
			cfg.BanLog = filepath.Join(s.dir, "other.log")
			os.WriteFile(cfg.BanLog, nil, 0o666)
			return func() {}
		}, "fail2ban logpath", Fail, "logpath = "},
		{"banaction tool missing", func(t *testing.T, cfg *Config) func() {
			if _, err := exec.LookPath("iptables"); err == nil {
				t.Skip("iptables is installed here: a missing tool cannot be shown with it")
			}
			putFile(t, filepath.Join(s.f2b.Dir, "action.d", "iptables-multiport.conf"), "[Definition]\nactionban = true\nactionunban = true\n")
			s.setJailAction(t, "iptables-multiport")
			return func() { s.setJailAction(t, "bouncemilter-nftables") }
		}, "fail2ban banaction", Fail, "apt-get install iptables"},
		{"jail without action", func(t *testing.T, cfg *Config) func() {
			s.setJailAction(t, "")
			return func() { s.setJailAction(t, "bouncemilter-nftables") }
		}, "fail2ban banaction", Fail, "banaction"},
		{"stock nftables action with IPv6 networks", func(t *testing.T, cfg *Config) func() {
			s.setJailAction(t, "nftables-multiport")
			return func() { s.setJailAction(t, "bouncemilter-nftables") }
		}, "fail2ban banaction", Fail, "banaction = bouncemilter-nftables"},
		{"stock nftables action whose sets an nftables.local gives the interval flag", func(t *testing.T, cfg *Config) func() {
			// fail2ban's maintainer's workaround, and newer fail2ban's
			// stock action: the sets hold networks whatever the name.
			local := filepath.Join(s.f2b.Dir, "action.d", "nftables.local")
			putFile(t, local, `[Definition]
_nft_add_set = <nftables> add set <table_family> <table> <addr_set> \{ type <addr_type>\; flags interval\; \}
              <_nft_for_proto-<type>-iter>
              <nftables> add rule <table_family> <table> <chain> %(rule_stat)s
              <_nft_for_proto-<type>-done>
`)
			s.setJailAction(t, "nftables-multiport")
			return func() { os.Remove(local); s.setJailAction(t, "bouncemilter-nftables") }
		}, "fail2ban banaction", OK, ""},
		{"ban durations differ", func(t *testing.T, cfg *Config) func() {
			cfg.BanDuration = time.Hour
			return func() {}
		}, "fail2ban bantime", Warn, "bantime = 3600"},
		{"sync stopped", func(t *testing.T, cfg *Config) func() {
			cfg.Now = func() time.Time { return time.Now().Add(3 * time.Hour) }
			return func() {}
		}, "last sync", Fail, "bouncemilter-sync"},
		{"sign-ups not linked to IPs", func(t *testing.T, cfg *Config) func() {
			s.reg.Tx(ctx, func(tx *registry.Tx) error { _, err := tx.SetIP(ctx, "bot", "", ""); return err })
			s.reg.RecordSync(ctx, registry.SyncRun{At: time.Now()})
			return func() {
				s.reg.Tx(ctx, func(tx *registry.Tx) error { _, err := tx.SetIP(ctx, "bot", "203.0.113.7", "signup-log"); return err })
				s.reg.RecordSync(ctx, registry.SyncRun{At: time.Now()})
			}
		}, "sign-up IPs", Warn, "--signup-log"},
		{"web log unreadable", func(t *testing.T, cfg *Config) func() {
			os.Chown(cfg.SignupLogs[0], 0, 0)
			return func() { os.Chown(cfg.SignupLogs[0], 65534, 0) }
		}, "web log", Fail, "adm"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			cfg := s.cfg
			repair := tc.brk(t, &cfg)
			defer repair()
			results := Run(ctx, cfg)
			var found bool
			for _, r := range results {
				if r.Check == tc.check && r.Status == tc.status {
					found = true
					if !strings.Contains(r.Fix, tc.fix) {
						t.Errorf("%s: fix %q does not say %q", r.Check, r.Fix, tc.fix)
					}
				}
			}
			out := report(results)
			if !found {
				t.Errorf("no %s for %q:\n%s", tc.status, tc.check, out)
			}
			if failed := Write(new(bytes.Buffer), results); failed != (tc.status == Fail) {
				t.Errorf("Write reports failed = %v", failed)
			}
			t.Logf("\n%s", out)
		})
	}
}

func TestHasMilter(t *testing.T) {
	for _, tc := range []struct {
		list, spec string
		want       bool
	}{
		{"inet:127.0.0.1:8891", "inet:127.0.0.1:8891", true},
		{"inet:localhost:8891", "inet:127.0.0.1:8891", true},
		{"{ inet:127.0.0.1:8891, default_action=accept }", "inet:127.0.0.1:8891", true},
		{"unix:/run/other.sock, inet:8891@127.0.0.1", "inet:127.0.0.1:8891", true},
		{"unix:bouncemilter/milter.sock", "unix:/var/spool/postfix/bouncemilter/milter.sock", true},
		{"unix:other/milter.sock", "unix:/var/spool/postfix/bouncemilter/milter.sock", false},
		{"unix:/run/bouncemilter/milter.sock", "unix:/run/bouncemilter/milter.sock", true},
		{"inet:127.0.0.1:8892", "inet:127.0.0.1:8891", false},
		{"", "inet:127.0.0.1:8891", false},
	} {
		n, a, err := filter.ParseSpec(tc.spec)
		if err != nil {
			t.Fatal(err)
		}
		if got := hasMilter(tc.list, n, a, "/var/spool/postfix"); got != tc.want {
			t.Errorf("hasMilter(%q, %s) = %v", tc.list, tc.spec, got)
		}
	}
}
