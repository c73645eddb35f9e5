package returnpath

import (
	"errors"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/bouncemilter/bouncemilter/internal/testenv"
)

func TestLoadOrCreate(t *testing.T) {
	path := filepath.Join(t.TempDir(), "returnpath.keys")
	k1, err := LoadOrCreate(path)
	if err != nil {
		t.Fatal(err)
	}
	fi, err := os.Stat(path)
	if err != nil {
		t.Fatal(err)
	}
	if perm := fi.Mode().Perm(); perm != 0o600 {
		t.Errorf("new key file has mode %#o, want 0600", perm)
	}
	// No temporary file is left behind.
	if ents, _ := os.ReadDir(filepath.Dir(path)); len(ents) != 1 {
		t.Errorf("directory holds %d entries, want only the key file", len(ents))
	}

	// A second start reads the same key: what one signed, the other verifies.
	k2, err := LoadOrCreate(path)
	if err != nil {
		t.Fatal(err)
	}
	addr := mustSign(t, &Signer{Keys: k1}, sender, rcpt, now)
	if err := (&Signer{Keys: k2}).Verify(addr, rcpt, now); err != nil {
		t.Errorf("key not kept across loads: %v", err)
	}
}

func TestLoadOrCreateConcurrent(t *testing.T) {
	path := filepath.Join(t.TempDir(), "returnpath.keys")
	var (
		wg    sync.WaitGroup
		mu    sync.Mutex
		addrs = make(map[string]bool)
	)
	for range 8 {
		wg.Go(func() {
			k, err := LoadOrCreate(path)
			if err != nil {
				t.Error(err)
				return
			}
			addr := mustSign(t, &Signer{Keys: k}, sender, rcpt, now)
			mu.Lock()
			addrs[addr] = true
			mu.Unlock()
		})
	}
	wg.Wait()
	if len(addrs) != 1 {
		t.Errorf("processes starting at once made %d different keys, want 1", len(addrs))
	}
}

func TestKeyFileMode(t *testing.T) {
	for _, mode := range []fs.FileMode{0o640, 0o604, 0o620, 0o660, 0o644} {
		path := filepath.Join(t.TempDir(), "returnpath.keys")
		if _, err := LoadOrCreate(path); err != nil {
			t.Fatal(err)
		}
		if err := os.Chmod(path, mode); err != nil {
			t.Fatal(err)
		}
		_, err := LoadOrCreate(path)
		if !errors.Is(err, ErrInsecureKeyFile) {
			t.Errorf("mode %#o: err = %v, want ErrInsecureKeyFile", mode, err)
		}
		if err != nil && !strings.Contains(err.Error(), "chmod 600") {
			t.Errorf("mode %#o: error %q does not say how to fix it", mode, err)
		}
	}
	for _, mode := range []fs.FileMode{0o600, 0o400} {
		path := filepath.Join(t.TempDir(), "returnpath.keys")
		if _, err := LoadOrCreate(path); err != nil {
			t.Fatal(err)
		}
		if err := os.Chmod(path, mode); err != nil {
			t.Fatal(err)
		}
		if _, err := LoadOrCreate(path); err != nil {
			t.Errorf("mode %#o: %v", mode, err)
		}
	}
}

func TestLoadErrors(t *testing.T) {
	const secret = "dGhpcnR5LXR3byBieXRlcyBsb25nIHNlY3JldCBrZXk=" // 32 bytes
	tests := []struct {
		name, file, want string
	}{
		{"empty", "", "no current key"},
		{"comments only", "# nothing\n", "no current key"},
		{"no current key", "1 2026-11-01T00:00:00Z 2026-12-01T00:00:00Z " + secret + "\n", "no current key"},
		{"fields", "1 2026-11-01T00:00:00Z " + secret + "\n", "want 4 fields"},
		{"id", "256 2026-11-01T00:00:00Z - " + secret + "\n", "key id"},
		{"created", "1 yesterday - " + secret + "\n", "created"},
		{"expires", "1 2026-11-01T00:00:00Z never " + secret + "\n", "expires"},
		{"secret", "1 2026-11-01T00:00:00Z - !!!\n", "secret"},
		{"short secret", "1 2026-11-01T00:00:00Z - c2hvcnQ=\n", "5 bytes, want 32"},
		// Valid base64 of 30 bytes: the secret above cut by 4 characters.
		{"cut secret", "1 2026-11-01T00:00:00Z - " + secret[:40] + "\n", ":1: secret: 30 bytes, want 32"},
		{"long secret", "1 2026-11-01T00:00:00Z - " + secret[:40] + "a2V5QUFB\n", "36 bytes, want 32"},
		{"duplicate id", "1 2026-11-01T00:00:00Z 2026-12-01T00:00:00Z " + secret + "\n1 2026-11-02T00:00:00Z - " + secret + "\n", "used twice"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			path := filepath.Join(t.TempDir(), "returnpath.keys")
			if err := os.WriteFile(path, []byte(tc.file), 0o600); err != nil {
				t.Fatal(err)
			}
			_, err := LoadOrCreate(path)
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Errorf("err = %v, want it to say %q", err, tc.want)
			}
			// A damaged file is never replaced.
			if b, _ := os.ReadFile(path); string(b) != tc.file {
				t.Errorf("file was changed to %q", b)
			}
		})
	}

	if _, err := LoadOrCreate(filepath.Join(t.TempDir(), "missing", "returnpath.keys")); err == nil {
		t.Error("no error for a missing directory")
	}
	if _, err := LoadOrCreate(t.TempDir()); err == nil {
		t.Error("no error for a directory as key file")
	}
}

// TestCutKeyFile: a key file cut short while it was copied to another MX
// host, where what is left of the last secret is still valid base64, is
// refused with the file and line named, never the secret; before, the host
// signed and verified with a shorter, different key.
func TestCutKeyFile(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "returnpath.keys")
	k, err := LoadOrCreate(path)
	if err != nil {
		t.Fatal(err)
	}
	if err := k.Rotate(now, DefaultGrace); err != nil {
		t.Fatal(err)
	}
	whole, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	// The current key's secret is the last 44 characters before the final
	// newline; cut "=" and newline and 3 more: 40 characters, 30 bytes.
	cut := whole[:len(whole)-5]
	lines := strings.Split(string(whole), "\n")
	last := lines[len(lines)-2]
	secret := last[strings.LastIndexByte(last, ' ')+1:]
	copyPath := filepath.Join(t.TempDir(), "returnpath.keys")
	if err := os.WriteFile(copyPath, cut, 0o600); err != nil {
		t.Fatal(err)
	}
	_, err = LoadOrCreate(copyPath)
	if err == nil {
		t.Fatal("a key file cut inside its last secret was loaded")
	}
	msg := err.Error()
	if want := copyPath + ":4: secret: 30 bytes, want 32"; !strings.Contains(msg, want) {
		t.Errorf("err = %q; want it to say %q", msg, want)
	}
	if strings.Contains(msg, secret[:40]) {
		t.Errorf("err = %q shows the secret", msg)
	}
	// The whole copy loads, and what one host signs the other verifies.
	if err := os.WriteFile(copyPath, whole, 0o600); err != nil {
		t.Fatal(err)
	}
	k2, err := LoadOrCreate(copyPath)
	if err != nil {
		t.Fatal(err)
	}
	addr := mustSign(t, &Signer{Keys: k}, sender, rcpt, now)
	if err := (&Signer{Keys: k2}).Verify(addr, rcpt, now); err != nil {
		t.Errorf("whole copy: %v", err)
	}
	// Reload keeps the keys in memory when the file is cut.
	if err := os.WriteFile(copyPath, cut, 0o600); err != nil {
		t.Fatal(err)
	}
	if err := k2.Reload(); err == nil {
		t.Error("Reload accepted a cut file")
	}
	if err := (&Signer{Keys: k2}).Verify(addr, rcpt, now); err != nil {
		t.Errorf("after a refused reload: %v", err)
	}
}

// TestHandWritten reads a file written by hand: keys in any order, the
// current one the newest without expiry.
func TestHandWritten(t *testing.T) {
	path := filepath.Join(t.TempDir(), "returnpath.keys")
	file := "# keys\n\n" +
		"9 2026-11-20T00:00:00Z - dGhpcnR5LXR3byBieXRlcyBsb25nIHNlY3JldCBrZXk=\n" +
		"  3 2026-11-01T00:00:00Z 2026-11-28T00:00:00Z YW5vdGhlciAzMi1ieXRlIGxvbmcgc2VjcmV0IGtleSE=\n"
	if err := os.WriteFile(path, []byte(file), 0o600); err != nil {
		t.Fatal(err)
	}
	k, err := LoadOrCreate(path)
	if err != nil {
		t.Fatal(err)
	}
	cur, err := k.current()
	if err != nil || cur.id != 9 {
		t.Fatalf("current key = %d, %v; want 9", cur.id, err)
	}
	if _, ok := k.lookup(3, now); !ok {
		t.Error("key 3 not accepted before its expiry")
	}
	if _, ok := k.lookup(3, time.Date(2026, 11, 28, 0, 0, 0, 0, time.UTC)); ok {
		t.Error("key 3 accepted at its expiry")
	}
}

func TestRotate(t *testing.T) {
	s := newSigner(t)
	old := mustSign(t, s, sender, rcpt, now)
	if err := s.Keys.Rotate(now, DefaultGrace); err != nil {
		t.Fatal(err)
	}
	fresh := mustSign(t, s, sender, rcpt, now)
	if fresh == old {
		t.Fatal("rotation did not change the tag")
	}
	// A second process (the CLI, say) sees the rotation after Reload.
	other, err := LoadOrCreate(s.Keys.path)
	if err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name string
		addr string
		at   time.Time
		want error
	}{
		{"new key", fresh, now, nil},
		{"rotated key still valid", old, now, nil},
		{"key kept, tag past MaxAge", old, now.Add(DefaultGrace - time.Second), ErrExpired},
		{"rotated key after grace", old, now.Add(DefaultGrace), ErrUnknownKey},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			for _, k := range []*Keyring{s.Keys, other} {
				err := (&Signer{Keys: k}).Verify(tc.addr, rcpt, tc.at)
				if tc.want == nil && err != nil || !errors.Is(err, tc.want) {
					t.Errorf("Verify = %v, want %v", err, tc.want)
				}
			}
		})
	}

	// Rotation in the other process: the first one needs Reload to verify
	// what the other signs.
	if err := other.Rotate(now.Add(time.Hour), DefaultGrace); err != nil {
		t.Fatal(err)
	}
	third := mustSign(t, &Signer{Keys: other}, sender, rcpt, now)
	if err := s.Verify(third, rcpt, now); !errors.Is(err, ErrUnknownKey) {
		t.Errorf("before Reload: %v, want ErrUnknownKey", err)
	}
	if err := s.Keys.Reload(); err != nil {
		t.Fatal(err)
	}
	for _, addr := range []string{old, fresh, third} {
		if err := s.Verify(addr, rcpt, now); err != nil {
			t.Errorf("after Reload, Verify(%q): %v", addr, err)
		}
	}

	// After grace, the next rotation drops the old keys from the file.
	if err := s.Keys.Rotate(now.Add(DefaultGrace+2*time.Hour), DefaultGrace); err != nil {
		t.Fatal(err)
	}
	b, err := os.ReadFile(s.Keys.path)
	if err != nil {
		t.Fatal(err)
	}
	if n := strings.Count(string(b), "\n") - 2; n != 2 {
		t.Errorf("key file holds %d keys, want 2 (the one rotated last, and the new one):\n%s", n, b)
	}
}

func TestRotateDropsAtOnce(t *testing.T) {
	s := newSigner(t)
	leaked := mustSign(t, s, sender, rcpt, now)
	if err := s.Keys.Rotate(now, 0); err != nil {
		t.Fatal(err)
	}
	if err := s.Verify(leaked, rcpt, now); !errors.Is(err, ErrUnknownKey) {
		t.Errorf("dropped key: %v, want ErrUnknownKey", err)
	}
	if err := s.Verify(mustSign(t, s, sender, rcpt, now), rcpt, now); err != nil {
		t.Errorf("new key: %v", err)
	}
}

// TestRotateIDs checks that key ids wrap around and skip ids still in use.
func TestRotateIDs(t *testing.T) {
	if testing.Short() {
		t.Skip("writes the key file 500 times")
	}
	k := newKeyring(t)
	for range 255 {
		if err := k.Rotate(now, 0); err != nil {
			t.Fatal(err)
		}
	}
	if cur, _ := k.current(); cur.id != 0 {
		t.Fatalf("after 255 rotations from id 1, id = %d, want 0", cur.id)
	}
	// Keep all: ids 1..255 fill up, then there is none left.
	for i := range 256 {
		err := k.Rotate(now, time.Hour)
		if i < 255 && err != nil {
			t.Fatalf("rotation %d: %v", i, err)
		}
		if i == 255 && err == nil {
			t.Fatal("rotation with all 256 ids in use succeeded")
		}
	}
}

func TestNilKeyring(t *testing.T) {
	s := &Signer{}
	if got, err := s.Sign(sender, rcpt, now); err == nil || got != sender {
		t.Errorf("Sign without keys = %q, %v; want sender and an error", got, err)
	}
	if err := s.Verify("notice+"+strings.Repeat("a", TagLen)+"@d", rcpt, now); !errors.Is(err, ErrUnknownKey) {
		t.Errorf("Verify without keys = %v, want ErrUnknownKey", err)
	}
}

// Root rotating the keys of a milter that runs as its own user keeps the
// file that user's: otherwise the milter can no longer read it on reload
// or restart, and signing silently stops (issue 9 §6).
func TestRotateKeepsOwner(t *testing.T) {
	testenv.Require(t, os.Geteuid() == 0, "changing a file's owner needs root")
	const nobody = 65534
	dir := t.TempDir()
	path := filepath.Join(dir, "returnpath.keys")
	k, err := LoadOrCreate(path)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.Chown(path, nobody, nobody); err != nil {
		t.Fatal(err)
	}
	if err := k.Rotate(time.Now(), DefaultGrace); err != nil {
		t.Fatal(err)
	}
	owner := func(p string) (int, int) {
		fi, err := os.Stat(p)
		if err != nil {
			t.Fatal(err)
		}
		uid, gid, _ := ownerOf(fi)
		return uid, gid
	}
	if uid, gid := owner(path); uid != nobody || gid != nobody {
		t.Errorf("after rotation the key file belongs to %d:%d, want %d:%d", uid, gid, nobody, nobody)
	}
	// A new key file made by root belongs to the directory's owner.
	sub := filepath.Join(dir, "lib")
	if err := os.Mkdir(sub, 0o750); err != nil {
		t.Fatal(err)
	}
	if err := os.Chown(sub, nobody, nobody); err != nil {
		t.Fatal(err)
	}
	if _, err := LoadOrCreate(filepath.Join(sub, "returnpath.keys")); err != nil {
		t.Fatal(err)
	}
	if uid, gid := owner(filepath.Join(sub, "returnpath.keys")); uid != nobody || gid != nobody {
		t.Errorf("a new key file belongs to %d:%d, want the directory's %d:%d", uid, gid, nobody, nobody)
	}
}
