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
	attempt := func() error {
		script, covered, err := n.banScript(ctx, p, secs)
		if err == nil && !covered {
			err = n.script(ctx, script)
		}
		return err
	}
	err := attempt()
	if err != nil && ctx.Err() == nil && !errors.Is(err, errNoAnswer) {
		// The table may be missing (first ban, or flushed by a
		// firewall reload), or older than the network set, or a
		// network listed may have expired since: load the table and
		// try once more.
		if eerr := n.EnsureSet(ctx); eerr != nil {
			return fmt.Errorf("ban %s: %w; %w", target, err, eerr)
		}
		err = attempt()
	}
	if err != nil {
		return fmt.Errorf("ban %s: %w", target, err)
	}
	return nil
}

// banScript returns the nft commands that ban p for secs seconds, or
// covered when a wider network banned before blocks p already for at least
// as long, and there is nothing to add.
func (n *NFTables) banScript(ctx context.Context, p netip.Prefix, secs int64) (script string, covered bool, err error) {
	target := netString(p)
	add := fmt.Sprintf("add element inet %s %s { %s timeout %ds }\n", n.table(), n.set(p), target, secs)
	if n.set(p) == set6net {
		// The network set has the interval flag, and nft refuses an
		// interval that overlaps one it holds: after --ipv6-prefix
		// changed, it holds networks of another length. The ban is
		// rewritten in one transaction so that no address loses time:
		// a wider network that lasts long enough covers p; one that
		// expires sooner is split into p, banned for secs, and the rest
		// of it, for what it had left. Narrower networks that expire
		// sooner are replaced by p, and p goes around those that last
		// longer. nft refuses a transaction that deletes an element and
		// adds it again, so each piece is added once.
		wider, inside, _, err := n.nested(ctx, p)
		if err != nil {
			return "", false, err
		}
		var b strings.Builder
		del := func(e netip.Prefix) {
			fmt.Fprintf(&b, "delete element inet %s %s { %s }\n", n.table(), set6net, netString(e))
		}
		put := func(pieces []netip.Prefix, secs int64) {
			for _, e := range pieces {
				fmt.Fprintf(&b, "add element inet %s %s { %s timeout %ds }\n", n.table(), set6net, netString(e), secs)
			}
		}
		switch {
		case wider.Prefix.IsValid() && wider.covers(secs):
			return "", true, nil
		case wider.Prefix.IsValid():
			del(wider.Prefix)
			if wider.Expires > 0 {
				put(minus(wider.Prefix, []netip.Prefix{p}), wider.Expires)
			}
			put([]netip.Prefix{p}, secs)
			return b.String(), false, nil
		case len(inside) > 0:
			var keep []netip.Prefix
			for _, e := range inside {
				if e.outlasts(secs) {
					keep = append(keep, e.Prefix)
				} else {
					del(e.Prefix)
				}
			}
			put(minus(p, keep), secs)
			return b.String(), false, nil
		}
	}
	// Add, delete, add again: the first add makes sure the element
	// exists, so that the delete cannot fail, and the second sets a fresh
	// timeout (adding an element already in a set leaves its timeout
	// running).
	return fmt.Sprintf("%sdelete element inet %s %s { %s }\n%s", add, n.table(), n.set(p), target, add), false, nil
}

// setEntry is an element of the network set and the seconds before it
// expires; Expires is -1 for an element without timeout (added by hand),
// which never does.
type setEntry struct {
	netip.Prefix
	Expires int64
}

// slack is how much sooner than a new ban a network set's element may
// expire and still count as lasting as long: nft counts an element's time
// left down from the moment it was added, and a network banned a moment
// before with the same timeout would otherwise be split or kept apart for
// nothing.
const slack = 60

// covers reports whether e, holding a network banned now for secs, makes
// its ban needless: e lasts as long, within slack.
func (e setEntry) covers(secs int64) bool { return e.Expires < 0 || e.Expires >= secs-slack }

// outlasts reports whether e would lose time, more than slack, if a ban for
// secs replaced it.
func (e setEntry) outlasts(secs int64) bool { return e.Expires < 0 || e.Expires > secs+slack }

// nested lists the network set and returns the wider network that holds p,
// if any, the narrower networks p holds, and whether it holds p itself.
// An interval set holds no overlapping elements: it holds either one wider
// network, or narrower ones, or p itself, or none of them. A missing table or set holds
// nothing. An element that is no network (a range an admin added by hand)
// is left out: if it overlaps p, nft refuses the ban and says so.
func (n *NFTables) nested(ctx context.Context, p netip.Prefix) (wider setEntry, inside []setEntry, self bool, err error) {
	out, err := n.run(ctx, "", "-j", "list", "set", "inet", n.table(), set6net)
	if errors.Is(err, errNoSuchElement) {
		return setEntry{}, nil, false, nil
	}
	if err != nil {
		return setEntry{}, nil, false, err
	}
	var listing setListing
	if err := json.Unmarshal(out, &listing); err != nil {
		return setEntry{}, nil, false, fmt.Errorf("nft -j list set %s: %w", set6net, err)
	}
	for _, item := range listing.Nftables {
		if item.Set == nil {
			continue
		}
		for _, raw := range item.Set.Elem {
			e, ok := setElement(raw)
			switch {
			case !ok:
			case e.Prefix == p:
				self = true
			case p.Contains(e.Addr()) && e.Bits() > p.Bits():
				inside = append(inside, e)
			case e.Contains(p.Addr()) && e.Bits() < p.Bits():
				wider = e
			}
		}
	}
	return wider, inside, self, nil
}

// minus returns networks that together hold the addresses of q outside the
// holes (networks inside q that do not overlap), as few as halving q
// around the holes gives.
func minus(q netip.Prefix, holes []netip.Prefix) []netip.Prefix {
	var touching []netip.Prefix
	for _, h := range holes {
		switch {
		case h.Bits() <= q.Bits() && h.Contains(q.Addr()):
			return nil // q is all hole
		case q.Contains(h.Addr()):
			touching = append(touching, h)
		}
	}
	if len(touching) == 0 {
		return []netip.Prefix{q}
	}
	lo := netip.PrefixFrom(q.Addr(), q.Bits()+1)
	a := q.Addr().As16()
	a[q.Bits()/8] |= 0x80 >> (q.Bits() % 8)
	hi := netip.PrefixFrom(netip.AddrFrom16(a), q.Bits()+1)
	return append(minus(lo, touching), minus(hi, touching)...)
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
// either alone or, in a set with timeouts, as {"elem": {"val": …,
// "timeout": 3600, "expires": 3599}}, with the seconds it has left.
func setElement(raw json.RawMessage) (setEntry, bool) {
	var wrapped struct {
		Elem *struct {
			Val     json.RawMessage `json:"val"`
			Timeout int64           `json:"timeout"`
			Expires int64           `json:"expires"`
		} `json:"elem"`
	}
	expires := int64(-1)
	if json.Unmarshal(raw, &wrapped) == nil && wrapped.Elem != nil {
		raw = wrapped.Elem.Val
		if wrapped.Elem.Timeout > 0 {
			expires = wrapped.Elem.Expires
		}
	}
	var addr string
	if json.Unmarshal(raw, &addr) == nil {
		ip, err := netip.ParseAddr(addr)
		return setEntry{single(ip), expires}, err == nil
	}
	var net struct {
		Prefix *struct {
			Addr string `json:"addr"`
			Len  int    `json:"len"`
		} `json:"prefix"`
	}
	if json.Unmarshal(raw, &net) != nil || net.Prefix == nil {
		return setEntry{}, false
	}
	ip, err := netip.ParseAddr(net.Prefix.Addr)
	if err != nil {
		return setEntry{}, false
	}
	e, err := ip.Prefix(net.Prefix.Len)
	return setEntry{e, expires}, err == nil
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

// UnbanNet removes p from its set, and in the network set every network
// inside p: the pieces of p that a ban of a narrower network inside it
// left (banScript), and other bans within p. The guard lifts an address's
// bans with UnbanAddress instead, which leaves other networks alone.
func (n *NFTables) UnbanNet(ctx context.Context, p netip.Prefix) error {
	if !p.IsValid() {
		return fmt.Errorf("unban: %w: not a valid address", ErrProtected)
	}
	p = netip.PrefixFrom(normalize(p.Addr()), p.Bits()).Masked()
	gone := []netip.Prefix{p}
	if n.set(p) == set6net {
		_, inside, self, err := n.nested(ctx, p)
		if err != nil {
			return fmt.Errorf("unban %s: %w", netString(p), err)
		}
		gone = gone[:0]
		if self {
			gone = append(gone, p)
		}
		for _, e := range inside {
			gone = append(gone, e.Prefix)
		}
		if len(gone) == 0 {
			return nil
		}
	}
	if err := n.deleteElements(ctx, n.set(p), gone); err != nil {
		return fmt.Errorf("unban %s: %w", netString(p), err)
	}
	return nil
}

// deleteElements deletes the elements gone of set in one transaction; an
// element that is not there is no error.
func (n *NFTables) deleteElements(ctx context.Context, set string, gone []netip.Prefix) error {
	var script strings.Builder
	for _, e := range gone {
		fmt.Fprintf(&script, "delete element inet %s %s { %s }\n", n.table(), set, netString(e))
	}
	err := n.script(ctx, script.String())
	if err != nil && !errors.Is(err, errNoSuchElement) {
		return err
	}
	return nil
}

// UnbanAddress lifts whatever bans ip: its own element, and in the network
// set the one network that holds it (an interval set holds no two that
// overlap): its /64, a wider one banned under another --ipv6-prefix, or
// the piece of a split one. Other networks, even inside the same wider
// one the guard would group ip in, stay banned: they are other sign-ups'.
func (n *NFTables) UnbanAddress(ctx context.Context, ip netip.Addr) error {
	ip = normalize(ip)
	if !ip.IsValid() {
		return fmt.Errorf("unban: %w: not a valid address", ErrProtected)
	}
	if ip.Is6() {
		holder, _, _, err := n.nested(ctx, single(ip))
		if err != nil {
			return fmt.Errorf("unban %s: %w", ip, err)
		}
		// The one network that holds ip: nothing overlaps it.
		if holder.Prefix.IsValid() {
			if err := n.deleteElements(ctx, set6net, []netip.Prefix{holder.Prefix}); err != nil {
				return fmt.Errorf("unban %s: %w", netString(holder.Prefix), err)
			}
		}
	}
	return n.UnbanNet(ctx, single(ip))
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
