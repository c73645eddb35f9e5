// Package registry is bouncemilter's own SQLite database: the copy of recent
// MediaGoblin sign-ups that the milter looks bounces up in, the journal of
// bounces seen and the decisions taken, and the queue of actions (ban an
// account, ban an IP) that a worker applies.
//
// The database runs in WAL mode with a busy timeout so that `serve` and
// `sync` can use it at the same time; every write is one short IMMEDIATE
// transaction with synchronous=FULL, because the milter discards a bounce
// only after what it proved is on disk.
//
// The package stores and queries; it decides nothing and talks to no other
// system.
package registry

import (
	"context"
	"database/sql"
	"database/sql/driver"
	"errors"
	"fmt"
	"net/url"
	"os"
	"path/filepath"
	"strconv"
	"sync"
	"time"

	"github.com/mattn/go-sqlite3" // the SQLite driver
)

// busyTimeout is how long a write waits for another process's write lock
// (SQLite's busy timeout), unless its context ends sooner (DB.writer).
const busyTimeout = 10 * time.Second

// ErrNotFound is returned when a looked-up row does not exist.
var ErrNotFound = errors.New("registry: not found")

// DB is an open registry.
type DB struct {
	db *sql.DB

	// writing serialises this process's writes. SQLite has one writer at
	// a time, and a writer that finds the lock taken polls for it with
	// sleeps that grow to 100 ms (its busy handler): the load benchmark
	// showed journal writes waiting behind the worker's bookkeeping for
	// tens of milliseconds. Queued here, the next writer starts as soon
	// as the last one commits. Other processes (sync) still meet the busy
	// timeout. A 1-slot channel, not a mutex: the holder may wait out a
	// whole busy timeout while another process writes, and a writer with
	// a shorter budget (the milter's sign-up copy has 2 s) gives up when
	// its context ends instead of waiting behind it.
	writing chan struct{}

	records     chan bounceRecord
	stop        chan struct{}
	batcherDone chan struct{}
	closeOnce   sync.Once
}

// Open opens the registry at path, creating it and its directory if needed,
// and brings its schema up to date.
func Open(ctx context.Context, path string) (*DB, error) {
	if path == "" {
		return nil, errors.New("open registry: empty path")
	}
	if dir := filepath.Dir(path); dir != "" {
		if err := os.MkdirAll(dir, 0o750); err != nil {
			return nil, fmt.Errorf("open registry: %w", err)
		}
	}
	// The registry holds users' addresses and IPs: not for everyone to
	// read. SQLite gives its -wal and -shm files the database's mode.
	f, err := os.OpenFile(path, os.O_RDWR|os.O_CREATE, 0o640)
	if err != nil {
		return nil, fmt.Errorf("open registry: %w", err)
	}
	f.Close()
	q := url.Values{}
	q.Set("_busy_timeout", strconv.FormatInt(busyTimeout.Milliseconds(), 10))
	q.Set("_journal_mode", "WAL")
	// FULL: a committed decision survives power loss, not only a crash.
	q.Set("_synchronous", "FULL")
	q.Set("_foreign_keys", "on")
	// IMMEDIATE: take the write lock at BEGIN, so two writers wait for each
	// other under the busy timeout instead of failing with SQLITE_BUSY on
	// upgrade from a read lock.
	q.Set("_txlock", "immediate")
	// Each bounce runs the same handful of statements; preparing them
	// anew each time cost as much as running them (seen in the load
	// benchmark's profile). Each connection keeps its own cache.
	q.Set("_stmt_cache_size", "32")
	dsn := "file:" + (&url.URL{Path: path}).EscapedPath() + "?" + q.Encode()
	sqldb, err := sql.Open("sqlite3", dsn)
	if err != nil {
		return nil, fmt.Errorf("open registry %s: %w", path, err)
	}
	sqldb.SetMaxOpenConns(8)
	sqldb.SetConnMaxIdleTime(5 * time.Minute)
	r := &DB{db: sqldb, writing: make(chan struct{}, 1)}
	if err := r.migrate(ctx); err != nil {
		sqldb.Close()
		return nil, fmt.Errorf("open registry %s: %w", path, err)
	}
	r.records = make(chan bounceRecord)
	r.stop = make(chan struct{})
	r.batcherDone = make(chan struct{})
	go r.runBatcher()
	return r, nil
}

// Close finishes the group commit under way and closes the database.
func (r *DB) Close() error {
	r.closeOnce.Do(func() {
		close(r.stop)
		<-r.batcherDone
	})
	return r.db.Close()
}

// SQL returns the underlying database, for tests and for packages that keep
// their own tables in the registry.
func (r *DB) SQL() *sql.DB { return r.db }

// migrations are applied in order; the index+1 of the last one applied is
// stored in PRAGMA user_version. Append only: never edit a released step.
var migrations = []string{
	`
CREATE TABLE registrations (
	user_id    INTEGER PRIMARY KEY,   -- core__users.id
	username   TEXT NOT NULL,
	email      TEXT NOT NULL,         -- as MediaGoblin stores it
	email_key  TEXT NOT NULL,         -- lowercased, for lookups
	created    INTEGER NOT NULL,      -- unix seconds, UTC
	verified   INTEGER NOT NULL DEFAULT 0,
	privileged INTEGER NOT NULL DEFAULT 0, -- admin or moderator
	ip         TEXT,                  -- sign-up IP, NULL while unknown
	ip_source  TEXT,                  -- how the IP was linked
	synced     INTEGER NOT NULL       -- last time sync saw this row
);
CREATE INDEX registrations_email_key ON registrations(email_key);
CREATE INDEX registrations_created ON registrations(created);

CREATE TABLE state (
	key   TEXT PRIMARY KEY,
	value TEXT NOT NULL
);

CREATE TABLE allowlist (
	kind    TEXT NOT NULL,  -- 'user', 'email' or 'ip'
	value   TEXT NOT NULL,
	note    TEXT NOT NULL DEFAULT '',
	created INTEGER NOT NULL,
	PRIMARY KEY (kind, value)
);

CREATE TABLE bounces (
	id          INTEGER PRIMARY KEY,
	received    INTEGER NOT NULL,   -- unix seconds
	queue_id    TEXT NOT NULL DEFAULT '',
	envelope_to TEXT NOT NULL DEFAULT '',
	client      TEXT NOT NULL DEFAULT '',
	verdict     TEXT NOT NULL,      -- see Verdict
	detail      TEXT NOT NULL DEFAULT '',
	report      TEXT NOT NULL,      -- the parsed report, JSON
	headers     TEXT NOT NULL DEFAULT ''
);
CREATE INDEX bounces_received ON bounces(received);

CREATE TABLE actions (
	id           INTEGER PRIMARY KEY,
	bounce_id    INTEGER REFERENCES bounces(id),
	user_id      INTEGER NOT NULL,
	kind         TEXT NOT NULL,     -- see ActionKind
	target       TEXT NOT NULL,     -- the user id or the IP address
	reason       TEXT NOT NULL,
	state        TEXT NOT NULL,     -- see ActionState
	attempts     INTEGER NOT NULL DEFAULT 0,
	last_error   TEXT NOT NULL DEFAULT '',
	next_attempt INTEGER NOT NULL,
	created      INTEGER NOT NULL,
	done         INTEGER            -- when applied or cancelled
);
CREATE INDEX actions_due ON actions(state, next_attempt);
CREATE INDEX actions_user ON actions(user_id);
`,
	`
CREATE TABLE sends (
	id            INTEGER PRIMARY KEY,
	recipient_key TEXT NOT NULL,    -- EmailKey of the recipient
	sent          INTEGER NOT NULL, -- unix seconds
	queue_id      TEXT NOT NULL DEFAULT '',
	subject       TEXT NOT NULL DEFAULT ''
);
CREATE INDEX sends_recipient ON sends(recipient_key, sent);
CREATE INDEX sends_sent ON sends(sent);
`,
	// sync links IPs to sign-ups by username.
	`CREATE INDEX registrations_username ON registrations(username);`,
	// An attempt at an action that was begun and never booked (the
	// process died in between): the worker checks its target before
	// trying again. See DB.MarkStarted.
	`ALTER TABLE actions ADD COLUMN started INTEGER NOT NULL DEFAULT 0;`,
	// Queueing an action first looks for one pending or applied on the
	// same target; without this index that look-up read every action,
	// and a flood of bounces slowed down as the journal grew.
	`CREATE INDEX actions_target ON actions(target, kind);`,
	// Shared feeds (package feed): what each peer listed, how its fetches
	// went, and the IP bans the peers' listings led to. See feed.go.
	feedSchema,
	// Reports to StopForumSpam (package sfs). See sfs.go.
	sfsSchema,
	// What an applied IP ban banned when it is wider than its target:
	// the IPv6 network of the address. See Action.Banned.
	`ALTER TABLE actions ADD COLUMN banned TEXT NOT NULL DEFAULT '';`,
	// Actions of an account whose id MediaGoblin gave to another one:
	// kept as history, never the new account's. See Tx.RetireRegistration.
	`ALTER TABLE actions ADD COLUMN retired INTEGER NOT NULL DEFAULT 0;`,
	// EmailKey lowercases A to Z only now, as SQLite's lower() does:
	// keys made by Unicode lowercasing are made again.
	`UPDATE registrations SET email_key = lower(trim(email)) WHERE email_key != lower(trim(email));`,
	// The banner reads the IPs restores freed at each ban (AllowedIPs):
	// the unbans, without reading every ban the journal holds.
	`CREATE INDEX actions_kind ON actions(kind);`,
}

func (r *DB) migrate(ctx context.Context) error {
	conn, err := r.firstConn(ctx)
	if err != nil {
		return err
	}
	defer conn.Close()
	// A current schema, the usual case, is read without the write lock:
	// doctor or a feed command started during a long sync batch does not
	// wait for it.
	var current int
	if err := conn.QueryRowContext(ctx, `PRAGMA user_version`).Scan(&current); err != nil {
		return fmt.Errorf("read schema version: %w", err)
	}
	if current == len(migrations) {
		return nil
	}
	// Each step reads the version again inside its own transaction, which
	// takes the write lock at BEGIN: serve and sync started together on a
	// new registry (as install.sh starts them) would otherwise both read
	// version 0 and the second fail on tables the first created.
	for {
		tx, err := conn.BeginTx(ctx, nil)
		if err != nil {
			return fmt.Errorf("migrate: %w", err)
		}
		var version int
		if err := tx.QueryRowContext(ctx, `PRAGMA user_version`).Scan(&version); err != nil {
			tx.Rollback()
			return fmt.Errorf("read schema version: %w", err)
		}
		if version >= len(migrations) {
			tx.Rollback()
			if version > len(migrations) {
				return fmt.Errorf("schema version %d is newer than this program (%d): refusing to touch it", version, len(migrations))
			}
			return nil
		}
		if _, err := tx.ExecContext(ctx, migrations[version]); err != nil {
			tx.Rollback()
			return fmt.Errorf("migrate to %d: %w", version+1, err)
		}
		if _, err := tx.ExecContext(ctx, fmt.Sprintf(`PRAGMA user_version = %d`, version+1)); err != nil {
			tx.Rollback()
			return fmt.Errorf("migrate to %d: %w", version+1, err)
		}
		if err := tx.Commit(); err != nil {
			return fmt.Errorf("migrate to %d: %w", version+1, err)
		}
	}
}

// firstConn connects, waiting while another process makes a new registry
// a WAL database: SQLite refuses the switch to a second connection at once
// with SQLITE_BUSY, without the busy timeout, and every connection asks for
// it (_journal_mode). Once the file is in WAL mode, asking again takes no
// lock.
func (r *DB) firstConn(ctx context.Context) (*sql.Conn, error) {
	deadline := time.Now().Add(busyTimeout)
	for wait := time.Millisecond; ; wait = min(2*wait, 100*time.Millisecond) {
		conn, err := r.db.Conn(ctx)
		var se sqlite3.Error
		if err == nil || !errors.As(err, &se) || se.Code != sqlite3.ErrBusy || time.Now().After(deadline) {
			return conn, err
		}
		select {
		case <-ctx.Done():
			return nil, ctx.Err()
		case <-time.After(wait):
		}
	}
}

// State reads a value that a job keeps between runs (a sync cursor, a log
// offset). It returns "" and no error when the key was never set.
func (r *DB) State(ctx context.Context, key string) (string, error) {
	var v string
	err := r.db.QueryRowContext(ctx, `SELECT value FROM state WHERE key = ?`, key).Scan(&v)
	if errors.Is(err, sql.ErrNoRows) {
		return "", nil
	}
	if err != nil {
		return "", fmt.Errorf("read state %q: %w", key, err)
	}
	return v, nil
}

// SetState stores a value that a job keeps between runs.
func (r *DB) SetState(ctx context.Context, key, value string) error {
	_, err := r.exec(ctx, `INSERT INTO state(key, value) VALUES (?, ?)
		ON CONFLICT(key) DO UPDATE SET value = excluded.value`, key, value)
	if err != nil {
		return fmt.Errorf("write state %q: %w", key, err)
	}
	return nil
}

// Tx runs fn inside one write transaction, so that a job can store a batch of
// rows and its cursor together: the registry is never left half-written.
func (r *DB) Tx(ctx context.Context, fn func(tx *Tx) error) error {
	conn, release, err := r.writer(ctx)
	if err != nil {
		return fmt.Errorf("begin: %w", err)
	}
	defer release()
	sqltx, err := conn.BeginTx(ctx, nil)
	if err != nil {
		return fmt.Errorf("begin: %w", err)
	}
	if err := fn(&Tx{tx: sqltx}); err != nil {
		sqltx.Rollback()
		return err
	}
	if err := sqltx.Commit(); err != nil {
		return fmt.Errorf("commit: %w", err)
	}
	return nil
}

// exec runs one writing statement, in its own transaction.
func (r *DB) exec(ctx context.Context, query string, args ...any) (sql.Result, error) {
	conn, release, err := r.writer(ctx)
	if err != nil {
		return nil, err
	}
	defer release()
	return conn.ExecContext(ctx, query, args...)
}

// writer takes this process's write lock (DB.writing) and a connection
// for one write, and returns them with the function that gives both back;
// it gives up when ctx ends. SQLite's busy handler does not heed the
// interrupt that a cancelled context sends: a write with a budget shorter
// than the busy timeout (the milter's sign-up copy has 2 s) would wait the
// whole busy timeout for another process's write lock. Its connection
// waits only until the deadline, and gets the busy timeout back after the
// write.
func (r *DB) writer(ctx context.Context) (*sql.Conn, func(), error) {
	if err := r.lockWrites(ctx); err != nil {
		return nil, nil, err
	}
	conn, err := r.db.Conn(ctx)
	if err != nil {
		r.unlockWrites()
		return nil, nil, err
	}
	deadline, ok := ctx.Deadline()
	wait := time.Until(deadline)
	if !ok || wait >= busyTimeout {
		return conn, func() { conn.Close(); r.unlockWrites() }, nil
	}
	if err := setBusyTimeout(ctx, conn, wait); err != nil {
		conn.Close()
		r.unlockWrites()
		return nil, nil, err
	}
	return conn, func() {
		if setBusyTimeout(context.Background(), conn, busyTimeout) != nil {
			// Left with a short busy timeout, the connection would
			// fail later writes early: drop it from the pool.
			conn.Raw(func(any) error { return driver.ErrBadConn })
		}
		conn.Close()
		r.unlockWrites()
	}, nil
}

func setBusyTimeout(ctx context.Context, conn *sql.Conn, d time.Duration) error {
	_, err := conn.ExecContext(ctx, "PRAGMA busy_timeout = "+strconv.FormatInt(max(d.Milliseconds(), 1), 10))
	return err
}

// lockWrites takes this process's write lock, or returns ctx's error when
// ctx ends first.
func (r *DB) lockWrites(ctx context.Context) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	select {
	case r.writing <- struct{}{}:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}

func (r *DB) unlockWrites() { <-r.writing }

// Tx is a write transaction on the registry.
type Tx struct {
	tx *sql.Tx
}

// SetState is DB.SetState inside the transaction.
func (t *Tx) SetState(ctx context.Context, key, value string) error {
	_, err := t.tx.ExecContext(ctx, `INSERT INTO state(key, value) VALUES (?, ?)
		ON CONFLICT(key) DO UPDATE SET value = excluded.value`, key, value)
	if err != nil {
		return fmt.Errorf("write state %q: %w", key, err)
	}
	return nil
}

func unix(t time.Time) int64 {
	if t.IsZero() {
		return 0
	}
	return t.Unix()
}

func fromUnix(s int64) time.Time {
	if s == 0 {
		return time.Time{}
	}
	return time.Unix(s, 0).UTC()
}
