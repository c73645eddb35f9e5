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
// transaction. A linked IP is kept, as UpsertRegistration keeps it.
func (r *DB) StoreRegistrations(ctx context.Context, regs []Registration) error {
	if len(regs) == 0 {
		return nil
	}
	return r.Tx(ctx, func(tx *Tx) error { return tx.UpsertRegistrations(ctx, regs) })
}

// QueueLinkedIPBan is the second half of a ban whose bounce came before the
// web server logged the sign-up's IP: sync calls it when it links username
// to ip. If a bounce queued a ban of that account that is pending or
// applied, and no IP ban of that user is pending or applied, a ban of ip is
// queued with the account ban's reason, and true is returned. An
// allow-listed IP is never queued. The worker lets it go ahead only once
// MediaGoblin holds the account's ban, as for an IP known at bounce time.
func (t *Tx) QueueLinkedIPBan(ctx context.Context, username, ip string, now time.Time) (bool, error) {
	var (
		userID, bounceID int64
		reason           string
	)
	err := t.tx.QueryRowContext(ctx, `SELECT a.user_id, a.bounce_id, a.reason FROM actions a
		JOIN registrations r ON r.user_id = a.user_id
		WHERE r.username = ? AND a.kind = 'ban-account' AND a.state IN ('pending', 'applied')
			AND a.bounce_id IS NOT NULL
		ORDER BY a.id DESC LIMIT 1`, username).Scan(&userID, &bounceID, &reason)
	if errors.Is(err, sql.ErrNoRows) {
		return false, nil
	}
	if err != nil {
		return false, fmt.Errorf("ban the IP of %s: %w", username, err)
	}
	var skip bool
	err = t.tx.QueryRowContext(ctx, `SELECT EXISTS(SELECT 1 FROM actions WHERE user_id = ? AND kind = 'ban-ip'
			AND state IN ('pending', 'applied'))
		OR EXISTS(SELECT 1 FROM allowlist WHERE kind = 'ip' AND value = ?)`, userID, ip).Scan(&skip)
	if err != nil {
		return false, fmt.Errorf("ban the IP of %s: %w", username, err)
	}
	if skip {
		return false, nil
	}
	id, err := t.queue(ctx, Action{BounceID: bounceID, UserID: userID, Kind: BanIP, Target: ip, Reason: reason}, now)
	if err != nil {
		return false, fmt.Errorf("ban the IP of %s: %w", username, err)
	}
	return id != 0, nil
}
