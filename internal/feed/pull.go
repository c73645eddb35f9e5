package feed

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/netip"
	"sort"
	"strings"
	"time"

	"aead.dev/minisign"

	"github.com/bouncemilter/bouncemilter/internal/banner"
	"github.com/bouncemilter/bouncemilter/internal/defaults"
	"github.com/bouncemilter/bouncemilter/internal/registry"
)

// Peer is another instance whose feed this one subscribes to.
type Peer struct {
	Name   string // a local label; the feed's own name is only logged
	URL    string // of its feed.json; the signature is URL + ".minisig"
	Key    minisign.PublicKey
	Weight float64
}

// Store is what pulling needs of the registry.
type Store interface {
	FeedPeerState(ctx context.Context, name string) (registry.FeedPeer, error)
	FeedFetchFailed(ctx context.Context, peer string, cause error, now time.Time) error
	FeedFetched(ctx context.Context, peer string, now time.Time) error
	StoreFeed(ctx context.Context, peer string, made time.Time, entries []registry.FeedEntry, now time.Time) error
	FeedEntries(ctx context.Context, kind, value string, now time.Time) ([]registry.FeedEntry, error)
	FeedBans(ctx context.Context) (map[string]registry.FeedBan, error)
	BanFromFeed(ctx context.Context, ip, reason, peers string, expires, now time.Time) (bool, error)
	UpdateFeedBan(ctx context.Context, ip, peers string, expires time.Time) error
	UnbanFromFeed(ctx context.Context, ip, reason string, v6bits int, now time.Time) (bool, error)
}

// Defaults for Subscriber's zero fields.
const (
	DefaultThreshold = 2.0
	DefaultTimeout   = 30 * time.Second
	DefaultMaxSize   = 64 << 20
	maxSignatureSize = 4 << 10
	// futureSkew is how far in the future a feed's made time may be: a
	// feed from further ahead would make every later one look like a
	// replay.
	futureSkew = time.Hour
)

// Subscriber pulls the peers' feeds and turns their listings into bans.
type Subscriber struct {
	Peers []Peer
	Store Store
	// Threshold is the sum of weights of the peers that must list an IP
	// or an address for it to count here. Peers with the same public key
	// count once, with the largest of their weights.
	Threshold float64
	// NeverBan are networks never to ban (the serve command's --never-ban),
	// checked before a ban is queued; the worker's banner checks again.
	NeverBan []netip.Prefix
	// IPv6Prefix is serve's --ipv6-prefix: the banner bans (and lifts)
	// the network of that many bits around an IPv6 address, so a ban the
	// listings no longer call for is not lifted while another ban covers
	// its network (see registry.DB.UnbanFromFeed). 0: addresses alone.
	IPv6Prefix int
	Client     *http.Client
	Timeout    time.Duration // per peer, both files
	MaxSize    int64         // of feed.json
	Log        *slog.Logger
	Now        func() time.Time
}

// Summary is what one pull did.
type Summary struct {
	Accepted, Unchanged, Failed int
	Banned, Unbanned            int
}

func (s Summary) String() string {
	return fmt.Sprintf("%d feeds accepted, %d unchanged, %d failed; %d IPs banned, %d unbanned",
		s.Accepted, s.Unchanged, s.Failed, s.Banned, s.Unbanned)
}

// Pull fetches each peer's feed in turn, stores what verifies, and then
// bans and unbans IPs as the listings now say. A peer that fails is logged,
// recorded and skipped; Pull returns an error only when the registry fails.
func (s *Subscriber) Pull(ctx context.Context) (Summary, error) {
	var sum Summary
	for _, p := range s.Peers {
		accepted, err := s.pullOne(ctx, p)
		now := s.now()
		switch {
		case ctx.Err() != nil:
			return sum, ctx.Err()
		case err != nil:
			sum.Failed++
			s.log().Warn("feed of peer refused", "peer", p.Name, "url", p.URL, "err", err)
			if rerr := s.Store.FeedFetchFailed(ctx, p.Name, err, now); rerr != nil {
				return sum, rerr
			}
		case accepted:
			sum.Accepted++
		default:
			sum.Unchanged++
			if rerr := s.Store.FeedFetched(ctx, p.Name, now); rerr != nil {
				return sum, rerr
			}
		}
	}
	banned, unbanned, err := s.Reconcile(ctx)
	sum.Banned, sum.Unbanned = banned, unbanned
	return sum, err
}

// ErrReplay refuses a feed older than the last one accepted from its peer.
var ErrReplay = errors.New("replayed feed")

// pullOne fetches, verifies and stores one peer's feed. It reports whether
// a newer feed was stored; an error means the peer failed.
func (s *Subscriber) pullOne(ctx context.Context, p Peer) (bool, error) {
	timeout := s.Timeout
	if timeout <= 0 {
		timeout = DefaultTimeout
	}
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	maxSize := s.MaxSize
	if maxSize <= 0 {
		maxSize = DefaultMaxSize
	}
	data, err := s.get(ctx, p.URL, maxSize)
	if err != nil {
		return false, err
	}
	sig, err := s.get(ctx, p.URL+".minisig", maxSignatureSize)
	if err != nil {
		return false, err
	}
	f, err := Verify(p.Key, data, sig)
	if err != nil {
		return false, err
	}
	now := s.now()
	if f.Made.After(now.Add(futureSkew)) {
		return false, fmt.Errorf("%w: made %s, in the future", ErrFormat, f.Made.Format(time.RFC3339))
	}
	state, err := s.Store.FeedPeerState(ctx, p.Name)
	if err != nil {
		return false, err
	}
	made := f.Made.Truncate(time.Second)
	switch {
	case !state.LastMade.IsZero() && made.Equal(state.LastMade):
		return false, nil
	case !state.LastMade.IsZero() && made.Before(state.LastMade):
		return false, fmt.Errorf("%w: made %s, before the feed accepted last (%s)", ErrReplay,
			made.Format(time.RFC3339), state.LastMade.Format(time.RFC3339))
	}
	entries := make([]registry.FeedEntry, 0, len(f.IPs)+len(f.Addresses))
	for _, e := range f.IPs {
		if seen := capExpiry(e.Seen, made); seen.Expires.After(now) {
			entries = append(entries, entryOf(p.Name, "ip", e.IP, seen))
		}
	}
	for _, e := range f.Addresses {
		if seen := capExpiry(e.Seen, made); seen.Expires.After(now) {
			entries = append(entries, entryOf(p.Name, "address", e.SHA256, seen))
		}
	}
	if err := s.Store.StoreFeed(ctx, p.Name, made, entries, now); err != nil {
		if errors.Is(err, registry.ErrStale) {
			return false, nil // another pull stored it (or a newer one) meanwhile
		}
		return false, err
	}
	s.log().Info("feed accepted", "peer", p.Name, "feed_name", f.Name, "made", f.Made, "ips", len(f.IPs), "addresses", len(f.Addresses))
	return true, nil
}

// MaxExpiry caps how long after its feed was made an entry counts, however
// long its publisher vouches for it: a dynamic address changes hands, and
// a peer that stops publishing must not leave bans behind for years.
const MaxExpiry = 365 * 24 * time.Hour

func capExpiry(s Seen, made time.Time) Seen {
	if limit := made.Add(MaxExpiry); s.Expires.After(limit) {
		s.Expires = limit
	}
	return s
}

func entryOf(peer, kind, value string, seen Seen) registry.FeedEntry {
	return registry.FeedEntry{Peer: peer, Kind: kind, Value: value, FirstSeen: seen.FirstSeen,
		LastSeen: seen.LastSeen, Count: seen.Count, Expires: seen.Expires}
}

// get fetches url, refusing anything but 200 and a body above max bytes.
func (s *Subscriber) get(ctx context.Context, url string, max int64) ([]byte, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		return nil, fmt.Errorf("fetch %s: %w", url, err)
	}
	client := s.Client
	if client == nil {
		client = http.DefaultClient
	}
	resp, err := client.Do(req)
	if err != nil {
		return nil, fmt.Errorf("fetch: %w", err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return nil, fmt.Errorf("fetch %s: %s", url, resp.Status)
	}
	if resp.ContentLength > max {
		return nil, fmt.Errorf("fetch %s: %w: %d bytes, more than %d", url, ErrTooLarge, resp.ContentLength, max)
	}
	data, err := io.ReadAll(io.LimitReader(resp.Body, max+1))
	if err != nil {
		return nil, fmt.Errorf("fetch %s: %w", url, err)
	}
	if int64(len(data)) > max {
		return nil, fmt.Errorf("fetch %s: %w: more than %d bytes", url, ErrTooLarge, max)
	}
	return data, nil
}

// ErrTooLarge refuses a feed or signature above the size cap.
var ErrTooLarge = errors.New("too large")

// listing is what the peers, together, say about one entry.
type listing struct {
	weight  float64
	expires time.Time // when the weight falls below the threshold
	peers   []string
}

// weigh sums the weights of the configured peers among entries (of one
// value), each public key once, and says until when the sum stays at or
// above the threshold. Entries of peers no longer configured count nothing.
func (s *Subscriber) weigh(entries []registry.FeedEntry) listing {
	type vote struct {
		weight  float64
		expires time.Time
		peer    string
	}
	byKey := map[string]vote{}
	for _, e := range entries {
		p, ok := s.peer(e.Peer)
		if !ok || p.Weight <= 0 {
			continue
		}
		key, _ := p.Key.MarshalText()
		v, seen := byKey[string(key)]
		if !seen || p.Weight > v.weight {
			byKey[string(key)] = vote{p.Weight, e.Expires, e.Peer}
		}
	}
	votes := make([]vote, 0, len(byKey))
	for _, v := range byKey {
		votes = append(votes, v)
	}
	// The sum is met until enough of the longest-lasting listings are left.
	sort.Slice(votes, func(i, j int) bool { return votes[i].expires.After(votes[j].expires) })
	var l listing
	for _, v := range votes {
		l.weight += v.weight
		l.peers = append(l.peers, v.peer)
		if l.expires.IsZero() && l.weight >= s.threshold() {
			l.expires = v.expires
		}
	}
	sort.Strings(l.peers)
	return l
}

func (s *Subscriber) peer(name string) (Peer, bool) {
	for _, p := range s.Peers {
		if p.Name == name {
			return p, true
		}
	}
	return Peer{}, false
}

func (s *Subscriber) threshold() float64 {
	if s.Threshold > 0 {
		return s.Threshold
	}
	return DefaultThreshold
}

// Reconcile bans the IPs that enough peers list now and lifts the bans of
// those no longer listed enough (expired, or gone from the feeds). It
// reports how many bans it queued and lifted. Networks are stored and shown
// but not banned: a ban rests on what a sign-up proved, its address (which
// the banner may widen to its IPv6 network, as for local bans), and
// bouncemilter publishes only addresses; a network another tool published
// may be far wider than anything a sign-up proves.
func (s *Subscriber) Reconcile(ctx context.Context) (banned, unbanned int, err error) {
	now := s.now()
	entries, err := s.Store.FeedEntries(ctx, "ip", "", now)
	if err != nil {
		return 0, 0, err
	}
	byIP := map[string][]registry.FeedEntry{}
	for _, e := range entries {
		byIP[e.Value] = append(byIP[e.Value], e)
	}
	want := map[string]listing{}
	for ip, es := range byIP {
		addr, err := netip.ParseAddr(ip)
		if err != nil {
			continue // a network
		}
		if why := banner.Protected(addr, s.NeverBan); why != "" {
			continue
		}
		if l := s.weigh(es); !l.expires.IsZero() && l.expires.After(now) {
			want[ip] = l
		}
	}
	have, err := s.Store.FeedBans(ctx)
	if err != nil {
		return 0, 0, err
	}
	ips := make([]string, 0, len(want))
	for ip := range want {
		ips = append(ips, ip)
	}
	sort.Strings(ips)
	for _, ip := range ips {
		l := want[ip]
		peers := strings.Join(l.peers, ",")
		if cur, ok := have[ip]; ok {
			if !cur.Expires.Equal(l.expires) || cur.Peers != peers {
				if err := s.Store.UpdateFeedBan(ctx, ip, peers, l.expires); err != nil {
					return banned, unbanned, err
				}
			}
			continue
		}
		reason := fmt.Sprintf("bouncemilter: listed by peers %s until %s", peers, l.expires.UTC().Format("2006-01-02 15:04 MST"))
		ok, err := s.Store.BanFromFeed(ctx, ip, reason, peers, l.expires, now)
		if err != nil {
			return banned, unbanned, err
		}
		if ok {
			banned++
			s.log().Info("IP banned from the peers' feeds", "ip", ip, "peers", peers, "until", l.expires)
		}
	}
	for ip := range have {
		if _, ok := want[ip]; ok {
			continue
		}
		ok, err := s.Store.UnbanFromFeed(ctx, ip, "bouncemilter: no longer listed by enough peers", s.IPv6Prefix, now)
		if err != nil {
			return banned, unbanned, err
		}
		if ok {
			unbanned++
			s.log().Info("IP unbanned: no longer listed by enough peers", "ip", ip)
		}
	}
	return banned, unbanned, nil
}

// AddressListed reports whether enough peers list addr, and which.
func (s *Subscriber) AddressListed(ctx context.Context, addr string) (bool, []string, error) {
	entries, err := s.Store.FeedEntries(ctx, "address", HashAddress(addr), s.now())
	if err != nil || len(entries) == 0 {
		return false, nil, err
	}
	l := s.weigh(entries)
	return !l.expires.IsZero() && l.expires.After(s.now()), l.peers, nil
}

func (s *Subscriber) now() time.Time { return defaults.Now(s.Now) }

func (s *Subscriber) log() *slog.Logger { return defaults.Log(s.Log) }
