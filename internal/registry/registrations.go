package registry

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"strings"
	"time"
)

// Registration is a MediaGoblin sign-up as the registry knows it.
type Registration struct {
	UserID   int64
	Username string
	Email    string
	Created  time.Time // UTC
	// Verified is true once the account holds MediaGoblin's 'active'
	// privilege: its address received mail, so it exists.
	Verified bool
	// Privileged is true for admins and moderators, who are never touched.
	Privileged bool
	// IP is the address the sign-up came from, "" while unknown.
	IP string
	// IPSource says how IP was linked: "signup-log" (the Location header
	// named the user) or "combined-log" (a POST and the GET it led to).
	IPSource string
	// Synced is when sync last saw the account in MediaGoblin.
	Synced time.Time
}

// EmailKey is the form addresses are looked up by: the whole address with
// A to Z lowercased. MediaGoblin lowercases only the domain, but remote
// servers report recipients in whatever case they like, and two sign-ups
// that differ only in the case of the local part are the same mailbox in
// practice. Only ASCII: Unicode lowercasing maps other letters onto ASCII
// ones (the Kelvin sign K onto k, İ onto i), so a bot signing up as
// "Kim@" with a Kelvin sign would share the key, and the feed hash, of
// the real kim@. What acts on an address compares it exactly
// (SameAddress); the key only finds candidates.
func EmailKey(addr string) string {
	addr = strings.TrimSpace(addr)
	for i := 0; i < len(addr); i++ {
		if 'A' <= addr[i] && addr[i] <= 'Z' {
			b := []byte(addr)
			for j := i; j < len(b); j++ {
				if 'A' <= b[j] && b[j] <= 'Z' {
					b[j] += 'a' - 'A'
				}
			}
			return string(b)
		}
	}
	return addr
}

// SameAddress reports whether a and b are one address: the local part
// compared exactly, the domain without regard to ASCII case (RFC 5321
// section 2.4 leaves the local part's case to the receiving server).
func SameAddress(a, b string) bool {
	i, j := strings.LastIndexByte(a, '@'), strings.LastIndexByte(b, '@')
	if i < 0 || j < 0 {
		return a == b
	}
	return a[:i] == b[:j] && EmailKey(a[i:]) == EmailKey(b[j:])
}

// byName selects the registration a username names now: the newest one
// with it. MediaGoblin frees a deleted account's username, and the
// registry keeps the deleted account's row while it has journalled
// actions, so an old account and a new one may share the name; what the
// web server's log says of the name is the new one's.
const byName = `(SELECT user_id FROM registrations WHERE username = ? ORDER BY created DESC, user_id DESC LIMIT 1)`

// banOf is the condition, on the action a joined to a registration on user
// id, that a was made for the account the id names now, not for an earlier
// one MediaGoblin gave the same id (see Tx.RetireRegistration).
const banOf = `a.retired = 0`

const registrationColumns = `user_id, username, email, created, verified, privileged, coalesce(ip, ''), coalesce(ip_source, ''), synced`

func scanRegistration(s interface{ Scan(...any) error }) (Registration, error) {
	var (
		reg                  Registration
		created, synced      int64
		verified, privileged bool
	)
	err := s.Scan(&reg.UserID, &reg.Username, &reg.Email, &created, &verified, &privileged, &reg.IP, &reg.IPSource, &synced)
	reg.Created, reg.Synced = fromUnix(created), fromUnix(synced)
	reg.Verified, reg.Privileged = verified, privileged
	return reg, err
}

// SameAccount reports whether reg and other describe one account: the
// same username, created at the same second. Seconds are what the registry
// keeps, while MediaGoblin stamps its users with microseconds: compared
// finer, every account read again from MediaGoblin would look like another
// one under the same id (see Tx.RetireRegistration).
func (reg Registration) SameAccount(other Registration) bool {
	return reg.Username == other.Username && unix(reg.Created) == unix(other.Created)
}

// UpsertRegistration stores reg, replacing what the registry knew of the
// same user except a linked IP, which only SetIP changes.
func (t *Tx) UpsertRegistration(ctx context.Context, reg Registration) error {
	return t.UpsertRegistrations(ctx, []Registration{reg})
}

// SetIP links the sign-up of username to ip, saying how the link was made.
// It reports whether a registration of that name exists.
func (t *Tx) SetIP(ctx context.Context, username, ip, source string) (bool, error) {
	res, err := t.tx.ExecContext(ctx, `UPDATE registrations SET ip = ?, ip_source = ? WHERE user_id = `+byName,
		nullIfEmpty(ip), nullIfEmpty(source), username)
	if err != nil {
		return false, fmt.Errorf("link %s to %s: %w", username, ip, err)
	}
	n, _ := res.RowsAffected()
	return n > 0, nil
}

// PruneBefore deletes registrations created before t and reports how many.
// Accounts with a journalled action are kept, so that they can still be
// reviewed and restored.
func (t *Tx) PruneBefore(ctx context.Context, before time.Time) (int64, error) {
	res, err := t.tx.ExecContext(ctx, `DELETE FROM registrations WHERE created < ?
		AND user_id NOT IN (SELECT user_id FROM actions)`, unix(before))
	if err != nil {
		return 0, fmt.Errorf("prune registrations: %w", err)
	}
	return res.RowsAffected()
}

// RegistrationsByEmail returns every registration whose address is addr,
// compared as EmailKey does.
func (r *DB) RegistrationsByEmail(ctx context.Context, addr string) ([]Registration, error) {
	rows, err := r.db.QueryContext(ctx, `SELECT `+registrationColumns+` FROM registrations WHERE email_key = ? ORDER BY user_id`, EmailKey(addr))
	if err != nil {
		return nil, fmt.Errorf("look up %s: %w", addr, err)
	}
	defer rows.Close()
	var out []Registration
	for rows.Next() {
		reg, err := scanRegistration(rows)
		if err != nil {
			return nil, fmt.Errorf("look up %s: %w", addr, err)
		}
		out = append(out, reg)
	}
	return out, rows.Err()
}

// Registration returns the registration of one user.
func (r *DB) Registration(ctx context.Context, userID int64) (Registration, error) {
	reg, ok, err := registrationOn(ctx, r.db, userID)
	if err == nil && !ok {
		err = fmt.Errorf("registration %d: %w", userID, ErrNotFound)
	}
	return reg, err
}

// registration is DB.Registration inside the transaction; ok is false
// when there is none.
func (t *Tx) registration(ctx context.Context, userID int64) (Registration, bool, error) {
	return registrationOn(ctx, t.tx, userID)
}

// registrationOn reads the registration of userID through q; ok is false
// when there is none.
func registrationOn(ctx context.Context, q rowQuerier, userID int64) (reg Registration, ok bool, err error) {
	reg, err = scanRegistration(q.QueryRowContext(ctx, `SELECT `+registrationColumns+` FROM registrations WHERE user_id = ?`, userID))
	if errors.Is(err, sql.ErrNoRows) {
		return reg, false, nil
	}
	if err != nil {
		return reg, false, fmt.Errorf("registration %d: %w", userID, err)
	}
	return reg, true, nil
}

// RegistrationByName returns the registration of one username.
func (r *DB) RegistrationByName(ctx context.Context, username string) (Registration, error) {
	reg, err := scanRegistration(r.db.QueryRowContext(ctx, `SELECT `+registrationColumns+` FROM registrations WHERE user_id = `+byName, username))
	if errors.Is(err, sql.ErrNoRows) {
		return reg, fmt.Errorf("registration %q: %w", username, ErrNotFound)
	}
	if err != nil {
		return reg, fmt.Errorf("registration %q: %w", username, err)
	}
	return reg, nil
}

// CountRegistrations returns how many registrations the registry holds.
func (r *DB) CountRegistrations(ctx context.Context) (int64, error) {
	var n int64
	if err := r.db.QueryRowContext(ctx, `SELECT count(*) FROM registrations`).Scan(&n); err != nil {
		return 0, fmt.Errorf("count registrations: %w", err)
	}
	return n, nil
}

func nullIfEmpty(s string) any {
	if s == "" {
		return nil
	}
	return s
}
