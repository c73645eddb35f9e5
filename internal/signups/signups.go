// Package signups copies single MediaGoblin sign-ups into the registry at
// the moment they matter, instead of waiting for the next sync: when
// MediaGoblin's mail to an address passes the milter (Copier.CopySignups),
// and when an authentic bounce names an address the registry does not
// know (Journal, a bounce.Journal that falls back to MediaGoblin).
//
// A bot's sign-up, its verification mail and the bounce of that mail come
// within about a second of each other; a sync that runs once a minute
// would let every bounce find no sign-up. Only the users MediaGoblin
// created after the sync cursor are read (a range of its primary key, with
// the addresses as filter), because every older one is in the registry
// already, or too old to act on.
//
// It never decides anything and never writes to MediaGoblin's database.
// After a failure it pauses (DefaultPause), so that a database that is down
// costs the mail and the bounces nothing.
// Errors are returned for the caller to log: a failed copy must never
// delay or refuse mail, and a bounce that still finds no sign-up is
// delivered as before.
package signups

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"time"

	"github.com/bouncemilter/bouncemilter/internal/bounce"
	"github.com/bouncemilter/bouncemilter/internal/defaults"
	"github.com/bouncemilter/bouncemilter/internal/mediagoblin"
	"github.com/bouncemilter/bouncemilter/internal/registry"
)

// Source reads MediaGoblin's users by address. *mediagoblin.DB is one.
type Source interface {
	UsersByEmail(ctx context.Context, emails []string, afterID int64) ([]mediagoblin.User, error)
}

// Registry is where copied sign-ups go.
type Registry interface {
	SyncCursor(ctx context.Context) (int64, error)
	StoreRegistrations(ctx context.Context, regs []registry.Registration) error
}

// DefaultTimeout bounds one copy. The mail waits for it (the milter
// answers at the end of the message), so it is short: a copy that times
// out costs only the real-time path, and the next sync still copies the
// sign-up.
const DefaultTimeout = 2 * time.Second

// DefaultPause is how long copies are not tried after one failed: while
// MediaGoblin's database is down or locked, mail and bounces must not each
// wait for a timeout.
const DefaultPause = 10 * time.Second

// ErrPaused is returned, without trying, while copies pause after a failure.
var ErrPaused = errors.New("signups: MediaGoblin's database failed moments ago; not tried")

// Copier copies sign-ups from MediaGoblin into the registry. The zero value
// is not usable: set Open and Registry.
type Copier struct {
	// Open opens MediaGoblin's database. It is called on first use and
	// again after a failure, so that the milter starts while MediaGoblin's
	// database is down.
	Open     func(ctx context.Context) (Source, error)
	Registry Registry
	// Timeout bounds one copy; zero means DefaultTimeout.
	Timeout time.Duration
	// Pause is how long copies are not tried after a failure; zero means
	// DefaultPause.
	Pause time.Duration
	Log   *slog.Logger
	Now   func() time.Time

	mu     sync.Mutex
	src    Source
	paused time.Time // no copy tried before this
}

// CopySignups copies the sign-ups of MediaGoblin's users with these
// addresses created after the sync cursor (those sync has not passed yet),
// and returns them.
func (c *Copier) CopySignups(ctx context.Context, emails []string) ([]registry.Registration, error) {
	if len(emails) == 0 {
		return nil, nil
	}
	timeout := c.Timeout
	if timeout <= 0 {
		timeout = DefaultTimeout
	}
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	cursor, err := c.Registry.SyncCursor(ctx)
	if err != nil {
		return nil, fmt.Errorf("copy sign-ups: %w", err)
	}
	src, err := c.source(ctx)
	if err != nil {
		return nil, fmt.Errorf("copy sign-ups: %w", err)
	}
	users, err := src.UsersByEmail(ctx, emails, cursor)
	if errors.Is(err, mediagoblin.ErrReplaced) {
		// The file was replaced under the read; the source opens it
		// again before the next one.
		users, err = src.UsersByEmail(ctx, emails, cursor)
	}
	if err != nil {
		c.forget(src, err)
		return nil, fmt.Errorf("copy sign-ups: %w", err)
	}
	now := c.now()
	regs := make([]registry.Registration, 0, len(users))
	for _, u := range users {
		regs = append(regs, registry.Registration{
			UserID: u.ID, Username: u.Username, Email: u.Email, Created: u.Created,
			Verified: u.Verified, Privileged: u.Privileged, Synced: now,
		})
	}
	if err := c.Registry.StoreRegistrations(ctx, regs); err != nil {
		return nil, fmt.Errorf("copy sign-ups: %w", err)
	}
	if len(regs) > 0 {
		c.log().Debug("sign-ups copied from MediaGoblin", "users", len(regs), "after", cursor)
	}
	return regs, nil
}

func (c *Copier) source(ctx context.Context) (Source, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.now().Before(c.paused) {
		return nil, ErrPaused
	}
	if c.src != nil {
		return c.src, nil
	}
	src, err := c.Open(ctx)
	if err != nil {
		c.pause()
		return nil, err
	}
	c.src = src
	return src, nil
}

// forget drops a source that failed with err, closing it, so that the
// next copy opens a fresh one (MediaGoblin's database may have been
// restarted), and pauses copies. A source dropped already (another
// connection's copy failed on it) is not the current one: its failure
// says nothing of the source opened since, and does not pause. Nor does
// ErrReplaced: the file is there, and *mediagoblin.DB opens it again
// itself; closing it would fail the reads of other connections.
func (c *Copier) forget(src Source, err error) {
	if errors.Is(err, mediagoblin.ErrReplaced) {
		return
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.src == src {
		c.pause()
		c.closeLocked()
	}
}

// closeLocked closes and drops the source; c.mu is held.
func (c *Copier) closeLocked() {
	if cl, ok := c.src.(interface{ Close() error }); ok {
		cl.Close()
	}
	c.src = nil
}

// pause stops copies for a while; c.mu is held.
func (c *Copier) pause() {
	d := c.Pause
	if d <= 0 {
		d = DefaultPause
	}
	c.paused = c.now().Add(d)
}

func (c *Copier) now() time.Time { return defaults.Now(c.Now) }

func (c *Copier) log() *slog.Logger { return defaults.Log(c.Log) }

// Journal is a bounce.Journal whose RegistrationsByEmail, on a registry
// miss, copies the address's sign-up from MediaGoblin and returns it. The
// handler asks only after it has shown the bounce authentic (it answers
// mail this instance sent to exactly that address), so a forged bounce
// never makes the milter query MediaGoblin. A failed copy is logged and
// counts as a miss: the bounce is then delivered, as any bounce that
// matches no sign-up.
type Journal struct {
	bounce.Journal
	Copier *Copier
}

// RegistrationsByEmail looks addr up in the registry, then in MediaGoblin.
func (j Journal) RegistrationsByEmail(ctx context.Context, addr string) ([]registry.Registration, error) {
	regs, err := j.Journal.RegistrationsByEmail(ctx, addr)
	if err != nil || len(regs) > 0 || j.Copier == nil {
		return regs, err
	}
	copied, cerr := j.Copier.CopySignups(ctx, []string{addr})
	if cerr != nil {
		j.Copier.log().Warn("looking up a bounced address in MediaGoblin failed", "address", addr, "err", cerr)
		return nil, nil
	}
	if len(copied) == 0 {
		return nil, nil
	}
	// Read back from the registry: it holds every sign-up with that
	// address (EmailKey), with any IP already linked.
	return j.Journal.RegistrationsByEmail(ctx, addr)
}
