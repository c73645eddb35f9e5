package e2e

import (
	"context"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/bouncemilter/bouncemilter/internal/mediagoblin/mgtest"
	"github.com/bouncemilter/bouncemilter/internal/registry"
	"github.com/bouncemilter/bouncemilter/internal/returnpath"
	"github.com/bouncemilter/bouncemilter/internal/testenv"
)

// The adversarial end-to-end test of issue 9: real Postfix with
// contrib/postfix's settings (the milter on its unix socket), bouncemilter
// serve as shipped (signed return paths), MediaGoblin's database, and an
// attacker who signs up with addresses that look like a real person's,
// runs the mail server of a domain of their own, and reads the code.
//
// victim@nowhere.example signed up a minute ago, for real, and has not yet
// opened her verification mail: the account a forged or confused bounce
// could cost her. It must never be touched, while a genuine bounce in the
// same run still acts.

const (
	victimAddr = "victim@nowhere.example"
	// attacker.example is the attacker's own domain: their server accepts
	// MediaGoblin's mail first, to learn a valid tag, then refuses.
	attackerAddr = "attacker@attacker.example"
)

// lookalikes are sign-up addresses that an address cleaner could turn into
// the victim's. MediaGoblin mails each; the remote server refuses it (it
// knows only the victim); Postfix's own bounce reaches the milter, and its
// tag is valid, for the look-alike.
var lookalikes = []string{
	"/victim@nowhere.example",                 // the pipe/file heuristic
	"|victim@nowhere.example",                 // the same, with a pipe
	`"victim@nowhere.example"@evil.example`,   // a quoted local part holding the address
	"+20victim@nowhere.example",               // xtext-decoded, then trimmed
	"victim+20@nowhere.example",               // the same at the end
	"Victim@nowhere.example",                  // another case of the local part
	"victim@nowhere.example.",                 // a trailing dot
	"victim%nowhere.example@evil.example",     // the percent hack
	"<victim@nowhere.example>@evil.example",   // brackets inside
	"victim@nowhere.example@evil.example",     // two at signs
	"victim@nowhere.example (x)@evil.example", // a comment
}

func TestLookalikeSignups(t *testing.T) {
	testenv.Require(t, os.Geteuid() == 0, "the end-to-end test runs Postfix, which needs root")
	w, victim, genuine := newVictimWorld(t)
	inst, now := w.inst, time.Now().UTC()
	inst.AddUser(t, mgtest.User{Username: "attacker", Email: attackerAddr, Created: now.Add(-time.Minute)})
	for i, addr := range lookalikes {
		inst.AddUser(t, mgtest.User{Username: fmt.Sprintf("lookalike%d", i), Email: addr, Created: now.Add(-time.Minute)})
	}
	accessLog := filepath.Join(w.dir, "access.log")
	writeAccessLog(t, accessLog, now.Add(-time.Minute), []signup{{ip: "198.51.100.20", username: "victim"}, {ip: botIP, username: "genuinebot"}})
	w.run("sync", "--mediagoblin-config", inst.IniPath, "--registry", w.registry, "--access-log", accessLog)

	// nowhere.example and evil.example: the server that knows the victim
	// only. attacker.example: the attacker's, which accepts the first
	// message and refuses everything after.
	var attackerMu sync.Mutex
	attackerAccepted := false
	attackerSrv := testenv.StartSMTPServer(t, "127.0.0.4:0", func(rcpt string) string {
		attackerMu.Lock()
		defer attackerMu.Unlock()
		if !attackerAccepted {
			attackerAccepted = true
			return ""
		}
		return "550 5.1.1 <" + rcpt + ">: no such user"
	})
	w.home = testenv.StartSMTPServer(t, "127.0.0.3:0", nil)
	w.postfix = testenv.StartPostfix(t, testenv.PostfixConfig{
		Transports: map[string]string{
			"nowhere.example":   "smtp:[127.0.0.2]:" + port(w.remote.Addr),
			"evil.example":      "smtp:[127.0.0.2]:" + port(w.remote.Addr),
			"attacker.example":  "smtp:[127.0.0.4]:" + port(attackerSrv.Addr),
			"media.example.org": "smtp:[127.0.0.3]:" + port(w.home.Addr),
		},
		// contrib/postfix as shipped: the relative unix socket.
		Main: testenv.ContribMain(t, "unix:bouncemilter/milter.sock"),
	})
	w.startServeUnix()

	bounces := func() int64 {
		reg, err := registry.Open(context.Background(), w.registry)
		if err != nil {
			t.Fatal(err)
		}
		defer reg.Close()
		n, err := reg.CountBounces(context.Background())
		if err != nil {
			t.Fatal(err)
		}
		var sum int64
		for _, c := range n {
			sum += c
		}
		return sum
	}

	// MediaGoblin's mail, as MediaGoblin sends it: from loopback, MAIL
	// FROM the sender address, one RCPT. The victim's is delivered.
	w.send(sender, victimAddr, verificationMail(victimAddr))
	testenv.WaitFor(t, 30*time.Second, "the victim's verification mail to arrive", func() bool {
		return len(w.remote.MessagesTo(victimAddr)) > 0
	})
	for _, addr := range lookalikes {
		if err := testenv.SendMail(w.postfix.SMTP, sender, []string{addr}, verificationMail(addr)); err != nil {
			// Postfix refused the address itself: MediaGoblin's mail
			// fails at once, and no bounce ever comes.
			t.Logf("Postfix refuses RCPT TO:<%s>: %v", addr, err)
		}
	}
	// Postfix rewrites some (victim@nowhere.example. is delivered to the
	// victim); the others bounce. Wait until it has done with them all.
	w.waitQueueEmpty()
	want := bounces()
	if want == 0 {
		t.Fatal("no look-alike bounced")
	}

	// The attacker's own sign-up: their server accepts the verification
	// mail, and so learns a valid tag, for their own address.
	w.send(sender, attackerAddr, verificationMail(attackerAddr))
	testenv.WaitFor(t, 30*time.Second, "the attacker to receive their verification mail", func() bool {
		return len(attackerSrv.MessagesTo(attackerAddr)) > 0
	})
	tagged := attackerSrv.MessagesTo(attackerAddr)[0].From
	if base, tag := returnpath.Split(tagged, "+"); base != sender || tag == "" {
		t.Fatalf("the attacker saw envelope sender %q, not a signed one", tagged)
	}

	// With that tag, bounces of their own making, over SMTP, as their
	// server would send them.
	forged := []struct{ name, msg string }{
		{"the victim as Final-Recipient", forgedDSN(victimAddr, victimAddr, victimAddr)},
		{"their own Final-Recipient, the victim as Original-Recipient", forgedDSN(attackerAddr, victimAddr, attackerAddr)},
		{"an unparseable Final-Recipient, the victim as Original-Recipient", forgedDSN("<"+victimAddr+"> (was "+attackerAddr+")", victimAddr, victimAddr)},
		{"the victim only in the text part", textBounce(victimAddr)},
		{"the victim as the returned message's To", returnedOnly(victimAddr)},
	}
	for _, f := range forged {
		if err := testenv.SendMail(w.postfix.SMTP, "", []string{tagged}, f.msg); err != nil {
			t.Fatalf("%s: %v", f.name, err)
		}
		want++
	}
	// ORCPT, set by an SMTP client and carried by Postfix into its own
	// bounce: the attacker relays through this Postfix with the tagged
	// sender, to their own address (their server now refuses it), with
	// ORCPT naming the victim.
	if err := testenv.SendMailParams(w.postfix.SMTP, tagged, []string{attackerAddr}, "NOTIFY=FAILURE ORCPT=rfc822;"+victimAddr, plainMail(tagged, attackerAddr, "hello")); err != nil {
		t.Fatalf("ORCPT submission: %v", err)
	}
	want++
	// A local user's sendmail: no tag at all.
	sendmailLocal(t, w.postfix, "", sender, forgedDSN(victimAddr, victimAddr, victimAddr))
	want++

	// The genuine bounce in the same run: MediaGoblin's mail to a bot's
	// address that does not exist.
	w.send(sender, "genuinebot@nowhere.example", verificationMail("genuinebot@nowhere.example"))
	want++
	testenv.WaitFor(t, 30*time.Second, "the genuine bounce to ban genuinebot", func() bool {
		banned, _ := inst.Banned(t, genuine)
		return banned
	})
	testenv.WaitFor(t, 60*time.Second, fmt.Sprintf("all %d bounces to be judged", want), func() bool {
		return bounces() >= want
	})
	// Give the worker a moment for anything it might still apply.
	time.Sleep(2 * time.Second)

	if banned, reason := inst.Banned(t, victim); banned {
		t.Errorf("the victim's account was banned: %s", reason)
	}
	reg, err := registry.Open(context.Background(), w.registry)
	if err != nil {
		t.Fatal(err)
	}
	defer reg.Close()
	acts, err := reg.Actions(context.Background(), victim)
	if err != nil {
		t.Fatal(err)
	}
	if len(acts) != 0 {
		t.Errorf("actions queued against the victim: %+v", acts)
	}
	// Whatever was acted on was an account's own literal address: the
	// attacker may lose their own accounts, never anyone else's.
	dis, err := reg.DisabledAccounts(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	for _, d := range dis {
		if d.UserID == victim || d.Email == victimAddr {
			t.Errorf("disabled: %+v", d)
		}
		t.Logf("disabled %s <%s>", d.Username, d.Email)
	}

	if t.Failed() || os.Getenv("E2E_VERBOSE") != "" {
		t.Logf("bouncemilter's log:\n%s", w.serveLog.String())
	}
}

// waitQueueEmpty waits until Postfix has delivered or bounced everything,
// bounces included.
func (w *world) waitQueueEmpty() {
	w.t.Helper()
	testenv.WaitFor(w.t, 60*time.Second, "Postfix's queue to empty", func() bool {
		out, _ := exec.Command("postqueue", "-c", w.postfix.Dir, "-p").CombinedOutput()
		return strings.Contains(string(out), "Mail queue is empty")
	})
}

// newVictimWorld is a MediaGoblin where the victim and a genuine bot
// signed up a minute ago, and the server of nowhere.example, which knows the
// victim only.
func newVictimWorld(t *testing.T) (w *world, victim, genuine int64) {
	inst := mgtest.NewSQLite(t, sender)
	w = &world{t: t, dir: t.TempDir(), inst: inst}
	w.registry = filepath.Join(w.dir, "lib", "registry.db")
	w.banLog = filepath.Join(w.dir, "bans.log")
	now := time.Now().UTC()
	victim = inst.AddUser(t, mgtest.User{Username: "victim", Email: victimAddr, Created: now.Add(-time.Minute)})
	genuine = inst.AddUser(t, mgtest.User{Username: "genuinebot", Email: "genuinebot@nowhere.example", Created: now.Add(-time.Minute)})
	w.remote = testenv.StartSMTPServer(t, "127.0.0.2:0", func(rcpt string) string {
		if rcpt == victimAddr {
			return ""
		}
		return "550 5.1.1 <" + rcpt + ">: Recipient address rejected: User unknown"
	})
	return w, victim, genuine
}

// startServeUnix runs serve as shipped: on the unix socket contrib/postfix
// names, under Postfix's queue directory, reachable by Postfix's group.
func (w *world) startServeUnix(extra ...string) {
	w.t.Helper()
	dir := filepath.Join(w.postfix.Queue, "bouncemilter")
	if err := os.MkdirAll(dir, 0o750); err != nil {
		w.t.Fatal(err)
	}
	if out, err := exec.Command("chgrp", "postfix", dir).CombinedOutput(); err != nil {
		w.t.Fatalf("chgrp postfix %s: %v: %s", dir, err, out)
	}
	sock := filepath.Join(dir, "milter.sock")
	w.serveLog = &testenv.SyncBuffer{}
	args := append([]string{"serve", "--listen", "unix:" + sock, "--socket-group", "postfix",
		"--mediagoblin-config", w.inst.IniPath, "--registry", w.registry, "--ban-log", w.banLog}, extra...)
	cmd := exec.Command(binary, args...)
	cmd.Stdout, cmd.Stderr = w.serveLog, w.serveLog
	if err := cmd.Start(); err != nil {
		w.t.Fatal(err)
	}
	w.serve = cmd
	w.t.Cleanup(w.stopServe)
	testenv.WaitFor(w.t, 20*time.Second, "bouncemilter to listen on its socket", func() bool {
		c, err := net.DialTimeout("unix", sock, time.Second)
		if err == nil {
			c.Close()
		}
		return err == nil
	})
	fi, err := os.Stat(sock)
	if err != nil {
		w.t.Fatal(err)
	}
	if fi.Mode().Perm()&0o007 != 0 {
		w.t.Errorf("the milter socket is open to every local user: %v", fi.Mode())
	}
}

// sendmailLocal submits msg with Postfix's sendmail, as any account on the
// machine can: through postdrop, pickup and cleanup, which show it to
// non_smtpd_milters as they show Postfix's own bounces. It runs as root:
// postdrop honours -C for other users only when the system's main.cf lists
// the directory, and this test leaves the system's Postfix alone. The
// milter sees the same thing either way.
func sendmailLocal(t *testing.T, p *testenv.Postfix, from, to, msg string) {
	t.Helper()
	if from == "" {
		from = "<>"
	}
	cmd := exec.Command("/usr/sbin/sendmail", "-C", p.Dir, "-f", from, "--", to)
	cmd.Stdin = strings.NewReader(msg)
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("sendmail: %v: %s", err, out)
	}
}

// forgedDSN is a well-formed report, as an attacker's server writes it.
func forgedDSN(final, original, returnedTo string) string {
	return reportMessage(final, original, returnedTo, "Undelivered Mail Returned to Sender")
}

// textBounce names the failed address in its text only, as old servers do.
func textBounce(addr string) string {
	return `From: MAILER-DAEMON@mx.attacker.example
To: ` + sender + `
Subject: failure notice

Hi. This is the qmail-send program at mx.attacker.example.
I'm afraid I wasn't able to deliver your message to the following addresses.
This is a permanent error; I've given up. Sorry it didn't work out.

<` + addr + `>:
Sorry, no mailbox here by that name. (#5.1.1)
`
}

// returnedOnly says nothing of the recipient but returns a message to addr.
func returnedOnly(addr string) string {
	return `From: MAILER-DAEMON@mx.attacker.example
To: ` + sender + `
Subject: Undeliverable: GNU MediaGoblin - Verify your email!
Content-Type: multipart/mixed; boundary="B2"

--B2
Content-Type: text/plain

Your message could not be delivered. User unknown (5.1.1).

--B2
Content-Type: message/rfc822

From: ` + sender + `
To: ` + addr + `
Subject: GNU MediaGoblin - Verify your email!

Hi

--B2--
`
}

// Without signed return paths, "made by this Postfix" is the proof, and it
// must mean Postfix's bounce daemon, not a local user's sendmail: Postfix
// shows both to non_smtpd_milters as localhost, 127.0.0.1, port 0. With
// contrib/postfix/master.cf the bounce daemons have a cleanup service of
// their own whose {daemon_name} tells them apart. Tested with real
// Postfix both ways: with the daemon name, the genuine bounce acts and the
// forgery does not; without it (--bounce-daemon-name ""), the README's
// warning holds: any local user can forge such a bounce.
func TestUnsignedLocalBounces(t *testing.T) {
	testenv.Require(t, os.Geteuid() == 0, "the end-to-end test runs Postfix, which needs root")
	for _, tt := range []struct {
		name         string
		daemonName   string
		victimBanned bool
	}{
		{"named", "postfix-bounce", false},
		{"unnamed", "", true},
	} {
		t.Run(tt.name, func(t *testing.T) {
			w, victim, genuine := newVictimWorld(t)
			inst := w.inst
			w.run("sync", "--mediagoblin-config", inst.IniPath, "--registry", w.registry)
			w.home = testenv.StartSMTPServer(t, "127.0.0.3:0", nil)
			w.postfix = testenv.StartPostfix(t, testenv.PostfixConfig{
				Transports: map[string]string{
					"nowhere.example":   "smtp:[127.0.0.2]:" + port(w.remote.Addr),
					"media.example.org": "smtp:[127.0.0.3]:" + port(w.home.Addr),
				},
				Main:   testenv.ContribMain(t, "unix:bouncemilter/milter.sock"),
				Master: contribMaster(t),
			})
			w.startServeUnix("--sign-return-path=false", "--bounce-daemon-name", tt.daemonName)

			// The victim's verification mail is delivered, and recorded.
			w.send(sender, victimAddr, verificationMail(victimAddr))
			testenv.WaitFor(t, 30*time.Second, "the victim's mail to arrive", func() bool {
				return len(w.remote.MessagesTo(victimAddr)) > 0
			})
			// A local user forges Postfix's bounce for her.
			sendmailLocal(t, w.postfix, "", sender, forgedDSN(victimAddr, victimAddr, victimAddr))
			// Postfix's own bounce for a bot.
			w.send(sender, "genuinebot@nowhere.example", verificationMail("genuinebot@nowhere.example"))
			testenv.WaitFor(t, 30*time.Second, "the genuine bounce to ban genuinebot", func() bool {
				banned, _ := inst.Banned(t, genuine)
				return banned
			})
			w.waitQueueEmpty()
			if tt.victimBanned {
				testenv.WaitFor(t, 30*time.Second, "the forgery to ban the victim", func() bool {
					banned, _ := inst.Banned(t, victim)
					return banned
				})
				return
			}
			time.Sleep(2 * time.Second)
			if banned, reason := inst.Banned(t, victim); banned {
				t.Errorf("a local user's forged bounce banned the victim: %s", reason)
			}
			// The forgery is delivered: the admin sees it.
			w.waitDelivered(sender, "Undelivered Mail Returned to Sender")
			if t.Failed() || os.Getenv("E2E_VERBOSE") != "" {
				t.Logf("bouncemilter's log:\n%s", w.serveLog.String())
			}
		})
	}
}

// contribMaster reads contrib/postfix/master.cf as master.cf lines, with
// chroot off as in the test's Postfix.
func contribMaster(t *testing.T) []string {
	b, err := os.ReadFile("../contrib/postfix/master.cf")
	if err != nil {
		t.Fatal(err)
	}
	var lines []string
	for _, l := range strings.Split(string(b), "\n") {
		switch {
		case strings.HasPrefix(l, "#") || strings.TrimSpace(l) == "":
		case l[0] == ' ' || l[0] == '\t':
			lines[len(lines)-1] += " " + strings.TrimSpace(l)
		default:
			f := strings.Fields(l)
			f[4] = "n"
			lines = append(lines, strings.Join(f, " "))
		}
	}
	if len(lines) == 0 {
		t.Fatal("contrib/postfix/master.cf has no services")
	}
	return lines
}
