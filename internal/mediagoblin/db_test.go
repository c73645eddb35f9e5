package mediagoblin_test

import (
	"context"
	"errors"
	"os"
	"sync"
	"testing"
	"time"

	"github.com/bouncemilter/bouncemilter/internal/mediagoblin"
	"github.com/bouncemilter/bouncemilter/internal/mediagoblin/mgtest"
	"github.com/bouncemilter/bouncemilter/internal/testenv"
)

const sender = "mediagoblin@example.org"

// backends runs fn against a fresh instance on each database MediaGoblin
// supports.
func backends(t *testing.T, fn func(t *testing.T, inst *mgtest.Instance)) {
	t.Run("sqlite", func(t *testing.T) { fn(t, mgtest.NewSQLite(t, sender)) })
	t.Run("postgres", func(t *testing.T) { fn(t, mgtest.NewPostgres(t, testenv.Postgres(t), sender)) })
}

func open(t *testing.T, inst *mgtest.Instance) *mediagoblin.DB {
	t.Helper()
	cfg := inst.Config(t)
	if cfg.EmailSender != sender {
		t.Errorf("EmailSender = %q", cfg.EmailSender)
	}
	db, err := mediagoblin.Open(context.Background(), cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { db.Close() })
	return db
}

func TestUsers(t *testing.T) {
	backends(t, func(t *testing.T, inst *mgtest.Instance) {
		ctx := context.Background()
		created := time.Date(2026, 11, 20, 10, 11, 12, 345678000, time.UTC)
		bot := inst.AddUser(t, mgtest.User{Username: "bot", Email: "bot@nowhere.example", Created: created})
		real := inst.AddUser(t, mgtest.User{Username: "real", Email: "real@example.net", Created: created, Verified: true})
		admin := inst.AddUser(t, mgtest.User{Username: "admin", Email: "admin@example.net", Created: created, Verified: true, Admin: true})
		mod := inst.AddUser(t, mgtest.User{Username: "mod", Email: "mod@example.net", Created: created, Moderator: true})
		db := open(t, inst)

		all, err := db.UsersAfter(ctx, 0, 100)
		if err != nil {
			t.Fatal(err)
		}
		want := []mediagoblin.User{
			{ID: bot, Username: "bot", Email: "bot@nowhere.example", Created: created},
			{ID: real, Username: "real", Email: "real@example.net", Created: created, Verified: true},
			{ID: admin, Username: "admin", Email: "admin@example.net", Created: created, Verified: true, Privileged: true},
			{ID: mod, Username: "mod", Email: "mod@example.net", Created: created, Privileged: true},
		}
		if len(all) != len(want) {
			t.Fatalf("got %d users, want %d: %+v", len(all), len(want), all)
		}
		for i := range want {
			if !all[i].Created.Equal(want[i].Created) || all[i].Created.Location() != time.UTC {
				t.Errorf("user %d created %v, want %v", i, all[i].Created, want[i].Created)
			}
			all[i].Created = want[i].Created
			if all[i] != want[i] {
				t.Errorf("user %d = %+v, want %+v", i, all[i], want[i])
			}
		}

		page, err := db.UsersAfter(ctx, bot, 2)
		if err != nil {
			t.Fatal(err)
		}
		if len(page) != 2 || page[0].ID != real || page[1].ID != admin {
			t.Errorf("UsersAfter(%d, 2) = %+v", bot, page)
		}
		some, err := db.UsersByID(ctx, []int64{mod, bot, 9999})
		if err != nil {
			t.Fatal(err)
		}
		if len(some) != 2 || some[0].ID != bot || some[1].ID != mod {
			t.Errorf("UsersByID = %+v", some)
		}
		if _, err := db.User(ctx, 9999); !errors.Is(err, mediagoblin.ErrNoSuchUser) {
			t.Errorf("User(9999) err = %v", err)
		}
		byMail, err := db.UsersByEmail(ctx, []string{"BOT@nowhere.example", " mod@EXAMPLE.net", "nobody@example.net"}, 0)
		if err != nil {
			t.Fatal(err)
		}
		if len(byMail) != 2 || byMail[0].ID != bot || byMail[1].ID != mod {
			t.Errorf("UsersByEmail = %+v", byMail)
		}
		if after, err := db.UsersByEmail(ctx, []string{"bot@nowhere.example", "mod@example.net"}, bot); err != nil || len(after) != 1 || after[0].ID != mod {
			t.Errorf("UsersByEmail after %d = %+v, %v; want only mod", bot, after, err)
		}
		if max, err := db.MaxUserID(ctx); err != nil || max != mod {
			t.Errorf("MaxUserID = %d, %v; want %d", max, err, mod)
		}
	})
}

func TestBanUser(t *testing.T) {
	backends(t, func(t *testing.T, inst *mgtest.Instance) {
		ctx := context.Background()
		bot := inst.AddUser(t, mgtest.User{Username: "bot", Email: "bot@nowhere.example"})
		real := inst.AddUser(t, mgtest.User{Username: "real", Email: "real@example.net", Verified: true})
		admin := inst.AddUser(t, mgtest.User{Username: "admin", Email: "admin@example.net", Admin: true})
		mod := inst.AddUser(t, mgtest.User{Username: "mod", Email: "mod@example.net", Moderator: true})
		late := inst.AddUser(t, mgtest.User{Username: "late", Email: "late@example.net"})
		db := open(t, inst)

		const reason = "bouncemilter: bot@nowhere.example bounced 5.1.1"
		for i := 0; i < 2; i++ { // idempotent
			if err := db.BanUser(ctx, bot, reason); err != nil {
				t.Fatalf("ban %d: %v", i, err)
			}
		}
		if err := db.BanUser(ctx, bot, "another reason"); err != nil {
			t.Fatal(err)
		}
		if ok, r := inst.Banned(t, bot); !ok || r != reason {
			t.Errorf("bot banned=%v reason=%q", ok, r)
		}
		if ok, r, err := db.IsBanned(ctx, bot); err != nil || !ok || r != reason {
			t.Errorf("IsBanned = %v %q %v", ok, r, err)
		}

		// The user verified after the caller decided: the re-check wins.
		inst.Grant(t, late, "active")
		for _, tc := range []struct {
			id   int64
			want error
		}{
			{real, mediagoblin.ErrVerified},
			{admin, mediagoblin.ErrPrivileged},
			{mod, mediagoblin.ErrPrivileged},
			{late, mediagoblin.ErrVerified},
			{4242, mediagoblin.ErrNoSuchUser},
		} {
			err := db.BanUser(ctx, tc.id, reason)
			if !errors.Is(err, tc.want) {
				t.Errorf("BanUser(%d) = %v, want %v", tc.id, err, tc.want)
			}
			if errors.Is(err, mediagoblin.ErrUnavailable) {
				t.Errorf("BanUser(%d) = %v: refusal must not look transient", tc.id, err)
			}
			if ok, _ := inst.Banned(t, tc.id); ok {
				t.Errorf("user %d banned", tc.id)
			}
		}

		for i := 0; i < 2; i++ {
			if err := db.UnbanUser(ctx, bot); err != nil {
				t.Fatalf("unban %d: %v", i, err)
			}
		}
		if ok, _, err := db.IsBanned(ctx, bot); err != nil || ok {
			t.Errorf("after unban IsBanned = %v, %v", ok, err)
		}

		// A moderator's own ban is not bouncemilter's to lift, however
		// closely its reason resembles the prefix: compared exactly, in
		// case too (SQLite's LIKE ignores ASCII case).
		for _, tc := range []struct {
			reason string
			lifted bool
		}{
			{"spam, by a moderator", false},
			{"BounceMilter: banned by hand", false},
			{"BOUNCEMILTER: banned by hand", false},
			{"bouncemilter banned by hand", false},
			{" bouncemilter: leading space", false},
			{"bouncemilter", false},
			{"bouncemilter:", true},
			{"bouncemilter: bot@nowhere.example bounced 5.1.1", true},
		} {
			inst.Ban(t, bot, tc.reason)
			if err := db.UnbanUser(ctx, bot); err != nil {
				t.Fatal(err)
			}
			ok, r, err := db.IsBanned(ctx, bot)
			if err != nil {
				t.Fatal(err)
			}
			if ok == tc.lifted {
				t.Errorf("ban with reason %q after UnbanUser: banned=%v, want %v", tc.reason, ok, !tc.lifted)
			}
			if ok && r != tc.reason {
				t.Errorf("ban with reason %q after UnbanUser: reason %q", tc.reason, r)
			}
			if ok { // as a moderator would lift it
				if _, err := inst.SQL().Exec(mediagoblin.Rebind(db.Backend(), `DELETE FROM core__user_bans WHERE user_id = ?`), bot); err != nil {
					t.Fatal(err)
				}
			}
		}
	})
}

func TestOpenUnavailable(t *testing.T) {
	ctx := context.Background()
	t.Run("sqlite file missing", func(t *testing.T) {
		inst := mgtest.NewSQLite(t, sender)
		cfg := inst.Config(t)
		cfg.Source += ".gone"
		_, err := mediagoblin.Open(ctx, cfg)
		if !errors.Is(err, mediagoblin.ErrUnavailable) {
			t.Errorf("Open = %v, want ErrUnavailable", err)
		}
	})
	t.Run("postgres refused", func(t *testing.T) {
		// Port 1 on loopback: nothing listens there.
		cfg := mediagoblin.Config{Backend: mediagoblin.Postgres, Source: "postgresql://mg:pw@127.0.0.1:1/mg?connect_timeout=2"}
		_, err := mediagoblin.Open(ctx, cfg)
		if !errors.Is(err, mediagoblin.ErrUnavailable) {
			t.Errorf("Open = %v, want ErrUnavailable", err)
		}
	})
	t.Run("not mediagoblin", func(t *testing.T) {
		inst := mgtest.NewSQLite(t, sender)
		if _, err := inst.SQL().Exec(`DROP TABLE core__privileges_users; DROP TABLE core__privileges`); err != nil {
			t.Fatal(err)
		}
		cfg, _ := mediagoblin.LoadConfig(inst.IniPath)
		_, err := mediagoblin.Open(ctx, cfg)
		if err == nil || errors.Is(err, mediagoblin.ErrUnavailable) {
			t.Errorf("Open = %v, want a permanent error", err)
		}
	})
}

func TestSQLiteBusyIsUnavailable(t *testing.T) {
	inst := mgtest.NewSQLite(t, sender)
	bot := inst.AddUser(t, mgtest.User{Username: "bot", Email: "bot@nowhere.example"})
	db := open(t, inst)
	// MediaGoblin holds the write lock longer than our busy timeout.
	tx, err := inst.SQL().Begin()
	if err != nil {
		t.Fatal(err)
	}
	defer tx.Rollback()
	if _, err := tx.Exec(`UPDATE core__users SET bio = 'x' WHERE id = ?`, bot); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	err = db.BanUser(ctx, bot, "r")
	if !errors.Is(err, mediagoblin.ErrUnavailable) {
		t.Errorf("BanUser while locked = %v, want ErrUnavailable", err)
	}
}

// A table locked by a long transaction (a migration, VACUUM FULL, a psql
// session left open) fails a ban after the connection's lock_timeout, as
// unavailable (retried later), instead of holding it, and the requests
// MediaGoblin queues behind its lock request, for as long as the lock.
func TestPostgresLockTimeout(t *testing.T) {
	inst := mgtest.NewPostgres(t, testenv.Postgres(t), sender)
	bot := inst.AddUser(t, mgtest.User{Username: "bot", Email: "bot@nowhere.example"})
	db := open(t, inst)
	tx, err := inst.SQL().Begin()
	if err != nil {
		t.Fatal(err)
	}
	defer tx.Rollback()
	if _, err := tx.Exec(`LOCK TABLE core__user_bans IN ACCESS EXCLUSIVE MODE`); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	start := time.Now()
	err = db.BanUser(ctx, bot, "r")
	if !errors.Is(err, mediagoblin.ErrUnavailable) || ctx.Err() != nil {
		t.Errorf("BanUser while locked = %v after %s; want ErrUnavailable from the lock timeout", err, time.Since(start))
	}
}

func TestReadOnly(t *testing.T) {
	backends(t, func(t *testing.T, inst *mgtest.Instance) {
		ctx := context.Background()
		bot := inst.AddUser(t, mgtest.User{Username: "bot", Email: "bot@nowhere.example"})
		cfg := inst.Config(t)
		cfg.ReadOnly = true
		db, err := mediagoblin.Open(ctx, cfg)
		if err != nil {
			t.Fatal(err)
		}
		defer db.Close()
		if us, err := db.UsersAfter(ctx, 0, 10); err != nil || len(us) != 1 {
			t.Fatalf("UsersAfter = %v, %v", us, err)
		}
		if err := db.BanUser(ctx, bot, "r"); err == nil {
			t.Error("a read-only connection banned a user")
		}
		if ok, _ := inst.Banned(t, bot); ok {
			t.Error("banned through a read-only connection")
		}
	})
}

func TestBanUsers(t *testing.T) {
	backends(t, func(t *testing.T, inst *mgtest.Instance) {
		ctx := context.Background()
		bot1 := inst.AddUser(t, mgtest.User{Username: "bot1", Email: "bot1@nowhere.example"})
		bot2 := inst.AddUser(t, mgtest.User{Username: "bot2", Email: "bot2@nowhere.example"})
		real := inst.AddUser(t, mgtest.User{Username: "real", Email: "real@example.net", Verified: true})
		admin := inst.AddUser(t, mgtest.User{Username: "admin", Email: "admin@example.net", Admin: true})
		db := open(t, inst)

		refused, err := db.BanUsers(ctx, map[int64]string{bot1: "r1", bot2: "r2", real: "r3", admin: "r4", 4242: "r5"})
		if err != nil {
			t.Fatal(err)
		}
		for id, want := range map[int64]error{real: mediagoblin.ErrVerified, admin: mediagoblin.ErrPrivileged, 4242: mediagoblin.ErrNoSuchUser} {
			if !errors.Is(refused[id], want) {
				t.Errorf("refused[%d] = %v; want %v", id, refused[id], want)
			}
		}
		if len(refused) != 3 {
			t.Errorf("refused = %v; want only the three protected users", refused)
		}
		for id, reason := range map[int64]string{bot1: "r1", bot2: "r2"} {
			if ok, r := inst.Banned(t, id); !ok || r != reason {
				t.Errorf("user %d banned=%v reason=%q; want %q", id, ok, r, reason)
			}
		}
		for _, id := range []int64{real, admin} {
			if ok, _ := inst.Banned(t, id); ok {
				t.Errorf("protected user %d was banned", id)
			}
		}
		// Again: idempotent, the first reasons stay.
		if refused, err := db.BanUsers(ctx, map[int64]string{bot1: "other", bot2: "other"}); err != nil || len(refused) != 0 {
			t.Fatalf("second BanUsers = %v, %v", refused, err)
		}
		if _, r := inst.Banned(t, bot1); r != "r1" {
			t.Errorf("reason changed to %q", r)
		}
	})
}

// MediaGoblin's SQLite file put back from a copy by a rename (a restore;
// VACUUM INTO and mv): connections opened before keep the old, unlinked
// file, read what MediaGoblin no longer serves, and cannot write. DB opens
// the file again before its next operation, so that no caller has to; a
// file moved away makes the operation fail as unavailable, to be retried.
func TestReplacedSQLiteFileOpenedAgain(t *testing.T) {
	ctx := t.Context()
	inst := mgtest.NewSQLite(t, sender)
	db := open(t, inst)
	cfg := inst.Config(t)
	bot := inst.AddUser(t, mgtest.User{Username: "bot", Email: "bot@nowhere.example"})
	if users, err := db.UsersByEmail(ctx, []string{"bot@nowhere.example"}, 0); err != nil || len(users) != 1 {
		t.Fatalf("before: %v, %v", users, err)
	}
	// The restored file holds a sign-up the old one lost.
	later := inst.AddUser(t, mgtest.User{Username: "later", Email: "later@nowhere.example"})
	inst.Restore(t, func() { inst.DeleteUser(t, later) })
	if users, err := db.UsersByEmail(ctx, []string{"later@nowhere.example"}, 0); err != nil || len(users) != 1 {
		t.Errorf("after the restore: %v, %v; want the user of the file MediaGoblin serves", users, err)
	}
	if err := db.BanUser(ctx, bot, "test"); err != nil {
		t.Errorf("ban after the restore: %v", err)
	}
	if banned, _, err := open(t, inst).IsBanned(ctx, bot); err != nil || !banned {
		t.Errorf("ban not in the file MediaGoblin serves: %v, %v", banned, err)
	}

	if err := os.Rename(cfg.Source, cfg.Source+".moved"); err != nil {
		t.Fatal(err)
	}
	if _, err := db.UsersByEmail(ctx, []string{"bot@nowhere.example"}, 0); !errors.Is(err, mediagoblin.ErrUnavailable) {
		t.Errorf("file moved away: %v; want ErrUnavailable", err)
	}
}

// Operations running while the file is replaced: one that took the old
// connections just before the rename must finish on them, not fail with
// "sql: database is closed" because another operation, seeing the new
// file first, closed them under it (a bounce's sign-up copy failing then
// paused copies, and bounces in those seconds found nobody).
func TestReplacedSQLiteFileConcurrentUsers(t *testing.T) {
	ctx := t.Context()
	inst := mgtest.NewSQLite(t, sender)
	db := open(t, inst)
	bot := inst.AddUser(t, mgtest.User{Username: "bot", Email: "bot@nowhere.example"})
	var (
		stop = make(chan struct{})
		wg   sync.WaitGroup
		errs = make(chan error, 4)
	)
	for range 4 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for {
				select {
				case <-stop:
					return
				default:
				}
				// State runs three queries on the connections it took.
				if _, err := db.State(ctx, bot); err != nil && !errors.Is(err, mediagoblin.ErrReplaced) {
					errs <- err
					return
				}
			}
		}()
	}
	for range 20 {
		inst.Restore(t, nil)
		time.Sleep(5 * time.Millisecond)
	}
	close(stop)
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Errorf("State across a replacement: %v", err)
	}
}

// A DB closed while its file was replaced (LazyAccounts closes a failed
// one while another operation may be opening the file again) must not
// open it again: nothing would ever close those connections.
func TestClosedSQLiteNotOpenedAgain(t *testing.T) {
	inst := mgtest.NewSQLite(t, sender)
	db := open(t, inst)
	if err := db.Close(); err != nil {
		t.Fatal(err)
	}
	inst.Restore(t, nil)
	if _, err := db.MaxUserID(t.Context()); err == nil {
		t.Error("MaxUserID on a closed DB after a replacement succeeded: it opened the file again")
	}
}
