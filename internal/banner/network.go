package banner

import (
	"context"
	"fmt"
	"log/slog"
	"net/netip"
	"time"

	"github.com/bouncemilter/bouncemilter/internal/refusal"
)

// A sign-up from IPv6 rarely comes from one address alone: a host holds a
// whole /64 and picks a new address in it at will. Banning the address
// would stop nothing, so a Banner built by New with Options.IPv6Prefix bans
// the network the address is in. IPv4 addresses are always banned alone.

// NetBanner bans and unbans whole networks. Every Banner of this package is
// one; a single address is the prefix of its full length.
type NetBanner interface {
	BanNet(ctx context.Context, p netip.Prefix, reason string) error
	UnbanNet(ctx context.Context, p netip.Prefix) error
}

// netChecker is Checker for networks.
type netChecker interface {
	BannedNetSince(ctx context.Context, p netip.Prefix, since time.Time) (bool, error)
}

// single is the prefix of ip alone.
func single(ip netip.Addr) netip.Prefix {
	ip = normalize(ip)
	return netip.PrefixFrom(ip, ip.BitLen())
}

// netString writes p as firewalls and fail2ban read it: an address alone
// without "/128", a network in CIDR form.
func netString(p netip.Prefix) string {
	if p.IsSingleIP() {
		return p.Addr().String()
	}
	return p.String()
}

// Group returns what a ban of ip bans when IPv6 addresses are grouped into
// networks of v6bits (0 or 128: no grouping): the network of ip for an
// IPv6 address, ip alone otherwise.
func Group(ip netip.Addr, v6bits int) netip.Prefix {
	ip = normalize(ip)
	if ip.Is6() && v6bits > 0 && v6bits < 128 {
		if p, err := ip.Prefix(v6bits); err == nil {
			return p
		}
	}
	return single(ip)
}

// checkNet refuses a network that holds a protected address of the allow
// list, or whose first address is protected (the network of ::1, of
// fe80::…).
func checkNet(p netip.Prefix, allow []netip.Prefix) error {
	if err := check(p.Addr(), nil); err != nil {
		return err
	}
	for _, a := range allow {
		if a.Overlaps(p) {
			return fmt.Errorf("ban %s: %w: overlaps allow-listed %s", p, ErrProtected, a)
		}
	}
	return nil
}

// ErrDryRun is what the dry-run Banner answers to every ban: nothing was
// banned, on purpose. Callers treat it as a refusal, never retried.
var ErrDryRun = refusal.New("dry run: nothing banned")

// DryRun logs the bans it is asked for and bans nothing (kind "dry-run"):
// it lets an admin watch what bouncemilter would do before trusting it.
type DryRun struct {
	Log *slog.Logger
	// Duration is the ban duration it reports.
	Duration time.Duration
}

// Ban logs the ban of ip and returns ErrDryRun.
func (d DryRun) Ban(ctx context.Context, ip netip.Addr, reason string) error {
	return d.BanNet(ctx, single(ip), reason)
}

// BanNet logs the ban of p and returns ErrDryRun.
func (d DryRun) BanNet(ctx context.Context, p netip.Prefix, reason string) error {
	if d.Log != nil {
		d.Log.Warn("dry run: would ban", "ip", netString(p), "duration", d.Duration, "reason", reason)
	}
	return fmt.Errorf("ban %s for %s: %w", netString(p), d.Duration, ErrDryRun)
}

// Unban does nothing: a dry run banned nothing.
func (DryRun) Unban(ctx context.Context, ip netip.Addr) error { return nil }

// UnbanNet does nothing.
func (DryRun) UnbanNet(ctx context.Context, p netip.Prefix) error { return nil }
