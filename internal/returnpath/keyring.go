package returnpath

import (
	"bufio"
	"bytes"
	"crypto/rand"
	"encoding/base64"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"
)

// ErrInsecureKeyFile is returned when the key file can be read or written by
// group or others: the keys would let anyone who reads them forge bounces.
var ErrInsecureKeyFile = errors.New("returnpath: key file is accessible to group or others")

// secretLen is the size of a key: the HMAC-SHA256 block size would be
// more than needed, the hash size is what RFC 2104 section 3 recommends.
// Every key this program wrote has this size, and a key file is read only
// if each of its secrets has it: a file cut short (an interrupted copy to
// another MX host) can end in a shorter secret that is still valid base64,
// and that host would sign and verify with a different key.
const secretLen = 32

// key is one signing key.
type key struct {
	id      byte
	created time.Time
	// expires is when the key stops being accepted; zero while it is
	// current. Rotate sets it on the key it replaces.
	expires time.Time
	secret  []byte
}

func (k key) valid(now time.Time) bool {
	return k.expires.IsZero() || now.Before(k.expires)
}

// Keyring holds the signing keys, kept in a file. It is safe for concurrent
// use.
//
// The file is text, one key a line: id (0–255), creation time and expiry time
// (RFC 3339, "-" for none) and the secret (32 bytes, base64), with "#"
// comments. It must have mode 0600 or stricter. The current key, the one
// Sign uses, is the newest key without an expiry time.
type Keyring struct {
	path string

	mu   sync.RWMutex
	keys []key // oldest first; the last without expiry is current
}

// LoadOrCreate reads the key file at path, or creates it with one new key
// if it does not exist. The directory must exist. When several processes
// start at once, one creates the file and the others read it.
func LoadOrCreate(path string) (*Keyring, error) {
	k := &Keyring{path: path}
	keys, err := readKeys(path)
	if errors.Is(err, fs.ErrNotExist) {
		keys, err = create(path)
	}
	if err != nil {
		return nil, err
	}
	k.keys = keys
	return k, nil
}

// Reload reads the key file again, for a key rotated by another process.
// On error the keys in memory stay as they were.
func (k *Keyring) Reload() error {
	keys, err := readKeys(k.path)
	if err != nil {
		return err
	}
	k.mu.Lock()
	k.keys = keys
	k.mu.Unlock()
	return nil
}

// GraceFor is the grace Rotate needs for tags that live maxAge
// (Signer.MaxAge; 0 is DefaultMaxAge): their lifetime plus a day, so that
// the last tag signed with the old key still verifies when it bounces.
func GraceFor(maxAge time.Duration) time.Duration {
	if maxAge <= 0 {
		maxAge = DefaultMaxAge
	}
	return maxAge + 24*time.Hour
}

// Rotate makes a new current key. The key it replaces stays accepted by
// Verify for grace, so that mail signed with it can still bounce; pass
// GraceFor the signer's MaxAge. A
// grace of zero drops the old key at once, for a key that has leaked. Keys
// whose time has passed are removed from the file.
//
// Rotate rereads the file first, so a rotation done by another process is
// not undone. Rotations must not run in two processes at the same moment.
func (k *Keyring) Rotate(now time.Time, grace time.Duration) error {
	k.mu.Lock()
	defer k.mu.Unlock()
	keys, err := readKeys(k.path)
	if err != nil {
		return err
	}
	used := make(map[byte]bool)
	kept := keys[:0]
	var next byte
	for _, old := range keys {
		if old.expires.IsZero() {
			old.expires = now.Add(max(grace, 0))
			next = old.id + 1
		}
		if old.valid(now) {
			kept = append(kept, old)
			used[old.id] = true
		}
	}
	// Take the next id not in use, so that an id names one key for as
	// long as tags made with it may come back.
	for n := 0; used[next]; n++ {
		if n == 256 {
			return fmt.Errorf("rotate %s: all 256 key ids are in use", k.path)
		}
		next++
	}
	nk, err := newKey(next, now)
	if err != nil {
		return err
	}
	kept = append(kept, nk)
	if err := writeKeys(k.path, kept, false); err != nil {
		return err
	}
	k.keys = kept
	return nil
}

// current returns the key to sign with.
func (k *Keyring) current() (key, error) {
	if k == nil {
		return key{}, errors.New("returnpath: no keyring")
	}
	k.mu.RLock()
	defer k.mu.RUnlock()
	for i := len(k.keys) - 1; i >= 0; i-- {
		if k.keys[i].expires.IsZero() {
			return k.keys[i], nil
		}
	}
	return key{}, fmt.Errorf("returnpath: %s has no current key", k.path)
}

// lookup returns the key with id if it is still accepted at now.
func (k *Keyring) lookup(id byte, now time.Time) (key, bool) {
	if k == nil {
		return key{}, false
	}
	k.mu.RLock()
	defer k.mu.RUnlock()
	for _, c := range k.keys {
		if c.id == id {
			return c, c.valid(now)
		}
	}
	return key{}, false
}

func newKey(id byte, now time.Time) (key, error) {
	secret := make([]byte, secretLen)
	if _, err := rand.Read(secret); err != nil {
		return key{}, fmt.Errorf("returnpath: new key: %w", err)
	}
	return key{id: id, created: now.UTC().Truncate(time.Second), secret: secret}, nil
}

// create writes a new key file with one key, unless another process did so
// first, in which case it reads that one.
func create(path string) ([]key, error) {
	k, err := newKey(1, time.Now())
	if err != nil {
		return nil, err
	}
	keys := []key{k}
	err = writeKeys(path, keys, true)
	if errors.Is(err, fs.ErrExist) {
		return readKeys(path)
	}
	if err != nil {
		return nil, err
	}
	return keys, nil
}

func readKeys(path string) ([]key, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, fmt.Errorf("returnpath: %w", err)
	}
	defer f.Close()
	fi, err := f.Stat()
	if err != nil {
		return nil, fmt.Errorf("returnpath: %w", err)
	}
	if !fi.Mode().IsRegular() {
		return nil, fmt.Errorf("returnpath: %s is not a regular file", path)
	}
	if perm := fi.Mode().Perm(); perm&0o077 != 0 {
		return nil, fmt.Errorf("%w: %s has mode %#o, want 0600 (chmod 600 %s)", ErrInsecureKeyFile, path, perm, path)
	}
	var keys []key
	seen := make(map[byte]bool)
	sc := bufio.NewScanner(f)
	for n := 1; sc.Scan(); n++ {
		line := strings.TrimSpace(sc.Text())
		if line == "" || line[0] == '#' {
			continue
		}
		k, err := parseKey(line)
		if err != nil {
			return nil, fmt.Errorf("returnpath: %s:%d: %w", path, n, err)
		}
		if seen[k.id] {
			return nil, fmt.Errorf("returnpath: %s:%d: key id %d used twice", path, n, k.id)
		}
		seen[k.id] = true
		keys = append(keys, k)
	}
	if err := sc.Err(); err != nil {
		return nil, fmt.Errorf("returnpath: read %s: %w", path, err)
	}
	// An empty or cut file is refused rather than replaced: replacing it
	// would make every tag in flight unverifiable. (A line cut inside its
	// secret is refused by parseKey.)
	hasCurrent := false
	for _, k := range keys {
		hasCurrent = hasCurrent || k.expires.IsZero()
	}
	if !hasCurrent {
		return nil, fmt.Errorf("returnpath: %s has no current key (a key with expiry \"-\")", path)
	}
	// The current key is the newest one without expiry.
	slices.SortStableFunc(keys, func(a, b key) int { return a.created.Compare(b.created) })
	return keys, nil
}

func parseKey(line string) (key, error) {
	f := strings.Fields(line)
	if len(f) != 4 {
		return key{}, fmt.Errorf("want 4 fields (id, created, expires, secret), got %d", len(f))
	}
	id, err := strconv.ParseUint(f[0], 10, 8)
	if err != nil {
		return key{}, fmt.Errorf("key id: %w", err)
	}
	k := key{id: byte(id)}
	if k.created, err = time.Parse(time.RFC3339, f[1]); err != nil {
		return key{}, fmt.Errorf("created: %w", err)
	}
	if f[2] != "-" {
		if k.expires, err = time.Parse(time.RFC3339, f[2]); err != nil {
			return key{}, fmt.Errorf("expires: %w", err)
		}
	}
	if k.secret, err = base64.StdEncoding.DecodeString(f[3]); err != nil {
		return key{}, fmt.Errorf("secret: %w", err)
	}
	if len(k.secret) != secretLen {
		// The message names the length, never the secret.
		return key{}, fmt.Errorf("secret: %d bytes, want %d (is the file cut short? copy it again from the host it came from)", len(k.secret), secretLen)
	}
	return k, nil
}

// keepOwner gives tmp the owner the key file must keep: that of the file it
// replaces, or, for a new file made by root, that of its directory. A
// rotation run by root would otherwise leave a file the milter, running as
// its own user, can no longer read, and protection would silently stop.
// When the owner cannot be kept, the file is not replaced.
func keepOwner(tmp *os.File, path string, create bool) error {
	var want fs.FileInfo
	if create {
		if os.Geteuid() != 0 {
			return nil
		}
		fi, err := os.Stat(filepath.Dir(path))
		if err != nil {
			return err
		}
		want = fi
	} else {
		fi, err := os.Stat(path)
		if errors.Is(err, fs.ErrNotExist) {
			return nil
		}
		if err != nil {
			return err
		}
		want = fi
	}
	have, err := tmp.Stat()
	if err != nil {
		return err
	}
	uid, gid, ok := ownerOf(want)
	huid, hgid, hok := ownerOf(have)
	if !ok || !hok || uid == huid && gid == hgid {
		return nil
	}
	if err := tmp.Chown(uid, gid); err != nil {
		return fmt.Errorf("cannot keep the key file's owner %d:%d (run this as that user or as root): %w", uid, gid, err)
	}
	return nil
}

// writeKeys writes the file atomically: a temporary file in the same
// directory, synced, then renamed over path (or, with excl, linked to path,
// which fails with fs.ErrExist if path exists), then the directory synced so
// the new name survives a crash.
func writeKeys(path string, keys []key, excl bool) (err error) {
	var b bytes.Buffer
	b.WriteString("# bouncemilter return-path signing keys. Secret: keep mode 0600.\n")
	b.WriteString("# id created expires secret\n")
	for _, k := range keys {
		exp := "-"
		if !k.expires.IsZero() {
			exp = k.expires.UTC().Format(time.RFC3339)
		}
		fmt.Fprintf(&b, "%d %s %s %s\n", k.id, k.created.UTC().Format(time.RFC3339), exp, base64.StdEncoding.EncodeToString(k.secret))
	}

	dir := filepath.Dir(path)
	// CreateTemp makes the file with mode 0600.
	tmp, err := os.CreateTemp(dir, "."+filepath.Base(path)+".tmp*")
	if err != nil {
		return fmt.Errorf("returnpath: write keys: %w", err)
	}
	defer func() {
		tmp.Close()
		os.Remove(tmp.Name())
		if err != nil {
			err = fmt.Errorf("returnpath: write %s: %w", path, err)
		}
	}()
	if _, err := tmp.Write(b.Bytes()); err != nil {
		return err
	}
	if err := keepOwner(tmp, path, excl); err != nil {
		return err
	}
	if err := tmp.Sync(); err != nil {
		return err
	}
	if err := tmp.Close(); err != nil {
		return err
	}
	if excl {
		err = os.Link(tmp.Name(), path)
	} else {
		err = os.Rename(tmp.Name(), path)
	}
	if err != nil {
		return err
	}
	d, err := os.Open(dir)
	if err != nil {
		return err
	}
	defer d.Close()
	return d.Sync()
}
