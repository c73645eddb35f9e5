package feed

import (
	"context"
	"errors"
	"net/netip"
	"os"
	"path/filepath"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/bouncemilter/bouncemilter/internal/banner"
	"github.com/bouncemilter/bouncemilter/internal/registry"
	"github.com/bouncemilter/bouncemilter/internal/worker"
)

// An IPv4-mapped IPv6 address is netip's canonical spelling of
// ::ffff:192.0.2.1, but the banner bans it as 192.0.2.1: a feed that
// lists one is refused whole, as a feed with any malformed entry is.
func TestParseRefusesMappedIP(t *testing.T) {
	seen := Seen{FirstSeen: t0, LastSeen: t0, Count: 1, Expires: t0.Add(DefaultTTL)}
	for _, ip := range []string{"::ffff:192.0.2.1", "::ffff:192.0.2.0/120", "::ffff:0:0/96"} {
		f := &Feed{Version: Version, Name: "a.example", Made: t0.Add(time.Hour), IPs: []IP{{IP: ip, Seen: seen}}}
		data, err := f.Marshal()
		if err != nil {
			t.Fatal(err)
		}
		if _, err := Parse(data); !errors.Is(err, ErrFormat) {
			t.Errorf("feed listing %s: err = %v; want ErrFormat", ip, err)
		}
	}
	// What is not mapped still parses.
	for _, ip := range []string{"192.0.2.1", "2001:db8::7", "::1:2:3", "2001:db8::/32"} {
		f := &Feed{Version: Version, Name: "a.example", Made: t0.Add(time.Hour), IPs: []IP{{IP: ip, Seen: seen}}}
		data, _ := f.Marshal()
		if _, err := Parse(data); err != nil {
			t.Errorf("feed listing %s: %v", ip, err)
		}
	}
}

// netLog is a NetBanner that records the networks banned, as every real
// banner is one.
type netLog struct {
	mu     sync.Mutex
	banned map[netip.Prefix]bool
}

func (b *netLog) Ban(ctx context.Context, ip netip.Addr, r string) error {
	return b.BanNet(ctx, netip.PrefixFrom(ip, ip.BitLen()), r)
}
func (b *netLog) Unban(ctx context.Context, ip netip.Addr) error {
	return b.UnbanNet(ctx, netip.PrefixFrom(ip, ip.BitLen()))
}
func (b *netLog) BanNet(ctx context.Context, p netip.Prefix, r string) error {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.banned[p] = true
	return nil
}
func (b *netLog) UnbanNet(ctx context.Context, p netip.Prefix) error {
	b.mu.Lock()
	defer b.mu.Unlock()
	delete(b.banned, p)
	return nil
}

func (b *netLog) holds() []netip.Prefix {
	b.mu.Lock()
	defer b.mu.Unlock()
	var out []netip.Prefix
	for p := range b.banned {
		out = append(out, p)
	}
	slices.SortFunc(out, func(a, b netip.Prefix) int { return a.Addr().Compare(b.Addr()) })
	return out
}

// servedBanner is bl behind the guard serve puts around its banner:
// grouping IPv6 addresses in /64s, and reading the registry's AllowedIPs
// at each ban.
func servedBanner(bl *netLog, reg *registry.DB) banner.Banner {
	return banner.Guard(bl, banner.Options{IPv6Prefix: 64, AllowFrom: reg.AllowedIPs})
}

// servedWorker is in's worker on clk's time, banning into a netLog behind
// servedBanner, which it returns too.
func servedWorker(in *instance, clk *clock) (*worker.Worker, *netLog) {
	bl := &netLog{banned: map[netip.Prefix]bool{}}
	w := worker.New(in.reg, noAccounts{}, servedBanner(bl, in.reg), nil)
	w.Now = clk.now
	return w, bl
}

// publish writes a signed feed of in listing ips, made at made.
func (in *instance) publish(t *testing.T, made time.Time, ips ...string) {
	t.Helper()
	f := &Feed{Version: Version, Name: in.name, Made: made}
	for _, ip := range ips {
		f.IPs = append(f.IPs, IP{IP: ip, Seen: Seen{FirstSeen: made.Add(-time.Hour), LastSeen: made.Add(-time.Hour), Count: 1, Expires: made.Add(DefaultTTL)}})
	}
	data, err := f.Marshal()
	if err != nil {
		t.Fatal(err)
	}
	if _, err := Parse(data); err != nil {
		t.Fatalf("feed refused: %v", err)
	}
	if err := os.MkdirAll(in.dir, 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(in.dir, JSONFile), data, 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(in.dir, SignatureFile), Sign(in.key, data, f.Name, f.Made), 0o644); err != nil {
		t.Fatal(err)
	}
}

// A restored user's IPv6 address is never banned again, nor its /64: when
// the peers list a neighbour in it, the neighbour's address alone is
// banned; when they list the restored address itself, nothing is.
func TestPeersDoNotRebanRestoredNetwork(t *testing.T) {
	const own = "2001:db8:1:2::5"
	for _, tc := range []struct {
		listed string
		want   []netip.Prefix
	}{
		{"2001:db8:1:2::7", []netip.Prefix{netip.MustParsePrefix("2001:db8:1:2::7/128")}},
		{own, nil},
	} {
		t.Run(tc.listed, func(t *testing.T) {
			ctx := context.Background()
			a, b, c := newInstance(t, "a.example"), newInstance(t, "b.example"), newInstance(t, "c.example")
			clk := &clock{t: t0}
			w, bl := servedWorker(c, clk)
			id := c.prove(t, "real@example.org", own, t0)
			if _, err := w.RunOnce(ctx); err != nil {
				t.Fatal(err)
			}
			if got := bl.holds(); len(got) != 1 || got[0] != netip.MustParsePrefix("2001:db8:1:2::/64") {
				t.Fatalf("after the bounce the banner holds %v; want the /64", got)
			}
			if _, err := c.reg.Restore(ctx, id, "real person", t0.Add(time.Minute)); err != nil {
				t.Fatal(err)
			}
			clk.set(t0.Add(2 * time.Minute))
			if _, err := w.RunOnce(ctx); err != nil {
				t.Fatal(err)
			}
			for _, in := range []*instance{a, b} {
				in.publish(t, t0.Add(time.Hour), tc.listed)
			}
			clk.set(t0.Add(2 * time.Hour))
			if _, err := subscriber(c, clk, a.peer(1), b.peer(1)).Pull(ctx); err != nil {
				t.Fatal(err)
			}
			if _, err := w.RunOnce(ctx); err != nil {
				t.Fatal(err)
			}
			if got := bl.holds(); !slices.Equal(got, tc.want) {
				t.Errorf("peers listing %s: the banner holds %v; want %v", tc.listed, got, tc.want)
			}
		})
	}
}

// A feed that lists, then drops, a neighbour (2001:db8:1:2::7) of this
// instance's own banned bot (2001:db8:1:2::5) leaves the bot's /64 banned:
// lifting the feed's ban through the banner would lift the whole /64.
func TestFeedUnbanKeepsOwnNetworkBan(t *testing.T) {
	ctx := context.Background()
	a, b, c := newInstance(t, "a.example"), newInstance(t, "b.example"), newInstance(t, "c.example")
	clk := &clock{t: t0}
	w, bl := servedWorker(c, clk)
	c.prove(t, "bot@spam.example", "2001:db8:1:2::5", t0)
	if _, err := w.RunOnce(ctx); err != nil {
		t.Fatal(err)
	}
	for _, in := range []*instance{a, b} {
		in.publish(t, t0.Add(time.Hour), "2001:db8:1:2::7")
	}
	clk.set(t0.Add(2 * time.Hour))
	s := subscriber(c, clk, a.peer(1), b.peer(1))
	s.IPv6Prefix = 64
	if sum, err := s.Pull(ctx); err != nil || sum.Banned != 1 {
		t.Fatalf("pull %v, %v; want 1 banned", sum, err)
	}
	if _, err := w.RunOnce(ctx); err != nil {
		t.Fatal(err)
	}
	for _, in := range []*instance{a, b} {
		in.publish(t, t0.Add(3*time.Hour))
	}
	clk.set(t0.Add(4 * time.Hour))
	if _, err := s.Pull(ctx); err != nil {
		t.Fatal(err)
	}
	if _, err := w.RunOnce(ctx); err != nil {
		t.Fatal(err)
	}
	net := netip.MustParsePrefix("2001:db8:1:2::/64")
	if got := bl.holds(); !slices.Equal(got, []netip.Prefix{net}) {
		t.Errorf("the peers dropped 2001:db8:1:2::7: the banner holds %v; want %v still, the own ban of 2001:db8:1:2::5", got, net)
	}
	if got := pendingBans(t, c); len(got) != 0 {
		t.Errorf("feed bans left %v", got)
	}
}
