package app

import (
	"bytes"
	"cmp"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/bouncemilter/bouncemilter/internal/bounce"
	"github.com/bouncemilter/bouncemilter/internal/feed"
	"github.com/bouncemilter/bouncemilter/internal/filter"
	"github.com/bouncemilter/bouncemilter/internal/guard"
	"github.com/bouncemilter/bouncemilter/internal/registry"
	"github.com/bouncemilter/bouncemilter/internal/sfs"
)

// ErrPeersFailed is returned by FeedPull when the pull ran but the feed of
// at least one peer could not be fetched or verified; the summary says
// which were.
var ErrPeersFailed = fmt.Errorf("some peers failed: %w", ErrReported)

// FeedKeygen makes a minisign key pair for the feed: cfg.FeedKey the
// secret key, cfg.FeedKey.pub the public one, which it prints to out.
func FeedKeygen(cfg Config, out io.Writer) error {
	if cfg.FeedKey == "" {
		return usage("--key is required")
	}
	pub, err := feed.Keygen(cfg.FeedKey)
	if err != nil {
		return err
	}
	text, _ := pub.MarshalText()
	fmt.Fprintf(out, "secret key %s (keep it; mode 0600), public key %s.pub:\n%s\n", cfg.FeedKey, cfg.FeedKey, text)
	return nil
}

// FeedExport writes this instance's feed into cfg.FeedOut and says so on
// out.
func FeedExport(ctx context.Context, cfg Config, out io.Writer) error {
	if cfg.FeedKey == "" {
		return usage("--key, --name and --out are required")
	}
	reg, err := openRegistry(ctx, cfg.Registry)
	if err != nil {
		return err
	}
	defer reg.Close()
	export, err := cfg.exporter(reg)
	if err != nil {
		return err
	}
	f, err := export(ctx)
	if err != nil {
		return err
	}
	fmt.Fprintf(out, "feed %s made %s: %d IPs, %d addresses, in %s\n", f.Name, f.Made.Format(time.RFC3339), len(f.IPs), len(f.Addresses), cfg.FeedOut)
	return nil
}

// FeedPull fetches and verifies the peers' feeds once, bans what enough of
// them list, and prints the summary to out. It returns ErrPeersFailed when
// a peer failed.
func FeedPull(ctx context.Context, cfg Config, log *slog.Logger, out io.Writer) error {
	if !cfg.hasPeers() {
		return usage("no peers: give --peers or --peer, or feed-peers or feed-peer in the configuration file")
	}
	reg, err := openRegistry(ctx, cfg.Registry)
	if err != nil {
		return err
	}
	defer reg.Close()
	s, err := cfg.subscriber(reg, log)
	if err != nil {
		return err
	}
	sum, err := s.Pull(ctx)
	if err != nil {
		return err
	}
	fmt.Fprintf(out, "feed pull: %s\n", sum)
	if sum.Failed > 0 {
		return ErrPeersFailed
	}
	return nil
}

// PeerStatus is one line of FeedStatus.
type PeerStatus struct {
	Name         string    `json:"name"`
	URL          string    `json:"url,omitempty"`
	Weight       float64   `json:"weight,omitempty"`
	LastFetch    time.Time `json:"last_fetch"`
	LastAccepted time.Time `json:"last_accepted"`
	Made         time.Time `json:"made"`
	Entries      int       `json:"entries"`
	Errors       int       `json:"errors"`
	LastError    string    `json:"last_error,omitempty"`
}

// FeedStatus prints, for each configured peer (or, with none configured,
// each peer the registry knows), when its feed was last fetched and
// accepted: a table, or with asJSON one JSON object a peer.
func FeedStatus(ctx context.Context, cfg Config, asJSON bool, out io.Writer) error {
	reg, err := openRegistry(ctx, cfg.Registry)
	if err != nil {
		return err
	}
	defer reg.Close()
	var list []PeerStatus
	if cfg.hasPeers() {
		peers, err := loadPeers(cfg.FeedPeers, cfg.FeedPeerLines)
		if err != nil {
			return err
		}
		for _, p := range peers {
			st, err := reg.FeedPeerState(ctx, p.Name)
			if err != nil {
				return err
			}
			list = append(list, statusOf(st, p.URL, p.Weight))
		}
	} else {
		known, err := reg.FeedPeers(ctx)
		if err != nil {
			return err
		}
		for _, st := range known {
			list = append(list, statusOf(st, "", 0))
		}
	}
	if asJSON {
		enc := json.NewEncoder(out)
		for _, s := range list {
			enc.Encode(s)
		}
		return nil
	}
	tw := tabwriter.NewWriter(out, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "PEER\tLAST FETCH\tLAST ACCEPTED\tFEED MADE\tENTRIES\tERRORS\tLAST ERROR")
	for _, s := range list {
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%d\t%d\t%s\n", s.Name, when(s.LastFetch), when(s.LastAccepted), when(s.Made), s.Entries, s.Errors, s.LastError)
	}
	return tw.Flush()
}

func statusOf(st registry.FeedPeer, url string, weight float64) PeerStatus {
	return PeerStatus{Name: st.Name, URL: url, Weight: weight, LastFetch: st.LastFetch, LastAccepted: st.LastAccepted,
		Made: st.LastMade, Entries: st.Entries, Errors: st.Errors, LastError: st.LastError}
}

func when(t time.Time) string {
	if t.IsZero() {
		return "never"
	}
	return t.UTC().Format("2006-01-02 15:04:05Z")
}

func (c Config) hasPeers() bool { return c.FeedPeers != "" || len(c.FeedPeerLines) > 0 }

// afterSync returns what sync runs besides copying sign-ups and reading the
// logs: the export, the pull and the StopForumSpam reports the
// configuration asks for, or nil. A one-shot sync runs it after its run;
// sync --every in a loop of its own.
func (c Config) afterSync(reg *registry.DB, log *slog.Logger) (func(context.Context) error, error) {
	var export func(context.Context) (*feed.Feed, error)
	var err error
	if c.FeedKey != "" {
		if export, err = c.exporter(reg); err != nil {
			return nil, err
		}
	}
	var sub *feed.Subscriber
	if c.hasPeers() {
		if sub, err = c.subscriber(reg, log); err != nil {
			return nil, err
		}
	}
	rep, err := c.reporter(reg, log)
	if err != nil || (export == nil && sub == nil && rep == nil) {
		return nil, err
	}
	return func(ctx context.Context) error {
		if export != nil {
			fd, err := export(ctx)
			if err != nil {
				return err
			}
			log.Info("feed exported", "ips", len(fd.IPs), "addresses", len(fd.Addresses), "made", fd.Made)
		}
		if sub != nil {
			sum, err := sub.Pull(ctx)
			if err != nil {
				return fmt.Errorf("feed pull: %w", err)
			}
			log.Info("feed pulled", "summary", sum)
		}
		if rep != nil {
			sum, err := rep.Run(ctx)
			if err != nil {
				return fmt.Errorf("report to StopForumSpam: %w", err)
			}
			log.Info("StopForumSpam reports", "summary", sum)
		}
		return nil
	}, nil
}

// subscriber returns the subscriber of the configured peers.
func (c Config) subscriber(reg *registry.DB, log *slog.Logger) (*feed.Subscriber, error) {
	peers, err := loadPeers(c.FeedPeers, c.FeedPeerLines)
	if err != nil {
		return nil, err
	}
	if c.FeedThreshold <= 0 || c.FeedTimeout <= 0 || c.FeedMaxSize <= 0 {
		return nil, errors.New("--threshold, --feed-timeout and --feed-max-size must be positive")
	}
	return &feed.Subscriber{Peers: peers, Store: reg, Threshold: c.FeedThreshold, NeverBan: c.FeedNeverBan,
		IPv6Prefix: c.IPv6Prefix, Timeout: c.FeedTimeout, MaxSize: c.FeedMaxSize, Log: log.With("component", "feed")}, nil
}

// exporter returns a function that exports the feed with the configured
// key.
func (c Config) exporter(reg *registry.DB) (func(ctx context.Context) (*feed.Feed, error), error) {
	if c.FeedName == "" || c.FeedOut == "" {
		return nil, errors.New("exporting a feed needs --key, --name and --out")
	}
	key, err := feed.LoadKey(c.FeedKey)
	if err != nil {
		return nil, err
	}
	return func(ctx context.Context) (*feed.Feed, error) {
		return feed.Export(ctx, reg, key, c.FeedName, c.FeedTTL, c.FeedOut, time.Now())
	}, nil
}

// reporter returns the StopForumSpam reporter the configuration asks for,
// or nil.
func (c Config) reporter(reg *registry.DB, log *slog.Logger) (*sfs.Reporter, error) {
	if c.StopForumSpamKey == "" {
		return nil, nil
	}
	key := c.StopForumSpamKey
	if path, ok := strings.CutPrefix(key, "@"); ok {
		data, err := os.ReadFile(path)
		if err != nil {
			return nil, fmt.Errorf("--report-stopforumspam: %w", err)
		}
		key = strings.TrimSpace(string(data))
	}
	if key == "" || c.StopForumSpamInterval <= 0 {
		return nil, errors.New("--report-stopforumspam needs a key and a positive --stopforumspam-interval")
	}
	return &sfs.Reporter{Journal: reg, Key: key, URL: c.StopForumSpamURL, Interval: c.StopForumSpamInterval, Log: log.With("component", "stopforumspam")}, nil
}

// guard returns the outgoing guard the configuration describes, or nil
// when it is off.
func (c Config) guard(reg *registry.DB, policy bounce.Policy, log *slog.Logger, queued func()) (filter.Guard, error) {
	if !c.Guard {
		return nil, nil
	}
	gd := &guard.Guard{Journal: reg, Policy: policy, Log: log.With("component", "guard"), Queued: queued}
	if c.Resolver != "" {
		server := c.Resolver
		if server == "system" {
			server = ""
		}
		res, err := guard.NewResolver(server, c.GuardTimeout)
		if err != nil {
			return nil, fmt.Errorf("--resolver: %w", err)
		}
		gd.DNS = res
	}
	if c.hasPeers() {
		peers, err := loadPeers(c.FeedPeers, c.FeedPeerLines)
		if err != nil {
			return nil, err
		}
		gd.Peers = &feed.Subscriber{Peers: peers, Store: reg, Threshold: c.FeedThreshold}
	}
	return gd, nil
}

// loadPeers reads the peers of a peers file (none when path is "") and of
// lines, each one line of such a file; a name may appear once in all.
func loadPeers(path string, lines []string) ([]feed.Peer, error) {
	var text []byte
	if path != "" {
		data, err := os.ReadFile(path)
		if err != nil {
			return nil, err
		}
		text = append(data, '\n')
	}
	for _, l := range lines {
		text = append(text, l+"\n"...)
	}
	peers, err := feed.ParsePeers(bytes.NewReader(text))
	if err != nil {
		return nil, fmt.Errorf("%s: %w", cmp.Or(path, "--peer"), err)
	}
	return peers, nil
}
