package main

import (
	"context"
	"flag"
	"fmt"
	"io"
	"log/slog"

	"github.com/bouncemilter/bouncemilter/internal/app"
)

const doctorUsage = `Usage: bouncemilter doctor [flags]

Checks the setup serve and sync run with (the same flags, or the same
configuration file): Postfix's milter settings (postconf), a milter
handshake on --listen, MediaGoblin's settings and database rights, the
registry and signing key as the service user opens them, the fail2ban jail
and its ban action's tools, the web logs, and the last sync. One line per
check, OK, WARN or FAIL, and for anything not OK the command that fixes
it. Exits 1 when a check fails.

Flags:
`

func runDoctor(ctx context.Context, args []string, stdout, stderr io.Writer, log *slog.Logger) int {
	fs := flag.NewFlagSet("doctor", flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.Usage = func() { fmt.Fprint(fs.Output(), doctorUsage); fs.PrintDefaults() }
	cfg := app.Defaults()
	bindDoctor(fs, &cfg)
	if err := parseFlags(fs, args, allKeys); err != nil {
		return exitCode(err)
	}
	if fs.NArg() > 0 {
		fmt.Fprintf(stderr, "bouncemilter doctor: unexpected arguments %q\n", fs.Args())
		return 2
	}
	if app.Doctor(ctx, cfg, log, stdout) {
		return 1
	}
	return 0
}

// bindDoctor defines doctor's flags: serve's and sync's (without the
// feeds', which doctor does not check), and its own.
func bindDoctor(fs *flag.FlagSet, cfg *app.Config) {
	bindCommon(fs, cfg)
	bindServe(fs, cfg)
	bindSync(fs, cfg, false)
	fs.StringVar(&cfg.ServiceUser, "service-user", cfg.ServiceUser, "the user serve and sync run as: files are checked as it opens them")
	fs.DurationVar(&cfg.SyncMaxAge, "sync-max-age", cfg.SyncMaxAge, "the last sync may be this old")
	fs.Var(wordsFlag{&cfg.Postconf}, "postconf", "the postconf `command` with its options, e.g. \"postconf -c /etc/postfix-out\"")
}

func defineDoctor(fs *flag.FlagSet) {
	cfg := app.Defaults()
	bindDoctor(fs, &cfg)
}
