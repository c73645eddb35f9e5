// Package worker applies the actions journalled in the registry: it bans
// and unbans accounts in MediaGoblin and IP addresses through a banner,
// retrying with back-off while either is unavailable, so that an action
// journalled before a crash or an outage is applied once it can be.
//
// Most actions are idempotent at their target (banning a banned account
// changes nothing), so applying one twice after a crash between the action
// and its bookkeeping is harmless. Where that is not so (a ban log would
// hold the line twice), the attempt is marked in the journal before it
// begins and checked at the target after a crash (see BanChecker).
//
// The worker decides nothing: what to do was decided when the bounce was
// journalled, and the target systems may still refuse (an account verified
// meanwhile is never banned).
package worker

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/netip"
	"strconv"
	"time"

	"github.com/bouncemilter/bouncemilter/internal/defaults"
	"github.com/bouncemilter/bouncemilter/internal/refusal"
	"github.com/bouncemilter/bouncemilter/internal/registry"
)

// Queue is the action journal.
type Queue interface {
	// ReadyActions returns the due actions oldest first, less the IP
	// bans waiting for their account's ban (see registry.ReadyActions).
	ReadyActions(ctx context.Context, now time.Time, limit int) ([]registry.Action, error)
	Actions(ctx context.Context, userID int64) ([]registry.Action, error)
	MarkStarted(ctx context.Context, id int64, now time.Time) error
	MarkApplied(ctx context.Context, id int64, now time.Time, banned string) error
	MarkFailed(ctx context.Context, id int64, cause error, next time.Time) error
	MarkRefused(ctx context.Context, id int64, cause error, now time.Time) error
}

// Accounts bans and unbans MediaGoblin accounts.
type Accounts interface {
	BanUser(ctx context.Context, userID int64, reason string) error
	UnbanUser(ctx context.Context, userID int64) error
}

// Banner bans and unbans IP addresses.
type Banner interface {
	Ban(ctx context.Context, ip netip.Addr, reason string) error
	Unban(ctx context.Context, ip netip.Addr) error
}

// Coverer is implemented by banners that may ban more than the address
// they are given: banner.New's bans the IPv6 network of an address.
type Coverer interface {
	Covers(ctx context.Context, ip netip.Addr) (netip.Prefix, error)
}

// BanChecker is implemented by banners whose Ban is not idempotent at the
// target: banner.LogFile writes a second line for a second ban. The worker
// asks it whether an attempt that was under way when the process died
// (Action.Started) took effect, instead of banning again.
type BanChecker interface {
	BannedSince(ctx context.Context, ip netip.Addr, since time.Time) (bool, error)
}

// Worker applies due actions. Make one with New.
type Worker struct {
	Queue    Queue
	Accounts Accounts
	Banner   Banner // nil: IP actions are refused
	Log      *slog.Logger
	// Poll is how often the queue is read when nobody wakes the worker.
	Poll time.Duration
	// MaxBackoff caps the wait between attempts at one action.
	MaxBackoff time.Duration
	// AttemptTimeout bounds one attempt at an action, opening the
	// account store included; zero means DefaultAttemptTimeout.
	AttemptTimeout time.Duration
	Now            func() time.Time

	wake chan struct{}
}

// DefaultAttemptTimeout bounds one attempt at an action. MediaGoblin's
// database can answer and still hold a ban for ever (core__user_bans
// locked by a migration or a session left open; a black-holed link hangs
// the same way), and every action behind it would wait too. It is above
// the targets' own limits (PostgreSQL's lock_timeout and
// statement_timeout, banner.DefaultCommandTimeout), whose errors say more.
const DefaultAttemptTimeout = time.Minute

// errNoAnswer marks an attempt that ran out of AttemptTimeout.
var errNoAnswer = errors.New("no answer")

// errWaiting defers an IP ban until the account ban it belongs to is done.
var errWaiting = errors.New("waiting for the account ban")

// ErrNoBanner refuses IP actions when no banner is configured.
var ErrNoBanner = refusal.New("no IP banner configured")

// New returns a worker; set the optional fields before Run.
func New(q Queue, accounts Accounts, banner Banner, log *slog.Logger) *Worker {
	return &Worker{Queue: q, Accounts: accounts, Banner: banner, Log: log, wake: make(chan struct{}, 1)}
}

// Wake makes a running worker read the queue now. It never blocks.
func (w *Worker) Wake() {
	select {
	case w.wake <- struct{}{}:
	default:
	}
}

// Run applies actions until ctx is cancelled.
func (w *Worker) Run(ctx context.Context) error {
	poll := w.Poll
	if poll <= 0 {
		poll = 5 * time.Second
	}
	t := time.NewTicker(poll)
	defer t.Stop()
	for {
		if _, err := w.RunOnce(ctx); err != nil && ctx.Err() == nil {
			w.log().Error("reading the action queue failed", "err", err)
		}
		select {
		case <-ctx.Done():
			return nil
		case <-w.wake:
		case <-t.C:
		}
	}
}

// BatchAccounts is implemented by account stores that ban many accounts in
// one transaction (see mediagoblin.DB.BanUsers): refused holds the users
// not banned and why; err means none was.
type BatchAccounts interface {
	BanUsers(ctx context.Context, bans map[int64]string) (refused map[int64]error, err error)
}

// RunOnce applies every action that is due and reports how many left the
// queue (applied or refused). The queue is read again after each batch
// that moved something: an account ban applied in it makes its IP ban
// ready, and that IP ban follows in the same run, not a poll later.
func (w *Worker) RunOnce(ctx context.Context) (int, error) {
	done := 0
	for {
		due, err := w.Queue.ReadyActions(ctx, w.now(), 100)
		if err != nil {
			return done, err
		}
		n, err := w.applyAll(ctx, due)
		done += n
		// A batch where nothing left the queue ends the run: what
		// failed comes back after its back-off, what stood behind it at
		// the next poll, and nothing is read again unchanged in a loop.
		if err != nil || n == 0 {
			return done, err
		}
	}
}

// Apply applies the given actions now, as RunOnce applies due ones, and
// books each outcome; nothing else in the queue is touched. accounts
// restore uses it for the unbans it queued itself.
func (w *Worker) Apply(ctx context.Context, actions []registry.Action) (int, error) {
	return w.applyAll(ctx, actions)
}

// applyAll applies a batch of due actions, oldest first, the account bans
// among them together when the store can.
//
// A target that gave no answer within AttemptTimeout is not tried again in
// the same batch: its other actions fail at once, with back-off, instead of
// each waiting out its own deadline before the actions behind them.
func (w *Worker) applyAll(ctx context.Context, due []registry.Action) (int, error) {
	done := 0
	outcome, accountsSilent := w.banAccounts(ctx, due)
	var bannerSilent error // the banner's timeout in this batch
	for _, a := range due {
		silent := &bannerSilent
		if isAccount(a.Kind) {
			silent = &accountsSilent
		}
		var err error
		if res, ok := outcome[a.ID]; ok {
			err = res
		} else if *silent != nil {
			err = fmt.Errorf("not tried: %w", *silent)
		} else {
			err = w.attempt(ctx, func(ctx context.Context) error { return w.do(ctx, a) })
			if errors.Is(err, errNoAnswer) {
				*silent = err
			}
		}
		left, berr := w.book(ctx, a, err)
		if berr != nil {
			return done, berr
		}
		if left {
			done++
		}
	}
	return done, nil
}

// banAccounts bans the accounts of the due ban-account actions in one call
// when the store is a BatchAccounts and there is more than one, and returns
// each action's outcome by id, and the store's errNoAnswer when it gave
// none; otherwise nil, and each is done on its own.
func (w *Worker) banAccounts(ctx context.Context, due []registry.Action) (map[int64]error, error) {
	batch, ok := w.Accounts.(BatchAccounts)
	if !ok {
		return nil, nil
	}
	bans := map[int64]string{}
	var acts []registry.Action
	for _, a := range due {
		if a.Kind != registry.BanAccount {
			continue
		}
		id, err := strconv.ParseInt(a.Target, 10, 64)
		if err != nil {
			continue // do refuses it, alone
		}
		if _, dup := bans[id]; !dup {
			bans[id] = a.Reason
		}
		acts = append(acts, a)
	}
	if len(acts) < 2 {
		return nil, nil
	}
	var refused map[int64]error
	err := w.attempt(ctx, func(ctx context.Context) (err error) {
		refused, err = batch.BanUsers(ctx, bans)
		return err
	})
	outcome := make(map[int64]error, len(acts))
	for _, a := range acts {
		id, _ := strconv.ParseInt(a.Target, 10, 64)
		switch {
		case err != nil:
			outcome[a.ID] = err
		default:
			outcome[a.ID] = refused[id]
		}
	}
	if errors.Is(err, errNoAnswer) {
		return outcome, err
	}
	return outcome, nil
}

// attempt runs one attempt at an action under its own deadline
// (AttemptTimeout). An attempt that ran out of it fails with errNoAnswer,
// to be retried with back-off; a refusal stays a refusal.
func (w *Worker) attempt(ctx context.Context, fn func(context.Context) error) error {
	limit := w.AttemptTimeout
	if limit <= 0 {
		limit = DefaultAttemptTimeout
	}
	actx, cancel := context.WithTimeout(ctx, limit)
	defer cancel()
	err := fn(actx)
	if err != nil && !w.refused(err) && ctx.Err() == nil && errors.Is(actx.Err(), context.DeadlineExceeded) {
		return fmt.Errorf("%w within %s (the target is locked, hung or unreachable): %w", errNoAnswer, limit, err)
	}
	return err
}

// isAccount reports whether actions of kind go to the account store (not
// to the IP banner).
func isAccount(kind registry.ActionKind) bool {
	return kind == registry.BanAccount || kind == registry.UnbanAccount
}

// book records the outcome of one attempt at a. It reports whether the
// action left the queue.
func (w *Worker) book(ctx context.Context, a registry.Action, err error) (bool, error) {
	log := w.log().With("action", a.ID, "kind", a.Kind, "target", a.Target, "user", a.UserID)
	now := w.now()
	switch {
	case errors.Is(err, errWaiting):
		// Not due again until its account ban is done (ReadyActions
		// leaves it out); met here only when that ban was queued
		// after the batch was read.
		return false, nil
	case err == nil:
		banned := w.banned(ctx, a)
		if banned != "" {
			log = log.With("banned", banned)
		}
		log.Info("action applied")
		return true, w.Queue.MarkApplied(ctx, a.ID, now, banned)
	case w.refused(err):
		log.Warn("action refused", "err", err)
		return true, w.Queue.MarkRefused(ctx, a.ID, err, now)
	default:
		next := now.Add(w.backoff(a.Attempts))
		log.Warn("action failed; will retry", "err", err, "attempts", a.Attempts+1, "next", next)
		return false, w.Queue.MarkFailed(ctx, a.ID, err, next)
	}
}

func (w *Worker) do(ctx context.Context, a registry.Action) error {
	switch a.Kind {
	case registry.BanAccount, registry.UnbanAccount:
		id, err := strconv.ParseInt(a.Target, 10, 64)
		if err != nil {
			return fmt.Errorf("%w: bad user id %q", errBadAction, a.Target)
		}
		if a.Kind == registry.BanAccount {
			return w.Accounts.BanUser(ctx, id, a.Reason)
		}
		return w.Accounts.UnbanUser(ctx, id)
	case registry.BanIP, registry.UnbanIP:
		ip, err := netip.ParseAddr(a.Target)
		if err != nil {
			return fmt.Errorf("%w: bad IP %q", errBadAction, a.Target)
		}
		if w.Banner == nil {
			return ErrNoBanner
		}
		if a.Kind == registry.UnbanIP {
			return w.Banner.Unban(ctx, ip)
		}
		// User 0: no account stands behind the ban (the peers' feeds
		// asked for it), and reading all of user 0's actions for each
		// such ban would grow with their number.
		if a.UserID != 0 {
			if err := w.accountBanned(ctx, a.UserID); err != nil {
				return err
			}
		}
		return w.ban(ctx, a, ip)
	}
	return fmt.Errorf("%w: unknown kind %q", errBadAction, a.Kind)
}

var errBadAction = refusal.New("malformed action")

// banned returns what applying a banned, for the journal, when that is
// wider than its target: the network of an IPv6 address. "" otherwise.
func (w *Worker) banned(ctx context.Context, a registry.Action) string {
	c, ok := w.Banner.(Coverer)
	if !ok || a.Kind != registry.BanIP {
		return ""
	}
	ip, err := netip.ParseAddr(a.Target)
	if err != nil || !ip.Unmap().Is6() {
		return "" // an IPv4 address is banned alone
	}
	// Only what the journal shows depends on it: a failure to tell
	// leaves it blank.
	if p, err := c.Covers(ctx, ip); err == nil && !p.IsSingleIP() {
		return p.String()
	}
	return ""
}

// ban bans ip for action a. When the banner is a BanChecker, the attempt is
// marked in the journal, durably, before it begins; an attempt found marked
// was interrupted between the ban and its bookkeeping (a crash), and the
// banner is asked whether it banned ip since then before banning again.
func (w *Worker) ban(ctx context.Context, a registry.Action, ip netip.Addr) error {
	check, ok := w.Banner.(BanChecker)
	if !ok {
		return w.Banner.Ban(ctx, ip, a.Reason)
	}
	if !a.Started.IsZero() {
		done, err := check.BannedSince(ctx, ip, a.Started)
		switch {
		case err != nil:
			// A second ban line is better than a lost ban.
			w.log().Warn("cannot tell whether an interrupted ban took effect; banning again",
				"action", a.ID, "target", a.Target, "started", a.Started, "err", err)
		case done:
			w.log().Info("an interrupted ban had taken effect", "action", a.ID, "target", a.Target, "started", a.Started)
			return nil
		}
	}
	if err := w.Queue.MarkStarted(ctx, a.ID, w.now()); err != nil {
		return err
	}
	return w.Banner.Ban(ctx, ip, a.Reason)
}

// accountBanned lets an IP ban go ahead only once MediaGoblin holds the
// account's ban: if MediaGoblin refused it (the user verified meanwhile),
// the IP belongs to a real user too.
func (w *Worker) accountBanned(ctx context.Context, userID int64) error {
	acts, err := w.Queue.Actions(ctx, userID)
	if err != nil {
		return err
	}
	var last *registry.Action
	for i := range acts {
		if acts[i].Kind == registry.BanAccount {
			last = &acts[i]
		}
	}
	switch {
	case last == nil:
		return nil
	case last.State == registry.Applied:
		return nil
	case last.State == registry.Pending:
		return errWaiting
	}
	return fmt.Errorf("%w: the account ban was %s", errAccountNotBanned, last.State)
}

var errAccountNotBanned = refusal.New("account not banned")

// refused reports whether err means the action must never be applied (see
// package refusal): it is booked refused instead of retried.
func (w *Worker) refused(err error) bool { return refusal.Is(err) }

// backoff doubles from 5 s with each failed attempt, up to MaxBackoff.
func (w *Worker) backoff(attempts int) time.Duration {
	limit := w.MaxBackoff
	if limit <= 0 {
		limit = 10 * time.Minute
	}
	d := 5 * time.Second
	for i := 0; i < attempts && d < limit; i++ {
		d *= 2
	}
	return min(d, limit)
}

func (w *Worker) now() time.Time { return defaults.Now(w.Now) }

func (w *Worker) log() *slog.Logger { return defaults.Log(w.Log) }
