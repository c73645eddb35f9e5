// Package feed shares what one MediaGoblin instance proved about vandals
// with the instances of other hosters: it exports this instance's proven
// sign-up IPs and address hashes as a signed static feed (feed.json, its
// minisign signature feed.json.minisig, and feed.txt), and it pulls the
// feeds of configured peers, verifies them, stores their entries and bans
// the IPs that enough peers list, lifting the bans when the listings go.
//
// It bans nothing itself: a ban is an action in the registry's journal,
// applied by the worker through the same banner, allow-list and never-ban
// rules as the bans this instance's own bounces lead to.
package feed

import (
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"net/netip"
	"regexp"
	"strings"
	"sync"
	"time"

	"github.com/bouncemilter/bouncemilter/internal/registry"
)

// Version is the feed format this package writes and reads.
const Version = 1

// Feed is the content of feed.json.
type Feed struct {
	Version   int       `json:"version"`
	Name      string    `json:"name"`
	Made      time.Time `json:"made"`
	IPs       []IP      `json:"ips"`
	Addresses []Address `json:"addresses"`
}

// Seen is when and how often an entry was proven, and until when the
// publisher vouches for it.
type Seen struct {
	FirstSeen time.Time `json:"first_seen"`
	LastSeen  time.Time `json:"last_seen"`
	Count     int       `json:"count"`
	Expires   time.Time `json:"expires"`
}

// IP is a sign-up IP address, or a network in CIDR notation.
type IP struct {
	IP string `json:"ip"`
	Seen
}

// Address is a sign-up address, as the hex SHA-256 of its normal form (see
// HashAddress).
type Address struct {
	SHA256 string `json:"sha256"`
	Seen
}

// HashAddress is how addresses appear in a feed: the lowercase hex SHA-256
// of the address's UTF-8 bytes after removing surrounding white space and
// lowercasing its ASCII letters (registry.EmailKey). Nothing else changes: no
// removal of +tags or dots, which are different mailboxes at many hosts.
func HashAddress(addr string) string {
	sum := sha256.Sum256([]byte(registry.EmailKey(addr)))
	return hex.EncodeToString(sum[:])
}

// Limits on what a feed may hold, so that a hostile peer cannot make a
// subscriber store or loop over arbitrary amounts. A feed is stored in one
// registry transaction, which holds the write lock the milter's journal
// waits for: 100,000 entries take half a second on the 2-core test
// machine, so 200,000 keep that wait far below the busy timeout.
const (
	MaxEntries = 200_000
	maxName    = 200
)

// Compiled on first use, not at start: every command of the binary would
// pay for it.
var (
	hashRE = sync.OnceValue(func() *regexp.Regexp { return regexp.MustCompile(`^[0-9a-f]{64}$`) })
	nameRE = sync.OnceValue(func() *regexp.Regexp { return regexp.MustCompile(`^[A-Za-z0-9][A-Za-z0-9._-]*$`) })
)

// ErrFormat wraps every reason a feed document is refused.
var ErrFormat = errors.New("bad feed")

// Parse reads and checks a feed document: version, name, times, and each
// entry's form. An entry that expired before it was first seen, or an IP
// that is not an address or network, makes the whole feed bad: a peer that
// writes such things is broken, and half of its feed is not to be trusted.
func Parse(data []byte) (*Feed, error) {
	dec := json.NewDecoder(bytes.NewReader(data))
	dec.DisallowUnknownFields()
	var f Feed
	if err := dec.Decode(&f); err != nil {
		return nil, fmt.Errorf("%w: %v", ErrFormat, err)
	}
	if dec.More() {
		return nil, fmt.Errorf("%w: data after the document", ErrFormat)
	}
	if err := f.check(); err != nil {
		return nil, fmt.Errorf("%w: %v", ErrFormat, err)
	}
	return &f, nil
}

func (f *Feed) check() error {
	switch {
	case f.Version != Version:
		return fmt.Errorf("version %d, want %d", f.Version, Version)
	case len(f.Name) > maxName || !nameRE().MatchString(f.Name):
		return fmt.Errorf("name %q is not a name", f.Name)
	case f.Made.IsZero():
		return errors.New("no made time")
	case len(f.IPs)+len(f.Addresses) > MaxEntries:
		return fmt.Errorf("%d entries, more than %d", len(f.IPs)+len(f.Addresses), MaxEntries)
	}
	for _, e := range f.IPs {
		if _, err := parseIP(e.IP); err != nil {
			return err
		}
		if err := e.Seen.check(); err != nil {
			return fmt.Errorf("ip %s: %v", e.IP, err)
		}
	}
	for _, e := range f.Addresses {
		if !hashRE().MatchString(e.SHA256) {
			return fmt.Errorf("address hash %q is not lowercase hex SHA-256", e.SHA256)
		}
		if err := e.Seen.check(); err != nil {
			return fmt.Errorf("address %s: %v", e.SHA256, err)
		}
	}
	return nil
}

func (s Seen) check() error {
	switch {
	case s.Count < 1:
		return errors.New("count below 1")
	case s.FirstSeen.IsZero() || s.LastSeen.Before(s.FirstSeen):
		return errors.New("first seen after last seen")
	case s.Expires.Before(s.LastSeen):
		return errors.New("expires before last seen")
	}
	return nil
}

// parseIP reads an entry's IP: a bare address or a network in CIDR
// notation, in canonical form. An IPv4-mapped IPv6 address (::ffff:192.0.2.1,
// netip's canonical spelling of it) is refused: it is an IPv4 address,
// which the banner bans unmapped, and only one spelling of an address may
// reach the registry's checks (a restored IP is never banned again).
func parseIP(s string) (netip.Prefix, error) {
	if strings.Contains(s, "/") {
		p, err := netip.ParsePrefix(s)
		if err != nil || p != p.Masked() || p.String() != s {
			return netip.Prefix{}, fmt.Errorf("ip %q is not a canonical network", s)
		}
		if p.Addr().Is4In6() {
			return netip.Prefix{}, fmt.Errorf("ip %q is an IPv4-mapped network: list it as IPv4", s)
		}
		return p, nil
	}
	a, err := netip.ParseAddr(s)
	if err != nil || a.Zone() != "" || a.String() != s {
		return netip.Prefix{}, fmt.Errorf("ip %q is not a canonical address", s)
	}
	if a.Is4In6() {
		return netip.Prefix{}, fmt.Errorf("ip %q is an IPv4-mapped address: list it as %s", s, a.Unmap())
	}
	return netip.PrefixFrom(a, a.BitLen()), nil
}

// Marshal writes f as feed.json: indented, one entry per line group, with
// a final newline.
func (f *Feed) Marshal() ([]byte, error) {
	if f.IPs == nil {
		f.IPs = []IP{}
	}
	if f.Addresses == nil {
		f.Addresses = []Address{}
	}
	b, err := json.MarshalIndent(f, "", "  ")
	if err != nil {
		return nil, err
	}
	return append(b, '\n'), nil
}

// Text writes feed.txt: the IPs alone, one per line.
func (f *Feed) Text() []byte {
	var b bytes.Buffer
	for _, e := range f.IPs {
		b.WriteString(e.IP)
		b.WriteByte('\n')
	}
	return b.Bytes()
}
