package banner

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"maps"
	"net/netip"
	"os"
	"os/exec"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/bouncemilter/bouncemilter/internal/testenv"
)

// netns makes a network namespace of the test's own, deleted when the test
// ends, and returns its name. nftables changes made inside it touch nothing
// of the machine's.
func netns(t *testing.T) string {
	t.Helper()
	testenv.Require(t, os.Geteuid() == 0, "network namespaces and nftables need root")
	for _, prog := range []string{"ip", "nft"} {
		_, err := exec.LookPath(prog)
		testenv.Require(t, err == nil, prog+" is not installed (apt-get install iproute2 nftables)")
	}
	var b [4]byte
	rand.Read(b[:])
	name := "bm" + hex.EncodeToString(b[:])
	out, err := exec.Command("ip", "netns", "add", name).CombinedOutput()
	testenv.Require(t, err == nil, fmt.Sprintf("the kernel refuses a network namespace (ip netns add: %v: %s)", err, out))
	t.Cleanup(func() {
		if out, err := exec.Command("ip", "netns", "del", name).CombinedOutput(); err != nil {
			t.Errorf("ip netns del %s: %v: %s", name, err, out)
		}
	})
	// The namespace may exist while nftables does not work in it.
	out, err = exec.Command("ip", "netns", "exec", name, "nft", "list", "ruleset").CombinedOutput()
	testenv.Require(t, err == nil, fmt.Sprintf("nftables does not work in a network namespace here (nft list ruleset: %v: %s)", err, out))
	return name
}

// inNetns runs a command inside the namespace ns.
func inNetns(ns string, args ...string) *exec.Cmd {
	return exec.Command("ip", append([]string{"netns", "exec", ns}, args...)...)
}

// elements returns the addresses (networks in CIDR form) in a set of the
// table and the seconds left before each expires, from nft's JSON listing.
func elements(t *testing.T, ns, table, set string) map[string]int {
	t.Helper()
	out, err := inNetns(ns, "nft", "-j", "list", "set", "inet", table, set).Output()
	if err != nil {
		t.Fatalf("nft list set %s: %v", set, err)
	}
	var listing setListing
	if err := json.Unmarshal(out, &listing); err != nil {
		t.Fatalf("nft -j list set: %v\n%s", err, out)
	}
	got := map[string]int{}
	for _, item := range listing.Nftables {
		if item.Set == nil {
			continue
		}
		for _, raw := range item.Set.Elem {
			e, ok := setElement(raw)
			if !ok {
				t.Fatalf("nft -j list set: element %s", raw)
			}
			got[netString(e.Prefix)] = int(e.Expires)
		}
	}
	return got
}

func TestNFTables(t *testing.T) {
	ctx := context.Background()
	ns := netns(t)
	n := &NFTables{Timeout: time.Hour, Command: []string{"ip", "netns", "exec", ns, "nft"}}

	// The first Ban loads the table itself.
	if err := n.Ban(ctx, netip.MustParseAddr("203.0.113.7"), "r"); err != nil {
		t.Fatal(err)
	}
	if err := n.Ban(ctx, netip.MustParseAddr("2001:db8::7"), "r"); err != nil {
		t.Fatal(err)
	}
	if err := n.Ban(ctx, netip.MustParseAddr("::ffff:198.51.100.7"), "r"); err != nil {
		t.Fatal(err)
	}
	v4, v6 := elements(t, ns, DefaultTable, "vandals"), elements(t, ns, DefaultTable, "vandals6")
	if got := slices.Sorted(maps.Keys(v4)); !slices.Equal(got, []string{"198.51.100.7", "203.0.113.7"}) {
		t.Errorf("vandals holds %q", got)
	}
	if got := slices.Sorted(maps.Keys(v6)); !slices.Equal(got, []string{"2001:db8::7"}) {
		t.Errorf("vandals6 holds %q", got)
	}
	for ip, left := range v4 {
		if left < 3500 || left > 3600 {
			t.Errorf("%s expires in %ds, want about an hour", ip, left)
		}
	}

	// EnsureSet again, with members in the sets: they stay, and the
	// chain still has its three rules, not six.
	for range 2 {
		if err := n.EnsureSet(ctx); err != nil {
			t.Fatal(err)
		}
	}
	if got := elements(t, ns, DefaultTable, "vandals"); len(got) != 2 {
		t.Errorf("after EnsureSet vandals holds %v", got)
	}
	out, err := inNetns(ns, "nft", "list", "chain", "inet", DefaultTable, "input").CombinedOutput()
	if err != nil {
		t.Fatalf("nft list chain: %v: %s", err, out)
	}
	if c := strings.Count(string(out), " drop"); c != 3 {
		t.Errorf("the chain has %d drop rules, want 3:\n%s", c, out)
	}

	// A second ban of a banned address starts its timeout again.
	long := &NFTables{Timeout: 7 * 24 * time.Hour, Command: n.Command}
	if err := long.Ban(ctx, netip.MustParseAddr("203.0.113.7"), "again"); err != nil {
		t.Fatal(err)
	}
	if left := elements(t, ns, DefaultTable, "vandals")["203.0.113.7"]; left < 7*24*3600-100 {
		t.Errorf("banned again, 203.0.113.7 expires in %ds, want 7 days", left)
	}

	// Unban: present, absent, and twice.
	for _, ip := range []string{"203.0.113.7", "203.0.113.7", "192.0.2.1", "2001:db8::7"} {
		if err := n.Unban(ctx, netip.MustParseAddr(ip)); err != nil {
			t.Errorf("Unban(%s): %v", ip, err)
		}
	}
	if got := slices.Sorted(maps.Keys(elements(t, ns, DefaultTable, "vandals"))); !slices.Equal(got, []string{"198.51.100.7"}) {
		t.Errorf("after Unban vandals holds %q", got)
	}
	if got := elements(t, ns, DefaultTable, "vandals6"); len(got) != 0 {
		t.Errorf("after Unban vandals6 holds %v", got)
	}

	// No table at all: nothing is banned, Unban succeeds.
	other := &NFTables{Table: "nosuchtable", Command: n.Command}
	if err := other.Unban(ctx, netip.MustParseAddr("203.0.113.7")); err != nil {
		t.Errorf("Unban without a table: %v", err)
	}

	if err := n.Ban(ctx, netip.MustParseAddr("169.254.0.1"), ""); !errors.Is(err, ErrProtected) {
		t.Errorf("Ban(169.254.0.1) = %v, want ErrProtected", err)
	}
	broken := &NFTables{Command: []string{"ip", "netns", "exec", ns, "false"}}
	if err := broken.Ban(ctx, netip.MustParseAddr("203.0.113.9"), ""); err == nil || !strings.HasPrefix(err.Error(), "ban 203.0.113.9: ") {
		t.Errorf("Ban through a failing nft = %v", err)
	}
}

// TestNFTablesDrops connects two namespaces, a server and a client, and
// shows that a ban in the server's table drops the client's packets, and an
// unban lets them through again.
func TestNFTablesDrops(t *testing.T) {
	ctx := context.Background()
	server, client := netns(t), netns(t)
	veth := "v" + server[2:]
	for _, args := range [][]string{
		{"ip", "link", "add", veth, "netns", server, "type", "veth", "peer", "name", "eth0", "netns", client},
		{"ip", "-n", server, "link", "set", "lo", "up"},
		{"ip", "-n", server, "link", "set", veth, "up"},
		{"ip", "-n", server, "addr", "add", "203.0.113.1/24", "dev", veth},
		{"ip", "-n", server, "addr", "add", "2001:db8::1/64", "dev", veth, "nodad"},
		{"ip", "-n", client, "link", "set", "eth0", "up"},
		{"ip", "-n", client, "addr", "add", "203.0.113.7/24", "dev", "eth0"},
		{"ip", "-n", client, "addr", "add", "2001:db8::7/64", "dev", "eth0", "nodad"},
	} {
		if out, err := exec.Command(args[0], args[1:]...).CombinedOutput(); err != nil {
			testenv.Require(t, false, fmt.Sprintf("cannot connect two namespaces (%s: %v: %s)", strings.Join(args, " "), err, out))
		}
	}
	n := &NFTables{Command: []string{"ip", "netns", "exec", server, "nft"}}
	if err := n.EnsureSet(ctx); err != nil {
		t.Fatal(err)
	}

	for _, tc := range []struct{ client, server string }{
		{"203.0.113.7", "203.0.113.1"},
		{"2001:db8::7", "2001:db8::1"},
	} {
		t.Run(tc.client, func(t *testing.T) {
			ip := netip.MustParseAddr(tc.client)
			if !reachable(t, client, tc.server) {
				t.Fatalf("%s does not reach %s before any ban", tc.client, tc.server)
			}
			if err := n.Ban(ctx, ip, "test"); err != nil {
				t.Fatal(err)
			}
			if reachable(t, client, tc.server) {
				t.Errorf("%s still reaches %s after the ban", tc.client, tc.server)
			}
			if err := n.Unban(ctx, ip); err != nil {
				t.Fatal(err)
			}
			if !reachable(t, client, tc.server) {
				t.Errorf("%s does not reach %s after the unban", tc.client, tc.server)
			}
		})
	}
}

// reachable reports whether a TCP connection from namespace ns to port 9 of
// addr gets an answer. Nothing listens there: a reachable server answers with
// a reset at once ("Connection refused"); a dropped SYN gets no answer, and
// the attempt is given up after two seconds.
func reachable(t *testing.T, ns, addr string) bool {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	cmd := exec.CommandContext(ctx, "ip", "netns", "exec", ns, "bash", "-c", fmt.Sprintf("exec 3<>/dev/tcp/%s/9", addr))
	out, err := cmd.CombinedOutput()
	switch {
	case ctx.Err() != nil:
		return false
	case strings.Contains(string(out), "Connection refused"):
		return true
	default:
		t.Fatalf("probe of %s from %s: %v: %s", addr, ns, err, out)
		return false
	}
}

// TestNFTablesOverlappingNetworks: vandals6net has the interval flag and no
// auto-merge, and nft refuses an interval that overlaps one the set holds
// ("interval overlaps with an existing one"). After the admin widens
// --ipv6-prefix from 64 to 48 (bots hop between the /64s of their /48), the
// ban of a bot's /48 must go in while a /64 of it banned before the change
// is still there, or every ban in that /48 fails until the /64 expires,
// days later; narrowing the prefix again must not fail either.
func TestNFTablesOverlappingNetworks(t *testing.T) {
	ns := netns(t)
	ctx := context.Background()
	n := &NFTables{Timeout: time.Hour, Command: []string{"ip", "netns", "exec", ns, "nft"}}
	for _, step := range []struct {
		ban  string
		want []string // vandals6net after the ban
	}{
		{"2001:db8:1:2::/64", []string{"2001:db8:1:2::/64"}},
		{"2001:db8:2:5::/64", []string{"2001:db8:1:2::/64", "2001:db8:2:5::/64"}},
		// Wider: the /48 replaces the /64 it holds.
		{"2001:db8:1::/48", []string{"2001:db8:1::/48", "2001:db8:2:5::/64"}},
		// Narrower, inside the /48: nothing more to block.
		{"2001:db8:1:7::/64", []string{"2001:db8:1::/48", "2001:db8:2:5::/64"}},
	} {
		if err := n.BanNet(ctx, netip.MustParsePrefix(step.ban), ""); err != nil {
			t.Errorf("BanNet(%s): %v", step.ban, err)
			continue
		}
		got := slices.Sorted(maps.Keys(elements(t, ns, DefaultTable, set6net)))
		if !slices.Equal(got, step.want) {
			t.Errorf("after BanNet(%s) vandals6net = %q, want %q", step.ban, got, step.want)
		}
	}
}

// TestNFTablesNestedNetworksKeepTheirTime: a network banned inside a wider
// one is covered only while the wider ban lasts as long as its own would.
// A /64 banned for 7 days inside a /48 with an hour left must stay banned
// for 7 days, and the rest of the /48 for its hour; a /48 banned for an
// hour over a /64 with 7 days left must not cut the /64's days short.
// Lifting the /48 lifts all its pieces.
func TestNFTablesNestedNetworksKeepTheirTime(t *testing.T) {
	ns := netns(t)
	ctx := context.Background()
	hour := &NFTables{Timeout: time.Hour, Command: []string{"ip", "netns", "exec", ns, "nft"}}
	week := &NFTables{Timeout: 7 * 24 * time.Hour, Command: hour.Command}
	const day = 24 * 3600
	// check compares the network set with want: each network's seconds
	// left, within a minute; networks of the /48 not in want (its other
	// pieces) have at most an hour.
	check := func(step string, want map[string]int) {
		t.Helper()
		got := elements(t, ns, DefaultTable, set6net)
		var addrs uint64 // /64s of the /48 banned
		for e, left := range got {
			p := netip.MustParsePrefix(e)
			if w, ok := want[e]; ok {
				if left > w || left < w-60 {
					t.Errorf("%s: %s has %ds left, want %ds", step, e, left, w)
				}
			} else if !netip.MustParsePrefix("2001:db8:1::/48").Contains(p.Addr()) || left > 3600 {
				t.Errorf("%s: %s (%ds left) should not be there", step, e, left)
			}
			if p.Bits() >= 48 && p.Bits() <= 64 {
				addrs += 1 << (64 - p.Bits())
			}
		}
		for e := range want {
			if _, ok := got[e]; !ok {
				t.Errorf("%s: %s is not banned: %v", step, e, got)
			}
		}
		if addrs != 1<<16 {
			t.Errorf("%s: the set holds %d /64s of 2001:db8:1::/48, want all 65536: %v", step, addrs, got)
		}
	}
	ban := func(n *NFTables, p string) {
		t.Helper()
		if err := n.BanNet(ctx, netip.MustParsePrefix(p), ""); err != nil {
			t.Fatalf("BanNet(%s): %v", p, err)
		}
	}
	ban(hour, "2001:db8:1::/48")
	ban(week, "2001:db8:1:7::/64")
	check("a week's /64 in an hour's /48", map[string]int{"2001:db8:1:7::/64": 7 * day})
	// Within a minute of the wider ban's time left: covered.
	ban(hour, "2001:db8:1:9::/64")
	check("an hour's /64 in the rest of the /48", map[string]int{"2001:db8:1:7::/64": 7 * day})

	if err := hour.UnbanNet(ctx, netip.MustParsePrefix("2001:db8:1::/48")); err != nil {
		t.Fatal(err)
	}
	if got := elements(t, ns, DefaultTable, set6net); len(got) != 0 {
		t.Errorf("after UnbanNet(/48) the set holds %v", got)
	}

	ban(week, "2001:db8:1:7::/64")
	ban(hour, "2001:db8:1::/48")
	check("an hour's /48 over a week's /64", map[string]int{"2001:db8:1:7::/64": 7 * day})
	// A week's /48 replaces all: nothing of it lasts longer.
	ban(week, "2001:db8:1::/48")
	check("a week's /48", map[string]int{"2001:db8:1::/48": 7 * day})
}

// TestNFTablesHungNFT: an nft that does not finish (the kernel's nftables
// lock held by a stuck process) makes a ban fail after CommandTimeout, to
// be retried later, instead of holding the worker; and the ban does not
// then try to load the table, which would wait as long again.
func TestNFTablesHungNFT(t *testing.T) {
	const timeout = 200 * time.Millisecond
	n := &NFTables{Command: []string{"sh", "-c", "exec sleep 30"}, CommandTimeout: timeout}
	start := time.Now()
	err := n.Ban(context.Background(), netip.MustParseAddr("203.0.113.7"), "")
	if !errors.Is(err, errNoAnswer) {
		t.Errorf("Ban with a hung nft = %v, want no answer", err)
	}
	if d := time.Since(start); d > 2*time.Second {
		t.Errorf("Ban with a hung nft took %v, its timeout is %v", d, timeout)
	}
}

// The guard lifts an address's bans through UnbanAddress: the network
// that holds the address goes, whatever --ipv6-prefix says now, and other
// sign-ups' networks inside the one the address is grouped in now stay.
func TestNFTablesUnbanAddress(t *testing.T) {
	ns := netns(t)
	ctx := context.Background()
	n := &NFTables{Timeout: time.Hour, Command: []string{"ip", "netns", "exec", ns, "nft"}}
	for _, p := range []string{"2001:db8:1:5::/64", "2001:db8:1:6::/64", "2001:db8:9::/48"} {
		if err := n.BanNet(ctx, netip.MustParsePrefix(p), ""); err != nil {
			t.Fatal(err)
		}
	}
	if err := n.Ban(ctx, netip.MustParseAddr("203.0.113.7"), ""); err != nil {
		t.Fatal(err)
	}
	// Banned under --ipv6-prefix 64, restored under 48.
	g := Guard(n, Options{IPv6Prefix: 48})
	for _, ip := range []string{"2001:db8:1:5::7", "2001:db8:9:3::1", "203.0.113.7", "2001:db8:7::1"} {
		if err := g.Unban(ctx, netip.MustParseAddr(ip)); err != nil {
			t.Errorf("Unban(%s): %v", ip, err)
		}
	}
	if got := slices.Sorted(maps.Keys(elements(t, ns, DefaultTable, set6net))); !slices.Equal(got, []string{"2001:db8:1:6::/64"}) {
		t.Errorf("after the unbans vandals6net = %q, want the other sign-up's /64 alone", got)
	}
	if got := elements(t, ns, DefaultTable, set4); len(got) != 0 {
		t.Errorf("after the unbans vandals holds %v", got)
	}
}
