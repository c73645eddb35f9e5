package main

import (
	"context"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/signal"
	"path/filepath"
	"strconv"
	"sync"
	"syscall"
	"time"

	"github.com/bouncemilter/bouncemilter/internal/banner"
	"github.com/bouncemilter/bouncemilter/internal/bounce"
	"github.com/bouncemilter/bouncemilter/internal/filter"
	"github.com/bouncemilter/bouncemilter/internal/mediagoblin"
	"github.com/bouncemilter/bouncemilter/internal/registry"
	"github.com/bouncemilter/bouncemilter/internal/returnpath"
	"github.com/bouncemilter/bouncemilter/internal/signups"
	"github.com/bouncemilter/bouncemilter/internal/worker"
)

// Defaults shared by the commands.
const (
	defaultMediaGoblinConfig = "/srv/mediagoblin.example.org/mediagoblin/mediagoblin.ini"
	defaultRegistry          = "/var/lib/bouncemilter/registry.db"
	defaultBanLog            = "/var/log/bouncemilter/bans.log"
	defaultListen            = "inet:127.0.0.1:8891"
)

func runServe(ctx context.Context, args []string, stdout, stderr io.Writer, log *slog.Logger) int {
	fs := flag.NewFlagSet("serve", flag.ContinueOnError)
	fs.SetOutput(stderr)
	var (
		listen      = fs.String("listen", defaultListen, "milter socket: inet:HOST:PORT or unix:PATH (as in Postfix's smtpd_milters)")
		mgConfig    = fs.String("mediagoblin-config", defaultMediaGoblinConfig, "MediaGoblin's `mediagoblin.ini` (mediagoblin_local.ini beside it is preferred); gives the database and email_sender_address. \"none\": run without MediaGoblin (first run: account bans wait in the queue)")
		mgDB        = fs.String("mediagoblin-db", "", "connect to MediaGoblin's database with this `URL` (sql_engine syntax) instead of sql_engine, e.g. bouncemilter's own PostgreSQL role: postgresql:///mediagoblin")
		sender      = fs.String("sender", "", "the address bounces come back to; default: email_sender_address from the MediaGoblin config")
		regPath     = fs.String("registry", defaultRegistry, "the registry SQLite database (created if missing); the signing key lives beside it")
		banKind     = fs.String("banner", "log", "how to ban IPs: log (a line in --ban-log for fail2ban), fail2ban (fail2ban-client), nftables, or none")
		banLog      = fs.String("ban-log", defaultBanLog, "with --banner log: the file fail2ban's bouncemilter jail watches")
		jail        = fs.String("fail2ban-jail", "bouncemilter", "the fail2ban jail to ban in and unban from")
		socket      = fs.String("fail2ban-socket", "", "fail2ban's socket, when not the system's (fail2ban-client -s)")
		window      = fs.Duration("window", bounce.DefaultPolicy().Window, "act only on sign-ups younger than this")
		maxSize     = fs.Int("max-size", filter.DefaultMaxSize, "read at most this many bytes of a bounce; a longer one is never discarded")
		sign        = fs.Bool("sign-return-path", true, "rewrite the envelope sender of MediaGoblin's mail to a signed local+TAG@domain address, so that forged bounces are recognised (needs recipient_delimiter = + in Postfix)")
		delimiter   = fs.String("recipient-delimiter", "+", "Postfix's recipient_delimiter")
		trustHdrs   = fs.Bool("trust-returned-headers", false, "with --sign-return-path=false only: also accept bounces whose returned From and To are exactly the sender and an address mail was recorded to. No authentication at all: anybody can write those headers (only for setups where MediaGoblin's mail bypasses this Postfix)")
		discardSusp = fs.Bool("discard-suspect", false, "discard bounces that cannot be shown to answer this instance's mail, instead of delivering them")
		grace       = fs.Duration("shutdown-grace", 10*time.Second, "on SIGTERM, wait this long for messages in flight")
		maxInflight = fs.Int("max-inflight", filter.DefaultMaxInFlight(), "read at most this many messages at once; a bounce beyond it is accepted unread, never delayed or refused")
		sockGroup   = fs.String("socket-group", "", "with --listen unix:PATH: the socket's group, Postfix's (postfix); only the owner and this group can connect")
		sockMode    = fs.String("socket-mode", "0660", "with --listen unix:PATH: the socket's permissions (octal)")
		daemonName  = fs.String("bounce-daemon-name", "postfix-bounce", "the {daemon_name} of the cleanup service Postfix's bounce daemon uses (milter_macro_daemon_name in contrib/postfix/master.cf); only with --sign-return-path=false does it matter: a local bounce without it is not taken as Postfix's own. \"\": any local bounce is, and any local user can forge one")
		neverBan    prefixFlag
		mgClients   prefixFlag
	)
	var gf guardFlags
	gf.register(fs)
	fs.Var(&mgClients, "mediagoblin-client", "an address or CIDR MediaGoblin's SMTP connections to Postfix come from; repeatable. Only mail from these (default: loopback, over SMTP) counts as MediaGoblin's: recorded, its sender signed")
	fs.Var(&neverBan, "never-ban", "an address or CIDR never to ban (your reverse proxy, your office); repeatable. Loopback, link-local and multicast are never banned anyway")
	fs.Usage = func() {
		fmt.Fprint(stderr, `Usage: bouncemilter serve [flags]

Runs the milter that Postfix's smtpd_milters and non_smtpd_milters point at
(see contrib/postfix), and the worker that applies its decisions: bans in
MediaGoblin's core__user_bans and IP bans. Mail that is not a bounce of
MediaGoblin's own mail is accepted unread. On SIGTERM it finishes the
messages in flight; on SIGHUP it re-reads the return-path signing keys.

Flags:
`)
		fs.PrintDefaults()
	}
	if err := fs.Parse(args); err != nil {
		return 2
	}

	if *trustHdrs && *sign {
		fmt.Fprintln(stderr, "bouncemilter serve: --trust-returned-headers needs --sign-return-path=false: with signed return paths a valid tag is the only proof a bounce is genuine")
		return 2
	}
	// A bad socket spec is a usage error: say so before touching anything.
	if _, _, err := filter.ParseSpec(*listen); err != nil {
		fmt.Fprintf(stderr, "bouncemilter serve: %v\n", err)
		return 2
	}
	mode, err := strconv.ParseUint(*sockMode, 8, 32)
	if err != nil || mode > 0o777 {
		fmt.Fprintf(stderr, "bouncemilter serve: --socket-mode %q is not an octal permission\n", *sockMode)
		return 2
	}
	cfg, err := loadMediaGoblin(*mgConfig, *mgDB, log)
	if err != nil {
		fmt.Fprintf(stderr, "bouncemilter serve: %v\n", err)
		return 1
	}
	if *sender == "" {
		*sender = cfg.EmailSender
	}

	reg, err := registry.Open(ctx, *regPath)
	if err != nil {
		fmt.Fprintf(stderr, "bouncemilter serve: %v\n", err)
		return 1
	}
	defer reg.Close()

	ipBanner, err := banner.New(*banKind, banner.Options{LogPath: *banLog, Jail: *jail, Fail2banSocket: *socket, Allow: neverBan})
	if err != nil {
		fmt.Fprintf(stderr, "bouncemilter serve: %v\n", err)
		return 1
	}

	accounts := &worker.LazyAccounts{Open: func(ctx context.Context) (worker.Accounts, error) {
		return openMediaGoblin(ctx, cfg)
	}}
	w := worker.New(reg, accounts, ipBanner, log.With("component", "worker"))
	// An IP ban queued by sync (its sign-up's IP was linked after the
	// bounce) is applied within a second.
	w.Poll = time.Second
	copier := &signups.Copier{Registry: reg, Log: log.With("component", "signups"),
		Open: func(ctx context.Context) (signups.Source, error) {
			ro := cfg
			ro.ReadOnly = true
			return openMediaGoblin(ctx, ro)
		}}

	handler := &bounce.Handler{
		Journal:              signups.Journal{Journal: reg, Copier: copier},
		Policy:               bounce.Policy{Window: *window, Skew: bounce.DefaultPolicy().Skew},
		Sender:               *sender,
		TrustReturnedHeaders: *trustHdrs,
		DiscardSuspect:       *discardSusp,
		Log:                  log,
		Queued:               w.Wake,
	}
	outGuard, err := gf.build(reg, handler.Policy, log, w.Wake)
	if err != nil {
		fmt.Fprintf(stderr, "bouncemilter serve: %v\n", err)
		return 1
	}
	var rewriter filter.Rewriter
	if *sign {
		keys, err := returnpath.LoadOrCreate(filepath.Join(filepath.Dir(*regPath), "returnpath.keys"))
		if err != nil {
			fmt.Fprintf(stderr, "bouncemilter serve: %v\n", err)
			return 1
		}
		signer := &returnpath.Signer{Keys: keys, MaxAge: *window, Delimiter: *delimiter}
		handler.Tags = signer
		rewriter = signer
		go reloadOnHangup(ctx, keys, log)
	}

	f, err := filter.New(filter.Config{Sender: *sender, Delimiter: *delimiter, MaxSize: *maxSize, Signups: copier, Guard: outGuard,
		MediaGoblinClients: mgClients, BounceDaemonName: *daemonName, MaxInFlight: *maxInflight}, handler, reg, rewriter, log.With("component", "milter"))
	if err != nil {
		fmt.Fprintf(stderr, "bouncemilter serve: %v\n", err)
		return 1
	}
	ln, err := filter.Listen(*listen, filter.Socket{Group: *sockGroup, Mode: os.FileMode(mode)})
	if err != nil {
		fmt.Fprintf(stderr, "bouncemilter serve: %v\n", err)
		return 1
	}
	log.Info("serving", "listen", *listen, "sender", *sender, "registry", *regPath, "banner", *banKind,
		"mediagoblin", cfg.SourceRedacted(), "signed_return_path", *sign)

	var wg sync.WaitGroup
	wctx, stopWorker := context.WithCancel(context.WithoutCancel(ctx))
	wg.Add(1)
	go func() {
		defer wg.Done()
		w.Run(wctx)
	}()
	err = f.Serve(ctx, ln, *grace)
	// Let the worker finish what the last sessions queued, briefly.
	w.Wake()
	time.Sleep(100 * time.Millisecond)
	stopWorker()
	wg.Wait()
	if err != nil {
		fmt.Fprintf(stderr, "bouncemilter serve: %v\n", err)
		return 1
	}
	log.Info("stopped")
	return 0
}

// loadMediaGoblin reads MediaGoblin's config; db, when set, replaces its
// database. "none" is the explicit first-run mode: MediaGoblin's default
// sender, no database (account bans wait in the queue). A path that does
// not exist is an error: a mistyped path must not leave the milter running
// on defaults that never match anything.
func loadMediaGoblin(path, db string, log *slog.Logger) (mediagoblin.Config, error) {
	if path == "none" {
		log.Warn("running without MediaGoblin (--mediagoblin-config none): bounces are judged against the registry only and account bans wait",
			"sender", mediagoblin.DefaultEmailSender)
		return mediagoblin.Config{EmailSender: mediagoblin.DefaultEmailSender}, nil
	}
	cfg, err := mediagoblin.LoadConfig(path)
	if err != nil {
		return cfg, err
	}
	if db != "" {
		err = cfg.UseDatabase(db)
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

// reloadOnHangup re-reads the signing keys on SIGHUP, so that a key rotated
// from the command line is used without a restart.
func reloadOnHangup(ctx context.Context, keys *returnpath.Keyring, log *slog.Logger) {
	hup := make(chan os.Signal, 1)
	signal.Notify(hup, syscall.SIGHUP)
	defer signal.Stop(hup)
	for {
		select {
		case <-ctx.Done():
			return
		case <-hup:
			if err := keys.Reload(); err != nil {
				log.Error("reloading signing keys failed; keeping the old ones", "err", err)
				continue
			}
			log.Info("signing keys reloaded")
		}
	}
}
