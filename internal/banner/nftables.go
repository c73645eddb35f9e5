package banner

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"net/netip"
	"strings"
	"time"
)

const (
	// DefaultTable is the nftables table of NFTables.
	DefaultTable = "bouncemilter"
	// DefaultTimeout is how long an nftables ban lasts by default.
	DefaultTimeout = 7 * 24 * time.Hour

	// The sets of the table, one per address family: an nftables set
	// holds one type of element.
	set4 = "vandals"
	set6 = "vandals6"
	// set6net holds IPv6 networks (Options.IPv6Prefix): a set of prefixes
	// needs the interval flag, which the address sets were made without.
	set6net = "vandals6net"
)

// NFTables bans an address by adding it, with a timeout, to a named set of
// an nftables table of its own, family inet, whose input chain drops what
// the set holds:
//
//	nft add element inet bouncemilter vandals { 203.0.113.7 timeout 7d }
//
// IPv4 addresses go to the set "vandals", IPv6 ones to "vandals6". Ruleset
// gives the table; EnsureSet loads it, and Ban does so itself when the table
// is missing. The table is separate from the system's firewall: loading it
// neither reads nor changes other tables.
//
// nft needs CAP_NET_ADMIN: a milter running without privileges should use
// LogFile and let fail2ban's nftables action do this.
type NFTables struct {
	// Table is the table's name; empty means DefaultTable.
	Table string
	// Timeout is how long a ban lasts; zero means DefaultTimeout. A ban
	// of an address already banned starts its timeout again.
	Timeout time.Duration
	// Command is the nft program and any arguments before nft's own;
	// empty means "nft". Tests run it in a network namespace of their own
	// with {"ip", "netns", "exec", NAME, "nft"}.
	Command []string
	// CommandTimeout is how long one nft run may take; zero means
	// DefaultCommandTimeout.
	CommandTimeout time.Duration
}

func (n *NFTables) table() string {
	if n.Table == "" {
		return DefaultTable
	}
	return n.Table
}

// Ruleset returns nft commands that create the table, its sets and its
// chain, and replace the chain's rules: loading them again leaves the same
// table and keeps the sets' members. It suits `nft -f` and
// /etc/nftables.conf's include.
func (n *NFTables) Ruleset() string {
	t := n.table()
	return fmt.Sprintf(`# bouncemilter: addresses of sign-ups whose mail bounced as nonexistent.
add table inet %[1]s
add set inet %[1]s %[2]s { type ipv4_addr; flags timeout; }
add set inet %[1]s %[3]s { type ipv6_addr; flags timeout; }
add set inet %[1]s %[4]s { type ipv6_addr; flags interval, timeout; }
add chain inet %[1]s input { type filter hook input priority -10; policy accept; }
flush chain inet %[1]s input
add rule inet %[1]s input ip saddr @%[2]s counter drop
add rule inet %[1]s input ip6 saddr @%[3]s counter drop
add rule inet %[1]s input ip6 saddr @%[4]s counter drop
`, t, set4, set6, set6net)
}

// EnsureSet loads Ruleset: it creates the table, sets and chain when they are
// missing and is harmless when they exist.
func (n *NFTables) EnsureSet(ctx context.Context) error {
	if err := n.script(ctx, n.Ruleset()); err != nil {
		return fmt.Errorf("nftables table %s: %w", n.table(), err)
	}
	return nil
}

// Ban adds ip to the set of its family for Timeout.
func (n *NFTables) Ban(ctx context.Context, ip netip.Addr, reason string) error {
	return n.BanNet(ctx, single(ip), reason)
}

// BanNet adds p to the set for its kind (IPv4 address, IPv6 address, IPv6
// network) for Timeout.
func (n *NFTables) BanNet(ctx context.Context, p netip.Prefix, reason string) error {
	p = netip.PrefixFrom(normalize(p.Addr()), p.Bits()).Masked()
	if err := check(p.Addr(), nil); err != nil {
		return err
	}
	timeout := n.Timeout
	if timeout <= 0 {
		timeout = DefaultTimeout
	}
	secs := int64((timeout + time.Second - 1) / time.Second)
	target := netString(p)
	elem := fmt.Sprintf("inet %s %s { %s }", n.table(), n.set(p), target)
	// Add, delete, add again, in one transaction: the first add makes
	// sure the element exists, so that the delete cannot fail, and the
	// second sets a fresh timeout (adding an element already in a set
	// leaves its timeout running).
	add := fmt.Sprintf("add element inet %s %s { %s timeout %ds }\n", n.table(), n.set(p), target, secs)
	script := add + "delete element " + elem + "\n" + add
	err := n.script(ctx, script)
	if err != nil && ctx.Err() == nil && !errors.Is(err, errNoAnswer) {
		// The table may be missing (first ban, or flushed by a
		// firewall reload), or older than the network set: load it and
		// try once more.
		if eerr := n.EnsureSet(ctx); eerr != nil {
			return fmt.Errorf("ban %s: %w; %w", target, err, eerr)
		}
		err = n.script(ctx, script)
	}
	if err != nil {
		return fmt.Errorf("ban %s: %w", target, err)
	}
	return nil
}

// Unban removes ip from its set. An address that is not there, or a table
// that does not exist, is not an error: nothing is banned.
func (n *NFTables) Unban(ctx context.Context, ip netip.Addr) error {
	ip = normalize(ip)
	if !ip.IsValid() {
		return fmt.Errorf("unban: %w: not a valid address", ErrProtected)
	}
	return n.UnbanNet(ctx, single(ip))
}

// UnbanNet removes p from its set.
func (n *NFTables) UnbanNet(ctx context.Context, p netip.Prefix) error {
	if !p.IsValid() {
		return fmt.Errorf("unban: %w: not a valid address", ErrProtected)
	}
	p = netip.PrefixFrom(normalize(p.Addr()), p.Bits()).Masked()
	err := n.script(ctx, fmt.Sprintf("delete element inet %s %s { %s }\n", n.table(), n.set(p), netString(p)))
	if err != nil && !errors.Is(err, errNoSuchElement) {
		return fmt.Errorf("unban %s: %w", netString(p), err)
	}
	return nil
}

func (n *NFTables) set(p netip.Prefix) string {
	switch {
	case p.Addr().Is4():
		return set4
	case p.IsSingleIP():
		return set6
	}
	return set6net
}

// errNoSuchElement is what nft's ENOENT means to Unban: no such table, set
// or element.
var errNoSuchElement = errors.New("no such table, set or element")

// script runs nft -f - with the commands on its standard input: one
// transaction, applied whole or not at all.
func (n *NFTables) script(ctx context.Context, commands string) error {
	argv := n.Command
	if len(argv) == 0 {
		argv = []string{"nft"}
	}
	argv = append(argv[:len(argv):len(argv)], "-f", "-")
	stdout, stderr, err := runCommand(ctx, n.CommandTimeout, argv, commands)
	if err != nil {
		if bytes.Contains(stderr, []byte("No such file or directory")) {
			err = fmt.Errorf("%w (%w)", err, errNoSuchElement)
		}
		return commandError(strings.Join(argv, " "), err, append(stderr, stdout...))
	}
	return nil
}
