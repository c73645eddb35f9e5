package registry

import (
	"context"
	"fmt"
	"time"
)

// sfsSchema records each report sent to StopForumSpam: what was sent, and
// what the service answered. A sign-up is reported once.
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

// Unreported returns up to limit sign-ups, oldest first, that are
// confirmed vandals and not reported yet: their account ban is applied (so
// MediaGoblin accepted it) on this instance's own evidence, neither it nor
// its IP ban was undone, and none of username, address and IP is
// allow-listed.
func (r *DB) Unreported(ctx context.Context, limit int) ([]Vandal, error) {
	rows, err := r.db.QueryContext(ctx, `SELECT g.user_id, g.username, g.email, g.ip, min(a.reason) FROM actions a
		JOIN registrations g ON g.user_id = a.user_id AND `+banOf+`
		WHERE a.kind = 'ban-account' AND `+ownProof+` AND a.state = 'applied' AND coalesce(g.ip, '') != ''
		AND EXISTS (SELECT 1 FROM actions i WHERE i.kind = 'ban-ip' AND i.target = g.ip AND i.state = 'applied')
		AND g.user_id NOT IN (SELECT user_id FROM sfs_reports)
		AND NOT EXISTS (SELECT 1 FROM allowlist l WHERE (l.kind = 'user' AND l.value = g.username)
			OR (l.kind = 'email' AND l.value = g.email_key) OR (l.kind = 'ip' AND l.value = g.ip))
		GROUP BY g.user_id ORDER BY min(a.id) LIMIT ?`, limit)
	if err != nil {
		return nil, fmt.Errorf("unreported vandals: %w", err)
	}
	defer rows.Close()
	var out []Vandal
	for rows.Next() {
		var v Vandal
		if err := rows.Scan(&v.UserID, &v.Username, &v.Email, &v.IP, &v.Evidence); err != nil {
			return nil, fmt.Errorf("unreported vandals: %w", err)
		}
		out = append(out, v)
	}
	return out, rows.Err()
}

// Reported journals a report sent to StopForumSpam and its answer.
func (r *DB) Reported(ctx context.Context, v Vandal, accepted bool, response string, now time.Time) error {
	status := "refused"
	if accepted {
		status = "accepted"
	}
	_, err := r.exec(ctx, `INSERT INTO sfs_reports(user_id, reported, username, ip, email, evidence, status, response)
		VALUES (?, ?, ?, ?, ?, ?, ?, ?) ON CONFLICT(user_id) DO NOTHING`,
		v.UserID, unix(now), v.Username, v.IP, v.Email, v.Evidence, status, response)
	if err != nil {
		return fmt.Errorf("journal report of %s: %w", v.Username, err)
	}
	return nil
}
