package banner

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/bouncemilter/bouncemilter/internal/testenv"
)

// lineRE is contrib/fail2ban's failregex in Go's syntax, with the date
// pattern in front: every line LogFile writes must match it whole.
var lineRE = regexp.MustCompile(`^(\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ) bouncemilter: ban (\S+) reason=("(?:[^"\\]|\\.)*")\n$`)

func TestFormatLine(t *testing.T) {
	at := time.Date(2026, 11, 26, 2, 3, 4, 500, time.FixedZone("CET", 3600))
	for _, tc := range []struct {
		name   string
		ip     string
		reason string
		want   string
	}{
		{"plain", "203.0.113.7", "5.1.1 user unknown",
			`2026-11-26T01:03:04Z bouncemilter: ban 203.0.113.7 reason="5.1.1 user unknown"` + "\n"},
		{"IPv6", "2001:db8::7", "", `2026-11-26T01:03:04Z bouncemilter: ban 2001:db8::7 reason=""` + "\n"},
		{"mapped", "::ffff:203.0.113.7", "r", `2026-11-26T01:03:04Z bouncemilter: ban 203.0.113.7 reason="r"` + "\n"},
		{"newline", "203.0.113.7", "a\nb\r\nc",
			`2026-11-26T01:03:04Z bouncemilter: ban 203.0.113.7 reason="a\nb\r\nc"` + "\n"},
		{"forged line", "203.0.113.7", "x\"\n2026-11-26T01:03:04Z bouncemilter: ban 198.51.100.1 reason=\"",
			`2026-11-26T01:03:04Z bouncemilter: ban 203.0.113.7 reason="x\"\n2026-11-26T01:03:04Z bouncemilter: ban 198.51.100.1 reason=\""` + "\n"},
		{"backslash", "203.0.113.7", `a\" b`, `2026-11-26T01:03:04Z bouncemilter: ban 203.0.113.7 reason="a\\\" b"` + "\n"},
		{"invalid UTF-8", "203.0.113.7", "a\xffb", `2026-11-26T01:03:04Z bouncemilter: ban 203.0.113.7 reason="a\xffb"` + "\n"},
		{"unicode", "203.0.113.7", "Empfänger unbekannt\u2028", `2026-11-26T01:03:04Z bouncemilter: ban 203.0.113.7 reason="Empfänger unbekannt\u2028"` + "\n"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got := string(FormatLine(at, netip.MustParseAddr(tc.ip), tc.reason))
			if got != tc.want {
				t.Errorf("FormatLine:\n got %q\nwant %q", got, tc.want)
			}
			if !lineRE.MatchString(got) {
				t.Errorf("the filter does not match %q", got)
			}
		})
	}
}

func TestFormatLineLongReason(t *testing.T) {
	for _, reason := range []string{
		strings.Repeat("x", 10000),
		strings.Repeat("ä", 1000), // two bytes each: the cut must not split one
		strings.Repeat("x", MaxReason-1) + "ä",
	} {
		line := FormatLine(time.Now(), netip.MustParseAddr("203.0.113.7"), reason)
		m := lineRE.FindSubmatch(line)
		if m == nil {
			t.Fatalf("the filter does not match %q", line)
		}
		got, err := strconv.Unquote(string(m[3]))
		if err != nil {
			t.Fatal(err)
		}
		if len(got) > MaxReason || !strings.HasPrefix(reason, got) || len(got) < MaxReason-utf8Max {
			t.Errorf("reason of %d bytes cut to %d bytes %q", len(reason), len(got), got)
		}
		if strings.ContainsRune(string(m[3]), '\\') {
			t.Errorf("the cut split a character: %q", m[3])
		}
	}
}

const utf8Max = 4

func FuzzFormatLine(f *testing.F) {
	f.Add("5.1.1 user unknown", []byte{203, 0, 113, 7})
	f.Add("x\"\n2026-11-26T01:03:04Z bouncemilter: ban 198.51.100.1", []byte{0x20, 0x01, 0x0d, 0xb8, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 7})
	f.Add("\xff\xfe\x00\r\n\u2028", []byte{1, 2, 3, 4})
	f.Fuzz(func(t *testing.T, reason string, raw []byte) {
		ip, ok := netip.AddrFromSlice(raw)
		if !ok {
			return
		}
		line := FormatLine(time.Now(), ip, reason)
		m := lineRE.FindSubmatch(line)
		if m == nil {
			t.Fatalf("the filter does not match %q", line)
		}
		if got, err := netip.ParseAddr(string(m[2])); err != nil || got != ip.Unmap() {
			t.Fatalf("the filter reads address %q from %q, want %s", m[2], line, ip.Unmap())
		}
		got, err := strconv.Unquote(string(m[3]))
		if err != nil {
			t.Fatalf("reason %q does not unquote: %v", m[3], err)
		}
		if !strings.HasPrefix(reason, got) {
			t.Fatalf("reason %q came back as %q", reason, got)
		}
	})
}

func TestLogFile(t *testing.T) {
	ctx := context.Background()
	defer syscall.Umask(syscall.Umask(0o022))
	path := filepath.Join(t.TempDir(), "bans.log")
	l, err := NewLogFile(path)
	if err != nil {
		t.Fatal(err)
	}
	fi, err := os.Stat(path)
	if err != nil {
		t.Fatalf("NewLogFile did not create the log: %v", err)
	}
	if fi.Mode().Perm() != 0o640 {
		t.Errorf("new log has mode %v, want 0640", fi.Mode().Perm())
	}
	if fi.Size() != 0 {
		t.Errorf("new log holds %d bytes", fi.Size())
	}

	if err := l.Ban(ctx, netip.MustParseAddr("203.0.113.7"), "first"); err != nil {
		t.Fatal(err)
	}
	if err := l.Ban(ctx, netip.MustParseAddr("::ffff:203.0.113.8"), "second\nline"); err != nil {
		t.Fatal(err)
	}
	// Never a protected address, even without Guarded.
	for _, ip := range []string{"127.0.0.1", "::1", "fe80::1", "0.0.0.0", "224.0.0.1"} {
		if err := l.Ban(ctx, netip.MustParseAddr(ip), "no"); !errors.Is(err, ErrProtected) {
			t.Errorf("Ban(%s) = %v, want ErrProtected", ip, err)
		}
	}
	if got := addrs(t, path); !slices.Equal(got, []string{"203.0.113.7", "203.0.113.8"}) {
		t.Errorf("log bans %q", got)
	}

	// logrotate renames the file, and the next ban starts a new one.
	if err := os.Rename(path, path+".1"); err != nil {
		t.Fatal(err)
	}
	if err := l.Ban(ctx, netip.MustParseAddr("2001:db8::7"), "third"); err != nil {
		t.Fatal(err)
	}
	if got := addrs(t, path); !slices.Equal(got, []string{"2001:db8::7"}) {
		t.Errorf("after rotation the log bans %q", got)
	}
	if got := addrs(t, path+".1"); len(got) != 2 {
		t.Errorf("after rotation the old log bans %q", got)
	}
	// copytruncate empties it in place.
	if err := os.Truncate(path, 0); err != nil {
		t.Fatal(err)
	}
	if err := l.Ban(ctx, netip.MustParseAddr("198.51.100.1"), "fourth"); err != nil {
		t.Fatal(err)
	}
	if got := addrs(t, path); !slices.Equal(got, []string{"198.51.100.1"}) {
		t.Errorf("after truncation the log bans %q", got)
	}

	if err := l.Unban(ctx, netip.MustParseAddr("203.0.113.7")); !errors.Is(err, ErrUnbanUnsupported) {
		t.Errorf("Unban without fail2ban-client = %v, want ErrUnbanUnsupported", err)
	}
	cancelled, cancel := context.WithCancel(ctx)
	cancel()
	if err := l.Ban(cancelled, netip.MustParseAddr("198.51.100.2"), ""); !errors.Is(err, context.Canceled) {
		t.Errorf("Ban with a cancelled context = %v", err)
	}
}

func TestLogFileKeepsMode(t *testing.T) {
	path := filepath.Join(t.TempDir(), "bans.log")
	if err := os.WriteFile(path, []byte("2026-11-26T01:02:03Z bouncemilter: ban 192.0.2.1 reason=\"\"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	l, err := NewLogFile(path)
	if err != nil {
		t.Fatal(err)
	}
	if err := l.Ban(context.Background(), netip.MustParseAddr("192.0.2.2"), ""); err != nil {
		t.Fatal(err)
	}
	fi, _ := os.Stat(path)
	if fi.Mode().Perm() != 0o600 {
		t.Errorf("the admin's mode 0600 became %v", fi.Mode().Perm())
	}
	if got := addrs(t, path); !slices.Equal(got, []string{"192.0.2.1", "192.0.2.2"}) {
		t.Errorf("log bans %q", got)
	}
}

func TestNewLogFileErrors(t *testing.T) {
	dir := t.TempDir()
	for _, path := range []string{
		filepath.Join(dir, "missing", "bans.log"), // directory is not created
		dir, // a directory
	} {
		if _, err := NewLogFile(path); err == nil {
			t.Errorf("NewLogFile(%s) succeeded", path)
		}
	}
}

// TestLogFileConcurrent bans from many goroutines and two LogFiles on the same
// file (as two processes would): every line arrives whole.
func TestLogFileConcurrent(t *testing.T) {
	path := filepath.Join(t.TempDir(), "bans.log")
	var ls [2]*LogFile
	for i := range ls {
		l, err := NewLogFile(path)
		if err != nil {
			t.Fatal(err)
		}
		ls[i] = l
	}
	const workers, each = 20, 50
	reason := strings.Repeat("long reason ", 20)
	var wg sync.WaitGroup
	for w := range workers {
		wg.Go(func() {
			for i := range each {
				ip := netip.AddrFrom4([4]byte{198, 51, byte(w), byte(i + 1)})
				if err := ls[w%2].Ban(context.Background(), ip, reason); err != nil {
					t.Error(err)
				}
			}
		})
	}
	wg.Wait()
	got := addrs(t, path)
	if len(got) != workers*each {
		t.Errorf("%d lines, want %d", len(got), workers*each)
	}
	slices.Sort(got)
	if len(slices.Compact(got)) != workers*each {
		t.Errorf("lines are duplicated or lost")
	}
}

// addrs returns the addresses banned in the log at path, checking that every
// line is one the filter matches.
func addrs(t *testing.T, path string) []string {
	t.Helper()
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	var ips []string
	r := bufio.NewReader(f)
	for {
		line, err := r.ReadString('\n')
		if line != "" {
			m := lineRE.FindStringSubmatch(line)
			if m == nil {
				t.Fatalf("%s: line %q is not a ban the filter reads", path, line)
			}
			ips = append(ips, m[2])
		}
		if err != nil {
			break
		}
	}
	return ips
}

// TestFail2banRegex runs fail2ban's own tester with contrib's filter over
// testdata/bans.log and over lines that LogFile wrote with hostile reasons.
func TestFail2banRegex(t *testing.T) {
	_, err := exec.LookPath("fail2ban-regex")
	testenv.Require(t, err == nil, "fail2ban is not installed (apt-get install fail2ban)")
	filter := filepath.Join(testenv.RepoRoot(t), "contrib", "fail2ban", "filter.d", "bouncemilter.conf")

	written := filepath.Join(t.TempDir(), "bans.log")
	l, err := NewLogFile(written)
	if err != nil {
		t.Fatal(err)
	}
	for _, ban := range []struct{ ip, reason string }{
		{"203.0.113.7", "5.1.1 user unknown"},
		{"2001:db8::7", "x\"\n2026-11-26T01:03:04Z bouncemilter: ban 198.51.100.1 reason=\""},
		{"192.0.2.9", `trailing backslash \`},
		{"192.0.2.10", "reason=\"\" 198.51.100.2"},
	} {
		if err := l.Ban(context.Background(), netip.MustParseAddr(ban.ip), ban.reason); err != nil {
			t.Fatal(err)
		}
	}

	for _, tc := range []struct {
		name, log string
		want      []string
	}{
		{"testdata", "testdata/bans.log", []string{"203.0.113.7", "2001:db8::7", "192.0.2.9", "192.0.2.10"}},
		{"written", written, []string{"203.0.113.7", "2001:db8::7", "192.0.2.9", "192.0.2.10"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			out, err := exec.Command("fail2ban-regex", "-v", tc.log, filter).CombinedOutput()
			if err != nil {
				t.Fatalf("fail2ban-regex: %v\n%s", err, out)
			}
			if got := matched(string(out)); !slices.Equal(got, tc.want) {
				t.Errorf("fail2ban-regex found %q, want %q\n%s", got, tc.want, out)
			}
			lines := strings.Count(readFile(t, tc.log), "\n")
			// Every line's date was read: none "ignored" for want of one.
			if want := fmt.Sprintf("Lines: %d lines, 0 ignored, %d matched, %d missed", lines, len(tc.want), lines-len(tc.want)); !strings.Contains(string(out), want) {
				t.Errorf("fail2ban-regex does not say %q:\n%s", want, out)
			}
		})
	}
}

// matched returns the addresses that fail2ban-regex -v lists under a
// failregex: lines like "|      203.0.113.7  Thu Nov 26 01:02:03 2026".
func matched(out string) []string {
	var ips []string
	for _, m := range regexp.MustCompile(`(?m)^\|\s{6}(\S+)\s{2}\w{3} `).FindAllStringSubmatch(out, -1) {
		ips = append(ips, m[1])
	}
	return ips
}

func readFile(t *testing.T, path string) string {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

// BenchmarkLogFileBan measures a ban through the log: open, one write, fsync,
// close. The fsync dominates; bans are rare next to bounces.
func BenchmarkLogFileBan(b *testing.B) {
	l, err := NewLogFile(filepath.Join(b.TempDir(), "bans.log"))
	if err != nil {
		b.Fatal(err)
	}
	ctx := context.Background()
	ip := netip.MustParseAddr("203.0.113.7")
	b.ReportAllocs()
	for b.Loop() {
		if err := l.Ban(ctx, ip, "5.1.1 bot@nowhere.example: user unknown"); err != nil {
			b.Fatal(err)
		}
	}
}

// The ban log is never opened through a symbolic link: whoever can write
// in its directory could otherwise point the milter's appends at another
// file, or make fail2ban (which reads it as root) ban from one the milter
// does not own (issue 9 §6).
func TestLogFileRefusesSymlink(t *testing.T) {
	dir := t.TempDir()
	target := filepath.Join(dir, "precious")
	if err := os.WriteFile(target, []byte("keep me\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	link := filepath.Join(dir, "bans.log")
	if err := os.Symlink(target, link); err != nil {
		t.Fatal(err)
	}
	if _, err := NewLogFile(link); err == nil {
		t.Fatal("NewLogFile through a symlink succeeded")
	}
	// A link put in place after the milter started is refused too.
	real := filepath.Join(dir, "real.log")
	l, err := NewLogFile(real)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.Remove(real); err != nil {
		t.Fatal(err)
	}
	if err := os.Symlink(target, real); err != nil {
		t.Fatal(err)
	}
	if err := l.Ban(context.Background(), netip.MustParseAddr("203.0.113.7"), "test"); err == nil {
		t.Error("Ban appended through a symlink")
	}
	if b, _ := os.ReadFile(target); string(b) != "keep me\n" {
		t.Errorf("the link's target was written: %q", b)
	}
}
