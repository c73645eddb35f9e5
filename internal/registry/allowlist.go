package registry

import (
	"context"
	"database/sql"
	"fmt"
	"net/netip"
	"strconv"
	"time"
)

// AllowKind says what an allow-list entry protects.
type AllowKind string

// The kinds of allow-list entry.
const (
	AllowUser  AllowKind = "user"  // a username
	AllowEmail AllowKind = "email" // an address, as EmailKey has it
	AllowIP    AllowKind = "ip"    // an IP address
)

// Allow protects value from every future action: the bans still waiting
// for it are cancelled (each with an unban queued, as for a restore, in
// case a worker is applying it right now).
func (r *DB) Allow(ctx context.Context, kind AllowKind, value, note string, now time.Time) error {
	return r.Tx(ctx, func(tx *Tx) error { return tx.Allow(ctx, kind, value, note, now) })
}

// Allow is DB.Allow inside the transaction.
func (t *Tx) Allow(ctx context.Context, kind AllowKind, value, note string, now time.Time) error {
	if kind == AllowEmail {
		value = EmailKey(value)
	}
	_, err := t.tx.ExecContext(ctx, `INSERT INTO allowlist(kind, value, note, created) VALUES (?, ?, ?, ?)
		ON CONFLICT(kind, value) DO UPDATE SET note = excluded.note`, string(kind), value, note, unix(now))
	if err != nil {
		return fmt.Errorf("allow %s %s: %w", kind, value, err)
	}
	// The worker does not read the usernames and addresses allowed (the
	// banner reads the IPs, at each ban, only as serve wires it): what
	// the entry protects from now on must not depend on whether the bans
	// were applied yet.
	waiting := `state = 'pending' AND `
	args := []any{value}
	switch kind {
	case AllowIP:
		// A sign-up from an allow-listed IP is never acted on, so the
		// account bans of those already linked to it go too, as when
		// the link comes after the allow-listing
		// (liftAccountBanOfAllowedIP).
		waiting += `(kind = 'ban-ip' AND target = ? OR kind = 'ban-account' AND retired = 0
			AND user_id IN (SELECT user_id FROM registrations WHERE ip = ?))`
		args = append(args, value)
	case AllowUser:
		waiting += `kind IN ('ban-account', 'ban-ip') AND user_id IN (SELECT user_id FROM registrations WHERE username = ?)`
	default:
		waiting += `kind IN ('ban-account', 'ban-ip') AND user_id IN (SELECT user_id FROM registrations WHERE email_key = ?)`
	}
	if _, err := t.liftBansWhere(ctx, 0, fmt.Sprintf("%s %s is allow-listed", kind, value), now, waiting, args...); err != nil {
		return fmt.Errorf("allow %s %s: %w", kind, value, err)
	}
	return nil
}

// AllowedIPs returns what the banner must never cover, each IP as the
// prefix of its full length: the allow-listed IPs, and every IP whose ban a
// restore lifted (an unban-ip whose reason starts with restoredReason),
// since a real person uses it. A ban must not cover one, nor the network
// it is in (see banner.Options.AllowFrom): with --ipv6-prefix 64 a peer's
// listing of a neighbour in a restored user's /64 bans the neighbour's
// address alone, and the restored address itself is refused.
func (r *DB) AllowedIPs(ctx context.Context) ([]netip.Prefix, error) {
	rows, err := r.db.QueryContext(ctx, `SELECT value FROM allowlist WHERE kind = 'ip' UNION `+restoredIPs)
	if err != nil {
		return nil, fmt.Errorf("allow-listed IPs: %w", err)
	}
	defer rows.Close()
	var out []netip.Prefix
	for rows.Next() {
		var v string
		if err := rows.Scan(&v); err != nil {
			return nil, fmt.Errorf("allow-listed IPs: %w", err)
		}
		if p, err := netip.ParsePrefix(v); err == nil {
			out = append(out, p.Masked())
		} else if a, err := netip.ParseAddr(v); err == nil {
			out = append(out, netip.PrefixFrom(a.Unmap(), a.Unmap().BitLen()))
		}
	}
	return out, rows.Err()
}

// Allowed reports whether any of the registration's username, address or
// IP is allow-listed.
func (r *DB) Allowed(ctx context.Context, reg Registration) (bool, error) {
	return allowed(ctx, r.db, reg)
}

// rowQuerier is the database or a transaction, for a read that both make.
type rowQuerier interface {
	QueryRowContext(ctx context.Context, query string, args ...any) *sql.Row
}

// allowed is DB.Allowed on q.
func allowed(ctx context.Context, q rowQuerier, reg Registration) (bool, error) {
	var ok bool
	err := q.QueryRowContext(ctx, `SELECT EXISTS(SELECT 1 FROM allowlist WHERE
		(kind = 'user' AND value = ?) OR (kind = 'email' AND value = ?) OR (kind = 'ip' AND value = ? AND value != ''))`,
		reg.Username, EmailKey(reg.Email), reg.IP).Scan(&ok)
	if err != nil {
		return false, fmt.Errorf("allow-list check for %s: %w", reg.Username, err)
	}
	return ok, nil
}

// restoredReason starts the reason of the unbans Restore queues; by it
// restoredIPs knows the IPs a restore freed.
const restoredReason = "restored by admin: "

// restoredIPs selects the IPs whose ban a restore lifted: a real person
// uses them, so Queue never bans one again and AllowedIPs gives them to
// the banner as never to be covered.
var restoredIPs = `SELECT target FROM actions WHERE kind = 'unban-ip' AND substr(reason, 1, ` +
	strconv.Itoa(len(restoredReason)) + `) = '` + restoredReason + `'`

// Restore undoes what bouncemilter did to one account: pending bans are
// cancelled and applied ones undone, each with an action queued that lifts
// it; the username and address are allow-listed so that a later bounce
// cannot disable it again, and an IP whose ban it lifted is never banned
// again (see Tx.Queue). It returns the unban actions it queued.
func (r *DB) Restore(ctx context.Context, userID int64, note string, now time.Time) ([]Action, error) {
	reg, err := r.Registration(ctx, userID)
	if err != nil {
		return nil, fmt.Errorf("restore: %w", err)
	}
	var queued []Action
	err = r.Tx(ctx, func(tx *Tx) error {
		// The IP ban may have been queued under another sign-up from the
		// same address: it is lifted too, since a real user uses that IP.
		var err error
		queued, err = tx.liftBansWhere(ctx, userID, restoredReason+note, now, `state IN ('pending', 'applied') AND (
			(user_id = ? AND retired = 0 AND kind IN ('ban-account', 'ban-ip')) OR
			(kind = 'ban-ip' AND target = ? AND target != ''))`, userID, reg.IP)
		if err != nil {
			return err
		}
		if err := tx.Allow(ctx, AllowUser, reg.Username, note, now); err != nil {
			return err
		}
		return tx.Allow(ctx, AllowEmail, reg.Email, note, now)
	})
	if err != nil {
		return nil, fmt.Errorf("restore user %d: %w", userID, err)
	}
	return queued, nil
}

// liftBansWhere lifts (liftBan) every action that where selects (a
// condition on the actions table, with args), in id order, queueing each
// unban under userID, or under the ban's own user when userID is 0, with
// reason. It returns the unbans.
func (t *Tx) liftBansWhere(ctx context.Context, userID int64, reason string, now time.Time, where string, args ...any) ([]Action, error) {
	rows, err := t.tx.QueryContext(ctx, `SELECT `+actionColumns+` FROM actions WHERE `+where+` ORDER BY id`, args...)
	if err != nil {
		return nil, err
	}
	bans, err := collectActions(rows)
	if err != nil {
		return nil, err
	}
	var unbans []Action
	for _, ban := range bans {
		owner := userID
		if owner == 0 {
			owner = ban.UserID
		}
		undo, err := t.liftBan(ctx, ban, owner, reason, now)
		if err != nil {
			return nil, err
		}
		unbans = append(unbans, undo)
	}
	return unbans, nil
}

// liftBan ends ban, a ban-account or ban-ip action that is pending or
// applied: a pending one is cancelled, an applied one undone, and either
// way an unban is queued for userID with reason. Queued even for a pending
// ban: a worker may be applying it right now, and lifting a ban that is not
// there is harmless. It returns the unban as queued (ID 0 when one was
// pending already).
func (t *Tx) liftBan(ctx context.Context, ban Action, userID int64, reason string, now time.Time) (Action, error) {
	if err := t.endBan(ctx, ban, now); err != nil {
		return Action{}, err
	}
	undo := unbanOf(ban, userID, reason)
	id, err := t.Queue(ctx, undo, now)
	if err != nil {
		return Action{}, err
	}
	undo.ID, undo.State = id, Pending
	return undo, nil
}

// endBan ends ban in the journal alone: a pending ban is cancelled, an
// applied one undone. Nothing is queued to lift it.
func (t *Tx) endBan(ctx context.Context, ban Action, now time.Time) error {
	state := Undone
	if ban.State == Pending {
		state = Cancelled
	}
	if _, err := t.tx.ExecContext(ctx, `UPDATE actions SET state = ?, done = ? WHERE id = ?`, string(state), unix(now), ban.ID); err != nil {
		return fmt.Errorf("lift %s %s: %w", ban.Kind, ban.Target, err)
	}
	return nil
}

// unbanOf is the action that lifts ban, queued for userID with reason.
func unbanOf(ban Action, userID int64, reason string) Action {
	undo := Action{UserID: userID, Kind: UnbanAccount, Target: ban.Target, Reason: reason}
	if ban.Kind == BanIP {
		undo.Kind = UnbanIP
	}
	return undo
}

// UserTarget is the Target of an account action.
func UserTarget(userID int64) string { return strconv.FormatInt(userID, 10) }
