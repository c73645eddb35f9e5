package app

import (
	"bytes"
	"context"
	"errors"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/bouncemilter/bouncemilter/internal/bounce"
)

// keygen makes a feed key in dir as feed keygen does, and returns its path
// and the public key as a peers line holds it.
func keygen(t *testing.T, dir string) (key, pub string) {
	t.Helper()
	key = filepath.Join(dir, "feed.key")
	if err := FeedKeygen(Config{FeedKey: key}, io.Discard); err != nil {
		t.Fatal(err)
	}
	data, err := os.ReadFile(key + ".pub")
	if err != nil {
		t.Fatal(err)
	}
	lines := strings.Split(strings.TrimSpace(string(data)), "\n")
	return key, lines[len(lines)-1]
}

// TestFeedConfigErrors checks that a feed configuration that cannot work
// is refused before anything runs, and a usage error is told apart.
func TestFeedConfigErrors(t *testing.T) {
	ctx := context.Background()
	dir := t.TempDir()
	log := slog.New(slog.NewTextHandler(io.Discard, nil))
	key, pub := keygen(t, dir)
	empty := filepath.Join(dir, "empty.key")
	if err := os.WriteFile(empty, []byte("\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	base := Defaults()
	base.Registry = filepath.Join(dir, "registry.db")
	with := func(f func(*Config)) Config { c := base; f(&c); return c }
	peer := "a https://a.example/feed.json " + pub
	for _, c := range []struct {
		name  string
		run   func() error
		usage bool
		want  string
	}{
		{"keygen without key", func() error { return FeedKeygen(Config{}, io.Discard) }, true, "--key"},
		{"export without key", func() error { return FeedExport(ctx, base, io.Discard) }, true, "--key"},
		{"export without name", func() error {
			return FeedExport(ctx, with(func(c *Config) { c.FeedKey = key; c.FeedOut = dir }), io.Discard)
		}, false, "--name"},
		{"pull without peers", func() error { return FeedPull(ctx, base, log, io.Discard) }, true, "no peers"},
		{"pull with a zero threshold", func() error {
			return FeedPull(ctx, with(func(c *Config) { c.FeedPeerLines = []string{peer}; c.FeedThreshold = 0 }), log, io.Discard)
		}, false, "must be positive"},
		{"sync report key file missing", func() error {
			_, err := with(func(c *Config) { c.StopForumSpamKey = "@" + filepath.Join(dir, "none") }).afterSync(nil, log)
			return err
		}, false, "--report-stopforumspam"},
		{"sync report key file empty", func() error {
			_, err := with(func(c *Config) { c.StopForumSpamKey = "@" + empty }).afterSync(nil, log)
			return err
		}, false, "needs a key"},
	} {
		t.Run(c.name, func(t *testing.T) {
			err := c.run()
			if err == nil || !strings.Contains(err.Error(), c.want) || errors.Is(err, ErrUsage) != c.usage {
				t.Errorf("error %v; want one naming %q, usage %v", err, c.want, c.usage)
			}
		})
	}
}

// TestFeedHooksOff: without feed settings sync runs no
// hook, and the guard is on by default and off with Guard false.
func TestFeedHooksOff(t *testing.T) {
	log := slog.New(slog.NewTextHandler(io.Discard, nil))
	if f, err := Defaults().afterSync(nil, log); f != nil || err != nil {
		t.Errorf("afterSync of the defaults = %v, %v; want nothing", f != nil, err)
	}
	c := Defaults()
	c.Guard = false
	if g, err := c.guard(nil, bounce.Policy{}, log, nil); g != nil || err != nil {
		t.Errorf("guard with Guard false = %v, %v; want none", g, err)
	}
	var out bytes.Buffer
	c.Registry = filepath.Join(t.TempDir(), "registry.db")
	if err := FeedStatus(context.Background(), c, false, &out); err != nil || !strings.HasPrefix(out.String(), "PEER") {
		t.Errorf("FeedStatus of a new registry: %v, %q", err, out.String())
	}
}

// TestSubscriberKnowsIPv6Prefix: the subscriber of sync and feed pull
// lifts the peers' bans knowing serve's --ipv6-prefix, whose networks the
// banner lifts whole.
func TestSubscriberKnowsIPv6Prefix(t *testing.T) {
	_, pub := keygen(t, t.TempDir())
	log := slog.New(slog.NewTextHandler(io.Discard, nil))
	for _, bits := range []int{64, 48, 0} {
		c := Defaults()
		c.FeedPeerLines = []string{"a https://a.example/feed.json " + pub}
		c.IPv6Prefix = bits
		s, err := c.subscriber(nil, log)
		if err != nil {
			t.Fatal(err)
		}
		if s.IPv6Prefix != bits {
			t.Errorf("--ipv6-prefix %d: the subscriber has %d", bits, s.IPv6Prefix)
		}
	}
}
