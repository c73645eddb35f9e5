package banner

import (
	"context"
	"errors"
	"fmt"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/bouncemilter/bouncemilter/internal/testenv"
)

// TestLogFileJail bans through the log, as the milter does, and shows that
// fail2ban running contrib's filter and jail bans the addresses.
func TestLogFileJail(t *testing.T) {
	ctx := context.Background()
	f2b := testenv.StartFail2ban(t, "")
	b, err := New(KindLog, Options{LogPath: f2b.BanLog, Jail: DefaultJail, Fail2banConfig: f2b.Dir})
	if err != nil {
		t.Fatal(err)
	}
	for _, ip := range []string{"203.0.113.7", "2001:db8::7", "::ffff:198.51.100.7"} {
		if err := b.Ban(ctx, netip.MustParseAddr(ip), "5.1.1 "+ip+": user unknown"); err != nil {
			t.Fatal(err)
		}
	}
	if err := b.Ban(ctx, netip.MustParseAddr("127.0.0.1"), "never"); !errors.Is(err, ErrProtected) {
		t.Errorf("Ban(127.0.0.1) = %v, want ErrProtected", err)
	}
	for _, ip := range []string{"203.0.113.7", "2001:db8::7", "198.51.100.7"} {
		f2b.WaitBanned(t, DefaultJail, ip, 30*time.Second)
	}

	// logrotate moves the log away; the next ban starts a new file, and
	// fail2ban follows it.
	if err := os.Rename(f2b.BanLog, f2b.BanLog+".1"); err != nil {
		t.Fatal(err)
	}
	if err := b.Ban(ctx, netip.MustParseAddr("198.51.100.8"), "after rotation"); err != nil {
		t.Fatal(err)
	}
	f2b.WaitBanned(t, DefaultJail, "198.51.100.8", 30*time.Second)

	// Unban goes through fail2ban-client, as Options.Jail asked.
	if err := b.Unban(ctx, netip.MustParseAddr("203.0.113.7")); err != nil {
		t.Fatal(err)
	}
	if got := f2b.Banned(t, DefaultJail); slices.Contains(got, "203.0.113.7") || len(got) != 3 {
		t.Errorf("after Unban fail2ban bans %q", got)
	}
}

func TestFail2banClient(t *testing.T) {
	ctx := context.Background()
	f2b := testenv.StartFail2ban(t, "")
	c := &Fail2banClient{Jail: DefaultJail, Config: f2b.Dir}

	banned := func() []string {
		t.Helper()
		ips, err := c.Banned(ctx)
		if err != nil {
			t.Fatal(err)
		}
		var s []string
		for _, ip := range ips {
			s = append(s, ip.String())
		}
		slices.Sort(s)
		if fromStatus := f2b.Banned(t, DefaultJail); !slices.Equal(s, slices.Sorted(slices.Values(fromStatus))) {
			t.Errorf("Banned = %q, fail2ban-client status says %q", s, fromStatus)
		}
		return s
	}

	if got := banned(); len(got) != 0 {
		t.Fatalf("a new jail bans %q", got)
	}
	for _, ip := range []string{"203.0.113.7", "2001:db8::7", "203.0.113.7"} { // twice: idempotent
		if err := c.Ban(ctx, netip.MustParseAddr(ip), "reason"); err != nil {
			t.Fatalf("Ban(%s): %v", ip, err)
		}
	}
	if got, want := banned(), []string{"2001:db8::7", "203.0.113.7"}; !slices.Equal(got, want) {
		t.Errorf("banned %q, want %q", got, want)
	}
	for _, ip := range []string{"203.0.113.7", "203.0.113.7", "192.0.2.1"} { // again, and never banned
		if err := c.Unban(ctx, netip.MustParseAddr(ip)); err != nil {
			t.Fatalf("Unban(%s): %v", ip, err)
		}
	}
	if got, want := banned(), []string{"2001:db8::7"}; !slices.Equal(got, want) {
		t.Errorf("banned %q, want %q", got, want)
	}

	// Errors carry what fail2ban-client said.
	for _, tc := range []struct {
		name string
		c    *Fail2banClient
		want string
	}{
		{"no such jail", &Fail2banClient{Jail: "nosuchjail", Config: f2b.Dir}, "does not exist"},
		{"server down", &Fail2banClient{Jail: DefaultJail, Config: f2b.Dir, Socket: f2b.Dir + "/nosuch.sock"}, "nosuch.sock"},
		{"no jail configured", &Fail2banClient{Config: f2b.Dir}, "no jail"},
		{"no program", &Fail2banClient{Jail: DefaultJail, Command: "/nonexistent/fail2ban-client"}, "no such file"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			err := tc.c.Ban(ctx, netip.MustParseAddr("192.0.2.1"), "")
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Errorf("Ban = %v, want an error saying %q", err, tc.want)
			} else {
				t.Log(err)
			}
			if err != nil && !strings.HasPrefix(err.Error(), "ban 192.0.2.1: ") {
				t.Errorf("error %q does not say what it was doing", err)
			}
		})
	}

	// A protected address never reaches fail2ban-client.
	bogus := &Fail2banClient{Jail: DefaultJail, Command: "/nonexistent/fail2ban-client"}
	if err := bogus.Ban(ctx, netip.MustParseAddr("fe80::1%eth0"), ""); !errors.Is(err, ErrProtected) {
		t.Errorf("Ban(fe80::1) = %v, want ErrProtected", err)
	}
}

// TestContribJailSystemConfig installs contrib's filter and jail into a copy
// of the system's /etc/fail2ban, as an admin would, and checks what fail2ban
// would run (fail2ban-client -d starts nothing): the jail reads the log with
// the filter, bans at the first line, and uses the system's ban action.
func TestContribJailSystemConfig(t *testing.T) {
	_, err := os.Stat("/etc/fail2ban/jail.conf")
	testenv.Require(t, err == nil, "fail2ban is not installed (apt-get install fail2ban)")
	dir := t.TempDir()
	if err := os.CopyFS(dir, os.DirFS("/etc/fail2ban")); err != nil {
		t.Fatal(err)
	}
	installContrib(t, dir)
	// The shipped logpath, /var/log/bouncemilter/bans.log, need not exist
	// here: point the jail at a file that does, as a .local would.
	banLog := filepath.Join(dir, "bans.log")
	if err := os.WriteFile(banLog, nil, 0o640); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, "jail.d", "bouncemilter.local"), []byte("[bouncemilter]\nlogpath = "+banLog+"\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	out, err := exec.Command("fail2ban-client", "-c", dir, "-d").CombinedOutput()
	if err != nil {
		t.Fatalf("fail2ban-client -d: %v\n%s", err, out)
	}
	for _, want := range []string{
		"['add', 'bouncemilter', 'auto']",
		"['set', 'bouncemilter', 'addfailregex', '^\\\\s*bouncemilter: ban <SUBNET>",
		"['set', 'bouncemilter', 'maxretry', 1]",
		"['set', 'bouncemilter', 'bantime', '7d']",
		"['set', 'bouncemilter', 'usedns', 'no']",
		"['set', 'bouncemilter', 'addlogpath', '" + banLog + "'",
		"['set', 'bouncemilter', 'addaction', 'bouncemilter-nftables']",
		// The sets hold networks (an IPv6 sign-up's /64).
		`<addr_set> \\{ type <addr_type>\\; flags interval\\; \\}`,
		"['start', 'bouncemilter']",
	} {
		if !strings.Contains(string(out), want) {
			t.Errorf("fail2ban would not run %s", want)
		}
	}
	if t.Failed() {
		t.Logf("fail2ban-client -d:\n%s", out)
	}
}

// fail2ban forgets a bantime set in a jail at every reload or restart, and
// the banner cannot see one happen: it sets the bantime again before a ban
// a minute or more after the last time, not only before its first.
func TestFail2banBantimeSetAgain(t *testing.T) {
	dir := t.TempDir()
	calls := filepath.Join(dir, "calls")
	prog := filepath.Join(dir, "fail2ban-client")
	if err := os.WriteFile(prog, []byte("#!/bin/sh\necho \"$*\" >> "+calls+"\necho 1\n"), 0o755); err != nil {
		t.Fatal(err)
	}
	clock := time.Date(2026, 11, 30, 12, 0, 0, 0, time.UTC)
	c := &Fail2banClient{Jail: "bouncemilter", Command: prog, Bantime: 90 * time.Minute, now: func() time.Time { return clock }}
	ctx := context.Background()
	for _, step := range []time.Duration{0, 10 * time.Second, time.Minute} {
		clock = clock.Add(step)
		if err := c.Ban(ctx, netip.MustParseAddr("203.0.113.9"), ""); err != nil {
			t.Fatal(err)
		}
	}
	got, err := os.ReadFile(calls)
	if err != nil {
		t.Fatal(err)
	}
	want := "set bouncemilter bantime 5400\nset bouncemilter banip 203.0.113.9\nset bouncemilter banip 203.0.113.9\nset bouncemilter bantime 5400\nset bouncemilter banip 203.0.113.9\n"
	if string(got) != want {
		t.Errorf("fail2ban-client was called with\n%s\nwant\n%s", got, want)
	}
}

// installContrib copies contrib/fail2ban's filter, action and jail into the
// fail2ban configuration directory dir, as contrib/install.sh does.
func installContrib(t *testing.T, dir string) {
	t.Helper()
	contrib := filepath.Join(testenv.RepoRoot(t), "contrib", "fail2ban")
	files, err := filepath.Glob(filepath.Join(contrib, "*.d", "*.conf"))
	if err != nil || len(files) == 0 {
		t.Fatalf("contrib/fail2ban holds no configuration: %v", err)
	}
	for _, f := range files {
		rel, _ := filepath.Rel(contrib, f)
		b, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		if err := os.MkdirAll(filepath.Dir(filepath.Join(dir, rel)), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join(dir, rel), b, 0o644); err != nil {
			t.Fatal(err)
		}
	}
}

// startSystemFail2ban starts a private fail2ban inside the network namespace
// ns with the system's own jail.conf, paths and action.d (Debian's stock
// fail2ban) and contrib's filter, action and jail as contrib/install.sh
// installs them, with jailLocal's settings in the jail's .local: the jail's
// real ban action runs nft, in the namespace only. It returns the
// configuration directory and the ban log the jail watches.
func startSystemFail2ban(t *testing.T, ns, jailLocal string) (dir, banLog string) {
	t.Helper()
	_, err := exec.LookPath("fail2ban-client")
	testenv.Require(t, err == nil, "fail2ban is not installed (apt-get install fail2ban)")
	for _, f := range []string{"jail.conf", "paths-common.conf", "paths-debian.conf", "action.d/nftables.conf"} {
		_, err := os.Stat("/etc/fail2ban/" + f)
		testenv.Require(t, err == nil, "Debian's fail2ban is not installed (apt-get install fail2ban): no /etc/fail2ban/"+f)
	}
	// Not t.TempDir: a unix socket's path may not exceed 107 bytes.
	dir, err = os.MkdirTemp("", "f2b")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	for _, f := range []string{"jail.conf", "paths-common.conf", "paths-debian.conf", "action.d", "filter.d"} {
		if out, err := exec.Command("cp", "-r", "/etc/fail2ban/"+f, filepath.Join(dir, f)).CombinedOutput(); err != nil {
			t.Fatalf("cp %s: %v: %s", f, err, out)
		}
	}
	installContrib(t, dir)
	banLog = filepath.Join(dir, "bans.log")
	writeJailLocal(t, dir, banLog, jailLocal)
	for name, text := range map[string]string{
		"bans.log": "",
		"fail2ban.conf": fmt.Sprintf(`[Definition]
loglevel = INFO
logtarget = %[1]s/fail2ban.log
syslogsocket = auto
socket = %[1]s/fail2ban.sock
pidfile = %[1]s/fail2ban.pid
dbfile = :memory:
dbpurgeage = 1d
allowipv6 = auto
`, dir),
	} {
		if err := os.WriteFile(filepath.Join(dir, name), []byte(text), 0o640); err != nil {
			t.Fatal(err)
		}
	}
	// The server forks: its output goes to a file, not a pipe Run would
	// wait on.
	outf, err := os.Create(filepath.Join(dir, "start.out"))
	if err != nil {
		t.Fatal(err)
	}
	defer outf.Close()
	start := inNetns(ns, "fail2ban-client", "-c", dir, "-x", "start")
	start.Stdout, start.Stderr = outf, outf
	if err := start.Run(); err != nil {
		b, _ := os.ReadFile(outf.Name())
		t.Fatalf("fail2ban start: %v\n%s", err, b)
	}
	t.Cleanup(func() {
		exec.Command("fail2ban-client", "-c", dir, "stop").Run()
		if t.Failed() {
			b, _ := os.ReadFile(filepath.Join(dir, "fail2ban.log"))
			t.Logf("fail2ban's log:\n%s", b)
		}
	})
	return dir, banLog
}

// writeJailLocal writes the jail's .local: the test's ban log, the polling
// backend, and the settings of more.
func writeJailLocal(t *testing.T, dir, banLog, more string) {
	t.Helper()
	text := fmt.Sprintf("[bouncemilter]\nlogpath = %s\nbackend = polling\n%s", banLog, more)
	if err := os.WriteFile(filepath.Join(dir, "jail.d", "bouncemilter.local"), []byte(text), 0o644); err != nil {
		t.Fatal(err)
	}
}

// TestStockFail2banBlocksIPv6Network: with the default banner (log), the
// default --ipv6-prefix 64 and contrib's jail on Debian's fail2ban, the ban
// of an IPv6 sign-up must end up in the firewall. Debian's nftables action
// makes its set `{ type ipv6_addr; }` without the interval flag, and nft
// refuses the /64 the log line names: fail2ban said the network was banned,
// the milter's journal said applied, and nothing was blocked.
func TestStockFail2banBlocksIPv6Network(t *testing.T) {
	ns := netns(t)
	dir, banLog := startSystemFail2ban(t, ns, "")
	b, err := New(KindLog, Options{LogPath: banLog, IPv6Prefix: 64})
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	want := []string{"203.0.113.7", "2001:db8:1:2::/64"}
	for _, ip := range []string{"203.0.113.7", "2001:db8:1:2::5"} {
		if err := b.Ban(ctx, netip.MustParseAddr(ip), "5.1.1"); err != nil {
			t.Fatal(err)
		}
	}
	waitFail2banTable(t, ns, dir, want...)
}

// waitFail2banTable waits until the nftables table of fail2ban's actions
// in ns holds each of want (fail2ban records a ban before its action runs),
// and returns the table's listing.
func waitFail2banTable(t *testing.T, ns, dir string, want ...string) string {
	t.Helper()
	deadline := time.Now().Add(20 * time.Second)
	for {
		out, _ := inNetns(ns, "nft", "list", "table", "inet", "f2b-table").CombinedOutput()
		var missing []string
		for _, w := range want {
			if !strings.Contains(string(out), w) {
				missing = append(missing, w)
			}
		}
		if len(missing) == 0 {
			return string(out)
		}
		if time.Now().After(deadline) {
			status, _ := exec.Command("fail2ban-client", "-c", dir, "status", DefaultJail).CombinedOutput()
			t.Fatalf("fail2ban's nftables table does not hold %q:\n%s\nfail2ban-client status:\n%s", missing, out, status)
		}
		time.Sleep(200 * time.Millisecond)
	}
}

// TestFail2banUpgradeFromStockAction upgrades a jail that bans with
// Debian's nftables-multiport (contrib's before bouncemilter-nftables) as
// contrib/install.sh does. fail2ban 1.0.2's plain reload that changes a
// jail's action leaves the jail with no action at all: bans recorded,
// nothing blocked. install.sh restarts the jail first, which stops the old
// action (its sets go) and puts the bans fail2ban keeps into the new sets.
func TestFail2banUpgradeFromStockAction(t *testing.T) {
	ns := netns(t)
	dir, banLog := startSystemFail2ban(t, ns, "banaction = nftables-multiport\nbanaction_allports = nftables-allports\n")
	b, err := New(KindLog, Options{LogPath: banLog, IPv6Prefix: 64})
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	if err := b.Ban(ctx, netip.MustParseAddr("203.0.113.7"), "5.1.1"); err != nil {
		t.Fatal(err)
	}
	waitFail2banTable(t, ns, dir, "addr-set-bouncemilter", "203.0.113.7")

	// The upgrade: contrib's jail as shipped, and install.sh's commands.
	writeJailLocal(t, dir, banLog, "")
	for _, args := range [][]string{{"reload", "--restart", "--if-exists", DefaultJail}, {"reload"}} {
		if out, err := exec.Command("fail2ban-client", append([]string{"-c", dir}, args...)...).CombinedOutput(); err != nil {
			t.Fatalf("fail2ban-client %s: %v: %s", strings.Join(args, " "), err, out)
		}
	}
	if err := b.Ban(ctx, netip.MustParseAddr("2001:db8:1:2::5"), "5.1.1"); err != nil {
		t.Fatal(err)
	}
	table := waitFail2banTable(t, ns, dir, "net-set-bouncemilter", "203.0.113.7", "2001:db8:1:2::/64")
	if strings.Contains(table, "addr-set-bouncemilter") {
		t.Errorf("the stock action's set outlived the upgrade:\n%s", table)
	}
}

// TestFail2banHungServer: a fail2ban server that accepts connections but
// does not answer (stopped, swapped out, stuck in a long reload) must make
// a ban fail in bounded time, so that the worker retries it later and goes
// on with the account bans behind it. fail2ban-client waits on its socket
// without a time limit, and the banner gave it none, with the worker's
// context that has no deadline: Ban blocked for as long as the server did.
func TestFail2banHungServer(t *testing.T) {
	f2b := testenv.StartFail2ban(t, "")
	pidText, err := os.ReadFile(filepath.Join(f2b.Dir, "fail2ban.pid"))
	if err != nil {
		t.Fatal(err)
	}
	var pid int
	if fmt.Sscan(string(pidText), &pid); pid <= 1 {
		t.Fatalf("fail2ban pid %q", pidText)
	}
	if err := syscall.Kill(pid, syscall.SIGSTOP); err != nil {
		t.Fatal(err)
	}
	// Before StartFail2ban's cleanup, which stops the server.
	t.Cleanup(func() { syscall.Kill(pid, syscall.SIGCONT) })

	const timeout = time.Second
	b := &Fail2banClient{Jail: DefaultJail, Config: f2b.Dir, Bantime: time.Hour, CommandTimeout: timeout}
	// The worker's context: no deadline, cancelled only at shutdown.
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	start := time.Now()
	done := make(chan error, 1)
	go func() { done <- b.Ban(ctx, netip.MustParseAddr("203.0.113.7"), "") }()
	select {
	case err := <-done:
		if !errors.Is(err, errNoAnswer) {
			t.Errorf("Ban against a stopped fail2ban = %v, want no answer", err)
		}
		if d := time.Since(start); d > 5*timeout {
			t.Errorf("Ban against a stopped fail2ban took %v, its timeout is %v", d, timeout)
		}
	case <-time.After(30 * time.Second):
		t.Error("Ban against a stopped fail2ban still blocks after 30 s")
		cancel()
		<-done
	}
}
