package e2e

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/bouncemilter/bouncemilter/internal/mediagoblin/mgtest"
	"github.com/bouncemilter/bouncemilter/internal/returnpath"
	"github.com/bouncemilter/bouncemilter/internal/testenv"
)

// TestTwoMailHosts: one MediaGoblin instance whose mail has two MX hosts,
// each with its own Postfix, its own bouncemilter and its own registry,
// and the same return-path key. MediaGoblin sends through the first; the
// remote refuses the address and the first host's Postfix makes the
// bounce. The remote's later bounce of the same mail arrives at the second
// host over SMTP. Both milters act (each journals what it saw), and the
// account is banned once: MediaGoblin holds one ban row, because a ban is
// idempotent there.
func TestTwoMailHosts(t *testing.T) {
	testenv.Require(t, os.Geteuid() == 0, "the end-to-end test runs Postfix, which needs root")
	inst := mgtest.NewSQLite(t, sender)
	now := time.Now().UTC()
	bot := inst.AddUser(t, mgtest.User{Username: "spambot", Email: "spambot@nowhere.example", Created: now.Add(-10 * time.Minute)})

	remote := testenv.StartSMTPServer(t, "127.0.0.2:0", func(rcpt string) string {
		return "550 5.1.1 <" + rcpt + ">: Recipient address rejected: User unknown in virtual mailbox table"
	})
	home := testenv.StartSMTPServer(t, "127.0.0.3:0", nil)
	var hosts []*world
	for i, name := range []string{"mx1", "mx2"} {
		w := &world{t: t, dir: filepath.Join(t.TempDir(), name), inst: inst, remote: remote, home: home}
		w.registry = filepath.Join(w.dir, "lib", "registry.db")
		w.banLog = filepath.Join(w.dir, "bans.log")
		w.milter = testenv.FreeAddr(t, "127.0.0.1")
		w.postfix = testenv.StartPostfix(t, testenv.PostfixConfig{
			Transports: map[string]string{
				"nowhere.example":   "smtp:[127.0.0.2]:" + port(remote.Addr),
				"media.example.org": "smtp:[127.0.0.3]:" + port(home.Addr),
			},
			Main: testenv.ContribMain(t, "inet:"+w.milter),
		})
		keys := filepath.Join(filepath.Dir(w.registry), "returnpath.keys")
		if err := os.MkdirAll(filepath.Dir(keys), 0o750); err != nil {
			t.Fatal(err)
		}
		if i == 0 {
			if _, err := returnpath.LoadOrCreate(keys); err != nil {
				t.Fatal(err)
			}
		} else {
			// The same key on every MX host: copy it, as the README says.
			data, err := os.ReadFile(filepath.Join(filepath.Dir(hosts[0].registry), "returnpath.keys"))
			if err != nil {
				t.Fatal(err)
			}
			if err := os.WriteFile(keys, data, 0o600); err != nil {
				t.Fatal(err)
			}
		}
		w.startServe()
		hosts = append(hosts, w)
	}
	mx1, mx2 := hosts[0], hosts[1]

	mx1.send(sender, "spambot@nowhere.example", verificationMail("spambot@nowhere.example"))
	testenv.WaitFor(t, 30*time.Second, "spambot banned in MediaGoblin", func() bool {
		banned, _ := inst.Banned(t, bot)
		return banned
	})
	// The remote's own bounce of the same mail, to the signed address it
	// saw, arrives at the other MX host.
	signed := remote.Senders()
	if len(signed) == 0 || !strings.HasPrefix(signed[0], "notice+") {
		t.Fatalf("remote saw envelope senders %q; want a signed one", signed)
	}
	mx2.send("", signed[0], dsnMessage("spambot@nowhere.example", "later-bounce"))

	for _, w := range hosts {
		db := openRegistryRO(t, w.registry)
		testenv.WaitFor(t, 30*time.Second, "the account ban applied by "+w.milter, func() bool {
			var n int
			db.QueryRow(`SELECT count(*) FROM actions WHERE kind = 'ban-account' AND target = ? AND state = 'applied'`, bot).Scan(&n)
			return n == 1
		})
	}
	var rows int
	if err := inst.SQL().QueryRow(`SELECT count(*) FROM core__user_bans WHERE user_id = ?`, bot).Scan(&rows); err != nil {
		t.Fatal(err)
	}
	if rows != 1 {
		t.Errorf("MediaGoblin holds %d ban rows for spambot; want 1", rows)
	}
	// Neither bounce reached the sender's mailbox: both were discarded.
	for _, m := range home.Messages() {
		t.Errorf("delivered to the sender's mailbox: %.200s", m.Data)
	}
	for _, w := range hosts {
		if !strings.Contains(w.postfix.LogText(t), "milter triggers DISCARD action") {
			t.Errorf("%s: Postfix did not discard the bounce", w.milter)
		}
	}
	if t.Failed() {
		for _, w := range hosts {
			t.Logf("bouncemilter %s:\n%s", w.milter, w.serveLog.String())
		}
	}
}
