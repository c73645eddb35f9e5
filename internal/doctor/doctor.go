// Package doctor checks a bouncemilter setup the way an admin would by
// hand: Postfix's milter settings (read with postconf), a milter protocol
// handshake on the milter's socket, MediaGoblin's settings and database
// rights, the registry and signing key as the service user sees them, the
// fail2ban jail and its ban action's tools, the web server's logs, and the
// last sync run.
//
// Each check gives one Result: OK, WARN or FAIL, what was found, and for
// anything not OK the command that fixes it. The package only reads: it
// changes no setting, bans nothing, and opens MediaGoblin's database
// without writing to it.
package doctor

import (
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"net"
	"net/netip"
	"os"
	"os/exec"
	"os/user"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/emersion/go-milter"

	"github.com/bouncemilter/bouncemilter/internal/banner"
	"github.com/bouncemilter/bouncemilter/internal/filter"
	"github.com/bouncemilter/bouncemilter/internal/mediagoblin"
	"github.com/bouncemilter/bouncemilter/internal/registry"
)

// Status is the outcome of one check.
type Status int

// The outcomes, in increasing gravity.
const (
	OK Status = iota
	Warn
	Fail
)

func (s Status) String() string {
	switch s {
	case OK:
		return "OK"
	case Warn:
		return "WARN"
	}
	return "FAIL"
}

// Result is the outcome of one check.
type Result struct {
	Check  string // what was checked, e.g. "postfix smtpd_milters"
	Status Status
	Detail string // what was found
	Fix    string // a command that fixes it; empty when OK
}

// Config is the setup to check: the settings serve and sync run with.
type Config struct {
	// Listen is the milter's socket, as serve --listen.
	Listen string
	// Postconf is the postconf command and its leading arguments; empty
	// means {"postconf"}. Tests pass {"postconf", "-c", DIR}.
	Postconf []string
	// Delimiter is the recipient delimiter the signed return path needs;
	// "" when signing is off.
	Delimiter string

	MediaGoblinConfig string
	// MediaGoblinDB replaces sql_engine, as serve --mediagoblin-db: the
	// rights checked are those of the role serve connects as.
	MediaGoblinDB string
	Registry      string
	// KeyFile is the return-path signing key; "" when signing is off.
	KeyFile string
	// ServiceUser is the user serve and sync run as (default
	// "bouncemilter"); files are checked as that user would open them.
	ServiceUser string

	Banner         string // serve --banner
	BanLog         string
	Jail           string
	Fail2banSocket string
	Fail2banConfig string
	BanDuration    time.Duration // 0: not compared
	// IPv6Prefix is serve's --ipv6-prefix: below 128 the jail is given
	// IPv6 networks, which its action's firewall sets must hold.
	IPv6Prefix int

	AccessLogs []string
	SignupLogs []string
	// SyncMaxAge is how old the last sync may be (default 1 hour).
	SyncMaxAge time.Duration

	Now func() time.Time
}

// Run runs every check and returns the results in order.
func Run(ctx context.Context, cfg Config) []Result {
	if len(cfg.Postconf) == 0 {
		cfg.Postconf = []string{"postconf"}
	}
	if cfg.ServiceUser == "" {
		cfg.ServiceUser = "bouncemilter"
	}
	if cfg.SyncMaxAge <= 0 {
		cfg.SyncMaxAge = time.Hour
	}
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	if cfg.Jail == "" {
		cfg.Jail = banner.DefaultJail
	}
	d := &doctor{cfg: cfg}
	d.serviceUser()
	d.postfix(ctx)
	d.handshake(ctx)
	d.mediagoblin(ctx)
	d.registry(ctx)
	d.banner(ctx)
	d.webLogs()
	return d.results
}

// Write prints one line per result, and under each result that is not OK
// the command that fixes it. It reports whether any check failed.
func Write(w io.Writer, results []Result) (failed bool) {
	for _, r := range results {
		fmt.Fprintf(w, "%-4s  %s: %s\n", r.Status, r.Check, r.Detail)
		if r.Status != OK && r.Fix != "" {
			fmt.Fprintf(w, "      fix: %s\n", r.Fix)
		}
		if r.Status == Fail {
			failed = true
		}
	}
	return failed
}

type doctor struct {
	cfg     Config
	results []Result
	user    *user.User // nil when the service user does not exist
	gids    []string
}

func (d *doctor) ok(check, format string, args ...any) {
	d.results = append(d.results, Result{Check: check, Status: OK, Detail: fmt.Sprintf(format, args...)})
}

func (d *doctor) add(status Status, check, fix, format string, args ...any) {
	d.results = append(d.results, Result{Check: check, Status: status, Detail: fmt.Sprintf(format, args...), Fix: fix})
}

func (d *doctor) serviceUser() {
	u, err := user.Lookup(d.cfg.ServiceUser)
	if err != nil {
		d.add(Warn, "service user", "adduser --system --group --no-create-home "+d.cfg.ServiceUser+"   (contrib/install.sh does it)",
			"%s does not exist; file rights are checked for the current user", d.cfg.ServiceUser)
		if u, err = user.Current(); err != nil {
			return
		}
	} else {
		d.ok("service user", "%s (uid %s)", u.Username, u.Uid)
	}
	d.user = u
	d.gids, _ = u.GroupIds()
}

// postfix reads the milter settings with postconf.
func (d *doctor) postfix(ctx context.Context) {
	pc := strings.Join(d.cfg.Postconf, " ")
	get := func(name string) (string, error) {
		args := append(append([]string{}, d.cfg.Postconf[1:]...), "-h", name)
		out, err := exec.CommandContext(ctx, d.cfg.Postconf[0], args...).CombinedOutput()
		if err != nil {
			return "", fmt.Errorf("%s -h %s: %v: %s", pc, name, err, strings.TrimSpace(string(out)))
		}
		return strings.TrimSpace(string(out)), nil
	}
	// Without postconf's answer nothing else of Postfix can be checked.
	queue, err := get("queue_directory")
	if err != nil {
		d.add(Fail, "postfix", "apt-get install postfix, or name your instance: --postconf 'postconf -c /etc/postfix-NAME'", "%v", err)
		return
	}
	network, addr, err := filter.ParseSpec(d.cfg.Listen)
	if err != nil {
		d.add(Fail, "milter socket", "set --listen to inet:127.0.0.1:8891 or unix:/run/bouncemilter/milter.sock", "%v", err)
		return
	}
	// What Postfix should name: a socket under its queue directory by the
	// relative path a chrooted smtpd can follow.
	spec := d.cfg.Listen
	if rel, err := filepath.Rel(queue, addr); network == "unix" && err == nil && !strings.HasPrefix(rel, "..") {
		spec = "unix:" + rel
	}
	for _, name := range []string{"smtpd_milters", "non_smtpd_milters"} {
		v, err := get(name)
		fix := fmt.Sprintf("%s -e '%s = %s' && postfix reload   (append if you use other milters)", pc, name, spec)
		switch {
		case err != nil:
			d.add(Fail, "postfix "+name, "apt-get install postfix", "%v", err)
		case hasMilter(v, network, addr, queue):
			d.ok("postfix "+name, "has %s", d.cfg.Listen)
		default:
			d.add(Fail, "postfix "+name, fix, "%q does not name %s", v, d.cfg.Listen)
		}
	}
	if v, err := get("internal_mail_filter_classes"); err != nil {
		d.add(Fail, "postfix internal_mail_filter_classes", "", "%v", err)
	} else if hasWord(v, "bounce") {
		d.ok("postfix internal_mail_filter_classes", "%s", v)
	} else {
		d.add(Fail, "postfix internal_mail_filter_classes", pc+" -e 'internal_mail_filter_classes = bounce' && postfix reload",
			"%q lacks bounce: the bounces Postfix makes never reach the milter", v)
	}
	if v, err := get("milter_default_action"); err != nil {
		d.add(Fail, "postfix milter_default_action", "", "%v", err)
	} else if v == "accept" {
		d.ok("postfix milter_default_action", "accept")
	} else {
		d.add(Fail, "postfix milter_default_action", pc+" -e 'milter_default_action = accept' && postfix reload",
			"%q: when the milter is down, mail is not delivered", v)
	}
	if d.cfg.Delimiter != "" {
		if v, err := get("recipient_delimiter"); err != nil {
			d.add(Fail, "postfix recipient_delimiter", "", "%v", err)
		} else if strings.Contains(v, d.cfg.Delimiter) {
			d.ok("postfix recipient_delimiter", "%q", v)
		} else {
			d.add(Fail, "postfix recipient_delimiter", pc+" -e 'recipient_delimiter = "+d.cfg.Delimiter+"' && postfix reload",
				"%q lacks %q: bounces to the signed return path are not delivered to the sender", v, d.cfg.Delimiter)
		}
	}
}

// hasMilter reports whether a Postfix milter list names the socket; a
// relative unix: path is Postfix's, under its queue directory.
func hasMilter(list, network, addr, queue string) bool {
	for _, f := range strings.FieldsFunc(list, func(r rune) bool { return r == ',' || r == ' ' || r == '\t' || r == '\n' }) {
		f = strings.Trim(f, "{}")
		n, a, err := filter.ParseSpec(f)
		if err != nil {
			continue
		}
		if n == network && a == addr {
			return true
		}
		// Postfix may name 127.0.0.1 as localhost, and a socket relative
		// to its queue directory (where a chrooted smtpd finds it).
		if n == network && network == "unix" && !filepath.IsAbs(a) && filepath.Join(queue, a) == filepath.Clean(addr) {
			return true
		}
		if h, p, err := splitHostPort(a); err == nil && n == network {
			if h2, p2, err := splitHostPort(addr); err == nil && p == p2 && sameHost(h, h2) {
				return true
			}
		}
	}
	return false
}

func splitHostPort(a string) (string, string, error) {
	i := strings.LastIndexByte(a, ':')
	if i < 0 {
		return "", "", errors.New("no port")
	}
	return strings.Trim(a[:i], "[]"), a[i+1:], nil
}

func sameHost(a, b string) bool {
	norm := func(h string) string {
		if h == "localhost" {
			return "127.0.0.1"
		}
		if ip, err := netip.ParseAddr(h); err == nil {
			return ip.Unmap().String()
		}
		return h
	}
	return norm(a) == norm(b)
}

func hasWord(list, word string) bool {
	for _, f := range strings.FieldsFunc(list, func(r rune) bool { return r == ',' || r == ' ' }) {
		if f == word {
			return true
		}
	}
	return false
}

// handshake talks the milter protocol to the socket: option negotiation
// and a connect stage, as Postfix begins each session.
func (d *doctor) handshake(ctx context.Context) {
	network, addr, err := filter.ParseSpec(d.cfg.Listen)
	if err != nil {
		return
	}
	if network != "unix" {
		network = "tcp"
	}
	c := milter.NewClientWithOptions(network, addr, milter.ClientOptions{
		// What go-milter's server accepts from its own client (protocol
		// version 2 actions).
		ActionMask: milter.OptAddHeader | milter.OptChangeBody | milter.OptAddRcpt |
			milter.OptRemoveRcpt | milter.OptChangeHeader | milter.OptQuarantine,
		Dialer:       &net.Dialer{Timeout: 5 * time.Second},
		ReadTimeout:  5 * time.Second,
		WriteTimeout: 5 * time.Second,
	})
	fix := "systemctl start bouncemilter   (journalctl -u bouncemilter says why it is down)"
	s, err := c.Session()
	if err != nil {
		d.add(Fail, "milter handshake", fix, "%s: %v", d.cfg.Listen, err)
		return
	}
	defer s.Close()
	act, err := s.Conn("localhost", milter.FamilyInet, 0, "127.0.0.1")
	if err != nil {
		d.add(Fail, "milter handshake", fix, "%s: negotiated, then the connect stage failed: %v", d.cfg.Listen, err)
		return
	}
	if act.Code != milter.ActContinue {
		d.add(Warn, "milter handshake", "", "%s answered the connect stage with %q, want continue", d.cfg.Listen, string(rune(act.Code)))
		return
	}
	d.ok("milter handshake", "%s speaks the milter protocol", d.cfg.Listen)
}

func (d *doctor) mediagoblin(ctx context.Context) {
	if d.cfg.MediaGoblinConfig == "none" {
		d.add(Warn, "mediagoblin config", "set --mediagoblin-config to your instance's mediagoblin.ini",
			"none: the first-run mode, where account bans wait in the queue")
		return
	}
	cfg, err := mediagoblin.LoadConfig(d.cfg.MediaGoblinConfig)
	if err == nil && d.cfg.MediaGoblinDB != "" {
		err = cfg.UseDatabase(d.cfg.MediaGoblinDB)
	}
	if err != nil {
		d.add(Fail, "mediagoblin config", "set --mediagoblin-config to your instance's mediagoblin.ini, readable by "+d.cfg.ServiceUser, "%v", err)
		return
	}
	if err := d.access(cfg.Path, 4); err != nil {
		d.add(Fail, "mediagoblin config", fmt.Sprintf("chgrp %s %s && chmod g+r %s", d.groupName(), cfg.Path, cfg.Path), "%v", err)
	} else {
		d.ok("mediagoblin config", "%s: database %s, sender %s", cfg.Path, cfg.SourceRedacted(), cfg.EmailSender)
	}
	if cfg.Backend == mediagoblin.SQLite {
		// The milter writes core__user_bans: SQLite needs the file and its
		// directory (for the journal) writable.
		for _, p := range []string{cfg.Source, filepath.Dir(cfg.Source)} {
			if err := d.access(p, 2); err != nil {
				d.add(Fail, "mediagoblin database rights", fmt.Sprintf("chgrp %s %s && chmod g+w %s", d.groupName(), p, p), "%v", err)
				return
			}
		}
	}
	db, err := mediagoblin.Open(ctx, cfg)
	if err != nil {
		d.add(Fail, "mediagoblin database", "check sql_engine in "+cfg.Path+" and that the database runs", "%v", err)
		return
	}
	defer db.Close()
	if err := db.CheckRights(ctx); err != nil {
		fix := "GRANT SELECT ON core__users, core__local_users, core__privileges, core__privileges_users TO <role>; GRANT SELECT, INSERT, DELETE ON core__user_bans TO <role>   (contrib/install.sh)"
		d.add(Fail, "mediagoblin database rights", fix, "%v", err)
		return
	}
	d.ok("mediagoblin database", "%s reachable; may read users and write core__user_bans", cfg.SourceRedacted())
}

func (d *doctor) registry(ctx context.Context) {
	path := d.cfg.Registry
	fix := fmt.Sprintf("install -d -o %s -g %s -m 0750 %s && chown %s %s*", d.cfg.ServiceUser, d.groupName(), filepath.Dir(path), d.cfg.ServiceUser, path)
	if _, err := os.Stat(path); err != nil {
		d.add(Fail, "registry", "start bouncemilter serve once, or: "+fix, "%v", err)
		return
	}
	for _, p := range []string{path, filepath.Dir(path)} {
		if err := d.access(p, 6); err != nil {
			d.add(Fail, "registry", fix, "%v", err)
			return
		}
	}
	d.ok("registry", "%s writable by %s", path, d.cfg.ServiceUser)
	if d.cfg.KeyFile != "" {
		if _, err := os.Stat(d.cfg.KeyFile); errors.Is(err, fs.ErrNotExist) {
			d.add(Warn, "signing key", "start bouncemilter serve: it creates the key", "%s does not exist yet", d.cfg.KeyFile)
		} else if err := d.access(d.cfg.KeyFile, 4); err != nil {
			d.add(Fail, "signing key", fmt.Sprintf("chown %s %s && chmod 0600 %s", d.cfg.ServiceUser, d.cfg.KeyFile, d.cfg.KeyFile), "%v", err)
		} else {
			d.ok("signing key", "%s readable by %s", d.cfg.KeyFile, d.cfg.ServiceUser)
		}
	}

	reg, err := registry.Open(ctx, path)
	if err != nil {
		d.add(Fail, "registry", fix, "%v", err)
		return
	}
	defer reg.Close()
	run, ok, err := reg.LastSync(ctx)
	syncFix := "systemctl enable --now bouncemilter-sync   (or run bouncemilter sync)"
	switch {
	case err != nil:
		d.add(Fail, "last sync", syncFix, "%v", err)
		return
	case !ok:
		d.add(Fail, "last sync", syncFix, "sync never ran on this registry")
		return
	}
	age := d.cfg.Now().Sub(run.At).Round(time.Second)
	if age > d.cfg.SyncMaxAge {
		d.add(Fail, "last sync", syncFix+"; journalctl -u bouncemilter-sync says why it stopped",
			"%s ago (at %s), older than %s", age, run.At.UTC().Format(time.DateTime), d.cfg.SyncMaxAge)
	} else {
		d.ok("last sync", "%s ago: %d added, %d linked, %d log lines", age, run.Added, run.Linked, run.Lines)
	}
	switch {
	case run.RecentSignUps == 0:
		d.ok("sign-up IPs", "no sign-up in the last day to link")
	case run.RecentLinked == 0:
		d.add(Warn, "sign-up IPs", "pass the web server's log with --access-log or --signup-log (contrib/nginx, contrib/apache) and check its format",
			"none of the %d sign-ups of the last day is linked to an IP: no IP will be banned", run.RecentSignUps)
	default:
		d.ok("sign-up IPs", "%d of the %d sign-ups of the last day linked to an IP", run.RecentLinked, run.RecentSignUps)
	}
}

func (d *doctor) banner(ctx context.Context) {
	switch d.cfg.Banner {
	case banner.KindNone:
		d.add(Warn, "banner", "serve --banner log (with contrib/fail2ban)", "none: accounts are disabled, IPs are never banned")
		return
	case banner.KindDryRun:
		d.add(Warn, "banner", "serve --banner log, once the journal shows the right accounts", "dry-run: nothing is banned, only logged")
		return
	case banner.KindNFTables:
		if p, err := exec.LookPath("nft"); err != nil {
			d.add(Fail, "banner nftables", "apt-get install nftables", "nft not found")
		} else {
			d.ok("banner nftables", "%s", p)
		}
		return
	case banner.KindLog, banner.KindFail2ban:
	default:
		d.add(Fail, "banner", "serve --banner log", "unknown banner %q", d.cfg.Banner)
		return
	}
	if d.cfg.Banner == banner.KindLog {
		if err := d.access(d.cfg.BanLog, 2); err != nil {
			d.add(Fail, "ban log", fmt.Sprintf("install -D -m 0640 -o %s /dev/null %s", d.cfg.ServiceUser, d.cfg.BanLog), "%v", err)
		} else {
			d.ok("ban log", "%s writable by %s", d.cfg.BanLog, d.cfg.ServiceUser)
		}
	}
	client := func(args ...string) (string, error) {
		argv := []string{"fail2ban-client"}
		if d.cfg.Fail2banConfig != "" {
			argv = append(argv, "-c", d.cfg.Fail2banConfig)
		}
		if d.cfg.Fail2banSocket != "" {
			argv = append(argv, "-s", d.cfg.Fail2banSocket)
		}
		// Bounded: a hung server must not hang doctor.
		out, err := banner.RunCommand(ctx, 0, append(argv, args...)...)
		return strings.TrimSpace(string(out)), err
	}
	// contrib/fail2ban holds the filter, the jail and its action
	// (bouncemilter-nftables): copied whole, as install.sh installs them.
	// Only this jail is reloaded: a plain reload re-reads every jail
	// (sshd's half-edited one included); --restart adds a jail that is
	// not running yet.
	jailFix := "cp -r contrib/fail2ban/. /etc/fail2ban/ && fail2ban-client reload --restart --if-exists " + d.cfg.Jail
	if _, err := client("status", d.cfg.Jail); err != nil {
		fix := jailFix
		if strings.Contains(err.Error(), "Failed to access socket") {
			fix = "systemctl enable --now fail2ban"
		}
		d.add(Fail, "fail2ban jail", fix, "%v", err)
		return
	}
	d.ok("fail2ban jail", "%s is running", d.cfg.Jail)
	if d.cfg.Banner == banner.KindLog {
		if paths, err := client("get", d.cfg.Jail, "logpath"); err != nil {
			d.add(Fail, "fail2ban logpath", jailFix, "%v", err)
		} else if !strings.Contains(paths, d.cfg.BanLog) {
			d.add(Fail, "fail2ban logpath", "set logpath = "+d.cfg.BanLog+" in /etc/fail2ban/jail.d/bouncemilter.local && fail2ban-client reload "+d.cfg.Jail,
				"the jail does not watch %s: %s", d.cfg.BanLog, oneLine(paths))
		} else {
			d.ok("fail2ban logpath", "the jail watches %s", d.cfg.BanLog)
		}
	}
	actions, err := client("get", d.cfg.Jail, "actions")
	// --restart: a plain reload that changes a jail's action leaves it
	// with none.
	actionFix := "cp -r contrib/fail2ban/action.d/. /etc/fail2ban/action.d/ && set banaction = bouncemilter-nftables (or iptables-multiport) in /etc/fail2ban/jail.d/bouncemilter.local && fail2ban-client reload --restart " + d.cfg.Jail
	switch {
	case err != nil:
		d.add(Fail, "fail2ban banaction", actionFix, "%v", err)
	case strings.Contains(actions, "No actions"):
		d.add(Fail, "fail2ban banaction", actionFix, "the jail has no action: it bans nothing")
	default:
		d.banactionTools(actions, actionFix, client)
	}
	if d.cfg.BanDuration > 0 {
		secs := int64(d.cfg.BanDuration / time.Second)
		if v, err := client("get", d.cfg.Jail, "bantime"); err != nil {
			d.add(Warn, "fail2ban bantime", "", "%v", err)
		} else if n, _ := strconv.ParseInt(v, 10, 64); n != secs && d.cfg.Banner == banner.KindLog {
			d.add(Warn, "fail2ban bantime", fmt.Sprintf("set bantime = %d in /etc/fail2ban/jail.d/bouncemilter.local && fail2ban-client reload %s", secs, d.cfg.Jail),
				"the jail bans for %ss, --ban-duration says %ds", v, secs)
		} else {
			d.ok("fail2ban bantime", "%ss", v)
		}
	}
}

// banactionTools checks that the programs the jail's actions run exist, and
// that an nftables action's sets hold the networks the milter bans.
func (d *doctor) banactionTools(actions, fix string, client func(args ...string) (string, error)) {
	// "The jail J has the following actions:\nA, B"
	if _, list, ok := strings.Cut(actions, ":\n"); ok {
		actions = list
	}
	var missing, found, noNets []string
	for _, name := range strings.Split(actions, ",") {
		name = strings.TrimSpace(name)
		if name == "" {
			continue
		}
		var tools []string
		switch {
		case strings.Contains(name, "nftables"):
			tools = []string{"nft"}
		case strings.HasPrefix(name, "iptables"):
			tools = []string{"iptables", "ip6tables"}
		case strings.HasPrefix(name, "firewallcmd"):
			tools = []string{"firewall-cmd"}
		case strings.HasPrefix(name, "ufw"):
			tools = []string{"ufw"}
		case strings.HasPrefix(name, "shorewall"):
			tools = []string{"shorewall"}
		}
		// Judged by what the action runs, not by its name: Debian's
		// nftables actions make their sets without the interval flag,
		// and nft refuses a network in them (fail2ban says banned and
		// nothing is blocked), but an action.d/nftables.local may add
		// the flag, as newer fail2ban does.
		if d.cfg.IPv6Prefix > 0 && d.cfg.IPv6Prefix < 128 {
			if start, err := client("get", d.cfg.Jail, "action", name, "actionstart"); err == nil && addsPlainSet(start) {
				noNets = append(noNets, name)
			}
		}
		for _, t := range tools {
			if _, err := exec.LookPath(t); err != nil {
				missing = append(missing, name+" needs "+t)
			} else {
				found = append(found, name+": "+t)
			}
		}
	}
	switch {
	case len(noNets) > 0:
		d.add(Fail, "fail2ban banaction", fix, "%s: its nftables sets cannot hold the IPv6 networks (/%d, --ipv6-prefix) the milter bans: nft refuses them and nothing is blocked",
			strings.Join(noNets, ", "), d.cfg.IPv6Prefix)
	case len(missing) > 0:
		pkg := "nftables"
		if strings.Contains(strings.Join(missing, " "), "iptables") {
			pkg = "iptables"
		}
		d.add(Fail, "fail2ban banaction", "apt-get install "+pkg+"   (or "+fix+")", "%s", strings.Join(missing, "; "))
	case len(found) == 0:
		d.add(Warn, "fail2ban banaction", "", "actions %q: their tools are not known to doctor", oneLine(actions))
	default:
		d.ok("fail2ban banaction", "%s", strings.Join(found, ", "))
	}
}

// addsPlainSet reports whether an action's resolved actionstart adds an nft
// set without the interval flag (`nft add set inet f2b-table S \{ type
// ipv6_addr\; \}`), which cannot hold a network.
func addsPlainSet(actionstart string) bool {
	for line := range strings.Lines(actionstart) {
		f := strings.Fields(line)
		for i := 0; i+1 < len(f); i++ {
			if f[i] == "add" && f[i+1] == "set" && !strings.Contains(line, "interval") {
				return true
			}
		}
	}
	return false
}

func (d *doctor) webLogs() {
	logs := append(append([]string{}, d.cfg.AccessLogs...), d.cfg.SignupLogs...)
	if len(logs) == 0 {
		d.add(Warn, "web logs", "sync --signup-log /var/log/nginx/bouncemilter-signup.log (contrib/nginx) or --access-log /var/log/nginx/access.log",
			"no --access-log or --signup-log: sign-ups are never linked to IPs")
		return
	}
	for _, p := range logs {
		if _, err := os.Stat(p); errors.Is(err, fs.ErrNotExist) {
			d.add(Fail, "web log", "let the web server write it (contrib/nginx, contrib/apache), or drop it from the settings", "%v", err)
			continue
		}
		if err := d.access(p, 4); err != nil {
			d.add(Fail, "web log", fmt.Sprintf("adduser %s adm   (Debian's web logs are group adm)", d.cfg.ServiceUser), "%v", err)
			continue
		}
		d.ok("web log", "%s readable by %s", p, d.cfg.ServiceUser)
	}
}

func (d *doctor) groupName() string {
	if d.user != nil {
		if g, err := user.LookupGroupId(d.user.Gid); err == nil {
			return g.Name
		}
	}
	return d.cfg.ServiceUser
}

// access checks that the service user may open path for want (4 read, 2
// write, 6 both) and reach it through its directories, from the files'
// modes: doctor usually runs as root, who may open anything.
func (d *doctor) access(path string, want uint32) error {
	if d.user == nil {
		return nil
	}
	fi, err := os.Stat(path)
	if err != nil {
		return err
	}
	if d.user.Uid == "0" {
		return nil
	}
	if !d.allows(fi, want) {
		return fmt.Errorf("%s (%s) is not %s by %s", path, describe(fi), wantWord(want), d.user.Username)
	}
	abs, _ := filepath.Abs(path)
	for dir := filepath.Dir(abs); ; dir = filepath.Dir(dir) {
		dfi, err := os.Stat(dir)
		if err != nil {
			return err
		}
		if !d.allows(dfi, 1) {
			return fmt.Errorf("%s cannot be reached by %s: directory %s (%s)", path, d.user.Username, dir, describe(dfi))
		}
		if dir == filepath.Dir(dir) {
			return nil
		}
	}
}

func (d *doctor) allows(fi fs.FileInfo, want uint32) bool {
	st, ok := fi.Sys().(*syscall.Stat_t)
	if !ok {
		return true
	}
	perm := uint32(fi.Mode().Perm())
	switch {
	case strconv.FormatUint(uint64(st.Uid), 10) == d.user.Uid:
		perm >>= 6
	case d.inGroup(strconv.FormatUint(uint64(st.Gid), 10)):
		perm >>= 3
	}
	return perm&want == want
}

func (d *doctor) inGroup(gid string) bool {
	if d.user.Gid == gid {
		return true
	}
	for _, g := range d.gids {
		if g == gid {
			return true
		}
	}
	return false
}

func describe(fi fs.FileInfo) string {
	st, ok := fi.Sys().(*syscall.Stat_t)
	if !ok {
		return fi.Mode().String()
	}
	owner, group := strconv.Itoa(int(st.Uid)), strconv.Itoa(int(st.Gid))
	if u, err := user.LookupId(owner); err == nil {
		owner = u.Username
	}
	if g, err := user.LookupGroupId(group); err == nil {
		group = g.Name
	}
	return fmt.Sprintf("%s %s:%s", fi.Mode().Perm(), owner, group)
}

func wantWord(want uint32) string {
	switch want {
	case 4:
		return "readable"
	case 2:
		return "writable"
	}
	return "readable and writable"
}

func oneLine(s string) string {
	s = strings.Join(strings.Fields(s), " ")
	if len(s) > 200 {
		s = s[:200] + "…"
	}
	return s
}
