package banner

import (
	"context"
	"fmt"
	"net/netip"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/bouncemilter/bouncemilter/internal/defaults"
)

// Fail2banClient bans and unbans through a running fail2ban server, with
//
//	fail2ban-client [-c CONFIG] [-s SOCKET] set JAIL banip IP
//	fail2ban-client [-c CONFIG] [-s SOCKET] set JAIL unbanip IP
//
// run directly, without a shell. fail2ban's socket is root's: this needs
// root (or whatever the socket's owner allows). fail2ban keeps no reason for
// a ban, so the reason is dropped.
type Fail2banClient struct {
	// Jail is the jail to ban in; required.
	Jail string
	// Socket is the server's socket (-s); empty means the one of the
	// configuration.
	Socket string
	// Config is the configuration directory (-c); empty means
	// fail2ban-client's default, /etc/fail2ban.
	Config string
	// Command is the fail2ban-client program; empty means
	// "fail2ban-client", looked up in PATH.
	Command string
	// CommandTimeout is how long one fail2ban-client run may take; zero
	// means DefaultCommandTimeout.
	CommandTimeout time.Duration
	// Bantime, when set, is made the jail's bantime before the first ban
	// (fail2ban keeps one bantime per jail, not per ban), and again before
	// a ban a minute or more after the last time (see setBantime). Zero
	// leaves the jail's own.
	Bantime time.Duration

	mu        sync.Mutex
	bantimeAt time.Time        // when Bantime was last made the jail's; zero: never
	now       func() time.Time // nil: time.Now
}

// bantimeRefresh is how long a bantime set in the jail is trusted: fail2ban
// builds the jail again from its configuration at every reload or restart
// (a package upgrade, an admin's reload), forgetting what was set, and this
// process cannot see that happen. At most this long of bans after a reload
// get the jail's configured bantime.
const bantimeRefresh = time.Minute

// Ban adds ip to the jail's bans, for the jail's bantime.
func (c *Fail2banClient) Ban(ctx context.Context, ip netip.Addr, reason string) error {
	return c.BanNet(ctx, single(ip), reason)
}

// BanNet adds p to the jail's bans: fail2ban takes a network in CIDR form.
func (c *Fail2banClient) BanNet(ctx context.Context, p netip.Prefix, reason string) error {
	p = netip.PrefixFrom(normalize(p.Addr()), p.Bits()).Masked()
	if err := check(p.Addr(), nil); err != nil {
		return err
	}
	if err := c.setBantime(ctx); err != nil {
		return fmt.Errorf("ban %s: %w", netString(p), err)
	}
	if _, err := c.run(ctx, "set", c.Jail, "banip", netString(p)); err != nil {
		return fmt.Errorf("ban %s: %w", netString(p), err)
	}
	return nil
}

func (c *Fail2banClient) setBantime(ctx context.Context) error {
	if c.Bantime <= 0 {
		return nil
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	now := defaults.Now(c.now)
	if !c.bantimeAt.IsZero() && now.Sub(c.bantimeAt) < bantimeRefresh {
		return nil
	}
	secs := int64((c.Bantime + time.Second - 1) / time.Second)
	if _, err := c.run(ctx, "set", c.Jail, "bantime", strconv.FormatInt(secs, 10)); err != nil {
		return err
	}
	c.bantimeAt = now
	return nil
}

// Unban lifts the jail's ban of ip. An address that is not banned is not an
// error.
func (c *Fail2banClient) Unban(ctx context.Context, ip netip.Addr) error {
	if !normalize(ip).IsValid() {
		return fmt.Errorf("unban: %w: not a valid address", ErrProtected)
	}
	return c.UnbanNet(ctx, single(ip))
}

// UnbanNet lifts the jail's ban of p.
func (c *Fail2banClient) UnbanNet(ctx context.Context, p netip.Prefix) error {
	if !p.IsValid() {
		return fmt.Errorf("unban: %w: not a valid address", ErrProtected)
	}
	// fail2ban answers 0 (addresses unbanned) for an address it did not
	// ban, without failing: already idempotent.
	if _, err := c.run(ctx, "set", c.Jail, "unbanip", netString(p)); err != nil {
		return fmt.Errorf("unban %s: %w", netString(p), err)
	}
	return nil
}

// Banned returns the addresses the jail bans now.
func (c *Fail2banClient) Banned(ctx context.Context) ([]netip.Addr, error) {
	out, err := c.run(ctx, "get", c.Jail, "banip")
	if err != nil {
		return nil, err
	}
	var ips []netip.Addr
	for _, f := range strings.Fields(string(out)) {
		ip, err := netip.ParseAddr(f)
		if err != nil {
			return nil, fmt.Errorf("fail2ban-client get %s banip: unexpected answer %q", c.Jail, out)
		}
		ips = append(ips, ip)
	}
	return ips, nil
}

// run runs fail2ban-client with the connection options and args, and
// returns its standard output; a failure carries the command and all it
// printed, which says why (no such jail, permission denied on the socket,
// server down). Warnings on standard error are not part of the answer.
func (c *Fail2banClient) run(ctx context.Context, args ...string) ([]byte, error) {
	if c.Jail == "" {
		return nil, fmt.Errorf("fail2ban-client: no jail configured")
	}
	prog := c.Command
	if prog == "" {
		prog = "fail2ban-client"
	}
	argv := []string{prog}
	if c.Config != "" {
		argv = append(argv, "-c", c.Config)
	}
	if c.Socket != "" {
		argv = append(argv, "-s", c.Socket)
	}
	return RunCommand(ctx, c.CommandTimeout, append(argv, args...)...)
}
