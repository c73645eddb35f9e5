package main

import (
	"flag"
	"fmt"
	"log/slog"
	"time"

	"github.com/bouncemilter/bouncemilter/internal/bounce"
	"github.com/bouncemilter/bouncemilter/internal/feed"
	"github.com/bouncemilter/bouncemilter/internal/filter"
	"github.com/bouncemilter/bouncemilter/internal/guard"
	"github.com/bouncemilter/bouncemilter/internal/registry"
)

// guardFlags configure the outgoing guard of serve.
type guardFlags struct {
	on        *bool
	resolver  *string
	timeout   *time.Duration
	peers     *string
	peerLines listFlag
	threshold *float64
}

func (g *guardFlags) register(fs *flag.FlagSet) {
	g.on = fs.Bool("guard", true, "stop MediaGoblin's mail to an address known bad (one that bounced here before, or listed by enough --feed-peers) or, with --resolver, whose domain takes no mail; journal the actions its bounce would have led to")
	g.resolver = fs.String("resolver", "", "DNS server (`HOST[:PORT]`) the guard asks whether a recipient domain takes mail (null MX, or no MX and no A/AAAA); \"system\": the first nameserver of /etc/resolv.conf; empty: no DNS checks")
	g.timeout = fs.Duration("guard-timeout", guard.DefaultTimeout, "time bound of one domain check; a check that fails or times out lets the mail go")
	g.peers = fs.String("feed-peers", "", "peers `file` (as for feed pull): addresses enough of them list are known bad")
	fs.Var(&g.peerLines, "feed-peer", "one peer, `\"NAME URL PUBLIC-KEY [WEIGHT]\"`, as a line of the peers file; repeatable")
	g.threshold = fs.Float64("feed-threshold", feed.DefaultThreshold, "sum of peer weights that makes an address known bad")
}

// build returns the guard the flags describe, or nil when it is off.
func (g *guardFlags) build(reg *registry.DB, policy bounce.Policy, log *slog.Logger, queued func()) (filter.Guard, error) {
	if !*g.on {
		return nil, nil
	}
	gd := &guard.Guard{Journal: reg, Policy: policy, Log: log.With("component", "guard"), Queued: queued}
	if *g.resolver != "" {
		server := *g.resolver
		if server == "system" {
			server = ""
		}
		res, err := guard.NewResolver(server, *g.timeout)
		if err != nil {
			return nil, fmt.Errorf("--resolver: %w", err)
		}
		gd.DNS = res
	}
	if *g.peers != "" || len(g.peerLines) > 0 {
		peers, err := loadPeers(*g.peers, g.peerLines)
		if err != nil {
			return nil, err
		}
		gd.Peers = &feed.Subscriber{Peers: peers, Store: reg, Threshold: *g.threshold}
	}
	return gd, nil
}
