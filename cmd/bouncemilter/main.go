// Command bouncemilter protects a GNU MediaGoblin instance with open
// registration from sign-ups with made-up addresses: a Postfix milter reads
// the bounces of MediaGoblin's verification mail, disables the accounts
// they prove fake and bans the IPs those sign-ups came from.
//
// Usage:
//
//	bouncemilter serve    the milter (and the worker that applies its actions)
//	bouncemilter sync     copy new MediaGoblin sign-ups and their IPs into the registry
//	bouncemilter accounts review and restore what was done
//	bouncemilter parse    show what a bounce message says
//	bouncemilter keys     rotate the return-path signing key
//	bouncemilter feed     publish and subscribe to signed feeds of vandal IPs and addresses
//
// Run `bouncemilter COMMAND --help` for each command's flags. This package
// only parses flags and wires the internal packages together.
package main

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/signal"
	"syscall"
)

const usage = `bouncemilter: a Postfix milter that disables MediaGoblin sign-ups whose verification mail bounces

Usage:
  bouncemilter serve    [flags]   run the milter and the action worker
  bouncemilter sync     [flags]   copy MediaGoblin sign-ups and their IPs into the registry
  bouncemilter accounts list|restore|allow [flags]
                                  review disabled accounts, restore a false positive, allow-list
  bouncemilter parse    [--json] FILE...
                                  show what bounce messages say
  bouncemilter keys rotate [flags]
                                  make a new return-path signing key
  bouncemilter feed keygen|export|pull|status [flags]
                                  share proven vandal IPs and addresses with other hosters

Run "bouncemilter COMMAND --help" for the flags of a command.
`

func main() {
	os.Exit(run(os.Args[1:], os.Stdout, os.Stderr))
}

func run(args []string, stdout, stderr io.Writer) int {
	if len(args) == 0 {
		fmt.Fprint(stderr, usage)
		return 2
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	log := newLogger(stderr)
	cmd, rest := args[0], args[1:]
	switch cmd {
	case "serve":
		return runServe(ctx, rest, stdout, stderr, log)
	case "sync":
		return runSync(ctx, rest, stdout, stderr, log)
	case "accounts":
		return runAccounts(ctx, rest, stdout, stderr, log)
	case "parse":
		return runParse(ctx, rest, stdout, stderr)
	case "keys":
		return runKeys(ctx, rest, stdout, stderr)
	case "feed":
		return runFeed(ctx, rest, stdout, stderr, log)
	case "help", "-h", "-help", "--help":
		fmt.Fprint(stdout, usage)
		return 0
	}
	fmt.Fprintf(stderr, "bouncemilter: unknown command %q\n\n%s", cmd, usage)
	return 2
}

// newLogger logs text lines to w, at the level named by BOUNCEMILTER_LOG_LEVEL
// (debug, info, warn, error; default info).
func newLogger(w io.Writer) *slog.Logger {
	var level slog.Level
	if err := level.UnmarshalText([]byte(os.Getenv("BOUNCEMILTER_LOG_LEVEL"))); err != nil {
		level = slog.LevelInfo
	}
	return slog.New(slog.NewTextHandler(w, &slog.HandlerOptions{Level: level}))
}
