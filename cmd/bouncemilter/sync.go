package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"os"
	"time"

	"github.com/bouncemilter/bouncemilter/internal/accesslog"
	"github.com/bouncemilter/bouncemilter/internal/mediagoblin"
	"github.com/bouncemilter/bouncemilter/internal/registry"
	"github.com/bouncemilter/bouncemilter/internal/syncer"
)

const syncUsage = `Usage: bouncemilter sync [flags]

Copies MediaGoblin's new sign-ups (username, email, created, verified,
admin/moderator) into the registry, refreshes recent unverified ones, prunes
those older than --retention, and links sign-ups to their IP address from the
web server's logs. Reads MediaGoblin's database only. Runs once and exits
non-zero on any error, or with --every keeps running and retries with
back-off.

Flags:
`

func runSync(ctx context.Context, args []string, stdout, stderr io.Writer, log *slog.Logger) int {
	fs := flag.NewFlagSet("sync", flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.Usage = func() {
		fmt.Fprint(fs.Output(), syncUsage)
		fs.PrintDefaults()
	}
	var (
		accessLogs, signupLogs listFlag
		trusted                prefixFlag
		mgConfig               = fs.String("mediagoblin-config", defaultMediaGoblinConfig, "MediaGoblin's `mediagoblin.ini` (mediagoblin_local.ini beside it is preferred); its sql_engine names the database")
		regPath                = fs.String("registry", defaultRegistry, "the registry SQLite `database` (created if missing)")
		retention              = fs.Duration("retention", syncer.DefaultRetention, "keep sign-ups this long; older ones are neither copied nor kept")
		mgDB                   = fs.String("mediagoblin-db", "", "connect to MediaGoblin's database with this `URL` (sql_engine syntax) instead of sql_engine, e.g. bouncemilter's own PostgreSQL role: postgresql:///mediagoblin")
		every                  = fs.Duration("every", 0, "keep running and sync at this `interval` (e.g. 1m); 0 syncs once and exits")
		follow                 = fs.Duration("follow", time.Second, "with --every: read what the logs gained this `often` between full syncs, as fail2ban follows a log (0: only at full syncs)")
		window                 = fs.Duration("link-window", accesslog.DefaultWindow, "combined logs: how long after a sign-up POST the GET of /u/USERNAME/ from the same address counts as its redirect")
		batch                  = fs.Int("batch", syncer.DefaultBatch, "users read per statement and written per registry transaction")
		refreshLimit           = fs.Int("refresh-limit", syncer.DefaultRefreshLimit, "re-read at most this many recent unverified sign-ups per run (the next run goes on where this one stopped)")
	)
	fs.Var(&accessLogs, "access-log", "web server access `log` in combined format (nginx or Apache), read incrementally across rotation; repeatable")
	fs.Var(&signupLogs, "signup-log", "sign-up `log` written by contrib/nginx or contrib/apache (records the Location header: exact links); repeatable")
	var ff feedFlags
	ff.publish(fs, "feed-")
	ff.subscribe(fs, "feed-")
	ff.report(fs)
	trustUnix := fs.Bool("trust-unix-socket-proxy", false, "believe the logged X-Forwarded-For of requests that came over a unix socket (remote \"unix:\"): only when that socket is your reverse proxy's alone; any local user who can reach it can write the header")
	fs.Var(&trusted, "trusted-proxy", "reverse proxy `address or CIDR` whose logged X-Forwarded-For is believed; repeatable (prefer the web server's realip/remoteip module)")
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return 0
		}
		return 2
	}
	if fs.NArg() > 0 {
		fmt.Fprintf(stderr, "bouncemilter sync: unexpected arguments %q\n", fs.Args())
		return 2
	}
	if *every < 0 || *follow < 0 || *retention <= 0 || *batch <= 0 || *refreshLimit <= 0 {
		fmt.Fprintln(stderr, "bouncemilter sync: --every, --follow, --retention, --batch and --refresh-limit must be positive")
		return 2
	}

	cfg, err := mediagoblin.LoadConfig(*mgConfig)
	if err == nil && *mgDB != "" {
		err = cfg.UseDatabase(*mgDB)
	}
	if err != nil {
		fmt.Fprintf(stderr, "bouncemilter sync: %v\n", err)
		return 1
	}
	cfg.ReadOnly = true // sync never writes to MediaGoblin's database
	reg, err := registry.Open(ctx, *regPath)
	if err != nil {
		fmt.Fprintf(stderr, "bouncemilter sync: %v\n", err)
		return 1
	}
	defer reg.Close()
	feeds, err := ff.afterSync(reg, log)
	if err != nil {
		fmt.Fprintf(stderr, "bouncemilter sync: %v\n", err)
		return 1
	}

	opts := syncer.Options{
		Retention:       *retention,
		Batch:           *batch,
		RefreshLimit:    *refreshLimit,
		AccessLogs:      accessLogs,
		SignupLogs:      signupLogs,
		TrustedProxies:  trusted,
		TrustUnixSocket: *trustUnix,
		Window:          *window,
		Log:             log,
	}
	if isTerminal(stderr) && *every == 0 {
		opts.Terminal = stderr
	}
	once := func(ctx context.Context) error {
		// A fresh connection each run: after MediaGoblin's database was
		// restarted or its file replaced, nothing stale is kept.
		mg, err := mediagoblin.Open(ctx, cfg)
		if err != nil {
			return err
		}
		defer mg.Close()
		sum, err := syncer.Run(ctx, mg, reg, opts)
		if err != nil {
			return err
		}
		log.Info("sync done", "summary", sum)
		if *every == 0 {
			fmt.Fprintf(stdout, "sync: %s\n", sum)
		}
		return nil
	}

	if feeds != nil {
		// The feeds do not wait for MediaGoblin's database: a run
		// exports and pulls even when the sync fails.
		syncOnly := once
		once = func(ctx context.Context) error { return errors.Join(syncOnly(ctx), feeds(ctx)) }
	}

	log.Info("sync", "database", cfg.SourceRedacted(), "registry", *regPath,
		"access_logs", len(accessLogs), "signup_logs", len(signupLogs), "every", *every)
	if *every == 0 {
		if err := once(ctx); err != nil {
			fmt.Fprintf(stderr, "bouncemilter sync: %v\n", err)
			return 1
		}
		return 0
	}
	openMG := func(ctx context.Context) (syncer.Source, func(), error) {
		mg, err := mediagoblin.Open(ctx, cfg)
		if err != nil {
			return nil, nil, err
		}
		return mg, func() { mg.Close() }, nil
	}
	logsOnce := func(ctx context.Context) error {
		sum, err := syncer.RunLogs(ctx, openMG, reg, opts)
		if err == nil && sum.Lines > 0 {
			log.Info("logs followed", "summary", sum)
		}
		return err
	}
	err = syncer.Follow(ctx, *every, *follow, log, once, logsOnce)
	if errors.Is(err, context.Canceled) || errors.Is(err, context.DeadlineExceeded) {
		log.Info("sync stopped")
		return 0
	}
	fmt.Fprintf(stderr, "bouncemilter sync: %v\n", err)
	return 1
}

// isTerminal reports whether w is a terminal, where a progress line can be
// redrawn in place.
func isTerminal(w io.Writer) bool {
	f, ok := w.(*os.File)
	if !ok {
		return false
	}
	fi, err := f.Stat()
	return err == nil && fi.Mode()&os.ModeCharDevice != 0
}
