// Package contrib_test checks contrib/install.sh, the install guide that the
// README shows and the end-to-end test runs, where it can be checked alone.
package contrib_test

import (
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/bouncemilter/bouncemilter/internal/testenv"
)

// postconf returns a setting as Postfix reads it ($names expanded).
func postconf(t *testing.T, dir, name string) string {
	t.Helper()
	out, err := exec.Command("postconf", "-c", dir, "-hx", name).CombinedOutput()
	if err != nil {
		t.Fatalf("postconf %s: %v\n%s", name, err, out)
	}
	return strings.TrimSpace(string(out))
}

// The Postfix step appends bouncemilter to the milters an admin already
// has (an OpenDKIM entry stays, and comes first), and adds nothing twice
// when run again.
func TestInstallAppendsToPostfixMilters(t *testing.T) {
	_, err := exec.LookPath("postconf")
	testenv.Require(t, err == nil, "Postfix is not installed (apt-get install postfix)")
	cases := map[string]string{
		"opendkim":       "smtpd_milters = inet:127.0.0.1:8892\nnon_smtpd_milters = $smtpd_milters\n",
		"opendkim-local": "smtpd_milters = local:opendkim/opendkim.sock\nnon_smtpd_milters = local:opendkim/opendkim.sock\ninternal_mail_filter_classes = bounce, notify\nrecipient_delimiter = +-\n",
		"none":           "",
	}
	for name, mainCF := range cases {
		t.Run(name, func(t *testing.T) {
			dir := t.TempDir()
			if err := os.WriteFile(filepath.Join(dir, "main.cf"), []byte("compatibility_level = 3.6\n"+mainCF), 0o644); err != nil {
				t.Fatal(err)
			}
			if err := os.WriteFile(filepath.Join(dir, "master.cf"), nil, 0o644); err != nil {
				t.Fatal(err)
			}
			before := map[string]string{}
			for _, n := range []string{"smtpd_milters", "non_smtpd_milters"} {
				out, _ := exec.Command("postconf", "-c", dir, "-hx", n).Output()
				before[n] = strings.TrimSpace(string(out))
			}
			var got []string
			for run := 0; run < 2; run++ {
				cmd := exec.Command("./install.sh", "--steps", "postfix", "--postfix-config", dir, "--milter", "unix:/run/bouncemilter/milter.sock")
				if out, err := cmd.CombinedOutput(); err != nil {
					t.Fatalf("install.sh: %v\n%s", err, out)
				}
				var now []string
				for _, n := range []string{"smtpd_milters", "non_smtpd_milters", "internal_mail_filter_classes", "milter_default_action", "recipient_delimiter"} {
					now = append(now, n+" = "+postconf(t, dir, n))
				}
				if run == 1 && strings.Join(now, "\n") != strings.Join(got, "\n") {
					t.Errorf("a second run changed main.cf:\n%s\nthen:\n%s", strings.Join(got, "\n"), strings.Join(now, "\n"))
				}
				got = now
			}
			for _, n := range []string{"smtpd_milters", "non_smtpd_milters"} {
				v := postconf(t, dir, n)
				want := "unix:/run/bouncemilter/milter.sock"
				if before[n] != "" {
					want = before[n] + ", " + want
				}
				if v != want {
					t.Errorf("%s = %q, want %q", n, v, want)
				}
			}
			if name == "opendkim-local" {
				if v := postconf(t, dir, "internal_mail_filter_classes"); v != "bounce, notify" {
					t.Errorf("internal_mail_filter_classes = %q, want the admin's kept", v)
				}
				if v := postconf(t, dir, "recipient_delimiter"); v != "+-" {
					t.Errorf("recipient_delimiter = %q, want the admin's kept", v)
				}
			} else if v := postconf(t, dir, "internal_mail_filter_classes"); v != "bounce" {
				t.Errorf("internal_mail_filter_classes = %q", v)
			}
		})
	}
}

// --dry-run prints every step and changes nothing.
func TestInstallDryRun(t *testing.T) {
	_, err := exec.LookPath("postconf")
	testenv.Require(t, err == nil, "Postfix is not installed (apt-get install postfix)")
	root := t.TempDir()
	out, err := exec.Command("./install.sh", "--dry-run", "--root", root, "--mediagoblin-config", filepath.Join(root, "mediagoblin.ini")).CombinedOutput()
	if err != nil {
		t.Fatalf("install.sh --dry-run: %v\n%s", err, out)
	}
	for _, want := range []string{"go build -o " + root + "/usr/local/bin/bouncemilter", "usermod -a -G adm bouncemilter", "postconf -e", "bouncemilter.service", "nftables", "bouncemilter_signup"} {
		if !strings.Contains(string(out), want) {
			t.Errorf("dry run does not show %q:\n%s", want, out)
		}
	}
	entries, _ := os.ReadDir(root)
	if len(entries) != 0 {
		t.Errorf("dry run created %v", entries)
	}
}

// The README's "Installing it for real" shows the dry run of this script:
// every command it shows is one the script runs, in the same order. Lines
// that depend on the machine (whether the user exists, what main.cf holds
// already) are compared by the setting they change.
func TestReadmeShowsTheScript(t *testing.T) {
	_, err := exec.LookPath("postconf")
	testenv.Require(t, err == nil, "Postfix is not installed (apt-get install postfix)")
	readme, err := os.ReadFile("../README.md")
	if err != nil {
		t.Fatal(err)
	}
	text := string(readme)
	start := strings.Index(text, "```\n# 1. Build")
	if start < 0 {
		t.Fatal("README shows no dry run of contrib/install.sh")
	}
	block := text[start+4:]
	block = block[:strings.Index(block, "```")]
	out, err := exec.Command("./install.sh", "--dry-run").CombinedOutput()
	if err != nil {
		t.Fatalf("install.sh --dry-run: %v\n%s", err, out)
	}
	key := func(l string) string {
		switch {
		case strings.HasPrefix(l, "+ postconf -e '"):
			name, _, _ := strings.Cut(strings.TrimPrefix(l, "+ postconf -e '"), " ")
			return "postconf " + name
		case strings.HasPrefix(l, "  ") && strings.Contains(l, " already holds "),
			strings.HasPrefix(l, "  recipient_delimiter is "):
			// The setting is there already: nothing to run.
			name, _, _ := strings.Cut(strings.TrimSpace(l), " ")
			return "postconf " + name
		case strings.HasPrefix(l, "+ useradd "),
			strings.HasPrefix(l, "+ install ") && strings.HasSuffix(l, "/bans.log"):
			// Only where the user or the ban log is not there yet
			// (scripts/serve.sh as root makes the ban log too).
			return ""
		}
		return l
	}
	commands := func(s string) []string {
		var out []string
		for _, l := range strings.Split(s, "\n") {
			if strings.HasPrefix(l, "+ ") || strings.HasPrefix(l, "# ") || strings.HasPrefix(l, "  ") {
				if k := key(l); k != "" {
					out = append(out, k)
				}
			}
		}
		return out
	}
	want, got := commands(block), commands(string(out))
	if strings.Join(want, "\n") != strings.Join(got, "\n") {
		t.Errorf("README's install guide and install.sh --dry-run differ:\nREADME:\n%s\n\nscript:\n%s", strings.Join(want, "\n"), strings.Join(got, "\n"))
	}
}
