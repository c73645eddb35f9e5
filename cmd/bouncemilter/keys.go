package main

import (
	"context"
	"flag"
	"fmt"
	"io"

	"github.com/bouncemilter/bouncemilter/internal/app"
	"github.com/bouncemilter/bouncemilter/internal/returnpath"
)

const keysUsage = `Usage:
  bouncemilter keys rotate [--registry PATH] [--grace DURATION]

Makes a new key for signing MediaGoblin's envelope sender. Tags made with the
old key keep verifying for --grace (default: the tags' lifetime, serve's
--window from the configuration file, plus a day), then it is dropped;
--grace 0 drops it at once (a leaked key). Send SIGHUP to the running milter
(systemctl reload bouncemilter) so that it signs with the new key.
`

func runKeys(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	if len(args) == 0 || args[0] != "rotate" {
		fmt.Fprint(stderr, keysUsage)
		return 2
	}
	fs := flag.NewFlagSet("keys rotate", flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.Usage = func() { fmt.Fprint(stderr, keysUsage+"\nFlags:\n"); fs.PrintDefaults() }
	cfg := app.Defaults()
	fs.StringVar(&cfg.Registry, "registry", cfg.Registry, "the registry SQLite database; the key file returnpath.keys lives beside it")
	fs.DurationVar(&cfg.Window, "window", cfg.Window, "serve's --window: how long its tags live")
	grace := fs.Duration("grace", returnpath.DefaultGrace, "how long the old key keeps verifying")
	if err := parseFlags(fs, args[1:], map[string]bool{"registry": true, "window": true}); err != nil {
		return exitCode(err)
	}
	if *grace == returnpath.DefaultGrace {
		// serve's tags live --window (Signer.MaxAge).
		*grace = returnpath.GraceFor(cfg.Window)
	}
	return exit(stderr, "keys rotate", app.RotateKeys(cfg, *grace, stdout))
}
