package testenv

import (
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// Postfix is a private Postfix instance on loopback, with its own
// configuration directory, queue and log, started with `postfix -c DIR`.
type Postfix struct {
	Dir   string // configuration directory: main.cf, master.cf
	SMTP  string // host:port of its smtpd
	Log   string // its maillog_file
	Queue string // its queue_directory, where relative unix: milter paths point
}

// PostfixConfig says how to set up a private Postfix.
type PostfixConfig struct {
	// Transports routes whole domains, e.g. "nowhere.example" →
	// "smtp:[127.0.0.2]:2525". Nothing is delivered locally.
	Transports map[string]string
	// Main holds extra main.cf lines ("name = value"), applied last, e.g.
	// the lines of contrib/postfix.
	Main []string
	// Master holds extra master.cf service lines; one naming a service
	// and type already there replaces it.
	Master []string
}

// masterCF is Debian's master.cf, trimmed to the services a relay needs,
// with chroot off so that the instance needs no copy of /etc in its queue.
// %s is the smtpd listener.
const masterCF = `%s      inet  n       -       n       -       -       smtpd
pickup    unix  n       -       n       60      1       pickup
cleanup   unix  n       -       n       -       0       cleanup
qmgr      unix  n       -       n       300     1       qmgr
rewrite   unix  -       -       n       -       -       trivial-rewrite
bounce    unix  -       -       n       -       0       bounce
defer     unix  -       -       n       -       0       bounce
trace     unix  -       -       n       -       0       bounce
verify    unix  -       -       n       -       1       verify
flush     unix  n       -       n       1000?   0       flush
proxymap  unix  -       -       n       -       -       proxymap
smtp      unix  -       -       n       -       -       smtp
relay     unix  -       -       n       -       -       smtp
showq     unix  n       -       n       -       -       showq
error     unix  -       -       n       -       -       error
retry     unix  -       -       n       -       -       error
discard   unix  -       -       n       -       -       discard
anvil     unix  -       -       n       -       1       anvil
scache    unix  -       -       n       -       1       scache
postlog   unix-dgram n  -       n       -       1       postlogd
`

// StartPostfix starts a private Postfix and stops it when the test ends.
// It needs root and Debian's postfix package (Require otherwise).
func StartPostfix(t testing.TB, cfg PostfixConfig) *Postfix {
	t.Helper()
	postfix, err := exec.LookPath("postfix")
	if err != nil {
		postfix = "/usr/sbin/postfix"
	}
	_, statErr := os.Stat(postfix)
	Require(t, statErr == nil, "Postfix is not installed (apt-get install postfix)")
	Require(t, os.Geteuid() == 0, "a private Postfix needs root")

	dir := t.TempDir()
	p := &Postfix{Dir: filepath.Join(dir, "etc"), SMTP: FreeAddr(t, "127.0.0.1"), Log: filepath.Join(dir, "maillog"), Queue: filepath.Join(dir, "queue")}
	queue := p.Queue
	data := filepath.Join(dir, "data")
	for _, d := range []string{p.Dir, queue, data} {
		if err := os.MkdirAll(d, 0o755); err != nil {
			t.Fatal(err)
		}
	}
	// Postfix's own processes run as mail_owner and must reach their queue.
	for d := dir; d != filepath.Dir(d) && d != os.TempDir(); d = filepath.Dir(d) {
		os.Chmod(d, 0o755)
	}
	if err := exec.Command("chown", "postfix", data).Run(); err != nil {
		t.Fatalf("chown %s: %v", data, err)
	}

	var transports []string
	for domain, next := range cfg.Transports {
		transports = append(transports, fmt.Sprintf("{%s = %s}", domain, next))
	}
	main := []string{
		"compatibility_level = 3.6",
		"queue_directory = " + queue,
		"data_directory = " + data,
		"maillog_file = " + p.Log,
		// Postfix refuses a log outside these prefixes, silently: its
		// complaint goes to the log it cannot open.
		"maillog_file_prefixes = " + dir,
		"mail_owner = postfix",
		"setgid_group = postdrop",
		"myhostname = mx.bouncemilter.test",
		"mydomain = bouncemilter.test",
		"myorigin = $myhostname",
		"mydestination =",
		"inet_interfaces = 127.0.0.1",
		"inet_protocols = ipv4",
		"mynetworks = 127.0.0.0/8",
		"smtpd_relay_restrictions = permit_mynetworks, reject",
		"smtp_dns_support_level = disabled",
		"alias_maps =",
		"alias_database =",
		"local_recipient_maps =",
		"biff = no",
		"smtputf8_enable = no",
		"delay_warning_time = 0",
		// A deferred message is retried soon, so tests do not wait.
		"queue_run_delay = 1s",
		"minimal_backoff_time = 1s",
		"maximal_backoff_time = 2s",
		"transport_maps = inline:{ " + strings.Join(transports, ", ") + " }",
	}
	main = append(main, cfg.Main...)
	writeFile(t, filepath.Join(p.Dir, "main.cf"), strings.Join(main, "\n")+"\n")
	_, port, _ := net.SplitHostPort(p.SMTP)
	writeFile(t, filepath.Join(p.Dir, "master.cf"), withServices(fmt.Sprintf(masterCF, "127.0.0.1:"+port), cfg.Master))

	if out, err := exec.Command(postfix, "-c", p.Dir, "start").CombinedOutput(); err != nil {
		t.Fatalf("postfix start: %v\n%s", err, out)
	}
	t.Cleanup(func() {
		out, err := exec.Command(postfix, "-c", p.Dir, "stop").CombinedOutput()
		if err != nil {
			t.Logf("postfix stop: %v\n%s", err, out)
		}
		if t.Failed() {
			if log, err := os.ReadFile(p.Log); err == nil {
				t.Logf("Postfix's log:\n%s", log)
			}
		}
	})
	WaitFor(t, 20*time.Second, "Postfix's smtpd to answer", func() bool {
		c, err := net.DialTimeout("tcp", p.SMTP, time.Second)
		if err == nil {
			c.Close()
		}
		return err == nil
	})
	return p
}

// withServices adds the master.cf lines extra to master, each replacing
// the line of the same service and type.
func withServices(master string, extra []string) string {
	lines := strings.Split(strings.TrimSuffix(master, "\n"), "\n")
	key := func(l string) string {
		f := strings.Fields(l)
		if len(f) < 2 {
			return l
		}
		return f[0] + "/" + f[1]
	}
	for _, e := range extra {
		replaced := false
		for i, l := range lines {
			if key(l) == key(e) {
				lines[i], replaced = e, true
			}
		}
		if !replaced {
			lines = append(lines, e)
		}
	}
	return strings.Join(lines, "\n") + "\n"
}

// Flush asks Postfix to retry deferred mail now.
func (p *Postfix) Flush(t testing.TB) {
	t.Helper()
	if out, err := exec.Command("postfix", "-c", p.Dir, "flush").CombinedOutput(); err != nil {
		t.Logf("postfix flush: %v\n%s", err, out)
	}
}

// LogText returns what Postfix has logged so far.
func (p *Postfix) LogText(t testing.TB) string {
	t.Helper()
	b, err := os.ReadFile(p.Log)
	if err != nil && !os.IsNotExist(err) {
		t.Fatal(err)
	}
	return string(b)
}

// FreeAddr returns host:port with a port that was free a moment ago.
func FreeAddr(t testing.TB, host string) string {
	t.Helper()
	ln, err := net.Listen("tcp4", net.JoinHostPort(host, "0"))
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	return ln.Addr().String()
}

// WaitFor polls cond until it holds, failing the test after timeout.
func WaitFor(t testing.TB, timeout time.Duration, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out after %v waiting for %s", timeout, what)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

func writeFile(t testing.TB, path, content string) {
	t.Helper()
	if err := os.WriteFile(path, []byte(content), 0o644); err != nil {
		t.Fatal(err)
	}
}

// ContribMain returns the settings of contrib/postfix/main.cf, one
// "name = value" each, with the milter lists (smtpd_milters,
// non_smtpd_milters) pointing at milter instead of the socket contrib names:
// tests run Postfix with the settings an admin applies, and their own milter.
func ContribMain(t testing.TB, milter string) []string {
	t.Helper()
	b, err := os.ReadFile(filepath.Join(RepoRoot(t), "contrib", "postfix", "main.cf"))
	if err != nil {
		t.Fatal(err)
	}
	var lines []string
	for _, l := range strings.Split(string(b), "\n") {
		l = strings.TrimSpace(l)
		if l == "" || strings.HasPrefix(l, "#") {
			continue
		}
		if name, _, _ := strings.Cut(l, "="); strings.HasSuffix(strings.TrimSpace(name), "_milters") {
			l = strings.TrimSpace(name) + " = " + milter
		}
		lines = append(lines, l)
	}
	if len(lines) == 0 {
		t.Fatal("contrib/postfix/main.cf has no settings")
	}
	return lines
}
