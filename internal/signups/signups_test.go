package signups_test

import (
	"context"
	"errors"
	"fmt"
	"path/filepath"
	"sync/atomic"
	"testing"
	"time"

	"github.com/bouncemilter/bouncemilter/internal/mediagoblin"
	"github.com/bouncemilter/bouncemilter/internal/mediagoblin/mgtest"
	"github.com/bouncemilter/bouncemilter/internal/registry"
	"github.com/bouncemilter/bouncemilter/internal/signups"
	"github.com/bouncemilter/bouncemilter/internal/testenv"
)

const sender = "notice@media.example.org"

type env struct {
	inst   *mgtest.Instance
	reg    *registry.DB
	copier *signups.Copier
	opens  atomic.Int32
	reads  atomic.Int32
	fail   atomic.Bool
}

// counting wraps a Source to count the reads and fail on demand.
type counting struct {
	signups.Source
	e *env
}

func (c counting) UsersByEmail(ctx context.Context, emails []string, afterID int64) ([]mediagoblin.User, error) {
	c.e.reads.Add(1)
	if c.e.fail.Load() {
		return nil, mediagoblin.ErrUnavailable
	}
	return c.Source.UsersByEmail(ctx, emails, afterID)
}

func backends(t *testing.T, fn func(t *testing.T, e *env)) {
	t.Run("sqlite", func(t *testing.T) { fn(t, newEnv(t, mgtest.NewSQLite(t, sender))) })
	t.Run("postgres", func(t *testing.T) { fn(t, newEnv(t, mgtest.NewPostgres(t, testenv.Postgres(t), sender))) })
}

// openRegistry opens a new registry, closed when the test ends.
func openRegistry(t *testing.T) *registry.DB {
	t.Helper()
	reg, err := registry.Open(t.Context(), filepath.Join(t.TempDir(), "registry.db"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { reg.Close() })
	return reg
}

// openMG opens MediaGoblin's database as the Copier's Open does, closed
// when the test ends.
func openMG(t *testing.T, ctx context.Context, cfg mediagoblin.Config) (*mediagoblin.DB, error) {
	db, err := mediagoblin.Open(ctx, cfg)
	if err != nil {
		return nil, err
	}
	t.Cleanup(func() { db.Close() })
	return db, nil
}

func newEnv(t *testing.T, inst *mgtest.Instance) *env {
	t.Helper()
	cfg := inst.Config(t)
	reg := openRegistry(t)
	e := &env{inst: inst, reg: reg}
	e.copier = &signups.Copier{
		Registry: reg,
		Open: func(ctx context.Context) (signups.Source, error) {
			e.opens.Add(1)
			db, err := openMG(t, ctx, cfg)
			if err != nil {
				return nil, err
			}
			return counting{db, e}, nil
		},
	}
	return e
}

func TestCopySignups(t *testing.T) {
	backends(t, func(t *testing.T, e *env) {
		ctx := t.Context()
		now := time.Now().UTC().Truncate(time.Second)
		old := e.inst.AddUser(t, mgtest.User{Username: "old", Email: "bot@nowhere.example", Created: now.Add(-time.Hour)})
		if err := e.reg.SetState(ctx, registry.StateSyncCursor, registry.UserTarget(old)); err != nil {
			t.Fatal(err)
		}
		bot := e.inst.AddUser(t, mgtest.User{Username: "bot", Email: "Bot@nowhere.example", Created: now})
		e.inst.AddUser(t, mgtest.User{Username: "other", Email: "other@nowhere.example", Created: now})

		got, err := e.copier.CopySignups(ctx, []string{"bot@NOWHERE.example"})
		if err != nil {
			t.Fatal(err)
		}
		// Only the sign-up after the cursor: the one before it is the
		// sync's business (it holds it, or it is too old).
		if len(got) != 1 || got[0].UserID != bot || got[0].Username != "bot" || !got[0].Created.Equal(now) || got[0].Verified {
			t.Fatalf("copied %+v", got)
		}
		if r, err := e.reg.RegistrationByName(ctx, "bot"); err != nil || r.Email != "Bot@nowhere.example" {
			t.Errorf("registry holds %+v, %v", r, err)
		}
		for _, name := range []string{"old", "other"} {
			if _, err := e.reg.RegistrationByName(ctx, name); !errors.Is(err, registry.ErrNotFound) {
				t.Errorf("%s copied (%v)", name, err)
			}
		}
		// A failed read is an error, and the next copy opens afresh.
		e.fail.Store(true)
		if _, err := e.copier.CopySignups(ctx, []string{"other@nowhere.example"}); !errors.Is(err, mediagoblin.ErrUnavailable) {
			t.Errorf("failing source: err %v", err)
		}
		// For a while after, no copy is tried: mail and bounces do not
		// each wait for a database that is down.
		e.fail.Store(false)
		reads := e.reads.Load()
		if _, err := e.copier.CopySignups(ctx, []string{"other@nowhere.example"}); !errors.Is(err, signups.ErrPaused) || e.reads.Load() != reads {
			t.Errorf("right after the failure: err %v, %d reads; want ErrPaused without a read", err, e.reads.Load()-reads)
		}
		e.copier.Now = func() time.Time { return time.Now().Add(signups.DefaultPause) }
		if got, err := e.copier.CopySignups(ctx, []string{"other@nowhere.example"}); err != nil || len(got) != 1 {
			t.Errorf("after the pause: %+v, %v", got, err)
		}
		if n := e.opens.Load(); n != 2 {
			t.Errorf("opened MediaGoblin %d times, want 2", n)
		}
	})
}

// MediaGoblin's SQLite database put back from a copy by a rename (a
// restore; VACUUM INTO and mv): the copier's connections would go on
// reading the old, unlinked file, and find none of the sign-ups made
// since. It notices the replaced file before a copy and opens it again.
func TestCopySignupsReplacedFile(t *testing.T) {
	ctx := t.Context()
	inst := mgtest.NewSQLite(t, sender)
	cfg := inst.Config(t)
	cfg.ReadOnly = true
	reg := openRegistry(t)
	var src *mediagoblin.DB
	copier := &signups.Copier{Registry: reg, Open: func(ctx context.Context) (signups.Source, error) {
		db, err := mediagoblin.Open(ctx, cfg)
		src = db
		return db, err
	}}
	defer func() { src.Close() }()
	inst.AddUser(t, mgtest.User{Username: "first", Email: "first@nowhere.example"})
	if got, err := copier.CopySignups(ctx, []string{"first@nowhere.example"}); err != nil || len(got) != 1 {
		t.Fatalf("before the restore: %+v, %v", got, err)
	}

	// The restored file holds a sign-up the old one lost.
	second := inst.AddUser(t, mgtest.User{Username: "second", Email: "second@nowhere.example"})
	inst.Restore(t, func() { inst.DeleteUser(t, second) })
	if got, err := copier.CopySignups(ctx, []string{"second@nowhere.example"}); err != nil || len(got) != 1 || got[0].UserID != second {
		t.Errorf("after the restore: %+v, %v; want user %d from the file MediaGoblin serves", got, err, second)
	}
}

// stalling is the first source of TestCopySignupsFailureOnDroppedSource:
// its first read waits for release and fails, the others fail at once.
type stalling struct {
	signups.Source
	entered, release chan struct{}
	first            atomic.Bool
}

func (s *stalling) UsersByEmail(ctx context.Context, emails []string, afterID int64) ([]mediagoblin.User, error) {
	if s.first.CompareAndSwap(false, true) {
		close(s.entered)
		<-s.release
	}
	return nil, mediagoblin.ErrUnavailable
}

// The Copier is shared by the milter's connections. A read that fails on a
// source another copy dropped already (and paused for) says nothing of the
// source opened since: it must not pause copies again, or the bounces of
// the next 10 s would count as misses though MediaGoblin answers.
func TestCopySignupsFailureOnDroppedSource(t *testing.T) {
	ctx := t.Context()
	inst := mgtest.NewSQLite(t, sender)
	cfg := inst.Config(t)
	reg := openRegistry(t)
	first := &stalling{entered: make(chan struct{}), release: make(chan struct{})}
	var opens atomic.Int32
	var later atomic.Int64 // how far the copier's clock is ahead
	copier := &signups.Copier{
		Registry: reg,
		Now:      func() time.Time { return time.Now().Add(time.Duration(later.Load())) },
		Open: func(ctx context.Context) (signups.Source, error) {
			db, err := openMG(t, ctx, cfg)
			if err != nil {
				return nil, err
			}
			if opens.Add(1) == 1 {
				first.Source = db
				return first, nil
			}
			return db, nil
		},
	}
	inst.AddUser(t, mgtest.User{Username: "bot", Email: "bot@nowhere.example"})
	copy := func() error {
		_, err := copier.CopySignups(ctx, []string{"bot@nowhere.example"})
		return err
	}

	// One connection's read hangs on the first source; another's fails
	// on it, drops it and pauses copies.
	stalled := make(chan error)
	go func() { stalled <- copy() }()
	<-first.entered
	if err := copy(); !errors.Is(err, mediagoblin.ErrUnavailable) {
		t.Fatalf("failing source: %v", err)
	}
	// After the pause, a copy opens a new source, which answers.
	later.Store(int64(signups.DefaultPause))
	if err := copy(); err != nil {
		t.Fatalf("after the pause: %v", err)
	}
	// Now the hung read fails, on the source dropped before.
	close(first.release)
	if err := <-stalled; !errors.Is(err, mediagoblin.ErrUnavailable) {
		t.Fatalf("hung read: %v", err)
	}
	if err := copy(); err != nil {
		t.Errorf("after a failure on the dropped source: %v; want the new source used", err)
	}
	if n := opens.Load(); n != 2 {
		t.Errorf("opened MediaGoblin %d times, want 2", n)
	}
}

func TestJournalFallsBackOnMiss(t *testing.T) {
	backends(t, func(t *testing.T, e *env) {
		ctx := t.Context()
		now := time.Now().UTC().Truncate(time.Second)
		j := signups.Journal{Journal: e.reg, Copier: e.copier}
		known := e.inst.AddUser(t, mgtest.User{Username: "known", Email: "known@nowhere.example", Created: now})
		if err := e.reg.StoreRegistrations(ctx, []registry.Registration{{UserID: known, Username: "known", Email: "known@nowhere.example", Created: now, Synced: now}}); err != nil {
			t.Fatal(err)
		}
		regs, err := j.RegistrationsByEmail(ctx, "known@nowhere.example")
		if err != nil || len(regs) != 1 || e.reads.Load() != 0 {
			t.Fatalf("a registry hit: %+v, %v, %d reads of MediaGoblin; want none", regs, err, e.reads.Load())
		}
		bot := e.inst.AddUser(t, mgtest.User{Username: "bot", Email: "bot@nowhere.example", Created: now})
		regs, err = j.RegistrationsByEmail(ctx, "BOT@nowhere.example")
		if err != nil || len(regs) != 1 || regs[0].UserID != bot {
			t.Fatalf("a miss found in MediaGoblin: %+v, %v", regs, err)
		}
		if regs, err := j.RegistrationsByEmail(ctx, "nobody@nowhere.example"); err != nil || len(regs) != 0 {
			t.Errorf("nobody: %+v, %v", regs, err)
		}
		// MediaGoblin down: a miss, not an error (the bounce is delivered).
		e.fail.Store(true)
		if regs, err := j.RegistrationsByEmail(ctx, "nobody@nowhere.example"); err != nil || len(regs) != 0 {
			t.Errorf("MediaGoblin down: %+v, %v; want a plain miss", regs, err)
		}
	})
}

// replacedOnce is a source whose first read fails as the *mediagoblin.DB
// does when its file was replaced under the read.
type replacedOnce struct {
	signups.Source
	failed atomic.Bool
}

func (s *replacedOnce) UsersByEmail(ctx context.Context, emails []string, afterID int64) ([]mediagoblin.User, error) {
	if s.failed.CompareAndSwap(false, true) {
		return nil, fmt.Errorf("read users: %w", mediagoblin.ErrReplaced)
	}
	return s.Source.UsersByEmail(ctx, emails, afterID)
}

// A read that failed because MediaGoblin's file was replaced under it says
// the database is there: the source opens the file again itself. The copy
// is tried again at once; the source is neither closed nor are copies
// paused, which would make the bounces of the next seconds misses.
func TestCopySignupsReplacedDuringRead(t *testing.T) {
	ctx := t.Context()
	inst := mgtest.NewSQLite(t, sender)
	cfg := inst.Config(t)
	reg := openRegistry(t)
	var opens atomic.Int32
	copier := &signups.Copier{Registry: reg, Open: func(ctx context.Context) (signups.Source, error) {
		db, err := openMG(t, ctx, cfg)
		if err != nil {
			return nil, err
		}
		opens.Add(1)
		return &replacedOnce{Source: db}, nil
	}}
	inst.AddUser(t, mgtest.User{Username: "bot", Email: "bot@nowhere.example"})
	for i := range 2 {
		if got, err := copier.CopySignups(ctx, []string{"bot@nowhere.example"}); err != nil || len(got) != 1 {
			t.Errorf("copy %d: %+v, %v; want the sign-up", i, got, err)
		}
	}
	if n := opens.Load(); n != 1 {
		t.Errorf("opened MediaGoblin %d times, want 1: the source was dropped", n)
	}
}
