package registry

import (
	"context"
	"fmt"
	"time"
)

// UnverifiedSince returns up to limit registrations created at or after
// since that are not verified, with user id greater than afterID, in id
// order: the accounts whose state sync must refresh, since only they can be
// acted on.
func (r *DB) UnverifiedSince(ctx context.Context, since time.Time, afterID int64, limit int) ([]Registration, error) {
	rows, err := r.db.QueryContext(ctx, `SELECT `+registrationColumns+` FROM registrations
		WHERE created >= ? AND verified = 0 AND user_id > ? ORDER BY user_id LIMIT ?`, unix(since), afterID, limit)
	if err != nil {
		return nil, fmt.Errorf("list unverified registrations: %w", err)
	}
	defer rows.Close()
	var out []Registration
	for rows.Next() {
		reg, err := scanRegistration(rows)
		if err != nil {
			return nil, fmt.Errorf("list unverified registrations: %w", err)
		}
		out = append(out, reg)
	}
	return out, rows.Err()
}

// DeleteRegistration forgets a registration whose account no longer exists
// in MediaGoblin. One with journalled actions stays, to be reviewed (and
// its IP and address still count as proven), but its bans still waiting
// are cancelled: the account is gone, and on SQLite its id may soon name
// another. It reports whether a row was deleted.
func (t *Tx) DeleteRegistration(ctx context.Context, userID int64, now time.Time) (bool, error) {
	res, err := t.tx.ExecContext(ctx, `DELETE FROM registrations WHERE user_id = ?
		AND user_id NOT IN (SELECT user_id FROM actions)`, userID)
	if err != nil {
		return false, fmt.Errorf("delete registration %d: %w", userID, err)
	}
	if n, _ := res.RowsAffected(); n > 0 {
		return true, nil
	}
	if err := t.cancelWaitingBans(ctx, userID, now); err != nil {
		return false, fmt.Errorf("delete registration %d: %w", userID, err)
	}
	return false, nil
}

// RetireRegistration forgets the account a registration described when
// MediaGoblin gave its id to another account (SQLite reuses the highest id
// after a deletion), before the new one is stored under the id. Nothing of
// the old account may reach the new one: its IP link is dropped, its bans
// still waiting are cancelled (a ban of the id would ban the new account),
// and its journalled actions are kept as history but retired, so that
// none counts as the new account's (see banOf).
func (t *Tx) RetireRegistration(ctx context.Context, userID int64, now time.Time) error {
	deleted, err := t.DeleteRegistration(ctx, userID, now)
	if err != nil || deleted {
		return err
	}
	if _, err := t.tx.ExecContext(ctx, `UPDATE registrations SET ip = NULL, ip_source = NULL WHERE user_id = ?`, userID); err != nil {
		return fmt.Errorf("retire registration %d: %w", userID, err)
	}
	if _, err := t.tx.ExecContext(ctx, `UPDATE actions SET retired = 1 WHERE user_id = ?`, userID); err != nil {
		return fmt.Errorf("retire registration %d: %w", userID, err)
	}
	return nil
}

// cancelWaitingBans cancels the pending bans of userID (liftBan: an unban
// is queued too, in case a worker is applying one right now).
func (t *Tx) cancelWaitingBans(ctx context.Context, userID int64, now time.Time) error {
	_, err := t.liftBansWhere(ctx, userID, "the account no longer exists in MediaGoblin", now,
		`user_id = ? AND retired = 0 AND kind IN ('ban-account', 'ban-ip') AND state = 'pending'`, userID)
	return err
}

// LinkedIP returns the IP linked to username and how, "" when none or when
// there is no such registration.
func (t *Tx) LinkedIP(ctx context.Context, username string) (ip, source string, err error) {
	rows, err := t.tx.QueryContext(ctx, `SELECT coalesce(ip, ''), coalesce(ip_source, '') FROM registrations WHERE user_id = `+byName, username)
	if err != nil {
		return "", "", fmt.Errorf("read link of %s: %w", username, err)
	}
	defer rows.Close()
	if rows.Next() {
		if err := rows.Scan(&ip, &source); err != nil {
			return "", "", fmt.Errorf("read link of %s: %w", username, err)
		}
	}
	return ip, source, rows.Err()
}

// HasRegistration reports whether username is registered.
func (t *Tx) HasRegistration(ctx context.Context, username string) (bool, error) {
	var n int
	if err := t.tx.QueryRowContext(ctx, `SELECT count(*) FROM registrations WHERE username = ?`, username).Scan(&n); err != nil {
		return false, fmt.Errorf("look up %s: %w", username, err)
	}
	return n > 0, nil
}

// UpsertRegistrations is UpsertRegistration for a batch, with the statement
// prepared once: sync stores a million sign-ups in batches of thousands.
func (t *Tx) UpsertRegistrations(ctx context.Context, regs []Registration) error {
	if len(regs) == 0 {
		return nil
	}
	// A bigger page cache for this connection while a big batch goes in:
	// the indexes of a large registry no longer fit SQLite's 2 MB default,
	// and each insert then rereads their pages.
	if len(regs) >= 1000 {
		if _, err := t.tx.ExecContext(ctx, `PRAGMA cache_size = -16384`); err != nil {
			return fmt.Errorf("store registrations: %w", err)
		}
	}
	stmt, err := t.tx.PrepareContext(ctx, `
INSERT INTO registrations (user_id, username, email, email_key, created, verified, privileged, synced)
VALUES (?, ?, ?, ?, ?, ?, ?, ?)
ON CONFLICT(user_id) DO UPDATE SET
	username = excluded.username, email = excluded.email, email_key = excluded.email_key,
	created = excluded.created, verified = excluded.verified,
	privileged = excluded.privileged, synced = excluded.synced`)
	if err != nil {
		return fmt.Errorf("store registrations: %w", err)
	}
	defer stmt.Close()
	for _, reg := range regs {
		if _, err := stmt.ExecContext(ctx, reg.UserID, reg.Username, reg.Email, EmailKey(reg.Email), unix(reg.Created),
			reg.Verified, reg.Privileged, unix(reg.Synced)); err != nil {
			return fmt.Errorf("store registration %d: %w", reg.UserID, err)
		}
	}
	return nil
}

// MaxRegisteredID returns the highest user id the registry holds, 0 when
// it holds none.
func (r *DB) MaxRegisteredID(ctx context.Context) (int64, error) {
	var id int64
	if err := r.db.QueryRowContext(ctx, `SELECT coalesce(max(user_id), 0) FROM registrations`).Scan(&id); err != nil {
		return 0, fmt.Errorf("highest registered id: %w", err)
	}
	return id, nil
}
