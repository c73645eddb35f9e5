package mediagoblin

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"sort"
	"time"
)

// LiveState is what MediaGoblin itself says of an account right now, for
// the admin who reviews it: whether it is banned and why, whether its
// address is verified, and every privilege it holds.
type LiveState struct {
	Exists    bool
	Banned    bool
	BanReason string
	// BanExpires is when the ban ends; zero for a permanent one.
	BanExpires time.Time
	Verified   bool
	Privileges []string // sorted by name
}

// State reads the live state of one user. It only reads: a database
// opened with Config.ReadOnly does. A user that does not exist gives a
// LiveState with Exists false, not an error.
func (d *DB) State(ctx context.Context, userID int64) (LiveState, error) {
	var st LiveState
	what := fmt.Sprintf("read state of user %d", userID)
	var n int
	if err := d.db.QueryRowContext(ctx, d.rebind(`SELECT count(*) FROM core__local_users WHERE id = ?`), userID).Scan(&n); err != nil {
		return st, d.wrap(what, err)
	}
	if n == 0 {
		return st, nil
	}
	st.Exists = true
	var expires any
	err := d.db.QueryRowContext(ctx, d.rebind(`SELECT reason, expiration_date FROM core__user_bans WHERE user_id = ?`), userID).Scan(&st.BanReason, &expires)
	switch {
	case errors.Is(err, sql.ErrNoRows):
	case err != nil:
		return st, d.wrap(what, err)
	default:
		st.Banned = true
		if expires != nil {
			if st.BanExpires, err = parseTimestamp(expires); err != nil {
				return st, fmt.Errorf("%s: ban expiration: %w", what, err)
			}
		}
	}
	rows, err := d.db.QueryContext(ctx, d.rebind(`SELECT p.privilege_name FROM core__privileges_users pu
		JOIN core__privileges p ON p.id = pu.privilege WHERE pu."user" = ?`), userID)
	if err != nil {
		return st, d.wrap(what, err)
	}
	defer rows.Close()
	for rows.Next() {
		var p string
		if err := rows.Scan(&p); err != nil {
			return st, d.wrap(what, err)
		}
		st.Privileges = append(st.Privileges, p)
		if p == "active" {
			st.Verified = true
		}
	}
	if err := rows.Err(); err != nil {
		return st, d.wrap(what, err)
	}
	sort.Strings(st.Privileges)
	return st, nil
}
