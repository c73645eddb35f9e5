package main

import (
	"bytes"
	"cmp"
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"os"
	"strconv"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/bouncemilter/bouncemilter/internal/feed"
	"github.com/bouncemilter/bouncemilter/internal/registry"
	"github.com/bouncemilter/bouncemilter/internal/sfs"
)

const feedUsage = `Usage:
  bouncemilter feed keygen --key PATH
  bouncemilter feed export --registry PATH --key PATH --name NAME --out DIR [--ttl DURATION]
  bouncemilter feed pull   --registry PATH [--peers FILE] [--peer LINE]... [--threshold N]
                           [--never-ban CIDR]... [--config FILE]
  bouncemilter feed status --registry PATH [--peers FILE] [--peer LINE]... [--json]

Shares what this instance proved with other MediaGoblin hosters. keygen makes
a minisign key pair (PATH secret, PATH.pub public). export writes feed.json,
feed.json.minisig and feed.txt into DIR for your web server to publish. pull
fetches the peers' feeds, verifies them, and bans the IPs that peers whose
weights add up to --threshold list. The peers file has one peer a line:
NAME URL-OF-FEED.JSON PUBLIC-KEY [WEIGHT]; --peer takes one such line.
Without --peers and --peer, pull and status read feed-peers and feed-peer
from the configuration file that serve and sync read.
`

// feedFlags are the subscription and publication flags, shared by `feed
// pull`/`feed export` and `sync --every`.
type feedFlags struct {
	peers     *string
	peerLines listFlag
	threshold *float64
	timeout   *time.Duration
	maxSize   *int64
	neverBan  prefixFlag

	key  *string
	name *string
	out  *string
	ttl  *time.Duration

	sfsKey      *string
	sfsURL      *string
	sfsInterval *time.Duration
}

// report registers the StopForumSpam flags (sync only).
func (f *feedFlags) report(fs *flag.FlagSet) {
	f.sfsKey = fs.String("report-stopforumspam", "", "report each confirmed vandal (username, IP, address) to StopForumSpam with this API `key` (@PATH reads it from a file); restored and allow-listed accounts never")
	f.sfsURL = fs.String("stopforumspam-url", sfs.DefaultURL, "StopForumSpam's submission `URL`")
	f.sfsInterval = fs.Duration("stopforumspam-interval", sfs.DefaultInterval, "least time between two reports")
}

// reporter returns the StopForumSpam reporter the flags ask for, or nil.
func (f *feedFlags) reporter(reg *registry.DB, log *slog.Logger) (*sfs.Reporter, error) {
	if f.sfsKey == nil || *f.sfsKey == "" {
		return nil, nil
	}
	key := *f.sfsKey
	if path, ok := strings.CutPrefix(key, "@"); ok {
		data, err := os.ReadFile(path)
		if err != nil {
			return nil, fmt.Errorf("--report-stopforumspam: %w", err)
		}
		key = strings.TrimSpace(string(data))
	}
	if key == "" || *f.sfsInterval <= 0 {
		return nil, errors.New("--report-stopforumspam needs a key and a positive --stopforumspam-interval")
	}
	return &sfs.Reporter{Journal: reg, Key: key, URL: *f.sfsURL, Interval: *f.sfsInterval, Log: log.With("component", "stopforumspam")}, nil
}

// subscribe registers the subscription flags; sync names them with the
// prefix "feed-".
func (f *feedFlags) subscribe(fs *flag.FlagSet, prefix string) {
	f.peers = fs.String(prefix+"peers", "", "peers `file`: one peer a line, NAME URL PUBLIC-KEY [WEIGHT]")
	fs.Var(&f.peerLines, prefix+"peer", "one peer, `\"NAME URL PUBLIC-KEY [WEIGHT]\"`, as a line of the peers file; repeatable (a configuration file takes one line per peer)")
	f.threshold = fs.Float64(prefix+"threshold", feed.DefaultThreshold, "ban an IP when peers whose weights add up to this list it (peers with one key count once)")
	f.timeout = fs.Duration("feed-timeout", feed.DefaultTimeout, "time allowed to fetch one peer's feed and signature")
	f.maxSize = fs.Int64("feed-max-size", feed.DefaultMaxSize, "largest feed.json accepted, in bytes")
	fs.Var(&f.neverBan, prefix+"never-ban", "an address or CIDR never to ban, whatever the peers say; repeatable")
}

// publish registers the export flags; sync names them with the prefix
// "feed-".
func (f *feedFlags) publish(fs *flag.FlagSet, prefix string) {
	f.key = fs.String(prefix+"key", "", "the feed's secret signing `key` (made by feed keygen)")
	f.name = fs.String(prefix+"name", "", "this instance's name in its feed (letters, digits, . _ -)")
	f.out = fs.String(prefix+"out", "", "`directory` to write feed.json, feed.json.minisig and feed.txt into")
	f.ttl = fs.Duration(prefix+"ttl", feed.DefaultTTL, "an entry expires this long after it was last seen")
}

// afterSync returns what sync runs after each of its runs: the export and
// the pull its flags ask for, or nil.
func (f *feedFlags) afterSync(reg *registry.DB, log *slog.Logger) (func(context.Context) error, error) {
	export, err := f.exporter(reg)
	if err != nil {
		return nil, err
	}
	sub, err := f.subscriber(reg, log)
	if err != nil {
		return nil, err
	}
	rep, err := f.reporter(reg, log)
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

// subscriber returns the subscriber the flags describe, or nil without
// --peers.
func (f *feedFlags) subscriber(reg *registry.DB, log *slog.Logger) (*feed.Subscriber, error) {
	if *f.peers == "" && len(f.peerLines) == 0 {
		return nil, nil
	}
	peers, err := loadPeers(*f.peers, f.peerLines)
	if err != nil {
		return nil, err
	}
	if *f.threshold <= 0 || *f.timeout <= 0 || *f.maxSize <= 0 {
		return nil, errors.New("--threshold, --feed-timeout and --feed-max-size must be positive")
	}
	return &feed.Subscriber{Peers: peers, Store: reg, Threshold: *f.threshold, NeverBan: f.neverBan,
		Timeout: *f.timeout, MaxSize: *f.maxSize, Log: log.With("component", "feed")}, nil
}

// exporter returns a function that exports the feed, or nil without --key.
func (f *feedFlags) exporter(reg *registry.DB) (func(ctx context.Context) (*feed.Feed, error), error) {
	if *f.key == "" {
		return nil, nil
	}
	if *f.name == "" || *f.out == "" {
		return nil, errors.New("exporting a feed needs --key, --name and --out")
	}
	key, err := feed.LoadKey(*f.key)
	if err != nil {
		return nil, err
	}
	return func(ctx context.Context) (*feed.Feed, error) {
		return feed.Export(ctx, reg, key, *f.name, *f.ttl, *f.out, time.Now())
	}, nil
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

// peersFromConfig fills the subscription flags that the command line left
// empty from the configuration file that serve and sync read (--config, or
// DefaultConfig when it exists): its feed-peers, feed-peer, feed-threshold
// and feed-never-ban settings.
func (f *feedFlags) peersFromConfig(config string) error {
	if *f.peers != "" || len(f.peerLines) > 0 {
		return nil
	}
	conf := flag.NewFlagSet("config", flag.ContinueOnError)
	conf.SetOutput(io.Discard)
	defineSync(conf)
	// The flags were set through pflag, which fs.Visit does not see: a
	// path other than the default was given.
	var args []string
	if config != DefaultConfig {
		args = []string{"--config", config}
	}
	if err := parseFlags(conf, args, allKeys); err != nil {
		return fmt.Errorf("configuration file %s: %w", config, err)
	}
	*f.peers = conf.Lookup("feed-peers").Value.String()
	f.peerLines = *conf.Lookup("feed-peer").Value.(*listFlag)
	if *f.threshold == feed.DefaultThreshold {
		*f.threshold, _ = strconv.ParseFloat(conf.Lookup("feed-threshold").Value.String(), 64)
	}
	if len(f.neverBan) == 0 {
		f.neverBan = *conf.Lookup("feed-never-ban").Value.(*prefixFlag)
	}
	return nil
}

func runFeed(ctx context.Context, args []string, stdout, stderr io.Writer, log *slog.Logger) int {
	if len(args) == 0 {
		fmt.Fprint(stderr, feedUsage)
		return 2
	}
	sub := args[0]
	fs := flag.NewFlagSet("feed "+sub, flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.Usage = func() { fmt.Fprint(stderr, feedUsage+"\nFlags:\n"); fs.PrintDefaults() }
	var ff feedFlags
	regPath := fs.String("registry", defaultRegistry, "the registry SQLite database")
	asJSON := new(bool)
	var config *string
	switch sub {
	case "keygen":
		ff.key = fs.String("key", "", "where to write the secret key (PATH.pub gets the public key)")
	case "export":
		ff.publish(fs, "")
	case "pull", "status":
		ff.subscribe(fs, "")
		config = fs.String("config", DefaultConfig, "without --peers or --peer: the configuration `file` whose feed-peers, feed-peer, feed-threshold and feed-never-ban settings to use")
		if sub == "status" {
			asJSON = fs.Bool("json", false, "print one JSON object per peer")
		}
	default:
		fmt.Fprintf(stderr, "bouncemilter feed: unknown command %q\n\n%s", sub, feedUsage)
		return 2
	}
	if err := parseFlags(fs, args[1:], nil); err != nil {
		return exitCode(err)
	}
	if config != nil {
		if err := ff.peersFromConfig(*config); err != nil {
			fmt.Fprintf(stderr, "bouncemilter feed %s: %v\n", sub, err)
			return 2
		}
	}
	fail := func(err error) int {
		fmt.Fprintf(stderr, "bouncemilter feed %s: %v\n", sub, err)
		return 1
	}
	if sub == "keygen" {
		if *ff.key == "" {
			fmt.Fprintln(stderr, "bouncemilter feed keygen: --key is required")
			return 2
		}
		pub, err := feed.Keygen(*ff.key)
		if err != nil {
			return fail(err)
		}
		text, _ := pub.MarshalText()
		fmt.Fprintf(stdout, "secret key %s (keep it; mode 0600), public key %s.pub:\n%s\n", *ff.key, *ff.key, text)
		return 0
	}
	reg, err := registry.Open(ctx, *regPath)
	if err != nil {
		return fail(err)
	}
	defer reg.Close()
	switch sub {
	case "export":
		if *ff.key == "" {
			fmt.Fprintln(stderr, "bouncemilter feed export: --key, --name and --out are required")
			return 2
		}
		export, err := ff.exporter(reg)
		if err != nil {
			return fail(err)
		}
		f, err := export(ctx)
		if err != nil {
			return fail(err)
		}
		fmt.Fprintf(stdout, "feed %s made %s: %d IPs, %d addresses, in %s\n", f.Name, f.Made.Format(time.RFC3339), len(f.IPs), len(f.Addresses), *ff.out)
	case "pull":
		if *ff.peers == "" && len(ff.peerLines) == 0 {
			fmt.Fprintln(stderr, "bouncemilter feed pull: no peers: give --peers or --peer, or feed-peers or feed-peer in the configuration file")
			return 2
		}
		s, err := ff.subscriber(reg, log)
		if err != nil {
			return fail(err)
		}
		sum, err := s.Pull(ctx)
		if err != nil {
			return fail(err)
		}
		fmt.Fprintf(stdout, "feed pull: %s\n", sum)
		if sum.Failed > 0 {
			return 1
		}
	case "status":
		return feedStatus(ctx, reg, *ff.peers, ff.peerLines, *asJSON, stdout, stderr)
	}
	return 0
}

// peerStatus is one line of `feed status`.
type peerStatus struct {
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

func feedStatus(ctx context.Context, reg *registry.DB, peersFile string, peerLines []string, asJSON bool, stdout, stderr io.Writer) int {
	known, err := reg.FeedPeers(ctx)
	if err != nil {
		fmt.Fprintf(stderr, "bouncemilter feed status: %v\n", err)
		return 1
	}
	var out []peerStatus
	seen := map[string]bool{}
	configured := peersFile != "" || len(peerLines) > 0
	if configured {
		peers, err := loadPeers(peersFile, peerLines)
		if err != nil {
			fmt.Fprintf(stderr, "bouncemilter feed status: %v\n", err)
			return 1
		}
		for _, p := range peers {
			st, err := reg.FeedPeerState(ctx, p.Name)
			if err != nil {
				fmt.Fprintf(stderr, "bouncemilter feed status: %v\n", err)
				return 1
			}
			out = append(out, statusOf(st, p.URL, p.Weight))
			seen[p.Name] = true
		}
	}
	for _, st := range known {
		if !seen[st.Name] && !configured {
			out = append(out, statusOf(st, "", 0))
		}
	}
	if asJSON {
		enc := json.NewEncoder(stdout)
		for _, s := range out {
			enc.Encode(s)
		}
		return 0
	}
	tw := tabwriter.NewWriter(stdout, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "PEER\tLAST FETCH\tLAST ACCEPTED\tFEED MADE\tENTRIES\tERRORS\tLAST ERROR")
	for _, s := range out {
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%d\t%d\t%s\n", s.Name, when(s.LastFetch), when(s.LastAccepted), when(s.Made), s.Entries, s.Errors, s.LastError)
	}
	tw.Flush()
	return 0
}

func statusOf(st registry.FeedPeer, url string, weight float64) peerStatus {
	return peerStatus{Name: st.Name, URL: url, Weight: weight, LastFetch: st.LastFetch, LastAccepted: st.LastAccepted,
		Made: st.LastMade, Entries: st.Entries, Errors: st.Errors, LastError: st.LastError}
}

func when(t time.Time) string {
	if t.IsZero() {
		return "never"
	}
	return t.UTC().Format("2006-01-02 15:04:05Z")
}
