package banner_test

import (
	"context"
	"errors"
	"fmt"
	"log"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/bouncemilter/bouncemilter/internal/banner"
)

// The milter's default: a line in the log that fail2ban's bouncemilter jail
// watches, guarded by an allow-list.
func ExampleNew() {
	dir, err := os.MkdirTemp("", "banner")
	if err != nil {
		log.Fatal(err)
	}
	defer os.RemoveAll(dir)
	path := filepath.Join(dir, "bans.log")

	b, err := banner.New(banner.KindLog, banner.Options{
		LogPath: path,
		Allow:   []netip.Prefix{netip.MustParsePrefix("192.0.2.0/24")}, // the reverse proxy's network
	})
	if err != nil {
		log.Fatal(err)
	}
	ctx := context.Background()
	for _, ip := range []string{"203.0.113.7", "192.0.2.10", "127.0.0.1"} {
		err := b.Ban(ctx, netip.MustParseAddr(ip), "5.1.1 bot@nowhere.example: user unknown")
		switch {
		case errors.Is(err, banner.ErrProtected):
			fmt.Println("refused:", err)
		case err != nil:
			log.Fatal(err)
		}
	}
	// Lifting a ban needs fail2ban-client: Options.Jail, and root.
	err = b.Unban(ctx, netip.MustParseAddr("203.0.113.7"))
	fmt.Println("unban:", errors.Is(err, banner.ErrUnbanUnsupported))

	data, err := os.ReadFile(path)
	if err != nil {
		log.Fatal(err)
	}
	// Drop the timestamp, which changes with each run.
	for line := range strings.Lines(string(data)) {
		_, rest, _ := strings.Cut(line, " ")
		fmt.Print(rest)
	}
	// Output:
	// refused: ban 192.0.2.10: address is protected from bans: allow-listed (192.0.2.0/24)
	// refused: ban 127.0.0.1: address is protected from bans: loopback address
	// unban: true
	// bouncemilter: ban 203.0.113.7 reason="5.1.1 bot@nowhere.example: user unknown"
}

func ExampleFormatLine() {
	at := time.Date(2026, 11, 26, 1, 2, 3, 0, time.UTC)
	fmt.Printf("%s", banner.FormatLine(at, netip.MustParseAddr("2001:db8::7"), "two\nlines"))
	// Output:
	// 2026-11-26T01:02:03Z bouncemilter: ban 2001:db8::7 reason="two\nlines"
}

// Whether an address may be banned at all, e.g. to warn about a sign-up
// that came through the reverse proxy.
func ExampleProtected() {
	allow := []netip.Prefix{netip.MustParsePrefix("10.0.0.0/8")}
	for _, ip := range []string{"203.0.113.7", "::ffff:10.1.2.3", "fe80::1"} {
		fmt.Printf("%s: %q\n", ip, banner.Protected(netip.MustParseAddr(ip), allow))
	}
	// Output:
	// 203.0.113.7: ""
	// ::ffff:10.1.2.3: "allow-listed (10.0.0.0/8)"
	// fe80::1: "link-local address"
}

// The nftables table, for /etc/nftables.conf or `nft -f`.
func ExampleNFTables_Ruleset() {
	n := &banner.NFTables{}
	fmt.Print(n.Ruleset())
	// Output:
	// # bouncemilter: addresses of sign-ups whose mail bounced as nonexistent.
	// add table inet bouncemilter
	// add set inet bouncemilter vandals { type ipv4_addr; flags timeout; }
	// add set inet bouncemilter vandals6 { type ipv6_addr; flags timeout; }
	// add set inet bouncemilter vandals6net { type ipv6_addr; flags interval, timeout; }
	// add chain inet bouncemilter input { type filter hook input priority -10; policy accept; }
	// flush chain inet bouncemilter input
	// add rule inet bouncemilter input ip saddr @vandals counter drop
	// add rule inet bouncemilter input ip6 saddr @vandals6 counter drop
	// add rule inet bouncemilter input ip6 saddr @vandals6net counter drop
}
