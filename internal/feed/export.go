package feed

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"time"

	"aead.dev/minisign"

	"github.com/bouncemilter/bouncemilter/internal/registry"
)

// Source is what an export reads: this instance's own proven data.
type Source interface {
	ProvenIPs(ctx context.Context) ([]registry.Proven, error)
	ProvenAddresses(ctx context.Context) ([]registry.Proven, error)
}

// DefaultTTL is how long after it was last seen an entry stays in the feed
// when the admin sets nothing: botnets reuse their IPs and address lists
// for weeks, and a dynamic address changes hands after that.
const DefaultTTL = 30 * 24 * time.Hour

// Build makes the feed of this instance's proven data at now; entries last
// seen more than ttl ago are left out.
func Build(ctx context.Context, src Source, name string, ttl time.Duration, now time.Time) (*Feed, error) {
	now = now.UTC().Truncate(time.Second)
	f := &Feed{Version: Version, Name: name, Made: now, IPs: []IP{}, Addresses: []Address{}}
	ips, err := src.ProvenIPs(ctx)
	if err != nil {
		return nil, err
	}
	for _, p := range ips {
		seen := seenOf(p, ttl)
		if !seen.Expires.After(now) {
			continue
		}
		if _, err := parseIP(p.Value); err != nil {
			continue // never a sign-up IP the registry would hold; not ours to publish
		}
		f.IPs = append(f.IPs, IP{IP: p.Value, Seen: seen})
	}
	addrs, err := src.ProvenAddresses(ctx)
	if err != nil {
		return nil, err
	}
	for _, p := range addrs {
		seen := seenOf(p, ttl)
		if !seen.Expires.After(now) {
			continue
		}
		f.Addresses = append(f.Addresses, Address{SHA256: HashAddress(p.Value), Seen: seen})
	}
	if err := f.check(); err != nil {
		return nil, fmt.Errorf("%w: %v", ErrFormat, err)
	}
	return f, nil
}

func seenOf(p registry.Proven, ttl time.Duration) Seen {
	first, last := p.FirstSeen.UTC(), p.LastSeen.UTC()
	return Seen{FirstSeen: first, LastSeen: last, Count: p.Count, Expires: last.Add(ttl)}
}

// Files are the names an export writes in its directory.
const (
	JSONFile      = "feed.json"
	SignatureFile = "feed.json.minisig"
	TextFile      = "feed.txt"
)

// Export builds the feed, signs it and writes feed.json, feed.json.minisig
// and feed.txt into dir. Each file is replaced whole (written beside and
// renamed), so that the web server never serves half of one.
func Export(ctx context.Context, src Source, key minisign.PrivateKey, name string, ttl time.Duration, dir string, now time.Time) (*Feed, error) {
	f, err := Build(ctx, src, name, ttl, now)
	if err != nil {
		return nil, fmt.Errorf("export feed: %w", err)
	}
	data, err := f.Marshal()
	if err != nil {
		return nil, fmt.Errorf("export feed: %w", err)
	}
	sig := Sign(key, data, f.Name, f.Made)
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return nil, fmt.Errorf("export feed: %w", err)
	}
	// The signature goes last: a subscriber that fetches between the
	// renames gets a pair that does not verify, and tries again later.
	for _, file := range []struct {
		name string
		data []byte
	}{{TextFile, f.Text()}, {JSONFile, data}, {SignatureFile, sig}} {
		if err := replaceFile(filepath.Join(dir, file.name), file.data); err != nil {
			return nil, fmt.Errorf("export feed: %w", err)
		}
	}
	return f, nil
}

// replaceFile writes data to path through a temporary file and a rename.
// The feed is public: the files are world-readable.
func replaceFile(path string, data []byte) error {
	tmp, err := os.CreateTemp(filepath.Dir(path), "."+filepath.Base(path)+".*")
	if err != nil {
		return err
	}
	defer os.Remove(tmp.Name())
	if _, err := tmp.Write(data); err != nil {
		tmp.Close()
		return err
	}
	if err := tmp.Chmod(0o644); err != nil {
		tmp.Close()
		return err
	}
	if err := tmp.Sync(); err != nil {
		tmp.Close()
		return err
	}
	if err := tmp.Close(); err != nil {
		return err
	}
	return os.Rename(tmp.Name(), path)
}
