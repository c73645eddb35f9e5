package registry

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"strconv"
	"time"
)

// StateSyncCursor is the state key under which sync keeps the highest
// MediaGoblin user id it has copied: every user up to it is in the
// registry (or was too old to keep). Sign-ups above it are the ones a
// copy at mail or bounce time may still have to fetch.
const StateSyncCursor = "sync.cursor"

// SyncCursor returns the value kept under StateSyncCursor, 0 before the
// first sync.
func (r *DB) SyncCursor(ctx context.Context) (int64, error) {
	v, err := r.State(ctx, StateSyncCursor)
	if err != nil || v == "" {
		return 0, err
	}
	n, err := strconv.ParseInt(v, 10, 64)
	if err != nil {
		return 0, fmt.Errorf("registry state %s = %q: %w", StateSyncCursor, v, err)
	}
	return n, nil
}

// StoreRegistrations upserts sign-ups copied from MediaGoblin outside a
// sync (when their mail or their bounce passes the milter), in one
// transaction. A linked IP is kept, as UpsertRegistration keeps it, unless
// the id names another account than the one the registry holds under it
// (SQLite reuses the highest id after a deletion): that one is retired
// first, as sync does, since sync will find the new account's name
// already stored and see nothing to retire.
func (r *DB) StoreRegistrations(ctx context.Context, regs []Registration) error {
	if len(regs) == 0 {
		return nil
	}
	return r.Tx(ctx, func(tx *Tx) error {
		for _, reg := range regs {
			if err := tx.RetireIfReused(ctx, reg, reg.Synced); err != nil {
				return err
			}
		}
		return tx.UpsertRegistrations(ctx, regs)
	})
}

// RetireIfReused retires (RetireRegistration) what the registry holds
// under reg's id when that is another account (SameAccount): SQLite hands
// the highest id out again after a deletion, and the old account's IP link
// and bans are not the new one's. Sync and the milter's copies call it
// before storing a sign-up, so whichever copies it first, the same happens.
func (t *Tx) RetireIfReused(ctx context.Context, reg Registration, now time.Time) error {
	old, ok, err := t.registration(ctx, reg.UserID)
	if err != nil || !ok || old.SameAccount(reg) {
		return err
	}
	return t.RetireRegistration(ctx, reg.UserID, now)
}

// QueueLinkedIPBan is the second half of a ban whose bounce came before the
// web server logged the sign-up's IP: sync calls it when it links username
// to ip. If a bounce queued a ban of that account that is pending or
// applied, an IP ban is queued as for an IP known at bounce time (see
// queueIPBan), and true is returned. The worker lets it go ahead only once
// MediaGoblin holds the account's ban.
func (t *Tx) QueueLinkedIPBan(ctx context.Context, username, ip string, now time.Time) (bool, error) {
	var (
		userID, bounceID int64
		reason           string
	)
	err := t.tx.QueryRowContext(ctx, `SELECT a.user_id, a.bounce_id, a.reason FROM actions a
		JOIN registrations g ON g.user_id = a.user_id
		WHERE g.user_id = `+byName+` AND a.kind = 'ban-account' AND a.state IN ('pending', 'applied')
			AND a.bounce_id IS NOT NULL AND `+banOf+`
		ORDER BY a.id DESC LIMIT 1`, username).Scan(&userID, &bounceID, &reason)
	if errors.Is(err, sql.ErrNoRows) {
		return false, nil
	}
	if err != nil {
		return false, fmt.Errorf("ban the IP of %s: %w", username, err)
	}
	return t.queueIPBan(ctx, Action{BounceID: bounceID, UserID: userID, Kind: BanIP, Target: ip, Reason: reason}, now)
}

// ipAllowed reports whether ip is allow-listed.
func (t *Tx) ipAllowed(ctx context.Context, ip string) (bool, error) {
	var ok bool
	if err := t.tx.QueryRowContext(ctx, `SELECT EXISTS(SELECT 1 FROM allowlist WHERE kind = 'ip' AND value = ?)`, ip).Scan(&ok); err != nil {
		return false, fmt.Errorf("allow-list check for %s: %w", ip, err)
	}
	return ok, nil
}

// liftAccountBanOfAllowedIP undoes the account ban a bounce queued before
// sync linked the sign-up to an allow-listed IP. Had the link come first,
// the allow-list would have kept the bounce from acting at all (a sign-up
// from an allow-listed IP is never acted on); the order in which the web
// server's log line and the bounce arrive must not decide that.
func (t *Tx) liftAccountBanOfAllowedIP(ctx context.Context, userID int64, ip string, now time.Time) error {
	_, err := t.liftBansWhere(ctx, userID, "sign-up IP "+ip+" is allow-listed", now,
		`user_id = ? AND retired = 0 AND kind = 'ban-account' AND state IN ('pending', 'applied') AND bounce_id IS NOT NULL`, userID)
	if err != nil {
		return fmt.Errorf("lift the ban of user %d: %w", userID, err)
	}
	return nil
}

// queueIPBansOfLinked closes the race between a bounce and the link of its
// sign-up's IP: the handler read the registration before sync linked it,
// and sync looked for the account ban before the bounce was journalled.
// Both write in one transaction each, one after the other, so whichever
// commits second sees the other: here, in the bounce's transaction, each
// account ban without an IP ban gets one if its registration is now
// linked.
func (t *Tx) queueIPBansOfLinked(ctx context.Context, actions []Action, bounceID int64, now time.Time) error {
	hasIP := map[int64]bool{}
	for _, a := range actions {
		if a.Kind == BanIP {
			hasIP[a.UserID] = true
		}
	}
	for _, a := range actions {
		if a.Kind != BanAccount || hasIP[a.UserID] {
			continue
		}
		var ip string
		err := t.tx.QueryRowContext(ctx, `SELECT coalesce(ip, '') FROM registrations WHERE user_id = ?`, a.UserID).Scan(&ip)
		if errors.Is(err, sql.ErrNoRows) || (err == nil && ip == "") {
			continue
		}
		if err != nil {
			return fmt.Errorf("read the IP of user %d: %w", a.UserID, err)
		}
		if _, err := t.queueIPBan(ctx, Action{BounceID: bounceID, UserID: a.UserID, Kind: BanIP, Target: ip, Reason: a.Reason}, now); err != nil {
			return err
		}
	}
	return nil
}

// queueIPBan queues a, a ban of its user's sign-up IP, unless an IP ban of
// that user is pending or applied already. An allow-listed IP is not
// banned, and the account ban a bounce queued for the user is lifted
// instead (see liftAccountBanOfAllowedIP). It reports whether it queued a
// ban.
func (t *Tx) queueIPBan(ctx context.Context, a Action, now time.Time) (bool, error) {
	allowed, err := t.ipAllowed(ctx, a.Target)
	if err != nil {
		return false, err
	}
	if allowed {
		return false, t.liftAccountBanOfAllowedIP(ctx, a.UserID, a.Target, now)
	}
	var skip bool
	err = t.tx.QueryRowContext(ctx, `SELECT EXISTS(SELECT 1 FROM actions WHERE user_id = ? AND retired = 0 AND kind = 'ban-ip'
			AND state IN ('pending', 'applied'))`, a.UserID).Scan(&skip)
	if err != nil {
		return false, fmt.Errorf("ban IP %s of user %d: %w", a.Target, a.UserID, err)
	}
	if skip {
		return false, nil
	}
	id, err := t.queue(ctx, a, now)
	if err != nil {
		return false, fmt.Errorf("ban IP %s of user %d: %w", a.Target, a.UserID, err)
	}
	return id != 0, nil
}

// WithdrawIPBan is called by sync when the link of username to oldIP is
// withdrawn: replaced by exact evidence of another address, or contradicted
// by a later sighting. A ban of oldIP queued for that sign-up was a ban of
// the wrong address, and is lifted (a pending one cancelled, an applied one
// undone with an unban queued), unless another sign-up whose account a
// bounce banned is still linked to oldIP: then the IP ban stands on that
// evidence. v6bits is serve's --ipv6-prefix: a ban whose network another
// ban in force still needs is ended in the journal only (see withdrawBan).
// It reports whether it queued an unban.
func (t *Tx) WithdrawIPBan(ctx context.Context, username, oldIP string, v6bits int, now time.Time) (bool, error) {
	if oldIP == "" {
		return false, nil
	}
	rows, err := t.tx.QueryContext(ctx, `SELECT `+actionColumns+` FROM actions
		WHERE kind = 'ban-ip' AND target = ? AND state IN ('pending', 'applied') AND retired = 0
			AND user_id = `+byName, oldIP, username)
	if err != nil {
		return false, fmt.Errorf("withdraw the IP ban of %s: %w", username, err)
	}
	bans, err := collectActions(rows)
	if err != nil {
		return false, fmt.Errorf("withdraw the IP ban of %s: %w", username, err)
	}
	if len(bans) == 0 {
		return false, nil
	}
	var stillJustified bool
	err = t.tx.QueryRowContext(ctx, `SELECT EXISTS(SELECT 1 FROM registrations g JOIN actions a ON a.user_id = g.user_id
		WHERE g.ip = ? AND g.username != ? AND a.kind = 'ban-account' AND a.state IN ('pending', 'applied')
			AND a.bounce_id IS NOT NULL AND `+banOf+`)`, oldIP, username).Scan(&stillJustified)
	if err != nil {
		return false, fmt.Errorf("withdraw the IP ban of %s: %w", username, err)
	}
	if stillJustified {
		return false, nil
	}
	var lifted bool
	for _, ban := range bans {
		queued, err := t.withdrawBan(ctx, ban, ban.UserID, "the web log no longer links "+username+" to "+oldIP, v6bits, now)
		if err != nil {
			return false, fmt.Errorf("withdraw the IP ban of %s: %w", username, err)
		}
		lifted = lifted || queued
	}
	return lifted, nil
}
