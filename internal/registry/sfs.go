package registry

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"time"
)

// sfsSchema records each report sent to StopForumSpam: what was sent, and
// what the service answered. A sign-up is reported once. Besides
// 'accepted' and 'refused', status is 'sending' while a report is claimed
// (DB.ClaimReport): reported is then the time of the claim.
const sfsSchema = `
CREATE TABLE sfs_reports (
	user_id  INTEGER PRIMARY KEY,
	reported INTEGER NOT NULL,
	username TEXT NOT NULL,
	ip       TEXT NOT NULL,
	email    TEXT NOT NULL,
	evidence TEXT NOT NULL DEFAULT '',
	status   TEXT NOT NULL,          -- 'accepted' or 'refused'
	response TEXT NOT NULL DEFAULT ''
);
`

// Vandal is a sign-up this instance's own evidence proved fake, as
// reported to StopForumSpam.
type Vandal struct {
	UserID   int64
	Username string
	Email    string
	IP       string
	Evidence string // the account ban's reason
}

// sfsClaimTTL is how long a claim (status 'sending') keeps other runs from
// reporting the same sign-up. A claim lives for one submission, at most
// sfs's request timeout of 30 s, and is then marked sent or removed; one
// left behind by a crash (or a run stopped mid-request, when the report may
// have arrived) lapses after this time, so it neither blocks the sign-up for
// ever nor lets another run report it again within minutes.
const sfsClaimTTL = time.Hour

// vandalOf is the one statement of what a confirmed vandal not reported yet
// is, shared by Unreported and ClaimReport: its account ban is applied (so
// MediaGoblin accepted it) on this instance's own evidence, neither it nor
// its IP ban was undone, none of username, address and IP is allow-listed,
// and it has no report, nor a claim younger than sfsClaimTTL. It is the
// FROM and WHERE of a query over actions a and registrations g, to be
// grouped by g.user_id, with the named argument :stale (the unix time
// before which a claim has lapsed).
const vandalOf = `FROM actions a
		JOIN registrations g ON g.user_id = a.user_id AND ` + banOf + `
		WHERE a.kind = 'ban-account' AND ` + ownProof + ` AND a.state = 'applied' AND coalesce(g.ip, '') != ''
		AND EXISTS (SELECT 1 FROM actions i WHERE i.kind = 'ban-ip' AND i.target = g.ip AND i.state = 'applied')
		AND NOT EXISTS (SELECT 1 FROM sfs_reports s WHERE s.user_id = g.user_id
			AND (s.status != 'sending' OR s.reported > :stale))
		AND NOT EXISTS (SELECT 1 FROM allowlist l WHERE (l.kind = 'user' AND l.value = g.username)
			OR (l.kind = 'email' AND l.value = g.email_key) OR (l.kind = 'ip' AND l.value = g.ip))`

// vandalColumns are what a Vandal is scanned from, in scanVandal's order.
const vandalColumns = `g.user_id, g.username, g.email, g.ip, min(a.reason)`

func scanVandal(sc interface{ Scan(...any) error }) (Vandal, error) {
	var v Vandal
	err := sc.Scan(&v.UserID, &v.Username, &v.Email, &v.IP, &v.Evidence)
	return v, err
}

// Unreported returns up to limit sign-ups, oldest first, that are
// confirmed vandals and not reported yet (see vandalOf), as of now. The
// list is read once per run and submissions are spaced out, so each is
// checked again, and claimed, by ClaimReport right before it is sent.
func (r *DB) Unreported(ctx context.Context, limit int, now time.Time) ([]Vandal, error) {
	rows, err := r.db.QueryContext(ctx, `SELECT `+vandalColumns+` `+vandalOf+`
		GROUP BY g.user_id ORDER BY min(a.id) LIMIT :limit`,
		sql.Named("stale", unix(now.Add(-sfsClaimTTL))), sql.Named("limit", limit))
	if err != nil {
		return nil, fmt.Errorf("unreported vandals: %w", err)
	}
	defer rows.Close()
	var out []Vandal
	for rows.Next() {
		v, err := scanVandal(rows)
		if err != nil {
			return nil, fmt.Errorf("unreported vandals: %w", err)
		}
		out = append(out, v)
	}
	return out, rows.Err()
}

// ClaimReport checks, right before its report is sent, that userID is still
// a confirmed vandal not reported yet (vandalOf, as Unreported: an account
// restored or allow-listed since Unreported read it is not), and if so
// claims it in the same transaction: a row with status 'sending', so that a
// run in another process (two syncs at once) does not report it too. It
// returns the vandal as the registry holds it now, and false when it is not
// to be reported. The claim is then settled by Reported, or removed by
// ReleaseReport when the submission failed; one left behind lapses after
// sfsClaimTTL.
func (r *DB) ClaimReport(ctx context.Context, userID int64, now time.Time) (Vandal, bool, error) {
	var v Vandal
	found := false
	err := r.Tx(ctx, func(tx *Tx) error {
		var err error
		v, err = scanVandal(tx.tx.QueryRowContext(ctx, `SELECT `+vandalColumns+` `+vandalOf+`
			AND g.user_id = :user GROUP BY g.user_id`,
			sql.Named("stale", unix(now.Add(-sfsClaimTTL))), sql.Named("user", userID)))
		if errors.Is(err, sql.ErrNoRows) {
			return nil
		}
		if err != nil {
			return err
		}
		// Any row left is a lapsed claim (vandalOf): take it over.
		if _, err := tx.tx.ExecContext(ctx, `INSERT INTO sfs_reports(user_id, reported, username, ip, email, evidence, status)
			VALUES (?, ?, ?, ?, ?, ?, 'sending')
			ON CONFLICT(user_id) DO UPDATE SET reported = excluded.reported, username = excluded.username,
				ip = excluded.ip, email = excluded.email, evidence = excluded.evidence, status = 'sending', response = ''`,
			v.UserID, unix(now), v.Username, v.IP, v.Email, v.Evidence); err != nil {
			return err
		}
		found = true
		return nil
	})
	if err != nil {
		return Vandal{}, false, fmt.Errorf("claim report of user %d: %w", userID, err)
	}
	return v, found, nil
}

// ReleaseReport removes the claim on userID after a submission that failed,
// so that the next run tries again.
func (r *DB) ReleaseReport(ctx context.Context, userID int64) error {
	if _, err := r.exec(ctx, `DELETE FROM sfs_reports WHERE user_id = ? AND status = 'sending'`, userID); err != nil {
		return fmt.Errorf("release report claim of user %d: %w", userID, err)
	}
	return nil
}

// Reported journals a report sent to StopForumSpam and its answer, settling
// its claim; a report already journalled is kept as it is.
func (r *DB) Reported(ctx context.Context, v Vandal, accepted bool, response string, now time.Time) error {
	status := "refused"
	if accepted {
		status = "accepted"
	}
	_, err := r.exec(ctx, `INSERT INTO sfs_reports(user_id, reported, username, ip, email, evidence, status, response)
		VALUES (?, ?, ?, ?, ?, ?, ?, ?)
		ON CONFLICT(user_id) DO UPDATE SET reported = excluded.reported, username = excluded.username,
			ip = excluded.ip, email = excluded.email, evidence = excluded.evidence,
			status = excluded.status, response = excluded.response
		WHERE sfs_reports.status = 'sending'`,
		v.UserID, unix(now), v.Username, v.IP, v.Email, v.Evidence, status, response)
	if err != nil {
		return fmt.Errorf("journal report of %s: %w", v.Username, err)
	}
	return nil
}
