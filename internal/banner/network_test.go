package banner

import (
	"context"
	"errors"
	"log/slog"
	"net/netip"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/bouncemilter/bouncemilter/internal/testenv"
)

func TestGroup(t *testing.T) {
	for _, tc := range []struct {
		ip   string
		bits int
		want string
	}{
		{"2001:db8:1:2:3:4:5:6", 64, "2001:db8:1:2::/64"},
		{"2001:db8:1:2:3:4:5:6", 0, "2001:db8:1:2:3:4:5:6/128"},
		{"2001:db8:1:2:3:4:5:6", 128, "2001:db8:1:2:3:4:5:6/128"},
		{"2001:db8:1:2:3:4:5:6", 48, "2001:db8:1::/48"},
		{"203.0.113.7", 64, "203.0.113.7/32"}, // IPv4 is never grouped
		{"::ffff:203.0.113.7", 64, "203.0.113.7/32"},
	} {
		if got := Group(netip.MustParseAddr(tc.ip), tc.bits); got.String() != tc.want {
			t.Errorf("Group(%s, %d) = %s, want %s", tc.ip, tc.bits, got, tc.want)
		}
	}
}

// recorder is a NetBanner that remembers what it was asked.
type recorder struct{ bans, unbans []string }

func (r *recorder) Ban(ctx context.Context, ip netip.Addr, reason string) error {
	return r.BanNet(ctx, single(ip), reason)
}
func (r *recorder) Unban(ctx context.Context, ip netip.Addr) error {
	return r.UnbanNet(ctx, single(ip))
}
func (r *recorder) BanNet(ctx context.Context, p netip.Prefix, reason string) error {
	r.bans = append(r.bans, netString(p))
	return nil
}
func (r *recorder) UnbanNet(ctx context.Context, p netip.Prefix) error {
	r.unbans = append(r.unbans, netString(p))
	return nil
}

func TestGuardIPv6Prefix(t *testing.T) {
	ctx := context.Background()
	rec := &recorder{}
	proxy := netip.MustParsePrefix("2001:db8:aa:bb::1/128")
	b := Guard(rec, Options{Allow: []netip.Prefix{proxy}, IPv6Prefix: 64})
	for _, ip := range []string{"2001:db8:1:2::7", "203.0.113.7", "2001:db8:aa:bb::99"} {
		if err := b.Ban(ctx, netip.MustParseAddr(ip), ""); err != nil {
			t.Fatal(err)
		}
	}
	// A bot that signs up from the /64 of the admin's proxy gets its own
	// address banned, never the network holding the proxy.
	if want := []string{"2001:db8:1:2::/64", "203.0.113.7", "2001:db8:aa:bb::99"}; !slices.Equal(rec.bans, want) {
		t.Errorf("banned %q, want %q", rec.bans, want)
	}
	if err := b.Ban(ctx, netip.MustParseAddr("2001:db8:aa:bb::1"), ""); !errors.Is(err, ErrProtected) {
		t.Errorf("ban of the proxy = %v", err)
	}
	if err := b.Unban(ctx, netip.MustParseAddr("2001:db8:1:2::7")); err != nil {
		t.Fatal(err)
	}
	if want := []string{"2001:db8:1:2::/64", "2001:db8:1:2::7"}; !slices.Equal(rec.unbans, want) {
		t.Errorf("unbanned %q, want %q", rec.unbans, want)
	}
}

// The admin's allow-list changes while the milter runs (accounts allow
// --ip): New's banner reads it at each ban, refuses an allow-listed
// address, and bans the address alone, never its network, when the
// network holds one. When it cannot read the list it bans nothing, and
// says so with an error that is no refusal: the ban is tried again.
func TestAllowFrom(t *testing.T) {
	ctx := context.Background()
	var (
		listed  []netip.Prefix
		readErr error
	)
	rec := &recorder{}
	b := Guard(rec, Options{IPv6Prefix: 64, AllowFrom: func(context.Context) ([]netip.Prefix, error) { return listed, readErr }})
	listed = []netip.Prefix{netip.MustParsePrefix("2001:db8:4:7::1/128"), netip.MustParsePrefix("198.51.100.20/32")}
	for _, ip := range []string{"2001:db8:4:7::99", "2001:db8:5:1::99"} {
		if err := b.Ban(ctx, netip.MustParseAddr(ip), ""); err != nil {
			t.Fatal(err)
		}
	}
	if want := []string{"2001:db8:4:7::99", "2001:db8:5:1::/64"}; !slices.Equal(rec.bans, want) {
		t.Errorf("banned %q, want %q", rec.bans, want)
	}
	for _, ip := range []string{"198.51.100.20", "2001:db8:4:7::1"} {
		if err := b.Ban(ctx, netip.MustParseAddr(ip), ""); !errors.Is(err, ErrProtected) {
			t.Errorf("ban of allow-listed %s = %v, want ErrProtected", ip, err)
		}
	}
	if p, err := b.(*guard).Covers(ctx, netip.MustParseAddr("2001:db8:4:7::99")); err != nil || !p.IsSingleIP() {
		t.Errorf("Covers = %v, %v; want the address alone", p, err)
	}
	readErr = errors.New("database is locked")
	n := len(rec.bans)
	if err := b.Ban(ctx, netip.MustParseAddr("203.0.113.9"), ""); err == nil || errors.Is(err, ErrProtected) || len(rec.bans) != n {
		t.Errorf("ban while the allow-list cannot be read = %v, banned %q", err, rec.bans[n:])
	}
}

func TestNewOptions(t *testing.T) {
	if _, err := New(KindNone, Options{IPv6Prefix: 129}); err == nil {
		t.Error("an IPv6 prefix of 129 bits was taken")
	}
	b, err := New(KindFail2ban, Options{Duration: 2 * time.Hour})
	if err != nil {
		t.Fatal(err)
	}
	if c := b.(*guard).next.(*Fail2banClient); c.Bantime != 2*time.Hour {
		t.Errorf("fail2ban bantime = %v", c.Bantime)
	}
	b, _ = New(KindNFTables, Options{Duration: 3 * time.Hour})
	if n := b.(*guard).next.(*NFTables); n.Timeout != 3*time.Hour {
		t.Errorf("nftables timeout = %v", n.Timeout)
	}
}

func TestDryRun(t *testing.T) {
	var logged strings.Builder
	b, err := New(KindDryRun, Options{IPv6Prefix: 64, Duration: 24 * time.Hour, Log: slog.New(slog.NewTextHandler(&logged, nil))})
	if err != nil {
		t.Fatal(err)
	}
	err = b.Ban(context.Background(), netip.MustParseAddr("2001:db8:1:2::7"), "5.1.1")
	if !errors.Is(err, ErrDryRun) {
		t.Fatalf("dry-run Ban = %v, want ErrDryRun", err)
	}
	if !strings.Contains(logged.String(), `msg="dry run: would ban" ip=2001:db8:1:2::/64 duration=24h0m0s reason=5.1.1`) {
		t.Errorf("logged %q", logged.String())
	}
	if err := b.Unban(context.Background(), netip.MustParseAddr("2001:db8:1:2::7")); err != nil {
		t.Errorf("dry-run Unban = %v", err)
	}
	// A protected address is refused as such, not "would ban".
	if err := b.Ban(context.Background(), netip.MustParseAddr("127.0.0.1"), ""); !errors.Is(err, ErrProtected) {
		t.Errorf("dry-run Ban(127.0.0.1) = %v", err)
	}
}

// TestNetworkBansReachTheFirewall bans an IPv6 /64 through each real
// backend: the log line that contrib's filter reads, fail2ban-client into a
// real fail2ban, and nftables in a network namespace.
func TestNetworkBansReachTheFirewall(t *testing.T) {
	ctx := context.Background()
	ip := netip.MustParseAddr("2001:db8:1:2:3:4:5:6")

	t.Run("log", func(t *testing.T) {
		_, err := exec.LookPath("fail2ban-regex")
		testenv.Require(t, err == nil, "fail2ban is not installed (apt-get install fail2ban)")
		path := filepath.Join(t.TempDir(), "bans.log")
		b, err := New(KindLog, Options{LogPath: path, IPv6Prefix: 64})
		if err != nil {
			t.Fatal(err)
		}
		if err := b.Ban(ctx, ip, "5.1.1"); err != nil {
			t.Fatal(err)
		}
		if ok, err := b.(Checker).BannedSince(ctx, ip, time.Now().Add(-time.Minute)); !ok || err != nil {
			t.Errorf("BannedSince = %v, %v", ok, err)
		}
		filter := filepath.Join(testenv.RepoRoot(t), "contrib", "fail2ban", "filter.d", "bouncemilter.conf")
		out, err := exec.Command("fail2ban-regex", "-v", path, filter).CombinedOutput()
		if err != nil {
			t.Fatalf("fail2ban-regex: %v\n%s", err, out)
		}
		if got := matched(string(out)); !slices.Equal(got, []string{"2001:db8:1:2::/64"}) {
			t.Errorf("fail2ban-regex found %q\n%s", got, out)
		}
	})

	t.Run("fail2ban", func(t *testing.T) {
		f2b := testenv.StartFail2ban(t, "")
		b, err := New(KindFail2ban, Options{Fail2banConfig: f2b.Dir, IPv6Prefix: 64, Duration: 90 * time.Minute})
		if err != nil {
			t.Fatal(err)
		}
		if err := b.Ban(ctx, ip, ""); err != nil {
			t.Fatal(err)
		}
		if got := f2b.Banned(t, DefaultJail); !slices.Equal(got, []string{"2001:db8:1:2::/64"}) {
			t.Errorf("fail2ban bans %q", got)
		}
		out, err := exec.Command("fail2ban-client", "-c", f2b.Dir, "get", DefaultJail, "bantime").CombinedOutput()
		if err != nil || strings.TrimSpace(string(out)) != "5400" {
			t.Errorf("jail bantime = %q, %v; want 5400", out, err)
		}
		if err := b.Unban(ctx, ip); err != nil {
			t.Fatal(err)
		}
		if got := f2b.Banned(t, DefaultJail); len(got) != 0 {
			t.Errorf("after unban fail2ban bans %q", got)
		}
	})

	t.Run("nftables", func(t *testing.T) {
		ns := netns(t)
		b, err := New(KindNFTables, Options{IPv6Prefix: 64, Duration: time.Hour})
		if err != nil {
			t.Fatal(err)
		}
		b.(*guard).next.(*NFTables).Command = []string{"ip", "netns", "exec", ns, "nft"}
		// A table loaded by an older version has no network set: the
		// ban loads it.
		old := strings.ReplaceAll(strings.ReplaceAll((&NFTables{}).Ruleset(),
			"add set inet bouncemilter vandals6net { type ipv6_addr; flags interval, timeout; }\n", ""),
			"add rule inet bouncemilter input ip6 saddr @vandals6net counter drop\n", "")
		cmd := inNetns(ns, "nft", "-f", "-")
		cmd.Stdin = strings.NewReader(old)
		if out, err := cmd.CombinedOutput(); err != nil {
			t.Fatalf("load the old table: %v: %s", err, out)
		}
		if err := b.Ban(ctx, ip, ""); err != nil {
			t.Fatal(err)
		}
		list := func() string {
			out, err := inNetns(ns, "nft", "list", "set", "inet", DefaultTable, "vandals6net").CombinedOutput()
			if err != nil {
				t.Fatalf("nft list set: %v: %s", err, out)
			}
			return string(out)
		}
		if got := list(); !strings.Contains(got, "2001:db8:1:2::/64 timeout 1h") {
			t.Fatalf("vandals6net after the ban:\n%s", got)
		}
		if err := b.Unban(ctx, ip); err != nil {
			t.Fatal(err)
		}
		if got := list(); strings.Contains(got, "2001:db8:1:2::/64") {
			t.Errorf("after unban vandals6net:\n%s", got)
		}
	})
}
