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
	"strings"
	"sync/atomic"
	"time"

	"github.com/emersion/go-milter"

	"github.com/bouncemilter/bouncemilter/internal/bounce"
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

// Filter is a milter server.
type Filter struct {
	cfg      Config
	handler  Handler
	sends    SendRecorder
	rewriter Rewriter
	log      *slog.Logger
	now      func() time.Time

	inflight atomic.Int64
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
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	return &Filter{cfg: cfg, handler: h, sends: sends, rewriter: rewriter, log: log, now: time.Now}, nil
}

// Serve answers milter connections on ln until ctx is cancelled, then stops
// accepting and waits up to grace for messages in flight to finish.
func (f *Filter) Serve(ctx context.Context, ln net.Listener, grace time.Duration) error {
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
	deadline := time.Now().Add(grace)
	for f.inflight.Load() > 0 && time.Now().Before(deadline) {
		time.Sleep(20 * time.Millisecond)
	}
	if n := f.inflight.Load(); n > 0 {
		f.log.Warn("stopped with messages in flight; Postfix applies milter_default_action to them", "messages", n)
	}
	if errors.Is(err, net.ErrClosed) {
		return nil
	}
	return err
}

// isOwn reports whether addr is the sender address, or a form of it with a
// recipient delimiter extension (local+tag@domain).
func (f *Filter) isOwn(addr string) bool {
	addr = registry.EmailKey(addr)
	own := registry.EmailKey(f.cfg.Sender)
	if addr == own {
		return true
	}
	if f.cfg.Delimiter == "" {
		return false
	}
	at := strings.LastIndexByte(addr, '@')
	if at < 0 {
		return false
	}
	local, domain := addr[:at], addr[at:]
	if i := strings.Index(local, f.cfg.Delimiter); i > 0 {
		return local[:i]+domain == own
	}
	return false
}
