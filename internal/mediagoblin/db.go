// Package mediagoblin reads and changes GNU MediaGoblin's own database, on
// SQLite or PostgreSQL, as found through mediagoblin.ini.
//
// It reads local users with their verification and admin state, and bans or
// unbans one account the way MediaGoblin's moderation pages do: a row in
// core__user_bans. It changes nothing else, creates no tables, and holds
// locks only for one short statement or transaction, because MediaGoblin
// serves requests from the same database. It decides nothing: whether an
// account deserves a ban is the caller's business, except that it refuses,
// inside the banning transaction, to ban a verified, admin or moderator
// account.
//
// The schema is MediaGoblin's from 0.9 to 0.15 (unchanged across them).
package mediagoblin

import (
	"context"
	"database/sql"
	"database/sql/driver"
	"errors"
	"fmt"
	"net"
	"net/url"
	"os"
	"strconv"
	"strings"
	"sync"
	"time"
	"unicode/utf8"

	"github.com/jackc/pgx/v5/pgconn"
	_ "github.com/jackc/pgx/v5/stdlib" // the "pgx" database/sql driver
	sqlite3 "github.com/mattn/go-sqlite3"

	"github.com/bouncemilter/bouncemilter/internal/refusal"
)

// Errors callers branch on.
var (
	// ErrNoSuchUser: no local user has that id.
	ErrNoSuchUser = refusal.New("mediagoblin: no such user")
	// ErrPrivileged: the user is an admin or a moderator; never banned.
	ErrPrivileged = refusal.New("mediagoblin: user is an admin or moderator")
	// ErrVerified: the user holds 'active': their address received mail.
	ErrVerified = refusal.New("mediagoblin: user has verified their address")
	// ErrUnavailable wraps failures to reach the database (down, refused,
	// locked for too long): the operation may succeed if retried later.
	ErrUnavailable = errors.New("mediagoblin: database unavailable")
	// ErrReplaced: the SQLite file was replaced while an operation ran
	// on it; the next operation opens it again and reaches the database
	// MediaGoblin serves.
	ErrReplaced = fmt.Errorf("file replaced since it was opened (restored or moved): %w", ErrUnavailable)
)

// User is a local MediaGoblin account.
type User struct {
	ID       int64
	Username string
	Email    string
	Created  time.Time // UTC
	// Verified: holds the 'active' privilege.
	Verified bool
	// Privileged: holds 'admin' or 'moderator'.
	Privileged bool
}

// DB is an open MediaGoblin database. On SQLite it opens the file again
// when the file was replaced since (replacedLocked), before the next
// operation.
type DB struct {
	backend Backend
	where   string // for error messages, without password
	// path and readOnly: the SQLite file, to open it again.
	path     string
	readOnly bool

	mu sync.Mutex // guards db, file, users and closed; db and file change on SQLite only
	db *sql.DB
	// file is the SQLite file db opened, as Stat found it before.
	file os.FileInfo
	// users counts, for each pool, the operations running on it (pool
	// to release): a pool the file's replacement retired is closed by
	// its last user, never under one ("sql: database is closed").
	users map[*sql.DB]int
	// closed: Close ran; a pool opened again after is closed at once.
	closed bool
}

// Open connects to the database cfg names. It checks that the database can
// be reached and has MediaGoblin's tables; a database that is down gives an
// error wrapping ErrUnavailable.
func Open(ctx context.Context, cfg Config) (*DB, error) {
	d := &DB{backend: cfg.Backend, where: cfg.SourceRedacted()}
	var err error
	switch cfg.Backend {
	case SQLite:
		d.path, d.readOnly = cfg.Source, cfg.ReadOnly
		d.db, d.file, err = d.openSQLite()
		if err != nil {
			return nil, err
		}
	case Postgres:
		// pgx passes query parameters it does not know to the server as
		// run-time parameters (session defaults any role may set).
		u, perr := url.Parse(cfg.Source)
		if perr != nil {
			return nil, fmt.Errorf("open mediagoblin database %s: %w", d.where, perr)
		}
		q := u.Query()
		// A table MediaGoblin's migration, a VACUUM FULL or a psql
		// session left open holds locked must not hold our statement,
		// nor MediaGoblin's requests queued behind its lock request, for
		// long: it fails (ErrUnavailable) and is retried. What the
		// operator's URL sets stays.
		for k, v := range pgTimeouts {
			if !q.Has(k) {
				q.Set(k, v)
			}
		}
		if cfg.ReadOnly {
			q.Set("default_transaction_read_only", "on")
		}
		u.RawQuery = q.Encode()
		d.db, err = sql.Open("pgx", u.String())
		if err == nil {
			d.db.SetMaxOpenConns(4)
			d.db.SetConnMaxIdleTime(time.Minute)
		}
	default:
		return nil, fmt.Errorf("open mediagoblin database: unknown backend %q", cfg.Backend)
	}
	if err != nil {
		return nil, fmt.Errorf("open mediagoblin database %s: %w", d.where, err)
	}
	if err := d.Ping(ctx); err != nil {
		d.db.Close()
		return nil, err
	}
	return d, nil
}

// openSQLite opens the SQLite file at d.path, and returns it with the file
// as Stat found it before the first connection opened it: a file replaced
// in between is seen by replacedLocked, never missed.
func (d *DB) openSQLite() (*sql.DB, os.FileInfo, error) {
	fi, err := os.Stat(d.path)
	if err != nil {
		return nil, nil, fmt.Errorf("open mediagoblin database %s: %w: %v", d.where, ErrUnavailable, err)
	}
	// mode=rw: never create an empty database where MediaGoblin's
	// should be. A busy timeout rather than failing at once while
	// MediaGoblin writes; immediate transactions so that a ban takes the
	// write lock before it reads what it re-checks.
	q := url.Values{}
	q.Set("mode", "rw")
	if d.readOnly {
		q.Set("mode", "ro")
	}
	q.Set("_busy_timeout", "5000")
	q.Set("_txlock", "immediate")
	q.Set("_foreign_keys", "on")
	db, err := sql.Open("sqlite3", "file:"+(&url.URL{Path: d.path}).EscapedPath()+"?"+q.Encode())
	if err != nil {
		return nil, nil, fmt.Errorf("open mediagoblin database %s: %w", d.where, err)
	}
	db.SetMaxOpenConns(4)
	return db, fi, nil
}

// pool returns the connections for one operation, and release, which the
// operation calls when it is done with them. On SQLite it first opens the
// file again when the one it opened was replaced (replacedLocked); the old
// connections are closed when the last operation running on them releases
// them, so that an operation that took them just before the replacement
// finishes on them (reading the old file, or failing its write as
// ErrReplaced) instead of finding them closed.
func (d *DB) pool() (*sql.DB, func(), error) {
	d.mu.Lock()
	err := d.replacedLocked()
	if err == nil {
		db, release, err := d.acquireLocked()
		d.mu.Unlock()
		return db, release, err
	}
	d.mu.Unlock()
	if !errors.Is(err, ErrReplaced) {
		return nil, nil, err
	}
	fresh, fi, err := d.openSQLite()
	if err != nil {
		return nil, nil, err
	}
	d.mu.Lock()
	var retired *sql.DB
	switch {
	case d.closed:
		retired = fresh
	case os.SameFile(d.file, fi):
		// Another operation opened it again meanwhile.
		retired = fresh
	default:
		retired = d.db
		d.db, d.file = fresh, fi
		if d.users[retired] > 0 {
			retired = nil // its last user closes it
		}
	}
	db, release, err := d.acquireLocked()
	d.mu.Unlock()
	if retired != nil {
		retired.Close()
	}
	return db, release, err
}

// acquireLocked counts one more user of d.db and returns it with the
// function that gives it back; d.mu is held.
func (d *DB) acquireLocked() (*sql.DB, func(), error) {
	if d.closed {
		return nil, nil, fmt.Errorf("mediagoblin database %s: closed", d.where)
	}
	db := d.db
	if d.users == nil {
		d.users = map[*sql.DB]int{}
	}
	d.users[db]++
	var once sync.Once
	release := func() {
		once.Do(func() {
			d.mu.Lock()
			d.users[db]--
			last := d.users[db] == 0
			if last {
				delete(d.users, db)
			}
			retired := last && (db != d.db || d.closed)
			d.mu.Unlock()
			if retired {
				db.Close()
			}
		})
	}
	return db, release, nil
}

// pgTimeouts bound, on the server, how long one statement on MediaGoblin's
// PostgreSQL waits for a lock and runs: well under the worker's deadline
// for an attempt, so that the error says why.
var pgTimeouts = map[string]string{"lock_timeout": "5s", "statement_timeout": "30s"}

// Backend says which kind of database d is.
func (d *DB) Backend() Backend { return d.backend }

// Close closes the connections; those an operation still runs on close
// when it is done, so that closing a DB shared by the milter's connections
// fails none of their operations halfway.
func (d *DB) Close() error {
	d.mu.Lock()
	defer d.mu.Unlock()
	d.closed = true
	if d.users[d.db] > 0 {
		return nil // the last operation running on it closes it
	}
	return d.db.Close()
}

// replacedLocked returns an error when d is an SQLite database whose path
// no longer names the file it opened: put back from a copy by a rename (a
// restore, VACUUM INTO and mv), or moved away. Connections to the old file
// read what MediaGoblin no longer serves, and SQLite refuses their writes
// ("attempt to write a readonly database"). nil for PostgreSQL; d.mu is
// held.
func (d *DB) replacedLocked() error {
	if d.file == nil {
		return nil
	}
	fi, err := os.Stat(d.path)
	switch {
	case err != nil:
		return fmt.Errorf("mediagoblin database %s: %w: %v", d.where, ErrUnavailable, err)
	case !os.SameFile(fi, d.file):
		return fmt.Errorf("mediagoblin database %s: %w", d.where, ErrReplaced)
	}
	return nil
}

// Ping checks that the database answers and holds MediaGoblin's tables.
func (d *DB) Ping(ctx context.Context) error {
	var n int64
	db, release, err := d.pool()
	if err != nil {
		return err
	}
	defer release()
	err = db.QueryRowContext(ctx, `SELECT count(*) FROM core__privileges`).Scan(&n)
	if err != nil {
		return d.wrap("reach mediagoblin database", err)
	}
	return nil
}

// usersQuery reads local users with their state. The EXISTS subqueries use
// core__privileges_users' primary key (user, privilege); privileges are
// looked up by name because their ids differ between instances.
const usersQuery = `
SELECT u.id, lu.username, lu.email, u.created,
	EXISTS (SELECT 1 FROM core__privileges_users pu JOIN core__privileges p ON p.id = pu.privilege
		WHERE pu."user" = u.id AND p.privilege_name = 'active'),
	EXISTS (SELECT 1 FROM core__privileges_users pu JOIN core__privileges p ON p.id = pu.privilege
		WHERE pu."user" = u.id AND p.privilege_name IN ('admin', 'moderator'))
FROM core__users u JOIN core__local_users lu ON lu.id = u.id`

// UsersAfter returns up to limit local users whose id is greater than
// afterID, in id order. Each call is one statement, so MediaGoblin is never
// locked for longer than one batch takes to read.
func (d *DB) UsersAfter(ctx context.Context, afterID int64, limit int) ([]User, error) {
	q := d.rebind(usersQuery + ` WHERE u.id > ? ORDER BY u.id LIMIT ?`)
	return d.queryUsers(ctx, "read users", q, afterID, limit)
}

// UsersByID returns the local users among ids, in id order; ids that name no
// local user are left out. Callers pass modest batches (hundreds).
func (d *DB) UsersByID(ctx context.Context, ids []int64) ([]User, error) {
	if len(ids) == 0 {
		return nil, nil
	}
	var b strings.Builder
	args := make([]any, len(ids))
	for i, id := range ids {
		if i > 0 {
			b.WriteString(", ")
		}
		b.WriteByte('?')
		args[i] = id
	}
	q := d.rebind(usersQuery + ` WHERE u.id IN (` + b.String() + `) ORDER BY u.id`)
	return d.queryUsers(ctx, "read users by id", q, args...)
}

// UsersByEmail returns the local users with id greater than afterID whose
// address is one of emails, compared in lower case, in id order. afterID
// keeps the scan to the newest accounts (the primary key's range): the
// caller passes the id up to which it already holds every user, so that
// one sign-up can be copied the moment its mail or its bounce passes,
// without a scan of the whole table. MediaGoblin keeps no index on
// addresses.
func (d *DB) UsersByEmail(ctx context.Context, emails []string, afterID int64) ([]User, error) {
	if len(emails) == 0 {
		return nil, nil
	}
	var b strings.Builder
	args := []any{afterID}
	for i, e := range emails {
		if i > 0 {
			b.WriteString(", ")
		}
		b.WriteByte('?')
		args = append(args, strings.ToLower(strings.TrimSpace(e)))
	}
	q := d.rebind(usersQuery + ` WHERE u.id > ? AND lower(lu.email) IN (` + b.String() + `) ORDER BY u.id`)
	return d.queryUsers(ctx, "read users by address", q, args...)
}

// User returns one local user.
func (d *DB) User(ctx context.Context, id int64) (User, error) {
	us, err := d.UsersByID(ctx, []int64{id})
	if err != nil {
		return User{}, err
	}
	if len(us) == 0 {
		return User{}, fmt.Errorf("user %d: %w", id, ErrNoSuchUser)
	}
	return us[0], nil
}

// MaxUserID returns the highest user id, 0 when there are no users.
func (d *DB) MaxUserID(ctx context.Context) (int64, error) {
	var id sql.NullInt64
	db, release, err := d.pool()
	if err != nil {
		return 0, err
	}
	defer release()
	if err := db.QueryRowContext(ctx, `SELECT max(id) FROM core__users`).Scan(&id); err != nil {
		return 0, d.wrap("read highest user id", err)
	}
	return id.Int64, nil
}

func (d *DB) queryUsers(ctx context.Context, what, q string, args ...any) ([]User, error) {
	db, release, err := d.pool()
	if err != nil {
		return nil, err
	}
	defer release()
	rows, err := db.QueryContext(ctx, q, args...)
	if err != nil {
		return nil, d.wrap(what, err)
	}
	defer rows.Close()
	var out []User
	for rows.Next() {
		var (
			u       User
			created any
		)
		if err := rows.Scan(&u.ID, &u.Username, &u.Email, &created, &u.Verified, &u.Privileged); err != nil {
			return nil, d.wrap(what, err)
		}
		if u.Created, err = parseTimestamp(created); err != nil {
			return nil, fmt.Errorf("%s: user %d: %w", what, u.ID, err)
		}
		out = append(out, u)
	}
	if err := rows.Err(); err != nil {
		return nil, d.wrap(what, err)
	}
	return out, nil
}

// parseTimestamp reads core__users.created, a naive UTC timestamp. pgx gives
// a time.Time; SQLite holds the text SQLAlchemy wrote
// ("2026-11-20 10:00:00.123456"), which go-sqlite3 may or may not have
// converted depending on how the column was declared.
func parseTimestamp(v any) (time.Time, error) {
	switch v := v.(type) {
	case time.Time:
		// Naive: the wall clock is UTC whatever location the driver set.
		return time.Date(v.Year(), v.Month(), v.Day(), v.Hour(), v.Minute(), v.Second(), v.Nanosecond(), time.UTC), nil
	case []byte:
		return parseTimestamp(string(v))
	case string:
		for _, layout := range []string{"2006-01-02 15:04:05.999999999", "2006-01-02T15:04:05.999999999", "2006-01-02 15:04:05.999999999Z07:00", time.RFC3339Nano, "2006-01-02"} {
			if t, err := time.Parse(layout, v); err == nil {
				return t.UTC(), nil
			}
		}
		return time.Time{}, fmt.Errorf("unreadable timestamp %q", v)
	case int64:
		return time.Unix(v, 0).UTC(), nil
	case nil:
		return time.Time{}, errors.New("created is NULL")
	default:
		return time.Time{}, fmt.Errorf("unreadable timestamp of type %T", v)
	}
}

// BanUser bans a local user the way MediaGoblin's moderation does: a
// permanent core__user_bans row with reason, which MediaGoblin shows to the
// user and on its moderation pages. Banning a banned user changes nothing
// (the first reason stays).
//
// In the same transaction it re-reads the user's privileges and refuses, with
// ErrNoSuchUser, ErrPrivileged or ErrVerified, when the account vanished,
// is an admin or moderator, or has verified its address since the caller
// last looked.
func (d *DB) BanUser(ctx context.Context, userID int64, reason string) error {
	return d.tx(ctx, fmt.Sprintf("ban user %d", userID), func(tx *sql.Tx) error {
		return d.ban(ctx, tx, userID, reason)
	})
}

// BanUsers is BanUser for several users in one transaction: in a flood one
// commit, and one lock on MediaGoblin's database, serves them all. bans maps
// user ids to reasons. refused holds, for each user that was not banned
// because BanUser would have refused it, the reason (wrapping
// ErrNoSuchUser, ErrPrivileged or ErrVerified); every other user is banned
// when err is nil. When err is set, nothing was banned.
func (d *DB) BanUsers(ctx context.Context, bans map[int64]string) (refused map[int64]error, err error) {
	refused = map[int64]error{}
	err = d.tx(ctx, fmt.Sprintf("ban %d users", len(bans)), func(tx *sql.Tx) error {
		for id, reason := range bans {
			err := d.ban(ctx, tx, id, reason)
			switch {
			case refusal.Is(err):
				refused[id] = fmt.Errorf("ban user %d: %w", id, err)
			case err != nil:
				return err
			}
		}
		return nil
	})
	if err != nil {
		return nil, err
	}
	return refused, nil
}

// ban bans one user inside tx, after re-reading its privileges.
func (d *DB) ban(ctx context.Context, tx *sql.Tx, userID int64, reason string) error {
	var u User
	var created any
	err := tx.QueryRowContext(ctx, d.rebind(usersQuery+` WHERE u.id = ?`), userID).
		Scan(&u.ID, &u.Username, &u.Email, &created, &u.Verified, &u.Privileged)
	switch {
	case errors.Is(err, sql.ErrNoRows):
		return ErrNoSuchUser
	case err != nil:
		return err
	case u.Privileged:
		return ErrPrivileged
	case u.Verified:
		return ErrVerified
	}
	_, err = tx.ExecContext(ctx, d.rebind(`INSERT INTO core__user_bans (user_id, expiration_date, reason)
		VALUES (?, NULL, ?) ON CONFLICT (user_id) DO NOTHING`), userID, reason)
	return err
}

// BanReasonPrefix starts the reason of every ban bouncemilter makes.
const BanReasonPrefix = "bouncemilter:"

// hasBanReasonPrefix is an SQL condition, true when the reason column
// starts with BanReasonPrefix, exactly: not LIKE, which on SQLite ignores
// ASCII case (a moderator's "BounceMilter: ..." would match) and would take
// '_' and '%' in the prefix as wildcards. substr counts characters on both
// backends, as utf8.RuneCountInString does. Its argument is
// BanReasonPrefix.
var hasBanReasonPrefix = fmt.Sprintf(`substr(reason, 1, %d) = ?`, utf8.RuneCountInString(BanReasonPrefix))

// UnbanUser deletes the user's ban if bouncemilter made it (its reason
// starts with BanReasonPrefix, in the same case). A ban a moderator gave
// through MediaGoblin's own pages stays: undoing what bouncemilter did must
// not undo what people did. (A ban insert is ON CONFLICT DO NOTHING, so a
// moderator's earlier ban is never replaced by bouncemilter's either.)
func (d *DB) UnbanUser(ctx context.Context, userID int64) error {
	return d.tx(ctx, fmt.Sprintf("unban user %d", userID), func(tx *sql.Tx) error {
		_, err := tx.ExecContext(ctx, d.rebind(`DELETE FROM core__user_bans WHERE user_id = ? AND `+hasBanReasonPrefix),
			userID, BanReasonPrefix)
		return err
	})
}

// IsBanned reports whether the user has a ban row, and its reason. Expired
// bans count as bans: MediaGoblin deletes them lazily when the user next
// logs in.
func (d *DB) IsBanned(ctx context.Context, userID int64) (bool, string, error) {
	var reason string
	db, release, err := d.pool()
	if err != nil {
		return false, "", err
	}
	defer release()
	err = db.QueryRowContext(ctx, d.rebind(`SELECT reason FROM core__user_bans WHERE user_id = ?`), userID).Scan(&reason)
	if errors.Is(err, sql.ErrNoRows) {
		return false, "", nil
	}
	if err != nil {
		return false, "", d.wrap(fmt.Sprintf("read ban of user %d", userID), err)
	}
	return true, reason, nil
}

func (d *DB) tx(ctx context.Context, what string, fn func(*sql.Tx) error) error {
	db, release, err := d.pool()
	if err != nil {
		return err
	}
	defer release()
	tx, err := db.BeginTx(ctx, nil)
	if err != nil {
		return d.wrap(what, err)
	}
	if err := fn(tx); err != nil {
		tx.Rollback()
		if refusal.Is(err) {
			return fmt.Errorf("%s: %w", what, err)
		}
		return d.wrap(what, err)
	}
	if err := tx.Commit(); err != nil {
		return d.wrap(what, err)
	}
	return nil
}

// rebind turns the query's placeholders into the backend's.
func (d *DB) rebind(q string) string { return Rebind(d.backend, q) }

// Rebind turns ? placeholders into PostgreSQL's $n when backend is
// Postgres, and returns q as it is for SQLite. The query must hold no
// literal question marks.
func Rebind(backend Backend, q string) string {
	if backend != Postgres {
		return q
	}
	var b strings.Builder
	n := 0
	for _, r := range q {
		if r == '?' {
			n++
			b.WriteString("$" + strconv.Itoa(n))
			continue
		}
		b.WriteRune(r)
	}
	return b.String()
}

// wrap adds context to err and marks it ErrUnavailable when it means the
// database could not be reached or was too busy, so that callers retry.
func (d *DB) wrap(what string, err error) error {
	// A write on a file replaced meanwhile fails as "attempt to write a
	// readonly database": say why; the next operation opens it again.
	d.mu.Lock()
	rerr := d.replacedLocked()
	d.mu.Unlock()
	if errors.Is(rerr, ErrReplaced) {
		return fmt.Errorf("%s: %w: %w", what, rerr, err)
	}
	if transient(err) {
		return fmt.Errorf("%s (%s): %w: %w", what, d.where, ErrUnavailable, err)
	}
	return fmt.Errorf("%s (%s): %w", what, d.where, err)
}

func transient(err error) bool {
	if errors.Is(err, driver.ErrBadConn) || errors.Is(err, sql.ErrConnDone) {
		return true
	}
	var netErr net.Error
	if errors.As(err, &netErr) {
		return true
	}
	var connErr *pgconn.ConnectError
	if errors.As(err, &connErr) {
		return true
	}
	var pgErr *pgconn.PgError
	if errors.As(err, &pgErr) {
		switch {
		case strings.HasPrefix(pgErr.Code, "08"), // connection exception
			strings.HasPrefix(pgErr.Code, "53"),          // insufficient resources
			strings.HasPrefix(pgErr.Code, "57P"),         // shutdown, cannot connect now
			pgErr.Code == "40001", pgErr.Code == "40P01", // serialization, deadlock
			pgErr.Code == "55P03", pgErr.Code == "57014": // lock_timeout, statement_timeout
			return true
		}
		return false
	}
	if pgconn.SafeToRetry(err) || pgconn.Timeout(err) {
		return true
	}
	var sqErr sqlite3.Error
	if errors.As(err, &sqErr) {
		switch sqErr.Code {
		case sqlite3.ErrBusy, sqlite3.ErrLocked, sqlite3.ErrCantOpen, sqlite3.ErrIoErr, sqlite3.ErrProtocol:
			return true
		}
	}
	// pgx reports a closed connection in plain text in some paths.
	msg := err.Error()
	return strings.Contains(msg, "conn closed") || strings.Contains(msg, "connection refused") || strings.Contains(msg, "unexpected EOF")
}
