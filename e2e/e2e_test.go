// Package e2e runs the whole pipeline against real parts: a private Postfix
// with contrib/postfix's settings, the bouncemilter binary, a MediaGoblin
// database with the real schema (SQLite and PostgreSQL), fail2ban with
// contrib/fail2ban's filter and jail, and a remote mail server played by a
// small SMTP server of the test's own on 127.0.0.2.
package e2e

import (
	"bytes"
	"context"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/bouncemilter/bouncemilter/internal/mediagoblin/mgtest"
	"github.com/bouncemilter/bouncemilter/internal/returnpath"
	"github.com/bouncemilter/bouncemilter/internal/testenv"
)

const (
	sender  = "notice@media.example.org"
	botIP   = "203.0.113.7"
	aliceIP = "198.51.100.20"
)

var binary string

func TestMain(m *testing.M) {
	dir, err := os.MkdirTemp("", "bouncemilter-e2e-")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	binary = filepath.Join(dir, "bouncemilter")
	build := exec.Command("go", "build", "-o", binary, "../cmd/bouncemilter")
	build.Stdout, build.Stderr = os.Stderr, os.Stderr
	if err := build.Run(); err != nil {
		fmt.Fprintln(os.Stderr, "build bouncemilter:", err)
		os.Exit(1)
	}
	code := m.Run()
	os.RemoveAll(dir)
	os.Exit(code)
}

func TestPipelineSQLite(t *testing.T) {
	runPipeline(t, mgtest.NewSQLite(t, sender))
}

func TestPipelinePostgres(t *testing.T) {
	runPipeline(t, mgtest.NewPostgres(t, testenv.Postgres(t), sender))
}

// world is one running setup.
type world struct {
	t        *testing.T
	dir      string
	inst     *mgtest.Instance
	registry string
	banLog   string
	remote   *testenv.SMTPServer // nowhere.example: refuses unknown users
	home     *testenv.SMTPServer // media.example.org: receives what Postfix delivers
	postfix  *testenv.Postfix
	milter   string // host:port
	serve    *exec.Cmd
	serveLog *testenv.SyncBuffer
}

func runPipeline(t *testing.T, inst *mgtest.Instance) {
	testenv.Require(t, os.Geteuid() == 0, "the end-to-end test runs Postfix and fail2ban, which need root")
	w := &world{t: t, dir: t.TempDir(), inst: inst}
	w.registry = filepath.Join(w.dir, "lib", "registry.db")
	w.banLog = filepath.Join(w.dir, "bans.log")

	now := time.Now().UTC()
	bot := inst.AddUser(t, mgtest.User{Username: "spambot", Email: "spambot@nowhere.example", Created: now.Add(-10 * time.Minute)})
	bot2 := inst.AddUser(t, mgtest.User{Username: "spambot2", Email: "spambot2@nowhere.example", Created: now.Add(-9 * time.Minute)})
	bot3 := inst.AddUser(t, mgtest.User{Username: "spambot3", Email: "spambot3@nowhere.example", Created: now.Add(-8 * time.Minute)})
	alice := inst.AddUser(t, mgtest.User{Username: "alice", Email: "alice@nowhere.example", Created: now.Add(-time.Hour), Verified: true})
	admin := inst.AddUser(t, mgtest.User{Username: "admin", Email: "admin@nowhere.example", Created: now.Add(-time.Hour), Verified: true, Admin: true})

	accessLog := filepath.Join(w.dir, "access.log")
	writeAccessLog(t, accessLog, now.Add(-10*time.Minute), []signup{
		{ip: botIP, username: "spambot"}, {ip: "203.0.113.8", username: "spambot2"},
		{ip: "203.0.113.9", username: "spambot3"}, {ip: aliceIP, username: "alice"},
	})
	w.run("sync", "--mediagoblin-config", inst.IniPath, "--registry", w.registry, "--access-log", accessLog)

	f2b := testenv.StartFail2ban(t, w.banLog)

	// nowhere.example knows none of these addresses any more: every
	// message to it bounces, so that the bounces Postfix makes for the
	// verified user and the admin are as authentic as the vandal's.
	w.remote = testenv.StartSMTPServer(t, "127.0.0.2:0", func(rcpt string) string {
		return "550 5.1.1 <" + rcpt + ">: Recipient address rejected: User unknown in virtual mailbox table"
	})
	w.home = testenv.StartSMTPServer(t, "127.0.0.3:0", nil)
	w.milter = testenv.FreeAddr(t, "127.0.0.1")
	w.postfix = testenv.StartPostfix(t, testenv.PostfixConfig{
		Transports: map[string]string{
			"nowhere.example":   "smtp:[127.0.0.2]:" + port(w.remote.Addr),
			"media.example.org": "smtp:[127.0.0.3]:" + port(w.home.Addr),
			"else.example":      "smtp:[127.0.0.3]:" + port(w.home.Addr),
		},
		Main: testenv.ContribMain(t, "inet:"+w.milter),
	})
	w.startServe()

	// The verification mail bounces; Postfix makes the bounce, the milter
	// discards it, bans the account and the sign-up IP.
	w.send(sender, "spambot@nowhere.example", verificationMail("spambot@nowhere.example"))
	testenv.WaitFor(t, 30*time.Second, "spambot banned in MediaGoblin", func() bool {
		banned, _ := inst.Banned(t, bot)
		return banned
	})
	_, reason := inst.Banned(t, bot)
	for _, want := range []string{"spambot@nowhere.example", "5.1.1"} {
		if !strings.Contains(reason, want) {
			t.Errorf("ban reason %q does not say %q", reason, want)
		}
	}
	testenv.WaitFor(t, 30*time.Second, "Postfix to log the milter's DISCARD", func() bool {
		return strings.Contains(w.postfix.LogText(t), "milter triggers DISCARD action")
	})
	testenv.WaitFor(t, 60*time.Second, "fail2ban to ban "+botIP, func() bool {
		return contains(f2b.Banned(t, "bouncemilter"), botIP)
	})
	// The remote server saw the signed envelope sender, and the bounce to
	// that address was recognised.
	if got := w.remote.Senders(); len(got) == 0 || !strings.HasPrefix(got[0], "notice+") || !strings.HasSuffix(got[0], "@media.example.org") {
		t.Errorf("remote server saw envelope senders %q; want notice+TAG@media.example.org", got)
	}
	list := w.run("accounts", "list", "--registry", w.registry)
	for _, want := range []string{"spambot", "spambot@nowhere.example", botIP} {
		if !strings.Contains(list, want) {
			t.Errorf("accounts list does not show %q:\n%s", want, list)
		}
	}

	// Ordinary mail is delivered.
	w.send("friend@else.example", "admin@media.example.org", plainMail("friend@else.example", "admin@media.example.org", "hello"))
	w.waitDelivered("admin@media.example.org", "hello")

	// Genuine bounces (made by Postfix, for mail MediaGoblin sent) naming
	// the verified user and the admin change nothing and are delivered.
	w.send(sender, "alice@nowhere.example", plainMail(sender, "alice@nowhere.example", "You have a new comment"))
	w.send(sender, "admin@nowhere.example", plainMail(sender, "admin@nowhere.example", "A new report"))
	w.waitBounceDelivered("alice@nowhere.example")
	w.waitBounceDelivered("admin@nowhere.example")

	// Bounces that arrive over SMTP naming an unverified sign-up are
	// forged unless their address carries a valid tag for that recipient:
	// no tag, a wrong one, an expired one, one for another address. They
	// are delivered and change nothing.
	signer := w.signer()
	expired, _ := signer.Sign(sender, "spambot2@nowhere.example", now.Add(-30*24*time.Hour))
	other, _ := signer.Sign(sender, "spambot3@nowhere.example", now)
	good, _ := signer.Sign(sender, "spambot2@nowhere.example", now)
	_, goodTag := returnpath.Split(good, "+")
	wrong := "notice+" + strings.Repeat("a", len(goodTag)) + "@media.example.org"
	for i, to := range []string{sender, wrong, expired, other} {
		marker := fmt.Sprintf("forged-%d", i)
		w.send("", to, dsnMessage("spambot2@nowhere.example", marker))
		w.waitDelivered(to, marker)
	}
	if banned, reason := inst.Banned(t, bot2); banned {
		t.Fatalf("a forged bounce banned spambot2: %s", reason)
	}
	// The same bounce to the validly signed address acts, over SMTP too.
	w.send("", good, dsnMessage("spambot2@nowhere.example", "genuine-2"))
	testenv.WaitFor(t, 30*time.Second, "spambot2 banned in MediaGoblin", func() bool {
		banned, _ := inst.Banned(t, bot2)
		return banned
	})
	testenv.WaitFor(t, 60*time.Second, "fail2ban to ban 203.0.113.8", func() bool {
		return contains(f2b.Banned(t, "bouncemilter"), "203.0.113.8")
	})

	// The admin restores spambot2: the account ban and the IP ban are
	// lifted, and the restore sticks: the next genuine bounce changes nothing.
	w.run("accounts", "restore", "--registry", w.registry, "--mediagoblin-config", inst.IniPath,
		"--fail2ban-socket", f2b.Socket, "spambot2")
	if banned, _ := inst.Banned(t, bot2); banned {
		t.Error("spambot2 still banned in MediaGoblin after restore")
	}
	if contains(f2b.Banned(t, "bouncemilter"), "203.0.113.8") {
		t.Error("203.0.113.8 still banned by fail2ban after restore")
	}
	if list := w.run("accounts", "list", "--registry", w.registry); strings.Contains(list, "spambot2") {
		t.Errorf("accounts list still shows spambot2 after restore:\n%s", list)
	}
	w.send("", good, dsnMessage("spambot2@nowhere.example", "genuine-3"))
	w.waitDelivered(good, "genuine-3")
	if banned, _ := inst.Banned(t, bot2); banned {
		t.Error("a bounce after the restore banned spambot2 again")
	}
	// A bounce that matches no account at all is delivered as before.
	w.send("", sender, dsnMessage("ghost@nowhere.example", "ghost-1"))
	w.waitDelivered(sender, "ghost-1")

	// With the milter stopped, all mail is still delivered, bounces too.
	w.stopServe()
	w.send("friend@else.example", "admin@media.example.org", plainMail("friend@else.example", "admin@media.example.org", "milter down"))
	w.waitDelivered("admin@media.example.org", "milter down")
	w.send(sender, "spambot3@nowhere.example", verificationMail("spambot3@nowhere.example"))
	w.waitBounceDelivered("spambot3@nowhere.example")

	for name, id := range map[string]int64{"spambot2": bot2, "spambot3": bot3, "alice": alice, "admin": admin} {
		if banned, reason := inst.Banned(t, id); banned {
			t.Errorf("%s was banned: %s", name, reason)
		}
	}
	if got := f2b.Banned(t, "bouncemilter"); len(got) != 1 {
		t.Errorf("fail2ban banned %q; want only %s", got, botIP)
	}
	if t.Failed() || os.Getenv("E2E_VERBOSE") != "" {
		t.Logf("bouncemilter's log:\n%s", w.serveLog.String())
		t.Logf("Postfix's log:\n%s", w.postfix.LogText(t))
	}
}

// signer signs return paths with the key serve created beside the registry.
func (w *world) signer() *returnpath.Signer {
	w.t.Helper()
	keys, err := returnpath.LoadOrCreate(filepath.Join(filepath.Dir(w.registry), "returnpath.keys"))
	if err != nil {
		w.t.Fatal(err)
	}
	return &returnpath.Signer{Keys: keys}
}

func (w *world) startServe() {
	w.t.Helper()
	w.serveLog = &testenv.SyncBuffer{}
	cmd := exec.Command(binary, "serve", "--listen", "inet:"+w.milter,
		"--mediagoblin-config", w.inst.IniPath, "--registry", w.registry, "--ban-log", w.banLog)
	cmd.Stdout, cmd.Stderr = w.serveLog, w.serveLog
	if err := cmd.Start(); err != nil {
		w.t.Fatal(err)
	}
	w.serve = cmd
	w.t.Cleanup(w.stopServe)
	testenv.WaitFor(w.t, 20*time.Second, "bouncemilter to listen", func() bool {
		c, err := net.DialTimeout("tcp", w.milter, time.Second)
		if err == nil {
			c.Close()
		}
		return err == nil
	})
}

func (w *world) stopServe() {
	if w.serve == nil {
		return
	}
	w.serve.Process.Signal(syscall.SIGTERM)
	done := make(chan error, 1)
	go func() { done <- w.serve.Wait() }()
	select {
	case err := <-done:
		if err != nil {
			w.t.Errorf("bouncemilter serve exited: %v\n%s", err, w.serveLog.String())
		}
	case <-time.After(20 * time.Second):
		w.serve.Process.Kill()
		w.t.Errorf("bouncemilter serve did not stop on SIGTERM")
	}
	w.serve = nil
}

// run runs a bouncemilter command and returns its standard output.
func (w *world) run(args ...string) string {
	w.t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	var stdout, stderr bytes.Buffer
	cmd := exec.CommandContext(ctx, binary, args...)
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	if err := cmd.Run(); err != nil {
		w.t.Fatalf("bouncemilter %s: %v\n%s%s", strings.Join(args, " "), err, stdout.String(), stderr.String())
	}
	return stdout.String()
}

func (w *world) send(from, to, msg string) {
	w.t.Helper()
	if err := testenv.SendMail(w.postfix.SMTP, from, []string{to}, msg); err != nil {
		w.t.Fatalf("send from <%s> to <%s>: %v", from, to, err)
	}
}

// waitDelivered waits for a message to rcpt holding marker at the home server.
func (w *world) waitDelivered(rcpt, marker string) {
	w.t.Helper()
	testenv.WaitFor(w.t, 30*time.Second, "delivery of "+marker+" to "+rcpt, func() bool {
		for _, m := range w.home.Messages() {
			if strings.Contains(m.Data, marker) && (contains(m.To, rcpt) || w.isSenderForm(m.To, rcpt)) {
				return true
			}
		}
		return false
	})
}

// waitBounceDelivered waits for Postfix's bounce about failed to reach the
// sender's mailbox.
func (w *world) waitBounceDelivered(failed string) {
	w.t.Helper()
	testenv.WaitFor(w.t, 30*time.Second, "the bounce about "+failed+" to be delivered", func() bool {
		for _, m := range w.home.Messages() {
			if m.From == "" && strings.Contains(m.Data, failed) {
				return true
			}
		}
		return false
	})
}

// isSenderForm reports whether one of to is rcpt or its local+tag form.
func (w *world) isSenderForm(to []string, rcpt string) bool {
	local, domain, _ := strings.Cut(rcpt, "@")
	for _, a := range to {
		if strings.HasPrefix(a, local+"+") && strings.HasSuffix(a, "@"+domain) {
			return true
		}
	}
	return false
}

type signup struct{ ip, username string }

// writeAccessLog writes nginx's combined format as MediaGoblin's sign-up
// leaves it: the POST answered 302, then the browser following it.
func writeAccessLog(t *testing.T, path string, at time.Time, signups []signup) {
	var b strings.Builder
	for i, s := range signups {
		ts := at.Add(time.Duration(i) * time.Second).Format("02/Jan/2006:15:04:05 -0700")
		fmt.Fprintf(&b, "%s - - [%s] \"GET /auth/register/ HTTP/1.1\" 200 5120 \"-\" \"Mozilla/5.0\"\n", s.ip, ts)
		fmt.Fprintf(&b, "%s - - [%s] \"POST /auth/register/ HTTP/1.1\" 302 0 \"https://media.example.org/auth/register/\" \"Mozilla/5.0\"\n", s.ip, ts)
		fmt.Fprintf(&b, "%s - - [%s] \"GET /u/%s/ HTTP/1.1\" 200 4096 \"https://media.example.org/auth/register/\" \"Mozilla/5.0\"\n", s.ip, ts, s.username)
	}
	if err := os.WriteFile(path, []byte(b.String()), 0o644); err != nil {
		t.Fatal(err)
	}
}

// verificationMail is MediaGoblin's verification mail: Subject, From and To
// only; Postfix adds Message-ID and Date.
func verificationMail(to string) string {
	return "Subject: GNU MediaGoblin - Verify your email!\nFrom: " + sender + "\nTo: " + to + "\n\n" +
		"Hi " + to + ",\n\nto activate your GNU MediaGoblin account, open the following URL in\nyour web browser:\n\n" +
		"https://media.example.org/auth/verify_email/?token=eyJ1c2VyIjoxfQ.ZZZ\n"
}

func plainMail(from, to, subject string) string {
	return "Subject: " + subject + "\nFrom: " + from + "\nTo: " + to + "\n\n" + subject + "\n"
}

// dsnMessage is a bounce in Postfix's format, as anyone can send one.
func dsnMessage(failed, marker string) string {
	return reportMessage(failed, failed, failed, "Undelivered Mail Returned to Sender "+marker)
}

// reportMessage is a bounce in Postfix's format with the given
// Final-Recipient, Original-Recipient, returned message's To and subject.
func reportMessage(final, original, returnedTo, subject string) string {
	return `From: MAILER-DAEMON@mx.remote.test (Mail Delivery System)
To: ` + sender + `
Subject: ` + subject + `
MIME-Version: 1.0
Content-Type: multipart/report; report-type=delivery-status; boundary="B1"

--B1
Content-Type: text/plain

I'm sorry to have to inform you that your message could not
be delivered to one or more recipients.

<` + final + `>: host mx.nowhere.example said: 550 5.1.1 User unknown

--B1
Content-Type: message/delivery-status

Reporting-MTA: dns; mx.remote.test

Final-Recipient: rfc822; ` + final + `
Original-Recipient: rfc822;` + original + `
Action: failed
Status: 5.1.1
Diagnostic-Code: smtp; 550 5.1.1 <` + final + `>: User unknown

--B1
Content-Type: text/rfc822-headers

From: ` + sender + `
To: ` + returnedTo + `
Subject: GNU MediaGoblin - Verify your email!

--B1--
`
}

func port(addr string) string {
	_, p, _ := net.SplitHostPort(addr)
	return p
}

func contains(list []string, s string) bool {
	for _, x := range list {
		if strings.EqualFold(x, s) {
			return true
		}
	}
	return false
}
