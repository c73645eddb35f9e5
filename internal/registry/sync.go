package registry

import (
	"context"
	"database/sql"
	"errors"
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
// in MediaGoblin, unless an action was journalled for it (it stays
// reviewable). It reports whether a row was deleted.
func (t *Tx) DeleteRegistration(ctx context.Context, userID int64) (bool, error) {
	res, err := t.tx.ExecContext(ctx, `DELETE FROM registrations WHERE user_id = ?
		AND user_id NOT IN (SELECT user_id FROM actions)`, userID)
	if err != nil {
		return false, fmt.Errorf("delete registration %d: %w", userID, err)
	}
	n, _ := res.RowsAffected()
	return n > 0, nil
}

// LinkedIP returns the IP linked to username and how, "" when none or when
// there is no such registration.
func (t *Tx) LinkedIP(ctx context.Context, username string) (ip, source string, err error) {
	rows, err := t.tx.QueryContext(ctx, `SELECT coalesce(ip, ''), coalesce(ip_source, '') FROM registrations WHERE username = ?`, username)
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

// RegisteredName returns the username the registry holds for userID, and
// whether it holds one.
func (t *Tx) RegisteredName(ctx context.Context, userID int64) (string, bool, error) {
	var name string
	err := t.tx.QueryRowContext(ctx, `SELECT username FROM registrations WHERE user_id = ?`, userID).Scan(&name)
	if errors.Is(err, sql.ErrNoRows) {
		return "", false, nil
	}
	if err != nil {
		return "", false, fmt.Errorf("registration %d: %w", userID, err)
	}
	return name, true, nil
}
