package main

import (
	"context"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"os"

	"github.com/bouncemilter/bouncemilter/internal/app"
)

const syncUsage = `Usage: bouncemilter sync [flags]

Copies MediaGoblin's new sign-ups (username, email, created, verified,
admin/moderator) into the registry, refreshes recent unverified ones, prunes
those older than --retention, and links sign-ups to their IP address from the
web server's logs. Reads MediaGoblin's database only. Runs once and exits
non-zero on any error, or with --every keeps running and retries with
back-off. Settings come from the flags and from --config (default
` + DefaultConfig + `); a flag wins.

Flags:
`

func runSync(ctx context.Context, args []string, stdout, stderr io.Writer, log *slog.Logger) int {
	fs := flag.NewFlagSet("sync", flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.Usage = func() { fmt.Fprint(fs.Output(), syncUsage); fs.PrintDefaults() }
	cfg := app.Defaults()
	bindCommon(fs, &cfg)
	bindSync(fs, &cfg, true)
	if err := parseFlags(fs, args, allKeys); err != nil {
		return exitCode(err)
	}
	if fs.NArg() > 0 {
		fmt.Fprintf(stderr, "bouncemilter sync: unexpected arguments %q\n", fs.Args())
		return 2
	}
	var terminal io.Writer
	if isTerminal(stderr) {
		terminal = stderr
	}
	return exit(stderr, "sync", app.Sync(ctx, cfg, log, stdout, terminal))
}

// bindSync defines sync's own flags; feeds adds those of the feeds it
// exports and pulls, and of the StopForumSpam reports.
func bindSync(fs *flag.FlagSet, cfg *app.Config, feeds bool) {
	fs.DurationVar(&cfg.Retention, "retention", cfg.Retention, "keep sign-ups this long; older ones are neither copied nor kept")
	fs.DurationVar(&cfg.Every, "every", cfg.Every, "keep running and sync at this `interval` (e.g. 1m); 0 syncs once and exits")
	fs.DurationVar(&cfg.Follow, "follow", cfg.Follow, "with --every: read what the logs gained this `often` between full syncs, as fail2ban follows a log (0: only at full syncs)")
	fs.DurationVar(&cfg.LinkWindow, "link-window", cfg.LinkWindow, "combined logs: how long after a sign-up POST the GET of /u/USERNAME/ from the same address counts as its redirect")
	fs.IntVar(&cfg.Batch, "batch", cfg.Batch, "users read per statement and written per registry transaction")
	fs.IntVar(&cfg.RefreshLimit, "refresh-limit", cfg.RefreshLimit, "re-read at most this many recent unverified sign-ups per run (the next run goes on where this one stopped)")
	fs.Var((*listFlag)(&cfg.AccessLogs), "access-log", "web server access `log` in combined format (nginx or Apache), read incrementally across rotation; repeatable")
	fs.Var((*listFlag)(&cfg.SignupLogs), "signup-log", "sign-up `log` written by contrib/nginx or contrib/apache (records the Location header: exact links); repeatable")
	fs.BoolVar(&cfg.TrustUnixSocket, "trust-unix-socket-proxy", cfg.TrustUnixSocket, "believe the logged X-Forwarded-For of requests that came over a unix socket (remote \"unix:\"): only when that socket is your reverse proxy's alone; any local user who can reach it can write the header")
	fs.Var((*prefixFlag)(&cfg.TrustedProxies), "trusted-proxy", "reverse proxy `address or CIDR` whose logged X-Forwarded-For is believed; repeatable (prefer the web server's realip/remoteip module)")
	if feeds {
		bindPublish(fs, cfg, "feed-")
		bindSubscribe(fs, cfg, "feed-")
		bindReport(fs, cfg)
	}
}

// defineSync defines sync's flags on fs, for the list of settings a
// configuration file may hold.
func defineSync(fs *flag.FlagSet) {
	cfg := app.Defaults()
	bindCommon(fs, &cfg)
	bindSync(fs, &cfg, true)
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
