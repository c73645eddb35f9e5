package banner

import (
	"bytes"
	"context"
	"encoding/json"
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
	script, covered, err := n.banScript(ctx, p, secs)
	if err == nil && !covered {
		err = n.script(ctx, script)
	}
	if err != nil && ctx.Err() == nil && !errors.Is(err, errNoAnswer) {
		// The table may be missing (first ban, or flushed by a
		// firewall reload), or older than the network set, or a
		// network listed may have expired since: load the table and
		// try once more.
		if eerr := n.EnsureSet(ctx); eerr != nil {
			return fmt.Errorf("ban %s: %w; %w", target, err, eerr)
		}
		script, covered, err = n.banScript(ctx, p, secs)
		if err == nil && !covered {
			err = n.script(ctx, script)
		}
	}
	if err != nil {
		return fmt.Errorf("ban %s: %w", target, err)
	}
	return nil
}

// banScript returns the nft commands that ban p for secs seconds, or
// covered when a wider network banned before blocks p already (for as long
// as its own ban lasts), and there is nothing to add.
func (n *NFTables) banScript(ctx context.Context, p netip.Prefix, secs int64) (script string, covered bool, err error) {
	target := netString(p)
	add := fmt.Sprintf("add element inet %s %s { %s timeout %ds }\n", n.table(), n.set(p), target, secs)
	if n.set(p) == set6net {
		// The network set has the interval flag, and nft refuses an
		// interval that overlaps one it holds: after --ipv6-prefix
		// changed, it holds networks of the old length. The ban of p
		// replaces the narrower ones p holds, deleted in the same
		// transaction; p is not in the set then (it would overlap
		// them), and is added once: nft refuses a transaction that
		// deletes them and adds, deletes and adds p again.
		inside, covered, err := n.nested(ctx, p)
		if err != nil || covered {
			return "", covered, err
		}
		if len(inside) > 0 && inside[0] != p {
			var b strings.Builder
			for _, e := range inside {
				fmt.Fprintf(&b, "delete element inet %s %s { %s }\n", n.table(), set6net, netString(e))
			}
			return b.String() + add, false, nil
		}
	}
	// Add, delete, add again: the first add makes sure the element
	// exists, so that the delete cannot fail, and the second sets a fresh
	// timeout (adding an element already in a set leaves its timeout
	// running).
	return fmt.Sprintf("%sdelete element inet %s %s { %s }\n%s", add, n.table(), n.set(p), target, add), false, nil
}

// nested lists the network set and returns the networks in it that p holds
// (p itself included), and whether a wider one holds p. A missing table or
// set holds nothing. An element that is no network (a range an admin added
// by hand) is left out: if it overlaps p, nft refuses the ban and says so.
func (n *NFTables) nested(ctx context.Context, p netip.Prefix) (inside []netip.Prefix, covered bool, err error) {
	out, err := n.run(ctx, "", "-j", "list", "set", "inet", n.table(), set6net)
	if errors.Is(err, errNoSuchElement) {
		return nil, false, nil
	}
	if err != nil {
		return nil, false, err
	}
	var listing setListing
	if err := json.Unmarshal(out, &listing); err != nil {
		return nil, false, fmt.Errorf("nft -j list set %s: %w", set6net, err)
	}
	for _, item := range listing.Nftables {
		if item.Set == nil {
			continue
		}
		for _, raw := range item.Set.Elem {
			e, ok := setElement(raw)
			switch {
			case !ok:
			case p.Contains(e.Addr()) && e.Bits() >= p.Bits():
				inside = append(inside, e)
			case e.Contains(p.Addr()) && e.Bits() < p.Bits():
				covered = true
			}
		}
	}
	return inside, covered, nil
}

// setListing is what nft -j list set prints: the set's elements, each read
// by setElement.
type setListing struct {
	Nftables []struct {
		Set *struct {
			Elem []json.RawMessage `json:"elem"`
		} `json:"set"`
	} `json:"nftables"`
}

// setElement reads an element of nft's JSON listing as a network: an
// address ("2001:db8::1"), or a prefix ({"prefix": {"addr": …, "len": 64}}),
// either alone or, in a set with timeouts, as {"elem": {"val": …}}.
func setElement(raw json.RawMessage) (netip.Prefix, bool) {
	var wrapped struct {
		Elem *struct {
			Val json.RawMessage `json:"val"`
		} `json:"elem"`
	}
	if json.Unmarshal(raw, &wrapped) == nil && wrapped.Elem != nil {
		raw = wrapped.Elem.Val
	}
	var addr string
	if json.Unmarshal(raw, &addr) == nil {
		ip, err := netip.ParseAddr(addr)
		return single(ip), err == nil
	}
	var net struct {
		Prefix *struct {
			Addr string `json:"addr"`
			Len  int    `json:"len"`
		} `json:"prefix"`
	}
	if json.Unmarshal(raw, &net) != nil || net.Prefix == nil {
		return netip.Prefix{}, false
	}
	ip, err := netip.ParseAddr(net.Prefix.Addr)
	if err != nil {
		return netip.Prefix{}, false
	}
	e, err := ip.Prefix(net.Prefix.Len)
	return e, err == nil
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
	_, err := n.run(ctx, commands, "-f", "-")
	return err
}

// run runs nft with args and stdin, and returns its standard output.
func (n *NFTables) run(ctx context.Context, stdin string, args ...string) ([]byte, error) {
	argv := n.Command
	if len(argv) == 0 {
		argv = []string{"nft"}
	}
	argv = append(argv[:len(argv):len(argv)], args...)
	stdout, stderr, err := runCommand(ctx, n.CommandTimeout, argv, stdin)
	if err != nil {
		if bytes.Contains(stderr, []byte("No such file or directory")) {
			err = fmt.Errorf("%w (%w)", err, errNoSuchElement)
		}
		return nil, commandError(strings.Join(argv, " "), err, append(stderr, stdout...))
	}
	return stdout, nil
}
