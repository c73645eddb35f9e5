package registry

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"net/netip"
	"strings"
	"time"
)

// Verdict is what the milter concluded from one bounce.
type Verdict string

// The verdicts a bounce can get.
const (
	// VerdictActed: at least one account is to be disabled; the bounce is
	// discarded.
	VerdictActed Verdict = "acted"
	// VerdictNoMatch: no registration has the failed address.
	VerdictNoMatch Verdict = "no-match"
	// VerdictIneligible: a registration matched, but a rule protects it
	// (verified, privileged, too old, allow-listed, not a permanent
	// "no such address" failure).
	VerdictIneligible Verdict = "ineligible"
	// VerdictSuspect: the bounce could not be shown to answer mail this
	// instance sent.
	VerdictSuspect Verdict = "suspect"
	// VerdictNotBounce: the message is not a failure report.
	VerdictNotBounce Verdict = "not-bounce"
)

// ActionKind is what an action does.
type ActionKind string

// The kinds of action.
const (
	BanAccount   ActionKind = "ban-account"
	BanIP        ActionKind = "ban-ip"
	UnbanAccount ActionKind = "unban-account"
	UnbanIP      ActionKind = "unban-ip"
)

// ActionState is where an action is in its life.
type ActionState string

// The states of an action. Pending actions are retried until applied; an
// applied ban becomes undone when the admin restores the account.
const (
	Pending ActionState = "pending"
	Applied ActionState = "applied"
	Undone  ActionState = "undone"
	// Cancelled: the action was no longer wanted before it was applied
	// (the account was restored first).
	Cancelled ActionState = "cancelled"
	// Refused: the target system said the action must not be done (the
	// account became verified or privileged since the bounce). Never retried.
	Refused ActionState = "refused"
)

// Bounce is the evidence one bounce message brought, as journalled.
type Bounce struct {
	ID         int64
	Received   time.Time
	QueueID    string
	EnvelopeTo string
	Client     string
	Verdict    Verdict
	Detail     string
	Report     string // the parsed report, JSON
	Headers    string // the bounce's own header, raw
}

// Action is one thing to do to MediaGoblin or to the firewall.
type Action struct {
	ID          int64
	BounceID    int64 // 0 for actions the admin asked for
	UserID      int64
	Kind        ActionKind
	Target      string // user id or IP address
	Reason      string
	State       ActionState
	Attempts    int
	LastError   string
	NextAttempt time.Time
	Created     time.Time
	Done        time.Time
	// Started is when an attempt began that was never booked as applied,
	// failed or refused: the process died while it was under way, and
	// the action may have taken effect. Zero otherwise.
	Started time.Time
	// Banned is what an applied IP ban banned when that is wider than
	// Target: the network the banner grouped the address in (an IPv6
	// /64 by default). "" otherwise.
	Banned string
}

// RecordBounce journals a bounce and the actions it calls for, durably,
// and returns the bounce's id. Bounces recorded at the same moment share
// one commit. A ban already pending or applied for the same target is not
// queued twice. The milter calls Record, which says what was kept; tests
// and tools that need only the id call this.
func (r *DB) RecordBounce(ctx context.Context, b Bounce, actions []Action) (int64, error) {
	rec, err := r.submit(ctx, b, actions)
	return rec.ID, err
}

// Recorded is what Record journalled: the bounce's id, its verdict and
// detail as written, and how many of the actions were kept (a duplicate of
// a ban in force is kept, and not queued twice). They differ
// from what the caller passed when an account was allow-listed between the
// caller's decision and the commit (see dropAllowed).
type Recorded struct {
	ID      int64
	Verdict Verdict
	Detail  string
	Actions int
}

// Record is RecordBounce, telling what was journalled: a caller that
// decided to discard the message checks that its actions all stood.
func (r *DB) Record(ctx context.Context, b Bounce, actions []Action) (Recorded, error) {
	return r.submit(ctx, b, actions)
}

func (t *Tx) recordBounce(ctx context.Context, b Bounce, actions []Action) (Recorded, error) {
	actions, err := t.dropAllowed(ctx, &b, actions)
	if err != nil {
		return Recorded{}, err
	}
	res, err := t.tx.ExecContext(ctx, `INSERT INTO bounces
		(received, queue_id, envelope_to, client, verdict, detail, report, headers)
		VALUES (?, ?, ?, ?, ?, ?, ?, ?)`,
		unix(b.Received), b.QueueID, b.EnvelopeTo, b.Client, string(b.Verdict), b.Detail, b.Report, b.Headers)
	if err != nil {
		return Recorded{}, err
	}
	id, err := res.LastInsertId()
	if err != nil {
		return Recorded{}, err
	}
	for _, a := range actions {
		a.BounceID = id
		if _, err := t.queue(ctx, a, b.Received); err != nil {
			return Recorded{}, err
		}
	}
	if err := t.queueIPBansOfLinked(ctx, actions, id, b.Received); err != nil {
		return Recorded{}, err
	}
	return Recorded{ID: id, Verdict: b.Verdict, Detail: b.Detail, Actions: len(actions)}, nil
}

// dropAllowed removes from a bounce's actions those of the accounts that
// are allow-listed now. The handler read the allow-list before this
// transaction: an admin's restore (which allow-lists the username and the
// address) committing in between must stick, as queueIPBan makes an
// allow-listed IP stick. When nothing is left, the bounce is journalled as
// ineligible, with the reason in its detail.
func (t *Tx) dropAllowed(ctx context.Context, b *Bounce, actions []Action) ([]Action, error) {
	dropped := map[int64]bool{}
	for _, a := range actions {
		if a.Kind != BanAccount || dropped[a.UserID] {
			continue
		}
		reg, found, err := t.registration(ctx, a.UserID)
		if err != nil {
			return nil, err
		}
		if !found {
			continue // nothing to be allow-listed by; the handler checked
		}
		ok, err := allowed(ctx, t.tx, reg)
		if err != nil {
			return nil, err
		}
		if ok {
			dropped[a.UserID] = true
			b.Detail = strings.TrimPrefix(b.Detail+"; "+reg.Username+" allow-listed meanwhile, not acted on", "; ")
		}
	}
	if len(dropped) == 0 {
		return actions, nil
	}
	var kept []Action
	for _, a := range actions {
		if !dropped[a.UserID] {
			kept = append(kept, a)
		}
	}
	if len(kept) == 0 && (b.Verdict == VerdictActed || b.Verdict == VerdictStopped) {
		b.Verdict = VerdictIneligible
	}
	return kept, nil
}

// Queue adds an action the admin asked for (a restore, say) to the queue.
func (t *Tx) Queue(ctx context.Context, a Action, now time.Time) (int64, error) {
	return t.queue(ctx, a, now)
}

func (t *Tx) queue(ctx context.Context, a Action, now time.Time) (int64, error) {
	if a.Kind == BanIP || a.Kind == UnbanIP {
		// One spelling of an address: the banner bans ::ffff:192.0.2.1 as
		// 192.0.2.1, so the duplicate and restored checks below, which
		// compare text, must see it so too.
		a.Target = canonicalIP(a.Target)
	}
	// A ban pending or in force makes another one a duplicate. An unban
	// only while pending: one applied before is history, and the same
	// address may have been banned again since.
	same := `kind = ? AND target = ? AND state IN ('pending', 'applied')`
	if a.Kind == UnbanAccount || a.Kind == UnbanIP {
		same = `kind = ? AND target = ? AND state = 'pending'`
	}
	if a.Kind == BanAccount || a.Kind == UnbanAccount {
		// An account's target is its user id, and a retired action's id
		// named an earlier account (see Tx.RetireRegistration): its ban
		// is not this one's. An address is the same whoever it was
		// banned for.
		same += ` AND retired = 0`
	}
	var exists bool
	err := t.tx.QueryRowContext(ctx, `SELECT EXISTS(SELECT 1 FROM actions WHERE `+same+`)`, string(a.Kind), a.Target).Scan(&exists)
	if err != nil {
		return 0, fmt.Errorf("queue %s %s: %w", a.Kind, a.Target, err)
	}
	if exists {
		return 0, nil
	}
	if a.Kind == BanIP {
		// An IP whose ban an admin's restore lifted is used by a real
		// person: whatever bouncemilter learns later of another
		// sign-up from it (a bounce, a link, a peer's feed) bans its
		// account, never the IP again.
		var restored bool
		if err := t.tx.QueryRowContext(ctx, `SELECT ? IN (`+restoredIPs+`)`, a.Target).Scan(&restored); err != nil {
			return 0, fmt.Errorf("queue %s %s: %w", a.Kind, a.Target, err)
		}
		if restored {
			return 0, nil
		}
	}
	var bounce any
	if a.BounceID != 0 {
		bounce = a.BounceID
	}
	res, err := t.tx.ExecContext(ctx, `INSERT INTO actions
		(bounce_id, user_id, kind, target, reason, state, next_attempt, created)
		VALUES (?, ?, ?, ?, ?, 'pending', ?, ?)`,
		bounce, a.UserID, string(a.Kind), a.Target, a.Reason, unix(now), unix(now))
	if err != nil {
		return 0, fmt.Errorf("queue %s %s: %w", a.Kind, a.Target, err)
	}
	return res.LastInsertId()
}

const actionColumns = `id, coalesce(bounce_id, 0), user_id, kind, target, reason, state, attempts, last_error, next_attempt, created, coalesce(done, 0), started, banned`

func scanAction(s interface{ Scan(...any) error }) (Action, error) {
	var (
		a                            Action
		kind, state                  string
		next, created, done, started int64
	)
	err := s.Scan(&a.ID, &a.BounceID, &a.UserID, &kind, &a.Target, &a.Reason, &state, &a.Attempts, &a.LastError, &next, &created, &done, &started, &a.Banned)
	a.Kind, a.State = ActionKind(kind), ActionState(state)
	a.NextAttempt, a.Created, a.Done, a.Started = fromUnix(next), fromUnix(created), fromUnix(done), fromUnix(started)
	return a, err
}

// MarkRefused records that an action must never be applied, and why.
func (r *DB) MarkRefused(ctx context.Context, id int64, cause error, now time.Time) error {
	err := r.grouped(ctx, `UPDATE actions SET state = 'refused', done = ?, attempts = attempts + 1, last_error = ?, started = 0
		WHERE id = ? AND state = 'pending'`, unix(now), cause.Error(), id)
	if err != nil {
		return fmt.Errorf("mark action %d refused: %w", id, err)
	}
	return nil
}

// DueActions returns up to limit pending actions whose next attempt is due
// at now, oldest first, whatever they wait for: what the queue holds, for
// tests. The worker reads ReadyActions.
func (r *DB) DueActions(ctx context.Context, now time.Time, limit int) ([]Action, error) {
	rows, err := r.db.QueryContext(ctx, `SELECT `+actionColumns+` FROM actions
		WHERE state = 'pending' AND next_attempt <= ? ORDER BY id LIMIT ?`, unix(now), limit)
	if err != nil {
		return nil, fmt.Errorf("due actions: %w", err)
	}
	return collectActions(rows)
}

// ReadyActions returns up to limit due actions that an attempt can act on,
// oldest first: DueActions less the IP bans still waiting for their
// account's ban (the user's latest ban-account is pending; see
// worker.accountBanned). A waiting IP ban is left out rather than read and
// put back, so that any number of them (MediaGoblin's database down during
// a flood) never fill a batch and hide the actions queued after them; and
// it is ready again the moment its account ban is applied or refused,
// whatever its own next attempt said.
func (r *DB) ReadyActions(ctx context.Context, now time.Time, limit int) ([]Action, error) {
	rows, err := r.db.QueryContext(ctx, `SELECT `+actionColumns+` FROM actions a
		WHERE state = 'pending' AND next_attempt <= ?
		AND NOT (kind = 'ban-ip' AND user_id != 0 AND coalesce((SELECT b.state FROM actions b
			WHERE b.user_id = a.user_id AND b.kind = 'ban-account' AND b.retired = 0
			ORDER BY b.id DESC LIMIT 1), '') = 'pending')
		ORDER BY id LIMIT ?`, unix(now), limit)
	if err != nil {
		return nil, fmt.Errorf("ready actions: %w", err)
	}
	return collectActions(rows)
}

// Actions returns the actions of one user, oldest first.
func (r *DB) Actions(ctx context.Context, userID int64) ([]Action, error) {
	rows, err := r.db.QueryContext(ctx, `SELECT `+actionColumns+` FROM actions WHERE user_id = ? AND retired = 0 ORDER BY id`, userID)
	if err != nil {
		return nil, fmt.Errorf("actions of user %d: %w", userID, err)
	}
	return collectActions(rows)
}

func collectActions(rows *sql.Rows) ([]Action, error) {
	defer rows.Close()
	var out []Action
	for rows.Next() {
		a, err := scanAction(rows)
		if err != nil {
			return nil, err
		}
		out = append(out, a)
	}
	return out, rows.Err()
}

// MarkApplied records that an action took effect, and for an IP ban what
// it banned when that was wider than its target (see Action.Banned; ""
// otherwise). An action no longer pending keeps its state, so that a
// retried worker cannot undo a cancellation; but a ban cancelled while it
// was being applied took effect all the same: its unban is queued again,
// since the one queued at the cancellation may have run before it (a
// restore lifts its bans at once, from another process).
func (r *DB) MarkApplied(ctx context.Context, id int64, now time.Time, banned string) error {
	err := r.groupedTx(ctx, func(ctx context.Context, t *Tx) error {
		res, err := t.tx.ExecContext(ctx, `UPDATE actions SET state = 'applied', done = ?, attempts = attempts + 1, last_error = '', started = 0, banned = ?
			WHERE id = ? AND state = 'pending'`, unix(now), banned, id)
		if err != nil {
			return err
		}
		if n, _ := res.RowsAffected(); n > 0 {
			return nil
		}
		a, err := scanAction(t.tx.QueryRowContext(ctx, `SELECT `+actionColumns+` FROM actions WHERE id = ?`, id))
		if errors.Is(err, sql.ErrNoRows) || err == nil && (a.State != Cancelled || a.Kind != BanAccount && a.Kind != BanIP) {
			return nil
		}
		if err != nil {
			return err
		}
		_, err = t.Queue(ctx, unbanOf(a, a.UserID, "a ban applied after it was cancelled"), now)
		return err
	})
	if err != nil {
		return fmt.Errorf("mark action %d applied: %w", id, err)
	}
	return nil
}

// MarkStarted records, durably, that an attempt at a pending action begins
// at now, for an action whose target cannot take it twice harmlessly (a
// line appended to a ban log). MarkApplied, MarkFailed and MarkRefused
// clear the mark; an action still marked when it is next read was under way
// when the process died, and Action.Started tells the worker to check its
// target before trying again.
func (r *DB) MarkStarted(ctx context.Context, id int64, now time.Time) error {
	err := r.grouped(ctx, `UPDATE actions SET started = ? WHERE id = ? AND state = 'pending'`, unix(now), id)
	if err != nil {
		return fmt.Errorf("mark action %d started: %w", id, err)
	}
	return nil
}

// MarkFailed records a failed attempt and when to try again.
func (r *DB) MarkFailed(ctx context.Context, id int64, cause error, next time.Time) error {
	err := r.grouped(ctx, `UPDATE actions SET attempts = attempts + 1, last_error = ?, next_attempt = ?, started = 0
		WHERE id = ? AND state = 'pending'`, cause.Error(), unix(next), id)
	if err != nil {
		return fmt.Errorf("mark action %d failed: %w", id, err)
	}
	return nil
}

// Disabled is an account that bouncemilter disabled, for review.
type Disabled struct {
	Registration
	ActionID int64
	State    ActionState // pending until MediaGoblin holds the ban
	Reason   string
	When     time.Time // when the bounce was journalled
	Detail   string    // the bounce's verdict detail
	QueueID  string
}

// DisabledAccounts lists the accounts with a ban that is pending or
// applied, newest first.
func (r *DB) DisabledAccounts(ctx context.Context) ([]Disabled, error) {
	return r.DisabledAccountsWhere(ctx, ListFilter{})
}

// Bounce returns one journalled bounce.
func (r *DB) Bounce(ctx context.Context, id int64) (Bounce, error) {
	var (
		b        Bounce
		received int64
		verdict  string
	)
	err := r.db.QueryRowContext(ctx, `SELECT id, received, queue_id, envelope_to, client, verdict, detail, report, headers
		FROM bounces WHERE id = ?`, id).Scan(&b.ID, &received, &b.QueueID, &b.EnvelopeTo, &b.Client, &verdict, &b.Detail, &b.Report, &b.Headers)
	if errors.Is(err, sql.ErrNoRows) {
		return b, fmt.Errorf("bounce %d: %w", id, ErrNotFound)
	}
	if err != nil {
		return b, fmt.Errorf("bounce %d: %w", id, err)
	}
	b.Received, b.Verdict = fromUnix(received), Verdict(verdict)
	return b, nil
}

// CountBounces returns how many bounces got each verdict.
func (r *DB) CountBounces(ctx context.Context) (map[Verdict]int64, error) {
	rows, err := r.db.QueryContext(ctx, `SELECT verdict, count(*) FROM bounces GROUP BY verdict`)
	if err != nil {
		return nil, fmt.Errorf("count bounces: %w", err)
	}
	defer rows.Close()
	out := map[Verdict]int64{}
	for rows.Next() {
		var (
			v string
			n int64
		)
		if err := rows.Scan(&v, &n); err != nil {
			return nil, fmt.Errorf("count bounces: %w", err)
		}
		out[Verdict(v)] = n
	}
	return out, rows.Err()
}

// canonicalIP returns ip as the banner sees it: unmapped from IPv4-mapped
// IPv6, in netip's canonical form. What is not an address is returned as is.
func canonicalIP(ip string) string {
	a, err := netip.ParseAddr(ip)
	if err != nil || a.Zone() != "" {
		return ip
	}
	return a.Unmap().String()
}
