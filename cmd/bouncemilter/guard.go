package main

import (
	"flag"

	"github.com/bouncemilter/bouncemilter/internal/app"
)

// bindGuard defines the flags of serve's outgoing guard.
func bindGuard(fs *flag.FlagSet, cfg *app.Config) {
	fs.BoolVar(&cfg.Guard, "guard", cfg.Guard, "stop MediaGoblin's mail to an address known bad (one that bounced here before, or listed by enough --feed-peers) or, with --resolver, whose domain takes no mail; journal the actions its bounce would have led to")
	fs.StringVar(&cfg.Resolver, "resolver", cfg.Resolver, "DNS server (`HOST[:PORT]`) the guard asks whether a recipient domain takes mail (null MX, or no MX and no A/AAAA); \"system\": the first nameserver of /etc/resolv.conf; empty: no DNS checks")
	fs.DurationVar(&cfg.GuardTimeout, "guard-timeout", cfg.GuardTimeout, "time bound of one domain check; a check that fails or times out lets the mail go")
	fs.StringVar(&cfg.FeedPeers, "feed-peers", cfg.FeedPeers, "peers `file` (as for feed pull): addresses enough of them list are known bad")
	fs.Var((*listFlag)(&cfg.FeedPeerLines), "feed-peer", "one peer, `\"NAME URL PUBLIC-KEY [WEIGHT]\"`, as a line of the peers file; repeatable")
	fs.Float64Var(&cfg.FeedThreshold, "feed-threshold", cfg.FeedThreshold, "sum of peer weights that makes an address known bad")
}
