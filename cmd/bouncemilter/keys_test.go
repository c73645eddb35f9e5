package main

import (
	"bytes"
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/bouncemilter/bouncemilter/internal/returnpath"
)

func TestKeysRotate(t *testing.T) {
	dir := t.TempDir()
	reg := filepath.Join(dir, "registry.db")
	keyFile := filepath.Join(dir, "returnpath.keys")
	keys, err := returnpath.LoadOrCreate(keyFile)
	if err != nil {
		t.Fatal(err)
	}
	now := time.Now()
	signer := &returnpath.Signer{Keys: keys}
	old, err := signer.Sign("notice@media.example.org", "bot@nowhere.example", now)
	if err != nil {
		t.Fatal(err)
	}

	var stdout, stderr bytes.Buffer
	if code := runKeys(context.Background(), []string{"rotate", "--registry", reg}, &stdout, &stderr); code != 0 {
		t.Fatalf("keys rotate = %d: %s", code, stderr.String())
	}
	if !strings.Contains(stdout.String(), "new key") {
		t.Errorf("output %q", stdout.String())
	}
	if err := keys.Reload(); err != nil {
		t.Fatal(err)
	}
	fresh, err := signer.Sign("notice@media.example.org", "bot@nowhere.example", now)
	if err != nil {
		t.Fatal(err)
	}
	if fresh == old {
		t.Error("rotation did not change the signing key")
	}
	for _, addr := range []string{old, fresh} {
		if err := signer.Verify(addr, "bot@nowhere.example", now); err != nil {
			t.Errorf("%s does not verify after rotation: %v", addr, err)
		}
	}

	// --grace 0: a leaked key stops verifying at once.
	if code := runKeys(context.Background(), []string{"rotate", "--registry", reg, "--grace", "0"}, &stdout, &stderr); code != 0 {
		t.Fatalf("keys rotate --grace 0 = %d: %s", code, stderr.String())
	}
	keys.Reload()
	if err := signer.Verify(fresh, "bot@nowhere.example", now); err == nil {
		t.Error("a key dropped with --grace 0 still verifies")
	}
	if fi, err := os.Stat(keyFile); err != nil || fi.Mode().Perm() != 0o600 {
		t.Errorf("key file mode %v, %v; want 0600", fi.Mode(), err)
	}
	if code := runKeys(context.Background(), nil, &stdout, &stderr); code != 2 {
		t.Errorf("keys without a subcommand = %d; want 2", code)
	}
}

// --registry names the database: given its directory, rotate would write
// a key file in the parent directory that no milter reads.
func TestKeysRotateRefusesADirectory(t *testing.T) {
	dir := t.TempDir()
	var stdout, stderr bytes.Buffer
	if code := runKeys(context.Background(), []string{"rotate", "--registry", dir}, &stdout, &stderr); code != 2 || !strings.Contains(stderr.String(), "is a directory") {
		t.Errorf("keys rotate --registry DIR = %d, %q; want 2 saying it is a directory", code, stderr.String())
	}
	if _, err := os.Stat(filepath.Join(filepath.Dir(dir), "returnpath.keys")); err == nil {
		t.Error("a key file was written beside the directory")
	}
}

// keys rotate's default grace is the tags' lifetime plus a day. serve
// makes tags live --window (Signer.MaxAge = cfg.Window), read from the same
// configuration file: with window = 720h a genuine bounce of mail sent just
// before a rotation, arriving 9 days later, still verifies.
func TestKeysRotateGraceFollowsWindow(t *testing.T) {
	dir := t.TempDir()
	reg := filepath.Join(dir, "registry.db")
	conf := filepath.Join(dir, "bouncemilter.conf")
	if err := os.WriteFile(conf, []byte("registry = "+reg+"\nwindow = 720h\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	keys, err := returnpath.LoadOrCreate(filepath.Join(dir, "returnpath.keys"))
	if err != nil {
		t.Fatal(err)
	}
	now := time.Now()
	signer := &returnpath.Signer{Keys: keys, MaxAge: 720 * time.Hour} // as serve builds it
	tag, err := signer.Sign("notice@media.example.org", "bot@nowhere.example", now)
	if err != nil {
		t.Fatal(err)
	}
	var stdout, stderr bytes.Buffer
	if code := runKeys(context.Background(), []string{"rotate", "--config", conf}, &stdout, &stderr); code != 0 {
		t.Fatalf("keys rotate = %d: %s", code, stderr.String())
	}
	if err := keys.Reload(); err != nil {
		t.Fatal(err)
	}
	later := now.Add(9 * 24 * time.Hour)
	if err := signer.Verify(tag, "bot@nowhere.example", later); err != nil {
		t.Errorf("a tag within its 30-day lifetime stopped verifying 9 days after a default rotation: %v (%s)", err, stdout.String())
	}
}
