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
//	bouncemilter doctor   check the whole setup
//
// Run `bouncemilter COMMAND --help` for each command's flags. This package
// only parses flags into a configuration and calls internal/app (or the
// package that does the job); the exit status says how it went: 0 done,
// 1 failed, 2 usage error.
package main

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/signal"
	"strings"
	"syscall"
)

const usage = `bouncemilter: a Postfix milter that disables MediaGoblin sign-ups whose
verification mail bounces

Usage:
  bouncemilter serve [flags]      run the milter and the action worker
  bouncemilter sync [flags]       copy MediaGoblin sign-ups and their IPs into
                                  the registry
  bouncemilter accounts list|show|stats|restore|allow [flags]
                                  review what was done and why, the numbers per
                                  day, restore a false positive, allow-list
  bouncemilter doctor [flags]     check Postfix, the milter, MediaGoblin,
                                  fail2ban, the registry and sync, each problem
                                  with its fix
  bouncemilter parse [--json] FILE...
                                  show what bounce messages say
  bouncemilter keys rotate [flags]
                                  make a new return-path signing key
  bouncemilter feed keygen|export|pull|status [flags]
                                  share proven vandal IPs and addresses with
                                  other hosters

Run "bouncemilter COMMAND --help" for the flags of a command. Flags may come
before or after names. serve, sync and doctor read
` + DefaultConfig + ` (or --config FILE); a flag on the
command line wins. --log-format json makes every command log JSON lines.
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
	args, format, err := logFormat(args)
	if err != nil {
		fmt.Fprintf(stderr, "bouncemilter: %v\n", err)
		return 2
	}
	log := newLogger(stderr, format)
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
	case "doctor":
		return runDoctor(ctx, rest, stdout, stderr, log)
	case "help", "-h", "-help", "--help":
		fmt.Fprint(stdout, usage)
		return 0
	}
	fmt.Fprintf(stderr, "bouncemilter: unknown command %q\n\n%s", cmd, usage)
	return 2
}

// newLogger logs to w in format ("text" or "json"), at the level named by
// BOUNCEMILTER_LOG_LEVEL (debug, info, warn, error; default info).
func newLogger(w io.Writer, format string) *slog.Logger {
	var level slog.Level
	if err := level.UnmarshalText([]byte(os.Getenv("BOUNCEMILTER_LOG_LEVEL"))); err != nil {
		level = slog.LevelInfo
	}
	opts := &slog.HandlerOptions{Level: level}
	if format == "json" {
		return slog.New(slog.NewJSONHandler(w, opts))
	}
	return slog.New(slog.NewTextHandler(w, opts))
}

// logFormat takes --log-format out of args, wherever it is (every command
// has it, and the logger is made before the command parses its flags);
// without it, the log-format of the configuration file (--config or the
// default) decides, then "text".
func logFormat(args []string) (rest []string, format string, err error) {
	config := DefaultConfig
	for i := 0; i < len(args); i++ {
		a := args[i]
		if a == "--" {
			rest = append(rest, args[i:]...)
			break
		}
		name, value, hasValue := strings.Cut(strings.TrimLeft(a, "-"), "=")
		if !strings.HasPrefix(a, "--") || (name != "log-format" && name != "config") {
			rest = append(rest, a)
			continue
		}
		if !hasValue {
			if i+1 >= len(args) {
				return nil, "", fmt.Errorf("flag needs an argument: --%s", name)
			}
			i++
			value = args[i]
		}
		if name == "config" {
			// serve, sync and doctor read it too.
			config = value
			rest = append(rest, "--config="+value)
			continue
		}
		format = value
	}
	if format == "" {
		format = configValue(config, "log-format")
	}
	switch format {
	case "", "text":
		return rest, "text", nil
	case "json":
		return rest, "json", nil
	}
	return nil, "", fmt.Errorf("--log-format %q: want text or json", format)
}

// configValue returns the value of key in the configuration file at path,
// "" when the file or the key is missing (parseFlags reports a bad file).
func configValue(path, key string) string {
	data, err := os.ReadFile(path)
	if err != nil {
		return ""
	}
	v := ""
	for _, l := range strings.Split(string(data), "\n") {
		k, val, ok := strings.Cut(l, "=")
		if ok && strings.TrimSpace(k) == key {
			v = strings.Trim(strings.TrimSpace(val), `"`)
		}
	}
	return v
}
