package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"net/netip"
	"strings"
	"time"

	"github.com/bouncemilter/bouncemilter/internal/app"
	"github.com/bouncemilter/bouncemilter/internal/banner"
	"github.com/bouncemilter/bouncemilter/internal/registry"
)

const accountsUsage = `Usage:
  bouncemilter accounts list [--registry PATH] [--state STATE]... [--since WHEN]
                             [--ip CIDR] [--domain DOMAIN] [--json]
  bouncemilter accounts show [--registry PATH] [--mediagoblin-config PATH]
                             [--json] USER|EMAIL|IP...
  bouncemilter accounts stats [--registry PATH] [--days N] [--json]
  bouncemilter accounts restore [--registry PATH] [--mediagoblin-config PATH]
                             [--banner fail2ban|nftables|none] [--note TEXT]
                             USERNAME...
  bouncemilter accounts allow [--registry PATH] [--note TEXT]
                             (--user NAME | --email ADDRESS | --ip ADDRESS)...

Flags may come before or after the names. --registry and --mediagoblin-config
default to those of the configuration file,
` + DefaultConfig + `.
`

// reviewKeys are the settings of the configuration file the accounts
// commands take: where things are, and how serve bans (restore lifts a ban
// where serve put it), not how serve runs.
var reviewKeys = map[string]bool{"registry": true, "mediagoblin-config": true, "mediagoblin-db": true,
	"banner": true, "fail2ban-jail": true, "fail2ban-socket": true, "ipv6-prefix": true}

func runAccounts(ctx context.Context, args []string, stdout, stderr io.Writer, log *slog.Logger) int {
	if len(args) == 0 {
		fmt.Fprint(stderr, accountsUsage)
		return 2
	}
	run := map[string]func(context.Context, []string, io.Writer, io.Writer, *slog.Logger) int{
		"list": runAccountsList, "show": runAccountsShow, "stats": runAccountsStats,
		"restore": runAccountsRestore, "allow": runAccountsAllow,
	}
	switch args[0] {
	case "-h", "-help", "--help", "help":
		fmt.Fprint(stdout, accountsUsage)
		return 0
	}
	if f, ok := run[args[0]]; ok {
		return f(ctx, args[1:], stdout, stderr, log)
	}
	fmt.Fprintf(stderr, "bouncemilter accounts: unknown command %q\n%s", args[0], accountsUsage)
	return 2
}

// accountsFlags makes the flag set of one accounts command, with
// --registry (and --mediagoblin-config when mg) bound into cfg.
func accountsFlags(name string, cfg *app.Config, mg bool, stderr io.Writer) *flag.FlagSet {
	fs := flag.NewFlagSet("accounts "+name, flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.Usage = func() { fmt.Fprint(fs.Output(), accountsUsage+"\nFlags of accounts "+name+":\n"); fs.PrintDefaults() }
	fs.StringVar(&cfg.Registry, "registry", cfg.Registry, "the registry SQLite `database`")
	if mg {
		fs.StringVar(&cfg.MediaGoblinConfig, "mediagoblin-config", cfg.MediaGoblinConfig, "MediaGoblin's `mediagoblin.ini`, to read (show) or lift (restore) the account's ban; \"\" or none: do without")
		fs.StringVar(&cfg.MediaGoblinDB, "mediagoblin-db", cfg.MediaGoblinDB, "connect to MediaGoblin's database with this `URL` instead of sql_engine")
	}
	return fs
}

// stateFlag collects --state values.
type stateFlag []registry.ActionState

func (s *stateFlag) String() string { return "" }

func (s *stateFlag) Set(v string) error {
	for _, x := range strings.Split(v, ",") {
		switch st := registry.ActionState(strings.TrimSpace(x)); st {
		case registry.Pending, registry.Applied, registry.Undone, registry.Cancelled, registry.Refused:
			*s = append(*s, st)
		default:
			return fmt.Errorf("unknown state %q (want pending, applied, undone, cancelled or refused)", x)
		}
	}
	return nil
}

// sinceFlag is a point in time: a duration ago (7d, 36h) or a date.
type sinceFlag struct{ t *time.Time }

func (s sinceFlag) String() string { return "" }

func (s sinceFlag) Set(v string) error {
	if d, ok := strings.CutSuffix(v, "d"); ok {
		var n int
		if _, err := fmt.Sscanf(d, "%d", &n); err == nil && fmt.Sprint(n) == d && n >= 0 {
			*s.t = time.Now().AddDate(0, 0, -n)
			return nil
		}
	}
	if d, err := time.ParseDuration(v); err == nil && d >= 0 {
		*s.t = time.Now().Add(-d)
		return nil
	}
	for _, layout := range []string{time.DateOnly, "2006-01-02T15:04", time.DateTime, time.RFC3339} {
		if t, err := time.ParseInLocation(layout, v, time.UTC); err == nil {
			*s.t = t
			return nil
		}
	}
	return fmt.Errorf("%q is neither a duration (7d, 36h) nor a date (2026-11-20, 2026-11-20T10:00)", v)
}

// networkFlag is an address or a CIDR prefix.
type networkFlag struct{ p *netip.Prefix }

func (n networkFlag) String() string { return "" }

func (n networkFlag) Set(v string) error {
	var p prefixFlag
	if err := p.Set(v); err != nil {
		return err
	}
	*n.p = p[0]
	return nil
}

func runAccountsList(ctx context.Context, args []string, stdout, stderr io.Writer, log *slog.Logger) int {
	cfg := app.Defaults()
	fs := accountsFlags("list", &cfg, false, stderr)
	var (
		f      registry.ListFilter
		states stateFlag
	)
	asJSON := fs.Bool("json", false, "print a JSON array (empty when there is nothing)")
	fs.Var(&states, "state", "the ban's `state`: pending, applied, undone, cancelled, refused (repeatable or comma-separated; default pending,applied: the accounts disabled now)")
	fs.Var(sinceFlag{&f.Since}, "since", "only accounts disabled since `WHEN`: a duration ago (7d, 36h) or a UTC date (2026-11-20)")
	fs.Var(networkFlag{&f.Network}, "ip", "only sign-ups from this `address or CIDR`")
	fs.StringVar(&f.Domain, "domain", "", "only addresses at this `domain` or its subdomains")
	if err := parseFlags(fs, args, reviewKeys); err != nil {
		return exitCode(err)
	}
	if fs.NArg() > 0 {
		fmt.Fprintf(stderr, "bouncemilter accounts list: unexpected arguments %q\n", fs.Args())
		return 2
	}
	f.States = states
	n, err := app.List(ctx, cfg, f, *asJSON, stdout)
	if err == nil && n == 0 && !*asJSON {
		fmt.Fprintln(stderr, "no disabled accounts")
	}
	return exit(stderr, "accounts list", err)
}

func runAccountsShow(ctx context.Context, args []string, stdout, stderr io.Writer, log *slog.Logger) int {
	cfg := app.Defaults()
	cfg.MediaGoblinConfig = ""
	fs := accountsFlags("show", &cfg, true, stderr)
	asJSON := fs.Bool("json", false, "print a JSON array, one object per sign-up")
	if err := parseFlags(fs, args, reviewKeys); err != nil {
		return exitCode(err)
	}
	if fs.NArg() == 0 {
		fs.Usage()
		return 2
	}
	status := 0
	for _, who := range fs.Args() {
		err := app.Show(ctx, cfg, who, *asJSON, log, stdout)
		if errors.Is(err, registry.ErrNotFound) {
			fmt.Fprintf(stderr, "bouncemilter accounts show: no sign-up of %q in the registry\n", who)
			status = 1
			continue
		}
		if code := exit(stderr, "accounts show", err); code != 0 {
			return code
		}
	}
	return status
}

func runAccountsStats(ctx context.Context, args []string, stdout, stderr io.Writer, log *slog.Logger) int {
	cfg := app.Defaults()
	fs := accountsFlags("stats", &cfg, false, stderr)
	days := fs.Int("days", 14, "how many days, today included")
	asJSON := fs.Bool("json", false, "print one JSON object")
	if err := parseFlags(fs, args, reviewKeys); err != nil {
		return exitCode(err)
	}
	if fs.NArg() > 0 {
		fmt.Fprintf(stderr, "bouncemilter accounts stats: unexpected arguments %q\n", fs.Args())
		return 2
	}
	return exit(stderr, "accounts stats", app.Stats(ctx, cfg, *days, *asJSON, stdout))
}

func runAccountsRestore(ctx context.Context, args []string, stdout, stderr io.Writer, log *slog.Logger) int {
	cfg := app.Defaults()
	cfg.Banner = banner.KindFail2ban
	fs := accountsFlags("restore", &cfg, true, stderr)
	fs.StringVar(&cfg.Banner, "banner", cfg.Banner, "how to lift the IP ban: fail2ban (fail2ban-client; needs root), nftables, or none (leave it to the running milter); default: serve's banner from the configuration file (log: through fail2ban-client), else fail2ban")
	fs.StringVar(&cfg.Jail, "fail2ban-jail", cfg.Jail, "the fail2ban jail to unban from")
	fs.StringVar(&cfg.Fail2banSocket, "fail2ban-socket", cfg.Fail2banSocket, "fail2ban's socket, when not the system's (fail2ban-client -s)")
	fs.IntVar(&cfg.IPv6Prefix, "ipv6-prefix", cfg.IPv6Prefix, "serve's --ipv6-prefix: an IPv6 sign-up's network is lifted with its address")
	note := fs.String("note", "false positive", "why, for the allow-list")
	if err := parseFlags(fs, args, reviewKeys); err != nil {
		return exitCode(err)
	}
	if fs.NArg() == 0 {
		fs.Usage()
		return 2
	}
	return exit(stderr, "accounts restore", app.Restore(ctx, cfg, fs.Args(), *note, log, stdout, stderr))
}

// allowFlag collects one kind of allow-list entry from a repeatable flag.
type allowFlag struct {
	kind    registry.AllowKind
	entries *[]app.AllowEntry
}

func (f allowFlag) String() string { return "" }

func (f allowFlag) Set(v string) error {
	if f.kind == registry.AllowIP {
		ip, err := netip.ParseAddr(v)
		if err != nil {
			return fmt.Errorf("%q is not an IP address", v)
		}
		v = ip.Unmap().String()
	}
	if f.kind == registry.AllowUser {
		// MediaGoblin lowercases every username it is given, at sign-up
		// and at login: "Alice" is the account alice.
		v = strings.ToLower(v)
	}
	if f.kind == registry.AllowEmail && !strings.Contains(v, "@") {
		return fmt.Errorf("%q is not an address", v)
	}
	*f.entries = append(*f.entries, app.AllowEntry{Kind: f.kind, Value: v})
	return nil
}

// runAccountsAllow protects usernames, addresses and IPs from every future
// action, before anything happened to them (restore does it after).
func runAccountsAllow(ctx context.Context, args []string, stdout, stderr io.Writer, log *slog.Logger) int {
	cfg := app.Defaults()
	fs := accountsFlags("allow", &cfg, false, stderr)
	var entries []app.AllowEntry
	note := fs.String("note", "", "why, for the record")
	fs.Var(allowFlag{registry.AllowUser, &entries}, "user", "a MediaGoblin username never to disable; repeatable")
	fs.Var(allowFlag{registry.AllowEmail, &entries}, "email", "an address whose sign-ups are never disabled; repeatable")
	fs.Var(allowFlag{registry.AllowIP, &entries}, "ip", "a sign-up IP whose accounts are never disabled; repeatable")
	if err := parseFlags(fs, args, reviewKeys); err != nil {
		return exitCode(err)
	}
	if len(entries) == 0 || fs.NArg() > 0 {
		fs.Usage()
		return 2
	}
	return exit(stderr, "accounts allow", app.Allow(ctx, cfg, entries, *note, stdout))
}
