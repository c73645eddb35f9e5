package mediagoblin

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"sort"
	"strings"
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
	db, release, err := d.pool()
	if err != nil {
		return st, err
	}
	defer release()
	if err := db.QueryRowContext(ctx, d.rebind(`SELECT count(*) FROM core__local_users WHERE id = ?`), userID).Scan(&n); err != nil {
		return st, d.wrap(what, err)
	}
	if n == 0 {
		return st, nil
	}
	st.Exists = true
	var expires any
	err = db.QueryRowContext(ctx, d.rebind(`SELECT reason, expiration_date FROM core__user_bans WHERE user_id = ?`), userID).Scan(&st.BanReason, &expires)
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
	rows, err := db.QueryContext(ctx, d.rebind(`SELECT p.privilege_name FROM core__privileges_users pu
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

// CheckRights checks that the connection may do what the milter does:
// read the users and their privileges, and write core__user_bans. It
// changes nothing. An error names what is missing.
func (d *DB) CheckRights(ctx context.Context) error {
	if _, err := d.UsersAfter(ctx, 0, 1); err != nil {
		return err
	}
	if _, _, err := d.IsBanned(ctx, 0); err != nil {
		return err
	}
	db, release, err := d.pool()
	if err != nil {
		return err
	}
	defer release()
	switch d.backend {
	case Postgres:
		var missing []string
		for _, want := range []struct{ table, rights string }{
			{"core__users", "SELECT"}, {"core__local_users", "SELECT"}, {"core__privileges", "SELECT"},
			{"core__privileges_users", "SELECT"}, {"core__user_bans", "SELECT"}, {"core__user_bans", "INSERT"},
			{"core__user_bans", "DELETE"},
		} {
			var ok bool
			if err := db.QueryRowContext(ctx, `SELECT has_table_privilege(current_user, $1, $2)`, want.table, want.rights).Scan(&ok); err != nil {
				return d.wrap("check rights", err)
			}
			if !ok {
				missing = append(missing, want.rights+" on "+want.table)
			}
		}
		if len(missing) > 0 {
			return fmt.Errorf("mediagoblin database %s: %w: %s", d.where, ErrNoRights, strings.Join(missing, ", "))
		}
	case SQLite:
		// An immediate transaction takes the write lock, which a read-only
		// file or directory refuses; rolled back, it writes nothing.
		tx, err := db.BeginTx(ctx, nil)
		if err == nil {
			_, err = tx.ExecContext(ctx, `DELETE FROM core__user_bans WHERE 0`)
			tx.Rollback()
		}
		if err != nil {
			return fmt.Errorf("mediagoblin database %s: %w: %v", d.where, ErrNoRights, err)
		}
	}
	return nil
}

// ErrNoRights: the database refuses what the milter needs to do.
var ErrNoRights = errors.New("missing rights")
