// Package app puts bouncemilter together: configuration in, wired parts
// out, one function a command (Serve, Sync, Restore, Doctor, the feed and
// account commands, Parse, ...). The registry, MediaGoblin's database, the
// banner, the worker, the feeds' subscriber, exporter and StopForumSpam
// reporter and the outgoing guard are built the same way for every command
// that needs them, here and nowhere else, so that the commands cannot
// drift apart.
//
// The package decides nothing about bounces or bans (the internal packages
// do) and parses no command line (cmd/bouncemilter does).
package app

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/netip"
	"os"
	"path/filepath"
	"time"

	"github.com/bouncemilter/bouncemilter/internal/accesslog"
	"github.com/bouncemilter/bouncemilter/internal/banner"
	"github.com/bouncemilter/bouncemilter/internal/bounce"
	"github.com/bouncemilter/bouncemilter/internal/feed"
	"github.com/bouncemilter/bouncemilter/internal/filter"
	"github.com/bouncemilter/bouncemilter/internal/guard"
	"github.com/bouncemilter/bouncemilter/internal/mediagoblin"
	"github.com/bouncemilter/bouncemilter/internal/registry"
	"github.com/bouncemilter/bouncemilter/internal/sfs"
	"github.com/bouncemilter/bouncemilter/internal/syncer"
	"github.com/bouncemilter/bouncemilter/internal/worker"
)

// Defaults of the configuration.
const (
	DefaultMediaGoblinConfig = "/srv/mediagoblin.example.org/mediagoblin/mediagoblin.ini"
	DefaultRegistry          = "/var/lib/bouncemilter/registry.db"
	DefaultBanLog            = "/var/log/bouncemilter/bans.log"
	DefaultListen            = "inet:127.0.0.1:8891"
	// NoMediaGoblin as MediaGoblinConfig runs without MediaGoblin: the
	// first-run mode, where account bans wait in the queue.
	NoMediaGoblin = "none"
)

// Config is everything serve, sync, restore and doctor are configured
// with. Fields that do not concern a command are ignored by it.
type Config struct {
	// Shared.
	MediaGoblinConfig string
	MediaGoblinDB     string // replaces sql_engine when set
	Registry          string

	// The milter.
	Listen               string
	Sender               string // default: MediaGoblin's email_sender_address
	Window               time.Duration
	MaxSize              int
	SignReturnPath       bool
	Delimiter            string
	TrustReturnedHeaders bool
	DiscardSuspect       bool
	ShutdownGrace        time.Duration
	MetricsListen        string // "": no metrics
	MaxInFlight          int
	SocketGroup          string
	SocketMode           os.FileMode
	BounceDaemonName     string
	MediaGoblinClients   []netip.Prefix

	// IP bans.
	Banner         string
	BanLog         string
	Jail           string
	Fail2banSocket string
	BanDuration    time.Duration
	IPv6Prefix     int
	NeverBan       []netip.Prefix

	// The outgoing guard: off, or on with DNS checks through Resolver
	// ("system": resolv.conf's first nameserver; "": none) and the feed
	// peers' addresses.
	Guard        bool
	Resolver     string
	GuardTimeout time.Duration

	// Sync.
	AccessLogs     []string
	SignupLogs     []string
	TrustedProxies []netip.Prefix
	// TrustUnixSocket believes X-Forwarded-For of requests that came over
	// a unix socket (see syncer.Options).
	TrustUnixSocket bool
	Retention       time.Duration
	Every           time.Duration
	Follow          time.Duration
	LinkWindow      time.Duration
	Batch           int
	RefreshLimit    int

	// Feeds: the peers subscribed to (feed pull and status, sync, and
	// serve's guard) and this instance's own feed (feed export, sync).
	FeedPeers     string   // peers file
	FeedPeerLines []string // more lines of a peers file
	FeedThreshold float64
	FeedTimeout   time.Duration
	FeedMaxSize   int64
	FeedNeverBan  []netip.Prefix
	FeedKey       string // secret signing key; "": no export
	FeedName      string
	FeedOut       string
	FeedTTL       time.Duration

	// StopForumSpam reports after each sync run; StopForumSpamKey "": none,
	// "@PATH": read from a file.
	StopForumSpamKey      string
	StopForumSpamURL      string
	StopForumSpamInterval time.Duration

	// Doctor.
	Postconf    []string
	ServiceUser string
	SyncMaxAge  time.Duration
}

// Defaults returns the configuration of a standard installation.
func Defaults() Config {
	return Config{
		MediaGoblinConfig: DefaultMediaGoblinConfig,
		Registry:          DefaultRegistry,
		Listen:            DefaultListen,
		Window:            bounce.DefaultPolicy().Window,
		MaxSize:           filter.DefaultMaxSize,
		SignReturnPath:    true,
		Delimiter:         "+",
		ShutdownGrace:     10 * time.Second,
		MaxInFlight:       filter.DefaultMaxInFlight(),
		SocketMode:        0o660,
		BounceDaemonName:  "postfix-bounce",
		Banner:            banner.KindLog,
		BanLog:            DefaultBanLog,
		Jail:              banner.DefaultJail,
		BanDuration:       banner.DefaultTimeout,
		IPv6Prefix:        64,
		Guard:             true,
		GuardTimeout:      guard.DefaultTimeout,
		Retention:         syncer.DefaultRetention,
		Follow:            time.Second,
		LinkWindow:        accesslog.DefaultWindow,
		Batch:             syncer.DefaultBatch,
		RefreshLimit:      syncer.DefaultRefreshLimit,
		ServiceUser:       "bouncemilter",
		SyncMaxAge:        time.Hour,

		FeedThreshold:         feed.DefaultThreshold,
		FeedTimeout:           feed.DefaultTimeout,
		FeedMaxSize:           feed.DefaultMaxSize,
		FeedTTL:               feed.DefaultTTL,
		StopForumSpamURL:      sfs.DefaultURL,
		StopForumSpamInterval: sfs.DefaultInterval,
	}
}

// ErrUsage marks an error in the configuration itself, found before
// anything was opened: the command line is wrong (exit status 2).
var ErrUsage = errors.New("usage")

// ErrReported marks the failure of a command that printed what failed as
// it went (ErrFilesFailed, ErrPeersFailed): its caller says nothing more
// (exit status 1).
var ErrReported = errors.New("failure already reported")

func usage(format string, args ...any) error {
	return fmt.Errorf("%w: "+format, append([]any{ErrUsage}, args...)...)
}

// KeyFile is where the return-path signing key lives: beside the registry.
func (c Config) KeyFile() string {
	return filepath.Join(filepath.Dir(c.Registry), "returnpath.keys")
}

// mediaGoblin reads MediaGoblin's config; MediaGoblinDB, when set,
// replaces its database. NoMediaGoblin is the explicit first-run mode:
// MediaGoblin's default sender, no database. A path that does not exist is
// an error: a mistyped path must not leave the milter running on defaults
// that never match anything.
func (c Config) mediaGoblin(log *slog.Logger) (mediagoblin.Config, error) {
	if c.MediaGoblinConfig == NoMediaGoblin {
		log.Warn("running without MediaGoblin (--mediagoblin-config none): bounces are judged against the registry only and account bans wait",
			"sender", mediagoblin.DefaultEmailSender)
		return mediagoblin.Config{EmailSender: mediagoblin.DefaultEmailSender}, nil
	}
	cfg, err := mediagoblin.LoadConfig(c.MediaGoblinConfig)
	if err != nil {
		return cfg, err
	}
	if c.MediaGoblinDB != "" {
		err = cfg.UseDatabase(c.MediaGoblinDB)
	}
	return cfg, err
}

// errNoMediaGoblin keeps account actions waiting in first-run mode.
var errNoMediaGoblin = fmt.Errorf("no MediaGoblin configured (--mediagoblin-config none): %w", mediagoblin.ErrUnavailable)

func openMediaGoblin(ctx context.Context, cfg mediagoblin.Config) (*mediagoblin.DB, error) {
	if cfg.Backend == "" {
		return nil, errNoMediaGoblin
	}
	return mediagoblin.Open(ctx, cfg)
}

// banner builds the IP banner the configuration names, for banning
// (serve) or only for lifting bans (restore: a log line lifts nothing);
// allowFrom (nil: none) reads the registry's allow-listed IPs at each ban.
func (c Config) banner(log *slog.Logger, allowFrom func(context.Context) ([]netip.Prefix, error)) (banner.Banner, error) {
	return banner.New(c.Banner, banner.Options{
		LogPath: c.BanLog, Jail: c.Jail, Fail2banSocket: c.Fail2banSocket,
		Duration: c.BanDuration, IPv6Prefix: c.IPv6Prefix, Allow: c.NeverBan, AllowFrom: allowFrom,
		Log: log.With("component", "banner"),
	})
}

// accounts is MediaGoblin's database as the worker uses it, opened when
// first needed; in a dry run it bans no account.
func (c Config) accounts(mg mediagoblin.Config, reg *registry.DB, log *slog.Logger) worker.Accounts {
	var a worker.Accounts = &worker.LazyAccounts{Open: func(ctx context.Context) (worker.Accounts, error) {
		return openMediaGoblin(ctx, mg)
	}}
	if c.Banner == banner.KindDryRun {
		a = dryRunAccounts{next: a, reg: reg, v6bits: c.IPv6Prefix, log: log.With("component", "dry-run")}
	}
	return a
}

// dryRunAccounts logs the account bans it is asked for, with the IP ban
// that would follow, and refuses them (banner.ErrDryRun): with --banner
// dry-run nothing is banned at all, and the journal shows every ban that
// would have been, refused by the dry run (the IP ban then waits for an
// account ban that never comes, and is refused too). Unbans pass: lifting
// is harmless.
type dryRunAccounts struct {
	next   worker.Accounts
	reg    *registry.DB
	v6bits int
	log    *slog.Logger
}

func (d dryRunAccounts) BanUser(ctx context.Context, userID int64, reason string) error {
	args := []any{"user_id", userID}
	if d.reg != nil {
		if r, err := d.reg.Registration(ctx, userID); err == nil {
			args = append(args, "username", r.Username)
			if ip, err := netip.ParseAddr(r.IP); err == nil {
				args = append(args, "ip", banner.Group(ip, d.v6bits).String())
			}
		}
	}
	d.log.Warn("dry run: would ban", append(args, "reason", reason)...)
	return fmt.Errorf("ban user %d: %w", userID, banner.ErrDryRun)
}

func (d dryRunAccounts) UnbanUser(ctx context.Context, userID int64) error {
	return d.next.UnbanUser(ctx, userID)
}

// openRegistry opens the registry for a command that may create it.
func openRegistry(ctx context.Context, path string) (*registry.DB, error) {
	return registry.Open(ctx, path)
}

// OpenExisting opens the registry at path for a command that must not
// create one: a mistyped path is an error, not an empty registry.
func OpenExisting(ctx context.Context, path string) (*registry.DB, error) {
	fi, err := os.Stat(path)
	if err != nil {
		return nil, fmt.Errorf("registry: %w", err)
	}
	if !fi.Mode().IsRegular() {
		return nil, fmt.Errorf("registry %s: not a database file", path)
	}
	return registry.Open(ctx, path)
}
