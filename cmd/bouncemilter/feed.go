package main

import (
	"context"
	"flag"
	"fmt"
	"io"
	"log/slog"

	"github.com/bouncemilter/bouncemilter/internal/app"
	"github.com/bouncemilter/bouncemilter/internal/feed"
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

// bindReport defines the StopForumSpam flags (sync only).
func bindReport(fs *flag.FlagSet, cfg *app.Config) {
	fs.StringVar(&cfg.StopForumSpamKey, "report-stopforumspam", cfg.StopForumSpamKey, "report each confirmed vandal (username, IP, address) to StopForumSpam with this API `key` (@PATH reads it from a file); restored and allow-listed accounts never")
	fs.StringVar(&cfg.StopForumSpamURL, "stopforumspam-url", cfg.StopForumSpamURL, "StopForumSpam's submission `URL`")
	fs.DurationVar(&cfg.StopForumSpamInterval, "stopforumspam-interval", cfg.StopForumSpamInterval, "least time between two reports")
}

// bindSubscribe defines the subscription flags; sync names them with the
// prefix "feed-".
func bindSubscribe(fs *flag.FlagSet, cfg *app.Config, prefix string) {
	fs.StringVar(&cfg.FeedPeers, prefix+"peers", cfg.FeedPeers, "peers `file`: one peer a line, NAME URL PUBLIC-KEY [WEIGHT]")
	fs.Var((*listFlag)(&cfg.FeedPeerLines), prefix+"peer", "one peer, `\"NAME URL PUBLIC-KEY [WEIGHT]\"`, as a line of the peers file; repeatable (a configuration file takes one line per peer)")
	fs.Float64Var(&cfg.FeedThreshold, prefix+"threshold", cfg.FeedThreshold, "ban an IP when peers whose weights add up to this list it (peers with one key count once)")
	fs.DurationVar(&cfg.FeedTimeout, "feed-timeout", cfg.FeedTimeout, "time allowed to fetch one peer's feed and signature")
	fs.Int64Var(&cfg.FeedMaxSize, "feed-max-size", cfg.FeedMaxSize, "largest feed.json accepted, in bytes")
	fs.Var((*prefixFlag)(&cfg.FeedNeverBan), prefix+"never-ban", "an address or CIDR never to ban, whatever the peers say; repeatable")
	fs.IntVar(&cfg.IPv6Prefix, "ipv6-prefix", cfg.IPv6Prefix, "serve's --ipv6-prefix: a shared ban is not lifted while another ban covers the network the banner grouped it in")
}

// bindPublish defines the export flags; sync names them with the prefix
// "feed-".
func bindPublish(fs *flag.FlagSet, cfg *app.Config, prefix string) {
	fs.StringVar(&cfg.FeedKey, prefix+"key", cfg.FeedKey, "the feed's secret signing `key` (made by feed keygen)")
	fs.StringVar(&cfg.FeedName, prefix+"name", cfg.FeedName, "this instance's name in its feed (letters, digits, . _ -)")
	fs.StringVar(&cfg.FeedOut, prefix+"out", cfg.FeedOut, "`directory` to write feed.json, feed.json.minisig and feed.txt into")
	fs.DurationVar(&cfg.FeedTTL, prefix+"ttl", cfg.FeedTTL, "an entry expires this long after it was last seen")
}

// peersFromConfig fills the subscription settings that the command line
// left empty from the configuration file that serve and sync read
// (--config, or DefaultConfig when it exists): its feed-peers, feed-peer,
// feed-threshold, feed-never-ban and ipv6-prefix settings. Peers named on
// the command line replace the file's; the other settings are read from
// the file all the same, for they are the instance's, not the peers'.
func peersFromConfig(cfg *app.Config, config string) error {
	conf := flag.NewFlagSet("config", flag.ContinueOnError)
	conf.SetOutput(io.Discard)
	file := app.Defaults()
	bindCommon(conf, &file)
	bindSync(conf, &file, true)
	// The flags were set through pflag, which fs.Visit does not see: a
	// path other than the default was given.
	var args []string
	if config != DefaultConfig {
		args = []string{"--config", config}
	}
	if err := parseFlags(conf, args, allKeys); err != nil {
		return fmt.Errorf("configuration file %s: %w", config, err)
	}
	if cfg.FeedPeers == "" && len(cfg.FeedPeerLines) == 0 {
		cfg.FeedPeers, cfg.FeedPeerLines = file.FeedPeers, file.FeedPeerLines
	}
	if cfg.FeedThreshold == feed.DefaultThreshold {
		cfg.FeedThreshold = file.FeedThreshold
	}
	if len(cfg.FeedNeverBan) == 0 {
		cfg.FeedNeverBan = file.FeedNeverBan
	}
	if cfg.IPv6Prefix == app.Defaults().IPv6Prefix {
		cfg.IPv6Prefix = file.IPv6Prefix
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
	cfg := app.Defaults()
	fs.StringVar(&cfg.Registry, "registry", cfg.Registry, "the registry SQLite database")
	var asJSON bool
	var config *string
	switch sub {
	case "keygen":
		fs.StringVar(&cfg.FeedKey, "key", "", "where to write the secret key (PATH.pub gets the public key)")
	case "export":
		bindPublish(fs, &cfg, "")
	case "pull", "status":
		bindSubscribe(fs, &cfg, "")
		config = fs.String("config", DefaultConfig, "without --peers or --peer: the configuration `file` whose feed-peers, feed-peer, feed-threshold, feed-never-ban and ipv6-prefix settings to use")
		if sub == "status" {
			fs.BoolVar(&asJSON, "json", false, "print one JSON object per peer")
		}
	default:
		fmt.Fprintf(stderr, "bouncemilter feed: unknown command %q\n\n%s", sub, feedUsage)
		return 2
	}
	if err := parseFlags(fs, args[1:], nil); err != nil {
		return exitCode(err)
	}
	if config != nil {
		if err := peersFromConfig(&cfg, *config); err != nil {
			fmt.Fprintf(stderr, "bouncemilter feed %s: %v\n", sub, err)
			return 2
		}
	}
	var err error
	switch sub {
	case "keygen":
		err = app.FeedKeygen(cfg, stdout)
	case "export":
		err = app.FeedExport(ctx, cfg, stdout)
	case "pull":
		err = app.FeedPull(ctx, cfg, log, stdout)
	case "status":
		err = app.FeedStatus(ctx, cfg, asJSON, stdout)
	}
	return exit(stderr, "feed "+sub, err)
}
