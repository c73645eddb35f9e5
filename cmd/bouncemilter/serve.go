package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"os"
	"strconv"

	"github.com/bouncemilter/bouncemilter/internal/app"
)

const serveUsage = `Usage: bouncemilter serve [flags]

Runs the milter that Postfix's smtpd_milters and non_smtpd_milters point at
(see contrib/postfix), and the worker that applies its decisions: bans in
MediaGoblin's core__user_bans and IP bans. Mail that is not a bounce of
MediaGoblin's own mail is accepted unread. On SIGTERM it finishes the
messages in flight; on SIGHUP it re-reads the return-path signing keys.
Settings come from the flags and from --config (default
` + DefaultConfig + `); a flag wins.

Flags:
`

func runServe(ctx context.Context, args []string, stdout, stderr io.Writer, log *slog.Logger) int {
	fs := flag.NewFlagSet("serve", flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.Usage = func() { fmt.Fprint(fs.Output(), serveUsage); fs.PrintDefaults() }
	cfg := app.Defaults()
	bindCommon(fs, &cfg)
	bindServe(fs, &cfg)
	if err := parseFlags(fs, args, allKeys); err != nil {
		return exitCode(err)
	}
	if fs.NArg() > 0 {
		fmt.Fprintf(stderr, "bouncemilter serve: unexpected arguments %q\n", fs.Args())
		return 2
	}
	return exit(stderr, "serve", app.Serve(ctx, cfg, log))
}

// exit reports err and turns it into an exit status: 2 for a usage error,
// 1 for any other.
func exit(stderr io.Writer, cmd string, err error) int {
	if err == nil {
		return 0
	}
	if errors.Is(err, app.ErrReported) {
		return 1 // what failed was printed already
	}
	fmt.Fprintf(stderr, "bouncemilter %s: %v\n", cmd, err)
	if errors.Is(err, app.ErrUsage) {
		return 2
	}
	return 1
}

// bindCommon defines the flags every command that reads MediaGoblin and the
// registry shares.
func bindCommon(fs *flag.FlagSet, cfg *app.Config) {
	fs.StringVar(&cfg.MediaGoblinConfig, "mediagoblin-config", cfg.MediaGoblinConfig, "MediaGoblin's `mediagoblin.ini` (mediagoblin_local.ini beside it is preferred); gives the database and email_sender_address. \"none\" (serve only): run without MediaGoblin (first run: account bans wait in the queue)")
	fs.StringVar(&cfg.MediaGoblinDB, "mediagoblin-db", cfg.MediaGoblinDB, "connect to MediaGoblin's database with this `URL` (sql_engine syntax) instead of sql_engine, e.g. bouncemilter's own PostgreSQL role: postgresql:///mediagoblin")
	fs.StringVar(&cfg.Registry, "registry", cfg.Registry, "the registry SQLite `database` (created if missing); the signing key lives beside it")
}

// bindServe defines serve's own flags.
func bindServe(fs *flag.FlagSet, cfg *app.Config) {
	fs.StringVar(&cfg.Listen, "listen", cfg.Listen, "milter socket: inet:HOST:PORT or unix:PATH (as in Postfix's smtpd_milters)")
	fs.StringVar(&cfg.Sender, "sender", cfg.Sender, "the address bounces come back to; default: email_sender_address from the MediaGoblin config")
	fs.StringVar(&cfg.Banner, "banner", cfg.Banner, "how to ban IPs: log (a line in --ban-log for fail2ban), fail2ban (fail2ban-client), nftables, none, or dry-run (journal and log what would be banned, ban nothing: neither accounts nor IPs)")
	fs.StringVar(&cfg.BanLog, "ban-log", cfg.BanLog, "with --banner log: the file fail2ban's bouncemilter jail watches")
	fs.StringVar(&cfg.Jail, "fail2ban-jail", cfg.Jail, "the fail2ban jail to ban in and unban from")
	fs.StringVar(&cfg.Fail2banSocket, "fail2ban-socket", cfg.Fail2banSocket, "fail2ban's socket, when not the system's (fail2ban-client -s)")
	fs.DurationVar(&cfg.BanDuration, "ban-duration", cfg.BanDuration, "how long an IP ban lasts: nftables' element timeout; the jail's bantime with --banner fail2ban (set at the first ban); with --banner log the jail's bantime decides (doctor compares)")
	fs.IntVar(&cfg.IPv6Prefix, "ipv6-prefix", cfg.IPv6Prefix, "ban the network of this many bits around an IPv6 sign-up address (64: the subnet a host picks addresses from at will); 128 or 0: the address alone. Never a network that holds a --never-ban address")
	fs.DurationVar(&cfg.Window, "window", cfg.Window, "act only on sign-ups younger than this")
	fs.IntVar(&cfg.MaxSize, "max-size", cfg.MaxSize, "read at most this many bytes of a bounce; a longer one is never discarded")
	fs.BoolVar(&cfg.SignReturnPath, "sign-return-path", cfg.SignReturnPath, "rewrite the envelope sender of MediaGoblin's mail to a signed local+TAG@domain address, so that forged bounces are recognised (needs recipient_delimiter = + in Postfix)")
	fs.StringVar(&cfg.Delimiter, "recipient-delimiter", cfg.Delimiter, "Postfix's recipient_delimiter")
	fs.BoolVar(&cfg.TrustReturnedHeaders, "trust-returned-headers", cfg.TrustReturnedHeaders, "with --sign-return-path=false only: also accept bounces whose returned From and To are exactly the sender and an address mail was recorded to. No authentication at all: anybody can write those headers (only for setups where MediaGoblin's mail bypasses this Postfix)")
	fs.BoolVar(&cfg.DiscardSuspect, "discard-suspect", cfg.DiscardSuspect, "discard bounces that cannot be shown to answer this instance's mail, instead of delivering them")
	fs.DurationVar(&cfg.ShutdownGrace, "shutdown-grace", cfg.ShutdownGrace, "on SIGTERM, wait this long for messages in flight and the actions they queued")
	fs.IntVar(&cfg.MaxInFlight, "max-inflight", cfg.MaxInFlight, "read at most this many messages at once; a bounce beyond it is accepted unread, never delayed or refused")
	fs.StringVar(&cfg.SocketGroup, "socket-group", cfg.SocketGroup, "with --listen unix:PATH: the socket's group, Postfix's (postfix); only the owner and this group can connect")
	fs.Var(octalMode{&cfg.SocketMode}, "socket-mode", "with --listen unix:PATH: the socket's permissions (octal)")
	fs.StringVar(&cfg.BounceDaemonName, "bounce-daemon-name", cfg.BounceDaemonName, "the {daemon_name} of the cleanup service Postfix's bounce daemon uses (milter_macro_daemon_name in contrib/postfix/master.cf); only with --sign-return-path=false does it matter: a local bounce without it is not taken as Postfix's own. \"\": any local bounce is, and any local user can forge one")
	fs.Var((*prefixFlag)(&cfg.MediaGoblinClients), "mediagoblin-client", "an address or CIDR MediaGoblin's SMTP connections to Postfix come from; repeatable. Only mail from these (default: loopback, over SMTP) counts as MediaGoblin's: recorded, its sender signed")
	fs.Var((*prefixFlag)(&cfg.NeverBan), "never-ban", "an address or CIDR never to ban (your reverse proxy, your office); repeatable. Loopback, link-local and multicast are never banned anyway")
	fs.StringVar(&cfg.MetricsListen, "metrics-listen", cfg.MetricsListen, "serve Prometheus metrics on this `HOST:PORT` at /metrics (e.g. 127.0.0.1:9464); empty: no metrics")
	bindGuard(fs, cfg)
}

// defineServe defines serve's flags on fs, for the list of settings a
// configuration file may hold.
func defineServe(fs *flag.FlagSet) {
	cfg := app.Defaults()
	bindCommon(fs, &cfg)
	bindServe(fs, &cfg)
}

// octalMode is a permission flag written in octal.
type octalMode struct{ m *os.FileMode }

func (o octalMode) String() string {
	if o.m == nil {
		return "0660"
	}
	return fmt.Sprintf("%#o", uint32(*o.m))
}

func (o octalMode) Set(v string) error {
	n, err := strconv.ParseUint(v, 8, 32)
	if err != nil || n > 0o777 {
		return fmt.Errorf("%q is not an octal permission", v)
	}
	*o.m = os.FileMode(n)
	return nil
}
