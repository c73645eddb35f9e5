package testenv

import (
	"bytes"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// Fail2ban is a private fail2ban server with its own configuration
// directory, socket and in-memory database, running the jail "bouncemilter"
// of contrib/fail2ban with the filter of contrib/fail2ban.
type Fail2ban struct {
	Dir    string // configuration directory: fail2ban-client -c Dir
	Socket string // the server's socket: fail2ban-client -s Socket
	BanLog string // the file the jail watches
	Log    string // fail2ban's own log
}

// StartFail2ban starts a private fail2ban whose jail "bouncemilter" watches
// banLog (created if missing; a new file in a temporary directory when
// banLog is ""), and stops it when the test ends.
//
// The configuration is contrib/fail2ban's filter and jail as shipped, with a
// .local file that changes only what a test must: the log path, the polling
// backend, and no ban action (fail2ban records bans without touching the
// firewall). It needs fail2ban installed (Require otherwise), not root.
func StartFail2ban(t testing.TB, banLog string) *Fail2ban {
	t.Helper()
	_, err := exec.LookPath("fail2ban-client")
	Require(t, err == nil, "fail2ban is not installed (apt-get install fail2ban)")

	// Not t.TempDir: its path grows with the test's name, and a unix
	// socket's path may not exceed 107 bytes.
	dir, err := os.MkdirTemp("", "f2b")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	if banLog == "" {
		banLog = filepath.Join(dir, "bans.log")
	}
	f := &Fail2ban{
		Dir:    dir,
		Socket: filepath.Join(dir, "fail2ban.sock"),
		BanLog: banLog,
		Log:    filepath.Join(dir, "fail2ban.log"),
	}
	lf, err := os.OpenFile(banLog, os.O_WRONLY|os.O_CREATE|os.O_APPEND, 0o640)
	if err != nil {
		t.Fatal(err)
	}
	lf.Close()

	contrib := filepath.Join(RepoRoot(t), "contrib", "fail2ban")
	copyFile(t, filepath.Join(contrib, "filter.d", "bouncemilter.conf"), filepath.Join(dir, "filter.d", "bouncemilter.conf"))
	copyFile(t, filepath.Join(contrib, "jail.d", "bouncemilter.conf"), filepath.Join(dir, "jail.d", "bouncemilter.conf"))
	putFile(t, filepath.Join(dir, "fail2ban.conf"), fmt.Sprintf(`[Definition]
loglevel = INFO
logtarget = %s
syslogsocket = auto
socket = %s
pidfile = %s
dbfile = :memory:
dbpurgeage = 1d
allowipv6 = auto
`, f.Log, f.Socket, filepath.Join(dir, "fail2ban.pid")))
	// What the system's jail.conf would give: nothing but an empty action.
	putFile(t, filepath.Join(dir, "jail.conf"), "[DEFAULT]\naction =\n")
	putFile(t, filepath.Join(dir, "jail.d", "bouncemilter.local"), fmt.Sprintf(`[bouncemilter]
logpath = %s
backend = polling
`, banLog))

	out := f.start()
	if out.err != nil {
		t.Fatalf("fail2ban-client start: %v\n%s\nfail2ban's log:\n%s", out.err, out.text, readText(f.Log))
	}
	t.Cleanup(func() {
		if out := f.run("stop"); out.err != nil {
			t.Logf("fail2ban-client stop: %v\n%s", out.err, out.text)
		}
		if t.Failed() {
			t.Logf("fail2ban's log:\n%s", readText(f.Log))
		}
	})
	return f
}

// Client runs fail2ban-client against the server with args and returns its
// standard output, failing the test if it fails.
func (f *Fail2ban) Client(t testing.TB, args ...string) string {
	t.Helper()
	out := f.run(args...)
	if out.err != nil {
		t.Fatalf("fail2ban-client %s: %v\n%s", strings.Join(args, " "), out.err, out.text)
	}
	return out.stdout
}

// Banned returns the addresses jail bans now, from the "Banned IP list" of
// `fail2ban-client status JAIL`, as fail2ban spells them.
func (f *Fail2ban) Banned(t testing.TB, jail string) []string {
	t.Helper()
	for line := range strings.Lines(f.Client(t, "status", jail)) {
		if _, list, ok := strings.Cut(line, "Banned IP list:"); ok {
			return strings.Fields(list)
		}
	}
	t.Fatalf("fail2ban-client status %s: no banned IP list", jail)
	return nil
}

// WaitBanned waits until jail bans ip, failing the test after timeout.
// fail2ban's polling backend reads the log about once a second.
func (f *Fail2ban) WaitBanned(t testing.TB, jail, ip string, timeout time.Duration) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for {
		banned := f.Banned(t, jail)
		for _, b := range banned {
			if b == ip {
				return
			}
		}
		if time.Now().After(deadline) {
			t.Fatalf("fail2ban jail %s did not ban %s within %v; it bans %q\nfail2ban's log:\n%s", jail, ip, timeout, banned, readText(f.Log))
		}
		time.Sleep(100 * time.Millisecond)
	}
}

type output struct {
	stdout string
	text   string // stdout and stderr, for messages
	err    error
}

func (f *Fail2ban) run(args ...string) output {
	var stdout, stderr bytes.Buffer
	cmd := exec.Command("fail2ban-client", append([]string{"-c", f.Dir}, args...)...)
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	err := cmd.Run()
	return output{stdout: stdout.String(), text: stdout.String() + stderr.String(), err: err}
}

// start starts the server. Its output goes to a file, not a pipe: the
// server forks from fail2ban-client, and a pipe it inherited would keep
// cmd.Run waiting for it to exit.
func (f *Fail2ban) start() output {
	name := filepath.Join(f.Dir, "start.out")
	out, err := os.Create(name)
	if err != nil {
		return output{err: err}
	}
	defer out.Close()
	cmd := exec.Command("fail2ban-client", "-c", f.Dir, "-x", "start")
	cmd.Stdout, cmd.Stderr = out, out
	err = cmd.Run()
	return output{text: readText(name), err: err}
}

func copyFile(t testing.TB, from, to string) {
	t.Helper()
	b, err := os.ReadFile(from)
	if err != nil {
		t.Fatal(err)
	}
	putFile(t, to, string(b))
}

// putFile writes a file, making its directory.
func putFile(t testing.TB, path, content string) {
	t.Helper()
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(path, []byte(content), 0o644); err != nil {
		t.Fatal(err)
	}
}

func readText(path string) string {
	b, _ := os.ReadFile(path)
	return string(b)
}
