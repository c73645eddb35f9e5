package main

import (
	"bytes"
	"context"
	"encoding/json"
	"path/filepath"
	"strings"
	"testing"
)

func TestParseJSON(t *testing.T) {
	dir := filepath.Join("..", "..", "testdata", "dsn")
	files := []string{
		filepath.Join(dir, "postfix-userunknown.eml"),
		filepath.Join(dir, "not-bounce-newsletter.eml"),
		filepath.Join(dir, "mbox-two.mbox"),
		filepath.Join(dir, "delivered.eml"),
		filepath.Join(dir, "no-such-file.eml"),
	}
	var stdout, stderr bytes.Buffer
	code := runParse(context.Background(), append([]string{"--json"}, files...), &stdout, &stderr)
	if code != 1 {
		t.Errorf("exit code %d, want 1 (one file unreadable)", code)
	}
	lines := strings.Split(strings.TrimSpace(stdout.String()), "\n")
	if len(lines) != len(files) {
		t.Fatalf("%d lines, want %d:\n%s", len(lines), len(files), stdout.String())
	}
	type recipient struct {
		Address, Action, Status, Reason, Diagnostic string
		Permanent                                   bool
	}
	type line struct {
		File       string
		Bounce     bool
		Recipients []recipient
		Error      string
	}
	want := []struct {
		bounce bool
		addrs  []string
		err    bool
	}{
		{true, []string{"NoSuchUser@example.net"}, false},
		{false, nil, false},
		{true, []string{"NoSuchUser@example.net", "ghost@qmail.example"}, false},
		{false, nil, false},
		{false, nil, true},
	}
	for i, l := range lines {
		var got line
		if err := json.Unmarshal([]byte(l), &got); err != nil {
			t.Fatalf("line %d: %v: %s", i, err, l)
		}
		if !strings.Contains(l, `"recipients":[`) {
			t.Errorf("line %d: recipients is not a list: %s", i, l)
		}
		if got.File != files[i] {
			t.Errorf("line %d: file %q, want the path as given, %q", i, got.File, files[i])
		}
		w := want[i]
		if got.Bounce != w.bounce || (got.Error != "") != w.err || len(got.Recipients) != len(w.addrs) {
			t.Errorf("line %d: %s", i, l)
			continue
		}
		if i == 0 && got.Recipients[0].Diagnostic == "" {
			t.Error("no diagnostic for Postfix's bounce")
		}
		for j, r := range got.Recipients {
			if r.Address != w.addrs[j] || r.Action != "failed" || r.Status != "5.1.1" || r.Reason != "userunknown" || !r.Permanent {
				t.Errorf("line %d recipient %d: %+v", i, j, r)
			}
		}
	}
	if !strings.Contains(stderr.String(), "no-such-file.eml") {
		t.Errorf("stderr does not name the unreadable file: %q", stderr.String())
	}
}

func TestParseText(t *testing.T) {
	var stdout, stderr bytes.Buffer
	f := filepath.Join("..", "..", "testdata", "dsn", "postfix-multi-rcpt.eml")
	if code := runParse(context.Background(), []string{f}, &stdout, &stderr); code != 0 {
		t.Fatalf("exit code %d: %s", code, stderr.String())
	}
	out := stdout.String()
	for _, s := range []string{"bounce (rfc3464), 3 recipient(s)", "NoSuchUser@example.net failed 5.1.1 userunknown permanent",
		"bot@no-such-domain.example failed 5.4.4 hostunknown permanent", "GNU MediaGoblin - Verify your email!"} {
		if !strings.Contains(out, s) {
			t.Errorf("output lacks %q:\n%s", s, out)
		}
	}
}

func TestParseUsage(t *testing.T) {
	for _, c := range []struct {
		args []string
		code int
		out  string
	}{
		{nil, 2, "Usage: bouncemilter parse"},
		{[]string{"--help"}, 0, "-json"},
		{[]string{"--no-such-flag", "x"}, 2, "unknown flag: --no-such-flag"},
	} {
		var stdout, stderr bytes.Buffer
		if code := runParse(context.Background(), c.args, &stdout, &stderr); code != c.code {
			t.Errorf("%v: exit code %d, want %d", c.args, code, c.code)
		}
		if !strings.Contains(stderr.String(), c.out) {
			t.Errorf("%v: stderr lacks %q: %s", c.args, c.out, stderr.String())
		}
	}
}
