package app

import (
	"context"
	"time"

	"github.com/bouncemilter/bouncemilter/internal/feed"
	"github.com/bouncemilter/bouncemilter/internal/registry"
	"github.com/bouncemilter/bouncemilter/internal/review"
)

// listedBy names the peers whose unexpired feed entries hold the sign-up's
// IP and its address.
func listedBy(ctx context.Context, reg *registry.DB, r registry.Registration, now time.Time) (review.ListedBy, error) {
	l := review.ListedBy{IP: []string{}}
	var err error
	if r.IP != "" {
		if l.IP, err = reg.ListedBy(ctx, "ip", r.IP, now); err != nil {
			return l, err
		}
	}
	l.Address, err = reg.ListedBy(ctx, "address", feed.HashAddress(r.Email), now)
	return l, err
}

// peerCounts counts, for each peer, the accounts disabled since since
// whose IP or address it lists now.
func peerCounts(ctx context.Context, reg *registry.DB, since, now time.Time) ([]registry.PeerCount, error) {
	peers, err := reg.FeedPeers(ctx)
	if err != nil || len(peers) == 0 {
		return nil, err
	}
	disabled, err := reg.DisabledAccountsWhere(ctx, registry.ListFilter{Since: since})
	if err != nil {
		return nil, err
	}
	counts := map[string]*registry.PeerCount{}
	out := make([]registry.PeerCount, len(peers))
	for i, p := range peers {
		out[i].Peer = p.Name
		counts[p.Name] = &out[i]
	}
	for _, d := range disabled {
		l, err := listedBy(ctx, reg, d.Registration, now)
		if err != nil {
			return nil, err
		}
		for _, p := range l.IP {
			if c := counts[p]; c != nil {
				c.IPs++
			}
		}
		for _, p := range l.Address {
			if c := counts[p]; c != nil {
				c.Addresses++
			}
		}
	}
	return out, nil
}
