package main

import (
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"net/netip"
	"os"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/bouncemilter/bouncemilter/internal/banner"
	"github.com/bouncemilter/bouncemilter/internal/mediagoblin"
	"github.com/bouncemilter/bouncemilter/internal/registry"
	"github.com/bouncemilter/bouncemilter/internal/worker"
)

const accountsUsage = `Usage:
  bouncemilter accounts list    [--registry PATH] [--json]
  bouncemilter accounts restore [--registry PATH] [--mediagoblin-config PATH] [--note TEXT] USERNAME...
  bouncemilter accounts allow   [--registry PATH] [--note TEXT] (--user NAME | --email ADDRESS | --ip ADDRESS)...
`

func runAccounts(ctx context.Context, args []string, stdout, stderr io.Writer, log *slog.Logger) int {
	if len(args) == 0 {
		fmt.Fprint(stderr, accountsUsage)
		return 2
	}
	switch args[0] {
	case "list":
		return runAccountsList(ctx, args[1:], stdout, stderr)
	case "restore":
		return runAccountsRestore(ctx, args[1:], stdout, stderr, log)
	case "allow":
		return runAccountsAllow(ctx, args[1:], stdout, stderr)
	case "-h", "-help", "--help", "help":
		fmt.Fprint(stdout, accountsUsage)
		return 0
	}
	fmt.Fprintf(stderr, "bouncemilter accounts: unknown command %q\n%s", args[0], accountsUsage)
	return 2
}

// disabledJSON is one line of `accounts list --json`.
type disabledJSON struct {
	UserID   int64     `json:"user_id"`
	Username string    `json:"username"`
	Email    string    `json:"email"`
	IP       string    `json:"ip"`
	IPSource string    `json:"ip_source,omitempty"`
	SignedUp time.Time `json:"signed_up"`
	Disabled time.Time `json:"disabled"`
	State    string    `json:"state"`
	Reason   string    `json:"reason"`
	QueueID  string    `json:"queue_id,omitempty"`
}

func runAccountsList(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	fs := flag.NewFlagSet("accounts list", flag.ContinueOnError)
	fs.SetOutput(stderr)
	regPath := fs.String("registry", defaultRegistry, "the registry SQLite database")
	asJSON := fs.Bool("json", false, "print one JSON object per account per line")
	if err := fs.Parse(args); err != nil {
		return 2
	}
	reg, err := openExisting(ctx, *regPath)
	if err != nil {
		fmt.Fprintf(stderr, "bouncemilter accounts list: %v\n", err)
		return 1
	}
	defer reg.Close()
	list, err := reg.DisabledAccounts(ctx)
	if err != nil {
		fmt.Fprintf(stderr, "bouncemilter accounts list: %v\n", err)
		return 1
	}
	if *asJSON {
		enc := json.NewEncoder(stdout)
		for _, d := range list {
			enc.Encode(disabledJSON{
				UserID: d.UserID, Username: d.Username, Email: d.Email, IP: d.IP, IPSource: d.IPSource,
				SignedUp: d.Created, Disabled: d.When, State: string(d.State), Reason: d.Reason, QueueID: d.QueueID,
			})
		}
		return 0
	}
	tw := tabwriter.NewWriter(stdout, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "USERNAME\tEMAIL\tIP\tSIGNED UP\tDISABLED\tSTATE\tWHY")
	for _, d := range list {
		ip := d.IP
		if ip == "" {
			ip = "-"
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s\t%s\n", d.Username, d.Email, ip,
			d.Created.Format(time.DateTime), d.When.Format(time.DateTime), d.State, d.Reason)
	}
	tw.Flush()
	if len(list) == 0 {
		fmt.Fprintln(stderr, "no disabled accounts")
	}
	return 0
}

func runAccountsRestore(ctx context.Context, args []string, stdout, stderr io.Writer, log *slog.Logger) int {
	fs := flag.NewFlagSet("accounts restore", flag.ContinueOnError)
	fs.SetOutput(stderr)
	var (
		regPath  = fs.String("registry", defaultRegistry, "the registry SQLite database")
		mgConfig = fs.String("mediagoblin-config", defaultMediaGoblinConfig, "MediaGoblin's mediagoblin.ini, to lift the account ban at once")
		banKind  = fs.String("banner", "fail2ban", "how to lift the IP ban: fail2ban (fail2ban-client; needs root), nftables, or none (leave it to the running milter)")
		jail     = fs.String("fail2ban-jail", "bouncemilter", "the fail2ban jail to unban from")
		socket   = fs.String("fail2ban-socket", "", "fail2ban's socket, when not the system's (fail2ban-client -s)")
		note     = fs.String("note", "false positive", "why, for the allow-list")
	)
	fs.Usage = func() { fmt.Fprint(stderr, accountsUsage); fs.PrintDefaults() }
	if err := fs.Parse(args); err != nil {
		return 2
	}
	if fs.NArg() == 0 {
		fs.Usage()
		return 2
	}
	var ipBanner banner.Banner
	switch *banKind {
	case banner.KindFail2ban, banner.KindNFTables:
		var err error
		if ipBanner, err = banner.New(*banKind, banner.Options{Jail: *jail, Fail2banSocket: *socket}); err != nil {
			fmt.Fprintf(stderr, "bouncemilter accounts restore: %v\n", err)
			return 2
		}
	case banner.KindNone:
	default:
		fmt.Fprintf(stderr, "bouncemilter accounts restore: --banner %q cannot lift an IP ban here; use fail2ban, nftables, or none (the running milter lifts it)\n", *banKind)
		return 2
	}
	reg, err := openExisting(ctx, *regPath)
	if err != nil {
		fmt.Fprintf(stderr, "bouncemilter accounts restore: %v\n", err)
		return 1
	}
	defer reg.Close()
	status := 0
	var queued []registry.Action
	for _, name := range fs.Args() {
		r, err := reg.RegistrationByName(ctx, name)
		var acts []registry.Action
		if err == nil {
			acts, err = reg.Restore(ctx, r.UserID, *note, time.Now())
		}
		if err != nil {
			fmt.Fprintf(stderr, "bouncemilter accounts restore %s: %v\n", name, err)
			status = 1
			continue
		}
		queued = append(queued, acts...)
		fmt.Fprintf(stdout, "%s: restored and allow-listed\n", name)
	}

	// Lift the bans now if this process can, and only those: whatever else
	// is queued belongs to the running milter's worker, and so does what
	// this process cannot do (with --banner none, the IP unbans).
	var mine []registry.Action
	for _, a := range queued {
		if a.Kind == registry.UnbanIP && ipBanner == nil {
			continue
		}
		mine = append(mine, a)
	}
	if len(mine) > 0 {
		cfg, err := loadMediaGoblin(*mgConfig, "", log)
		if err != nil {
			fmt.Fprintf(stderr, "bouncemilter accounts restore: %v; the running milter will lift the bans\n", err)
			return status
		}
		accounts := &worker.LazyAccounts{Open: func(ctx context.Context) (worker.Accounts, error) {
			return mediagoblin.Open(ctx, cfg)
		}}
		w := worker.New(reg, accounts, ipBanner, log)
		if _, err := w.Apply(ctx, mine); err != nil {
			fmt.Fprintf(stderr, "bouncemilter accounts restore: %v\n", err)
			return 1
		}
	}
	for _, name := range fs.Args() {
		r, err := reg.RegistrationByName(ctx, name)
		if err != nil {
			continue
		}
		acts, err := reg.Actions(ctx, r.UserID)
		if err != nil {
			continue
		}
		for _, a := range acts {
			if a.State == registry.Pending && (a.Kind == registry.UnbanAccount || a.Kind == registry.UnbanIP) {
				fmt.Fprintf(stderr, "%s: %s %s not done yet (%s); the running milter retries it\n", name, a.Kind, a.Target, orNone(a.LastError))
			}
		}
	}
	return status
}

// openExisting opens the registry at path for a command that must not
// create one: a mistyped path is an error, not an empty registry.
func openExisting(ctx context.Context, path string) (*registry.DB, error) {
	fi, err := os.Stat(path)
	if err != nil {
		return nil, fmt.Errorf("registry: %w", err)
	}
	if !fi.Mode().IsRegular() {
		return nil, fmt.Errorf("registry %s: not a database file", path)
	}
	return registry.Open(ctx, path)
}

// allowFlag collects one kind of allow-list entry from a repeatable flag.
type allowFlag struct {
	kind    registry.AllowKind
	entries *[]allowEntry
}

type allowEntry struct {
	kind  registry.AllowKind
	value string
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
	if f.kind == registry.AllowEmail && !strings.Contains(v, "@") {
		return fmt.Errorf("%q is not an address", v)
	}
	*f.entries = append(*f.entries, allowEntry{f.kind, v})
	return nil
}

// runAccountsAllow protects usernames, addresses and IPs from every future
// action, before anything happened to them (restore does it after).
func runAccountsAllow(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	fs := flag.NewFlagSet("accounts allow", flag.ContinueOnError)
	fs.SetOutput(stderr)
	var entries []allowEntry
	regPath := fs.String("registry", defaultRegistry, "the registry SQLite database")
	note := fs.String("note", "", "why, for the record")
	fs.Var(allowFlag{registry.AllowUser, &entries}, "user", "a MediaGoblin username never to disable; repeatable")
	fs.Var(allowFlag{registry.AllowEmail, &entries}, "email", "an address whose sign-ups are never disabled; repeatable")
	fs.Var(allowFlag{registry.AllowIP, &entries}, "ip", "a sign-up IP whose accounts are never disabled; repeatable")
	fs.Usage = func() { fmt.Fprint(stderr, accountsUsage); fs.PrintDefaults() }
	if err := fs.Parse(args); err != nil {
		return 2
	}
	if len(entries) == 0 || fs.NArg() > 0 {
		fs.Usage()
		return 2
	}
	reg, err := registry.Open(ctx, *regPath)
	if err != nil {
		fmt.Fprintf(stderr, "bouncemilter accounts allow: %v\n", err)
		return 1
	}
	defer reg.Close()
	for _, e := range entries {
		if err := reg.Allow(ctx, e.kind, e.value, *note, time.Now()); err != nil {
			fmt.Fprintf(stderr, "bouncemilter accounts allow: %v\n", err)
			return 1
		}
		fmt.Fprintf(stdout, "allow-listed %s %s\n", e.kind, e.value)
	}
	return 0
}

func orNone(s string) string {
	if s == "" {
		return "not tried"
	}
	return s
}
