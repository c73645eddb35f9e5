// Package filter is the milter that Postfix talks to. For each message it
// decides, as early as it can, whether the message is a bounce of
// MediaGoblin's own mail; everything else is accepted at once, unread. A
// bounce is read whole (up to a cap), handed to a Handler, and discarded
// only when the Handler says its verdict is journalled and complete.
// Messages MediaGoblin sends are recorded, so that a later bounce can be
// shown to answer them.
//
// On any trouble of its own, the filter accepts: mail flows as if
// bouncemilter were not there. It never rejects or tempfails.
package filter

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/netip"
	"runtime"
	"strings"
	"time"

	"github.com/emersion/go-milter"

	"github.com/bouncemilter/bouncemilter/internal/bounce"
	"github.com/bouncemilter/bouncemilter/internal/defaults"
	"github.com/bouncemilter/bouncemilter/internal/registry"
)

// Handler decides on a complete bounce.
type Handler interface {
	Handle(ctx context.Context, env bounce.Envelope, msg []byte) (bounce.Outcome, error)
}

// SendRecorder journals mail that MediaGoblin sends.
type SendRecorder interface {
	RecordSends(ctx context.Context, sends []registry.Send) error
}

// Rewriter signs the envelope sender of MediaGoblin's outgoing mail (see
// package returnpath). It returns "" when the sender is to stay as it is.
type Rewriter interface {
	Rewrite(sender string, recipients []string, now time.Time) string
}

// SignupCopier copies, as MediaGoblin's mail to them passes, the sign-ups
// of its recipients from MediaGoblin's database into the registry (see
// package signups): the bounce of a verification mail comes about a
// second after the sign-up, long before a periodic sync.
type SignupCopier interface {
	CopySignups(ctx context.Context, emails []string) ([]registry.Registration, error)
}

// Config is the filter's configuration.
type Config struct {
	// Sender is MediaGoblin's email_sender_address: bounces come back to it.
	Sender string
	// Delimiter is Postfix's recipient_delimiter; a bounce to
	// local+anything@domain counts as one to local@domain.
	Delimiter string
	// MaxSize caps how much of a bounce is read; a longer one is parsed as
	// far as it was read and never discarded.
	MaxSize int
	// Timeout bounds the handling of one message once it is complete.
	Timeout time.Duration
	// Signups, when set, is called for each message MediaGoblin sends,
	// before it is recorded. Its errors are logged; the mail flows.
	Signups SignupCopier
	// MediaGoblinClients are the SMTP clients whose mail from Sender counts
	// as MediaGoblin's own (recorded, its sender signed). Empty means a
	// loopback client with a real port: MediaGoblin on this machine,
	// talking SMTP to Postfix. Mail submitted with sendmail (port 0) never
	// counts: any local user could send it.
	MediaGoblinClients []netip.Prefix
	// BounceDaemonName is the {daemon_name} macro with which Postfix's
	// bounce daemon's cleanup service shows its bounces to
	// non_smtpd_milters (-o milter_macro_daemon_name in master.cf, see
	// contrib/postfix). Only a bounce with it counts as made by this
	// Postfix; local submissions through sendmail and pickup look the same
	// otherwise. Empty: any local bounce counts, and any local user can
	// forge one. It matters only without signed return paths.
	BounceDaemonName string
	// MaxInFlight caps the messages being read at once; a bounce or
	// outgoing message beyond it is accepted unread (never delayed or
	// refused). 0 means DefaultMaxInFlight.
	MaxInFlight int
	// Unread, when set, is called for each message accepted unread (not a
	// bounce of MediaGoblin's mail, not MediaGoblin's own), for the
	// metrics; the Handler and the SendRecorder see the others.
	Unread func()
	// Guard, when set, may stop MediaGoblin's mail to addresses that
	// cannot receive it (discarded instead of sent).
	Guard Guard
}

// DefaultMaxSize is the bounce size cap when Config.MaxSize is 0: a DSN
// with its returned message is rarely above a few hundred kilobytes.
const DefaultMaxSize = 10 << 20

// DefaultMaxInFlight is Config.MaxInFlight when 0. A bounce over the limit
// is delivered unread, so the limit must not be below what Postfix hands
// over at once in a flood: its default_process_limit is 100 smtpd and
// cleanup processes, each with one message at a time. More cores read more
// at once. With each bounce buffered up to MaxSize, memory stays bounded
// (100 × 10 MB on a machine of up to 6 cores).
func DefaultMaxInFlight() int {
	return max(100, 16*runtime.GOMAXPROCS(0))
}

// Filter is a milter server.
type Filter struct {
	cfg      Config
	handler  Handler
	sends    SendRecorder
	rewriter Rewriter
	log      *slog.Logger
	now      func() time.Time

	inflight *inflight
}

// New returns a Filter. sends and rewriter may be nil.
func New(cfg Config, h Handler, sends SendRecorder, rewriter Rewriter, log *slog.Logger) (*Filter, error) {
	if cfg.Sender == "" || !strings.Contains(cfg.Sender, "@") {
		return nil, fmt.Errorf("filter: sender address %q is not an address", cfg.Sender)
	}
	if cfg.MaxSize <= 0 {
		cfg.MaxSize = DefaultMaxSize
	}
	if cfg.Timeout <= 0 {
		cfg.Timeout = 30 * time.Second
	}
	if cfg.MaxInFlight <= 0 {
		cfg.MaxInFlight = DefaultMaxInFlight()
	}
	log = defaults.Log(log)
	return &Filter{cfg: cfg, handler: h, sends: sends, rewriter: rewriter, log: log, now: time.Now, inflight: newInflight()}, nil
}

// InFlight returns the number of messages between Postfix's MAIL command
// and the milter's final answer.
func (f *Filter) InFlight() int { return f.inflight.Load() }

// Serve answers milter connections on ln until ctx is cancelled, then stops
// accepting and waits up to grace for messages in flight to finish.
func (f *Filter) Serve(ctx context.Context, ln net.Listener, grace time.Duration) error {
	ln = &listener{Listener: ln, f: f.inflight, log: f.log, sleep: time.Sleep}
	srv := &milter.Server{
		NewMilter: func() milter.Milter { return &session{f: f} },
		Actions:   milter.OptChangeFrom,
	}
	done := make(chan struct{})
	go func() {
		select {
		case <-ctx.Done():
			// Close ln, not srv: go-milter's Server.Close reads the
			// listener list that Serve appends to, without a lock, and
			// closes nothing when it runs first, leaving Serve blocked.
			ln.Close()
		case <-done:
		}
	}()
	err := srv.Serve(ln)
	close(done)
	if ctx.Err() == nil {
		return fmt.Errorf("milter server: %w", err)
	}
	timer := time.NewTimer(grace)
	defer timer.Stop()
	select {
	case <-f.inflight.Idle():
	case <-timer.C:
		f.log.Warn("stopped with messages in flight; Postfix applies milter_default_action to them", "messages", f.inflight.Load())
	}
	if errors.Is(err, net.ErrClosed) {
		return nil
	}
	return err
}

// fromMediaGoblin reports whether mail from client may be MediaGoblin's:
// a client of Config.MediaGoblinClients, or by default a loopback one, and
// in any case one that connected over SMTP (a real port): port 0 is mail
// made on this machine, which any local user can submit.
func (f *Filter) fromMediaGoblin(c bounce.Client) bool {
	if c.Port == 0 || !c.Addr.IsValid() {
		return false
	}
	if len(f.cfg.MediaGoblinClients) == 0 {
		return c.Addr.IsLoopback()
	}
	for _, p := range f.cfg.MediaGoblinClients {
		if p.Contains(c.Addr) {
			return true
		}
	}
	return false
}

// isOwn reports whether addr is the sender address, or a form of it with a
// recipient delimiter extension (local+tag@domain). The extension follows
// the sender's whole local part, which may hold the delimiter itself: the
// return path of mg+noreply@domain is signed mg+noreply+TAG@domain.
func (f *Filter) isOwn(addr string) bool {
	addr = registry.EmailKey(addr)
	own := registry.EmailKey(f.cfg.Sender)
	if addr == own {
		return true
	}
	at, ownAt := strings.LastIndexByte(addr, '@'), strings.LastIndexByte(own, '@')
	if f.cfg.Delimiter == "" || at < 0 || ownAt <= 0 || addr[at:] != own[ownAt:] {
		return false
	}
	return strings.HasPrefix(addr[:at], own[:ownAt]+f.cfg.Delimiter)
}
