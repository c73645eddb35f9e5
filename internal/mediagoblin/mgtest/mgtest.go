// Package mgtest builds MediaGoblin instances for tests: a database with
// MediaGoblin's real schema, on SQLite in a temporary directory or in an
// empty PostgreSQL database, and the mediagoblin.ini that points at it.
//
// It writes MediaGoblin's tables directly, as MediaGoblin would; it does not
// go through package mediagoblin's queries (only its placeholder rewriting),
// so that tests of that package check it against the schema rather than
// against itself.
package mgtest

import (
	"context"
	"database/sql"
	_ "embed"
	"fmt"
	"net/url"
	"os"
	"path/filepath"
	"testing"
	"time"

	_ "github.com/jackc/pgx/v5/stdlib" // the "pgx" database/sql driver

	"github.com/bouncemilter/bouncemilter/internal/mediagoblin"
	_ "github.com/mattn/go-sqlite3" // the "sqlite3" database/sql driver
)

var (
	//go:embed schema_sqlite.sql
	schemaSQLite string
	//go:embed schema_postgres.sql
	schemaPostgres string
)

// Instance is a MediaGoblin database and its configuration file.
type Instance struct {
	// IniPath is the mediagoblin.ini to hand to mediagoblin.LoadConfig.
	IniPath string
	// Dir is the directory holding IniPath (and, on SQLite, the database).
	Dir string
	// Sender is the email_sender_address written into IniPath.
	Sender string
	// Postgres is true for a PostgreSQL instance.
	Postgres bool

	db *sql.DB
}

// User is an account to add. Sign-up privileges (uploader, commenter,
// reporter) are always granted, as MediaGoblin's registration does.
type User struct {
	Username string
	Email    string
	Created  time.Time // zero: now
	// Verified grants 'active', as following the verification link does.
	Verified  bool
	Admin     bool
	Moderator bool
}

// NewSQLite creates an instance on SQLite in a temporary directory, with
// sql_engine = sqlite:///%(here)s/mediagoblin.db as MediaGoblin's default.
func NewSQLite(t testing.TB, sender string) *Instance {
	t.Helper()
	dir := t.TempDir()
	path := filepath.Join(dir, "mediagoblin.db")
	db, err := sql.Open("sqlite3", "file:"+path+"?_busy_timeout=5000&_foreign_keys=on")
	if err != nil {
		t.Fatalf("mgtest: %v", err)
	}
	t.Cleanup(func() { db.Close() })
	if _, err := db.Exec(schemaSQLite); err != nil {
		t.Fatalf("mgtest: create schema: %v", err)
	}
	inst := &Instance{Dir: dir, Sender: sender, db: db}
	inst.writeIni(t, "sqlite:///%(here)s/mediagoblin.db")
	return inst
}

// NewPostgres creates MediaGoblin's tables in the empty PostgreSQL database
// at dbURL and an instance whose mediagoblin.ini points there.
func NewPostgres(t testing.TB, dbURL, sender string) *Instance {
	t.Helper()
	db, err := sql.Open("pgx", dbURL)
	if err != nil {
		t.Fatalf("mgtest: %v", err)
	}
	t.Cleanup(func() { db.Close() })
	if _, err := db.Exec(schemaPostgres); err != nil {
		t.Fatalf("mgtest: create schema: %v", err)
	}
	u, err := url.Parse(dbURL)
	if err != nil {
		t.Fatalf("mgtest: %v", err)
	}
	u.Scheme = "postgresql"
	inst := &Instance{Dir: t.TempDir(), Sender: sender, Postgres: true, db: db}
	inst.writeIni(t, u.String())
	return inst
}

func (inst *Instance) writeIni(t testing.TB, engine string) {
	t.Helper()
	inst.IniPath = filepath.Join(inst.Dir, "mediagoblin.ini")
	// configobj interpolation would expand a literal %(, so a URL-escaped
	// password holding "%" must be doubled; test URLs hold none.
	ini := fmt.Sprintf(`# written by mgtest
[mediagoblin]
direct_remote_path = /mgoblin_static/
email_sender_address = "%s"
sql_engine = %s
allow_registration = true

[storage:queuestore]
base_dir = %%(here)s/user_dev/media/queue

[plugins]
[[mediagoblin.plugins.basic_auth]]
`, inst.Sender, engine)
	if err := os.WriteFile(inst.IniPath, []byte(ini), 0o644); err != nil {
		t.Fatalf("mgtest: %v", err)
	}
}

// SQL returns the database handle, for tests that change MediaGoblin's data
// in ways this package does not cover.
func (inst *Instance) SQL() *sql.DB { return inst.db }

func (inst *Instance) rebind(q string) string {
	if inst.Postgres {
		return mediagoblin.Rebind(mediagoblin.Postgres, q)
	}
	return q
}

// timestamp formats t as SQLAlchemy stores a naive UTC DateTime.
func timestamp(t time.Time) string {
	return t.UTC().Format("2006-01-02 15:04:05.000000")
}

// AddUser adds a local user as MediaGoblin's registration (and, for the
// flags set, verification and an admin's promotion) would, and returns its
// id.
func (inst *Instance) AddUser(t testing.TB, u User) int64 {
	t.Helper()
	if u.Created.IsZero() {
		u.Created = time.Now()
	}
	ctx := context.Background()
	tx, err := inst.db.BeginTx(ctx, nil)
	if err != nil {
		t.Fatalf("mgtest: add user: %v", err)
	}
	defer tx.Rollback()
	var id int64
	ts := timestamp(u.Created)
	err = tx.QueryRowContext(ctx, inst.rebind(`INSERT INTO core__users (type, created, updated) VALUES ('user_local', ?, ?) RETURNING id`), ts, ts).Scan(&id)
	if err != nil {
		t.Fatalf("mgtest: add user %s: %v", u.Username, err)
	}
	_, err = tx.ExecContext(ctx, inst.rebind(`INSERT INTO core__local_users (id, username, email, pw_hash, wants_comment_notification, wants_notifications, uploaded)
		VALUES (?, ?, ?, '$2b$12$notarealhash', true, true, 0)`), id, u.Username, u.Email)
	if err != nil {
		t.Fatalf("mgtest: add user %s: %v", u.Username, err)
	}
	privs := []string{"uploader", "commenter", "reporter"}
	if u.Verified {
		privs = append(privs, "active")
	}
	if u.Admin {
		privs = append(privs, "admin")
	}
	if u.Moderator {
		privs = append(privs, "moderator")
	}
	for _, p := range privs {
		if err := grant(ctx, tx, inst, id, p); err != nil {
			t.Fatalf("mgtest: add user %s: %v", u.Username, err)
		}
	}
	if err := tx.Commit(); err != nil {
		t.Fatalf("mgtest: add user %s: %v", u.Username, err)
	}
	return id
}

func grant(ctx context.Context, ex interface {
	ExecContext(context.Context, string, ...any) (sql.Result, error)
}, inst *Instance, id int64, priv string) error {
	_, err := ex.ExecContext(ctx, inst.rebind(`INSERT INTO core__privileges_users ("user", privilege)
		SELECT ?, id FROM core__privileges WHERE privilege_name = ?`), id, priv)
	if err != nil {
		return fmt.Errorf("grant %s to %d: %w", priv, id, err)
	}
	return nil
}

// Grant gives user id a privilege by name ("active" verifies the account).
func (inst *Instance) Grant(t testing.TB, id int64, privilege string) {
	t.Helper()
	if err := grant(context.Background(), inst.db, inst, id, privilege); err != nil {
		t.Fatalf("mgtest: %v", err)
	}
}

// Revoke takes a privilege away from user id.
func (inst *Instance) Revoke(t testing.TB, id int64, privilege string) {
	t.Helper()
	_, err := inst.db.Exec(inst.rebind(`DELETE FROM core__privileges_users WHERE "user" = ?
		AND privilege = (SELECT id FROM core__privileges WHERE privilege_name = ?)`), id, privilege)
	if err != nil {
		t.Fatalf("mgtest: revoke %s from %d: %v", privilege, id, err)
	}
}

// Restore puts an SQLite instance's database back from a copy, as an
// admin's restore does: VACUUM INTO a file beside it, then meanwhile (the
// changes the restore loses; nil for none), then a rename over the
// database. The instance's own connections go to the restored file after;
// connections others opened before keep the old one.
func (inst *Instance) Restore(t testing.TB, meanwhile func()) {
	t.Helper()
	path := filepath.Join(inst.Dir, "mediagoblin.db")
	if _, err := inst.db.Exec(`VACUUM INTO ?`, path+".restore"); err != nil {
		t.Fatalf("mgtest: copy the database: %v", err)
	}
	if meanwhile != nil {
		meanwhile()
	}
	if err := os.Rename(path+".restore", path); err != nil {
		t.Fatalf("mgtest: %v", err)
	}
	// Idle connections would keep the old file.
	inst.db.SetMaxIdleConns(0)
	inst.db.SetMaxIdleConns(2)
}

// DeleteUser removes a user as MediaGoblin's account deletion does.
func (inst *Instance) DeleteUser(t testing.TB, id int64) {
	t.Helper()
	for _, q := range []string{
		`DELETE FROM core__privileges_users WHERE "user" = ?`,
		`DELETE FROM core__user_bans WHERE user_id = ?`,
		`DELETE FROM core__local_users WHERE id = ?`,
		`DELETE FROM core__users WHERE id = ?`,
	} {
		if _, err := inst.db.Exec(inst.rebind(q), id); err != nil {
			t.Fatalf("mgtest: delete user %d: %v", id, err)
		}
	}
}

// Banned reports whether user id has a core__user_bans row, and its reason.
func (inst *Instance) Banned(t testing.TB, id int64) (bool, string) {
	t.Helper()
	var reason string
	err := inst.db.QueryRow(inst.rebind(`SELECT reason FROM core__user_bans WHERE user_id = ?`), id).Scan(&reason)
	if err == sql.ErrNoRows {
		return false, ""
	}
	if err != nil {
		t.Fatalf("mgtest: read ban of %d: %v", id, err)
	}
	return true, reason
}

// Ban inserts a ban as MediaGoblin's moderation pages would.
func (inst *Instance) Ban(t testing.TB, id int64, reason string) {
	t.Helper()
	if _, err := inst.db.Exec(inst.rebind(`INSERT INTO core__user_bans (user_id, reason) VALUES (?, ?)`), id, reason); err != nil {
		t.Fatalf("mgtest: ban %d: %v", id, err)
	}
}

// Bulk describes users AddUsers creates: n accounts named user<id>, with
// address user<id>@example.net, created First + i*Step (i from 0), of which
// every VerifiedEvery-th is unverified (0: all unverified).
type Bulk struct {
	N             int
	First         time.Time
	Step          time.Duration
	VerifiedEvery int
}

// AddUsers adds many users at once, inside the database (one INSERT … SELECT
// per table), for benchmarks. It returns the first and last id.
func (inst *Instance) AddUsers(t testing.TB, b Bulk) (first, last int64) {
	t.Helper()
	ctx := context.Background()
	var base int64
	if err := inst.db.QueryRowContext(ctx, `SELECT coalesce(max(id), 0) FROM core__users`).Scan(&base); err != nil {
		t.Fatalf("mgtest: bulk: %v", err)
	}
	step := b.Step.Seconds()
	start := float64(b.First.Unix())
	ve := b.VerifiedEvery
	var stmts []string
	if inst.Postgres {
		series := fmt.Sprintf(`FROM generate_series(1, %d) AS s(i)`, b.N)
		ts := fmt.Sprintf(`(to_timestamp(%f + (i-1) * %f) AT TIME ZONE 'UTC')`, start, step)
		id := fmt.Sprintf(`(%d + i)`, base)
		stmts = []string{
			`INSERT INTO core__users (id, type, created, updated) SELECT ` + id + `, 'user_local', ` + ts + `, ` + ts + ` ` + series,
			`INSERT INTO core__local_users (id, username, email, pw_hash, wants_comment_notification, wants_notifications, uploaded) SELECT ` + id + `, 'user' || ` + id + `, 'user' || ` + id + ` || '@example.net', 'x', true, true, 0 ` + series,
			`SELECT setval('core__users_id_seq', (SELECT max(id) FROM core__users))`,
		}
	} else {
		cte := fmt.Sprintf(`WITH RECURSIVE s(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM s WHERE i < %d) `, b.N)
		ts := fmt.Sprintf(`strftime('%%Y-%%m-%%d %%H:%%M:%%f', %f + (i-1) * %f, 'unixepoch')`, start, step)
		id := fmt.Sprintf(`(%d + i)`, base)
		stmts = []string{
			cte + `INSERT INTO core__users (id, type, created, updated) SELECT ` + id + `, 'user_local', ` + ts + `, ` + ts + ` FROM s`,
			cte + `INSERT INTO core__local_users (id, username, email, pw_hash, wants_comment_notification, wants_notifications, uploaded) SELECT ` + id + `, 'user' || ` + id + `, 'user' || ` + id + ` || '@example.net', 'x', 1, 1, 0 FROM s`,
		}
	}
	for _, p := range []string{"uploader", "commenter", "reporter", "active"} {
		cond := "true"
		if p == "active" {
			if ve <= 0 {
				continue
			}
			cond = fmt.Sprintf("(u.id %% %d) <> 0", ve)
		}
		stmts = append(stmts, fmt.Sprintf(`INSERT INTO core__privileges_users ("user", privilege)
			SELECT u.id, p.id FROM core__users u, core__privileges p
			WHERE u.id > %d AND p.privilege_name = '%s' AND %s`, base, p, cond))
	}
	tx, err := inst.db.BeginTx(ctx, nil)
	if err != nil {
		t.Fatalf("mgtest: bulk: %v", err)
	}
	defer tx.Rollback()
	for _, q := range stmts {
		if _, err := tx.ExecContext(ctx, q); err != nil {
			t.Fatalf("mgtest: bulk: %v\n%s", err, q)
		}
	}
	if err := tx.Commit(); err != nil {
		t.Fatalf("mgtest: bulk: %v", err)
	}
	return base + 1, base + int64(b.N)
}

// Config is the instance's mediagoblin.ini as package mediagoblin reads
// it, for a test to change before it opens the database.
func (inst *Instance) Config(t testing.TB) mediagoblin.Config {
	t.Helper()
	cfg, err := mediagoblin.LoadConfig(inst.IniPath)
	if err != nil {
		t.Fatal(err)
	}
	return cfg
}

// Open opens the instance's database as the milter does, closed when the
// test ends.
func (inst *Instance) Open(t testing.TB) *mediagoblin.DB {
	t.Helper()
	db, err := mediagoblin.Open(context.Background(), inst.Config(t))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { db.Close() })
	return db
}
