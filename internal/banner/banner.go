// Package banner bans and unbans IP addresses: those MediaGoblin sign-ups came
// from, once a bounce proved that the sign-up used an address that does not
// exist.
//
// One small interface, Banner, has three implementations:
//
//   - LogFile appends one line per ban to a file that a fail2ban jail watches
//     (contrib/fail2ban). It is the default: the milter needs no privileges,
//     and fail2ban applies the ban with the system's own ban action.
//   - Fail2banClient asks a running fail2ban through fail2ban-client.
//   - NFTables adds the address to a set of an nftables table whose chain
//     drops the set's members.
//
// Whatever the implementation, Ban refuses addresses that must never be
// banned, with ErrProtected: loopback, unspecified, multicast and link-local
// addresses. Guarded adds an allow-list (the reverse proxy, the admin's own
// network). New builds a guarded Banner from configuration.
//
// The package decides nothing about whom to ban, and keeps no record of what
// it banned: both are the caller's (the action journal's).
package banner

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/netip"
	"slices"
	"time"

	"github.com/bouncemilter/bouncemilter/internal/refusal"
)

// Banner bans and unbans IP addresses.
//
// Ban and Unban are idempotent: banning a banned address or unbanning one
// that is not banned succeeds. An implementation may lose the reason (only
// LogFile records it).
type Banner interface {
	Ban(ctx context.Context, ip netip.Addr, reason string) error
	Unban(ctx context.Context, ip netip.Addr) error
}

var (
	// ErrProtected is returned by Ban for an address that must never be
	// banned: not a valid unicast address, loopback, unspecified,
	// multicast, link-local, or inside an allow-listed prefix. Retrying
	// cannot help.
	ErrProtected = refusal.New("address is protected from bans")

	// ErrUnbanUnsupported is returned by LogFile's Unban when no
	// fail2ban-client is configured: a line in a log can add a ban to
	// fail2ban but cannot lift one.
	ErrUnbanUnsupported = refusal.New("a ban log cannot lift bans: configure the fail2ban jail (fail2ban-client, as root) or lift it by hand with `fail2ban-client set JAIL unbanip IP`")
)

// Kinds of Banner that New builds.
const (
	KindLog      = "log"
	KindFail2ban = "fail2ban"
	KindNFTables = "nftables"
	KindNone     = "none"
	KindDryRun   = "dry-run"
)

// DefaultJail is the fail2ban jail of contrib/fail2ban.
const DefaultJail = "bouncemilter"

// Options configures the Banner that New builds. Fields that do not apply to
// the kind are ignored.
type Options struct {
	// LogPath is the file LogFile appends to (kind "log"); required.
	LogPath string
	// Jail is the fail2ban jail. Kind "fail2ban" bans into it (default
	// DefaultJail). With kind "log", a Jail makes Unban go through
	// fail2ban-client for that jail; without one, Unban returns
	// ErrUnbanUnsupported.
	Jail string
	// Fail2banSocket is fail2ban's socket (fail2ban-client -s), when it is
	// not the one of the system's configuration.
	Fail2banSocket string
	// Fail2banConfig is fail2ban's configuration directory
	// (fail2ban-client -c), when it is not /etc/fail2ban.
	Fail2banConfig string
	// Table is the nftables table (kind "nftables"; default
	// DefaultTable).
	Table string
	// Duration is how long a ban lasts (default DefaultTimeout). nftables
	// gives each element this timeout; kind "fail2ban" sets the jail's
	// bantime to it before its first ban; with kind "log" the jail's
	// bantime (contrib/fail2ban: 7d) decides, which doctor compares.
	Duration time.Duration
	// IPv6Prefix, when between 1 and 127, makes a ban of an IPv6 address
	// ban its network of that many bits (64: the usual subnet of one
	// host). A network that overlaps Allow is not banned whole: the address
	// alone is.
	IPv6Prefix int
	// Allow lists prefixes never to ban, on top of the protected ones.
	Allow []netip.Prefix
	// AllowFrom, when set, is read at each ban for more of them: the
	// registry's allow-listed IPs, which the admin changes while the
	// milter runs. A network that holds one is not banned whole either.
	AllowFrom func(ctx context.Context) ([]netip.Prefix, error)
	// Log receives the dry-run Banner's lines.
	Log *slog.Logger
}

// New builds the Banner of the given kind ("log", "fail2ban", "nftables",
// "none" or "dry-run"), guarded by Guarded with opts.Allow and grouping
// IPv6 addresses into networks of opts.IPv6Prefix bits. For kind "log" it creates the
// log file if missing, so that fail2ban finds it and a path that cannot be
// written is reported now, not at the first ban.
func New(kind string, opts Options) (Banner, error) {
	var b Banner
	switch kind {
	case KindLog:
		if opts.LogPath == "" {
			return nil, errors.New("banner log: no log path")
		}
		l, err := NewLogFile(opts.LogPath)
		if err != nil {
			return nil, err
		}
		if opts.Jail != "" {
			l.Unbanner = opts.fail2ban(opts.Jail)
		}
		b = l
	case KindFail2ban:
		jail := opts.Jail
		if jail == "" {
			jail = DefaultJail
		}
		c := opts.fail2ban(jail)
		c.Bantime = opts.Duration
		b = c
	case KindNFTables:
		b = &NFTables{Table: opts.Table, Timeout: opts.Duration}
	case KindNone:
		b = Nop{}
	case KindDryRun:
		d := opts.Duration
		if d <= 0 {
			d = DefaultTimeout
		}
		b = DryRun{Log: opts.Log, Duration: d}
	default:
		return nil, fmt.Errorf("unknown banner %q (want %s, %s, %s, %s or %s)", kind, KindLog, KindFail2ban, KindNFTables, KindNone, KindDryRun)
	}
	if opts.IPv6Prefix < 0 || opts.IPv6Prefix > 128 {
		return nil, fmt.Errorf("IPv6 prefix length %d is not between 0 and 128", opts.IPv6Prefix)
	}
	return Guard(b, opts), nil
}

func (opts Options) fail2ban(jail string) *Fail2banClient {
	return &Fail2banClient{Jail: jail, Socket: opts.Fail2banSocket, Config: opts.Fail2banConfig}
}

// Nop bans nothing and succeeds: kind "none", for instances that only want
// accounts disabled.
type Nop struct{}

func (Nop) Ban(ctx context.Context, ip netip.Addr, reason string) error { return nil }
func (Nop) Unban(ctx context.Context, ip netip.Addr) error              { return nil }
func (Nop) BanNet(ctx context.Context, p netip.Prefix, reason string) error {
	return nil
}
func (Nop) UnbanNet(ctx context.Context, p netip.Prefix) error { return nil }

// Guarded returns a Banner that refuses, with ErrProtected, to ban the
// protected addresses and any address inside allow, and passes everything
// else to b. IPv4-mapped IPv6 addresses are unmapped first, so ::ffff:10.0.0.1
// is judged (and banned) as 10.0.0.1. Unban always passes: lifting a ban is
// never harmful.
func Guarded(b Banner, allow []netip.Prefix) Banner {
	return Guard(b, Options{Allow: allow})
}

// Guard is Guarded with what opts says of it (Allow, AllowFrom,
// IPv6Prefix): the guard New puts around the banner it builds, for a
// Banner built elsewhere. With IPv6Prefix it bans the network of that many
// bits (see Group) of an IPv6 address when b is a NetBanner, and Unban
// lifts the network's ban and the address's; with NFTables, the address's
// and that of the one network that holds it, whatever the prefix was when
// it was banned.
func Guard(b Banner, opts Options) Banner {
	g := &guard{next: b, allow: opts.Allow, allowFrom: opts.AllowFrom, v6bits: opts.IPv6Prefix}
	if _, ok := g.next.(Checker); ok {
		return checkingGuard{g}
	}
	return g
}

// Checker is implemented by a Banner that can tell whether it banned an
// address since a given time: LogFile, whose Ban is not idempotent (a
// second ban is a second line). After a crash between a ban and its
// bookkeeping, the caller asks instead of banning again.
type Checker interface {
	BannedSince(ctx context.Context, ip netip.Addr, since time.Time) (bool, error)
}

// checkingGuard is a guard over a Checker, and a Checker itself.
type checkingGuard struct{ *guard }

func (g checkingGuard) BannedSince(ctx context.Context, ip netip.Addr, since time.Time) (bool, error) {
	ip = normalize(ip)
	nc, ok := g.next.(netChecker)
	if !ok {
		return g.next.(Checker).BannedSince(ctx, ip, since)
	}
	allow, err := g.allowList(ctx)
	if err != nil {
		return false, err
	}
	return nc.BannedNetSince(ctx, g.target(ip, allow), since)
}

type guard struct {
	next      Banner
	allow     []netip.Prefix
	allowFrom func(ctx context.Context) ([]netip.Prefix, error)
	v6bits    int
}

// allowList is what must not be banned now: allow, and what allowFrom
// reads.
func (g *guard) allowList(ctx context.Context) ([]netip.Prefix, error) {
	if g.allowFrom == nil {
		return g.allow, nil
	}
	more, err := g.allowFrom(ctx)
	if err != nil {
		return nil, fmt.Errorf("read the allow-list: %w", err)
	}
	return append(slices.Clip(g.allow), more...), nil
}

// target is what a ban of ip bans: its network when grouped and no part
// of allow, else the address alone.
func (g *guard) target(ip netip.Addr, allow []netip.Prefix) netip.Prefix {
	p := Group(ip, g.v6bits)
	if !p.IsSingleIP() && checkNet(p, allow) != nil {
		return single(ip)
	}
	return p
}

// Covers returns what a ban of ip bans: its network when IPv6 addresses
// are grouped and the network holds no allow-listed address, else ip
// alone.
func (g *guard) Covers(ctx context.Context, ip netip.Addr) (netip.Prefix, error) {
	allow, err := g.allowList(ctx)
	if err != nil {
		return netip.Prefix{}, err
	}
	return g.target(normalize(ip), allow), nil
}

func (g *guard) Ban(ctx context.Context, ip netip.Addr, reason string) error {
	ip = normalize(ip)
	// The static list first: a protected address is refused even when
	// the allow-list cannot be read.
	if err := check(ip, g.allow); err != nil {
		return err
	}
	allow, err := g.allowList(ctx)
	if err != nil {
		return err
	}
	if g.allowFrom != nil {
		if err := check(ip, allow); err != nil {
			return err
		}
	}
	if nb, ok := g.next.(NetBanner); ok {
		return nb.BanNet(ctx, g.target(ip, allow), reason)
	}
	return g.next.Ban(ctx, ip, reason)
}

// addressUnbanner is a Banner that can lift whatever bans an address,
// whatever network each covers: NFTables, which lists its sets.
type addressUnbanner interface {
	UnbanAddress(ctx context.Context, ip netip.Addr) error
}

func (g *guard) Unban(ctx context.Context, ip netip.Addr) error {
	ip = normalize(ip)
	if au, ok := g.next.(addressUnbanner); ok {
		return au.UnbanAddress(ctx, ip)
	}
	nb, ok := g.next.(NetBanner)
	if !ok {
		return g.next.Unban(ctx, ip)
	}
	// The ban may have been of the address or of its network (the setting
	// may have changed since): lift both.
	if p := Group(ip, g.v6bits); !p.IsSingleIP() {
		if err := nb.UnbanNet(ctx, p); err != nil {
			return err
		}
	}
	return nb.UnbanNet(ctx, single(ip))
}

// Protected reports why ip must not be banned, or "" when it may be. The
// reasons are those of Guarded: not a valid address, unspecified, loopback,
// multicast, link-local, the IPv4 broadcast address, or inside allow.
func Protected(ip netip.Addr, allow []netip.Prefix) string {
	ip = normalize(ip)
	switch {
	case !ip.IsValid():
		return "not a valid address"
	case ip.IsUnspecified():
		return "unspecified address"
	case ip.IsLoopback():
		return "loopback address"
	case ip.IsMulticast():
		return "multicast address"
	case ip.IsLinkLocalUnicast():
		return "link-local address"
	case ip == netip.AddrFrom4([4]byte{255, 255, 255, 255}):
		return "broadcast address"
	}
	for _, p := range allow {
		if p.Contains(ip) {
			return "allow-listed (" + p.String() + ")"
		}
	}
	return ""
}

// check returns an ErrProtected error when ip must not be banned. Every
// implementation calls it, so that even an unguarded Banner never bans
// loopback or link-local addresses.
func check(ip netip.Addr, allow []netip.Prefix) error {
	if why := Protected(ip, allow); why != "" {
		return fmt.Errorf("ban %s: %w: %s", ip, ErrProtected, why)
	}
	return nil
}

// normalize strips what is not part of the address a packet filter sees: the
// IPv4-in-IPv6 mapping and the zone.
func normalize(ip netip.Addr) netip.Addr {
	return ip.Unmap().WithZone("")
}
