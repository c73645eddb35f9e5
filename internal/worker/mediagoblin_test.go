package worker

import (
	"context"
	"net/netip"
	"strings"
	"testing"
	"time"

	"github.com/bouncemilter/bouncemilter/internal/mediagoblin"
	"github.com/bouncemilter/bouncemilter/internal/mediagoblin/mgtest"
	"github.com/bouncemilter/bouncemilter/internal/registry"
	"github.com/bouncemilter/bouncemilter/internal/testenv"
)

// These tests run the worker against MediaGoblin's real databases, in the
// states a running instance passes through that mocks do not show.

// ipBanner records the IP bans it is asked for.
type ipBanner struct{ banned chan netip.Addr }

func (b ipBanner) Ban(ctx context.Context, ip netip.Addr, reason string) error {
	b.banned <- ip
	return nil
}
func (b ipBanner) Unban(ctx context.Context, ip netip.Addr) error { return nil }

// queueBan queues an account ban for MediaGoblin's user id.
func queueBan(t *testing.T, reg *registry.DB, id int64) {
	t.Helper()
	err := reg.Tx(t.Context(), func(tx *registry.Tx) error {
		_, err := tx.Queue(t.Context(), registry.Action{UserID: id, Kind: registry.BanAccount, Target: registry.UserTarget(id), Reason: "bouncemilter: test"}, time.Now())
		return err
	})
	if err != nil {
		t.Fatal(err)
	}
}

// MediaGoblin's PostgreSQL answers, but core__user_bans is locked by a long
// transaction (a `gmg dbupdate` migration, VACUUM FULL, a moderator's psql
// session left open; a black-holed link hangs the same way). The attempt
// gives up at its deadline, is booked failed with a clear last_error and
// retried with back-off, and the action behind it (a peer's IP ban) is
// applied in the same run.
func TestSlowMediaGoblinDoesNotStallTheWorker(t *testing.T) {
	ctx := t.Context()
	inst := mgtest.NewPostgres(t, testenv.Postgres(t), "notice@media.example.org")
	bot := inst.AddUser(t, mgtest.User{Username: "bot", Email: "bot@example.net"})
	mg := inst.Open(t)
	reg := openRegistry(t)
	queueBan(t, reg, bot)
	// A peer's ban (user 0): it waits for no account ban.
	err := reg.Tx(ctx, func(tx *registry.Tx) error {
		_, err := tx.Queue(ctx, registry.Action{Kind: registry.BanIP, Target: "192.0.2.9", Reason: "peers"}, time.Now())
		return err
	})
	if err != nil {
		t.Fatal(err)
	}

	lock, err := inst.SQL().BeginTx(ctx, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer lock.Rollback()
	if _, err := lock.ExecContext(ctx, `LOCK TABLE core__user_bans IN ACCESS EXCLUSIVE MODE`); err != nil {
		t.Fatal(err)
	}

	b := ipBanner{banned: make(chan netip.Addr, 1)}
	w := New(reg, mg, b, nil)
	// Below the connection's own lock_timeout, so that the worker's
	// deadline is what ends the attempt.
	w.AttemptTimeout = time.Second
	done := make(chan error, 1)
	go func() { _, err := w.RunOnce(ctx); done <- err }()
	select {
	case err := <-done:
		if err != nil {
			t.Fatal(err)
		}
	case <-time.After(30 * time.Second):
		t.Fatal("worker still blocked after 30 s on MediaGoblin's locked core__user_bans")
	}
	select {
	case <-b.banned:
	default:
		t.Error("the peer's IP ban behind the stalled account ban was not applied")
	}
	acts, err := reg.Actions(ctx, bot)
	if err != nil || len(acts) != 1 {
		t.Fatal(acts, err)
	}
	if a := acts[0]; a.State != registry.Pending || a.Attempts != 1 || !strings.Contains(a.LastError, "no answer within 1s") {
		t.Errorf("account ban = %s after %d attempts (%q); want pending, one attempt, no answer", a.State, a.Attempts, a.LastError)
	}
}

// hung answers no account call until its context ends.
type hung struct{ calls int }

func (h *hung) BanUser(ctx context.Context, userID int64, reason string) error {
	h.calls++
	<-ctx.Done()
	return ctx.Err()
}

func (h *hung) UnbanUser(ctx context.Context, userID int64) error { return h.BanUser(ctx, userID, "") }

// One account action that got no answer is enough: the others in the batch
// fail at once instead of each waiting out its own deadline, and the IP
// actions behind them are not held up.
func TestNoAnswerSkipsTheTargetForTheBatch(t *testing.T) {
	reg := openRegistry(t)
	c := &clock{t: t0}
	acc := &hung{}
	tg := &target{}
	ctx := t.Context()
	err := reg.Tx(ctx, func(tx *registry.Tx) error {
		for _, a := range []registry.Action{
			{UserID: 1, Kind: registry.BanAccount, Target: "1", Reason: "r"},
			{UserID: 2, Kind: registry.UnbanAccount, Target: "2", Reason: "r"},
			{Kind: registry.BanIP, Target: "192.0.2.9", Reason: "peers"},
		} {
			if _, err := tx.Queue(ctx, a, t0); err != nil {
				return err
			}
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	w := New(reg, acc, tg, nil)
	w.Now = c.Now
	w.AttemptTimeout = 50 * time.Millisecond
	if _, err := w.RunOnce(ctx); err != nil {
		t.Fatal(err)
	}
	if acc.calls != 1 {
		t.Errorf("MediaGoblin asked %d times; want once", acc.calls)
	}
	for id, want := range map[int64]string{1: "no answer within 50ms", 2: "not tried: no answer"} {
		acts, err := reg.Actions(ctx, id)
		if err != nil || len(acts) != 1 {
			t.Fatal(acts, err)
		}
		if a := acts[0]; a.State != registry.Pending || !strings.Contains(a.LastError, want) {
			t.Errorf("user %d: %s (%q); want pending, %q", id, a.State, a.LastError, want)
		}
	}
	if got := tg.Calls(); len(got) != 1 || got[0] != "ban-ip 192.0.2.9" {
		t.Errorf("banner calls = %q; want the peer's ban", got)
	}
}

// MediaGoblin's SQLite database is put back from a copy by renaming it into
// place (a restore; VACUUM INTO and mv). Connections opened before keep the
// old, unlinked file, and SQLite refuses their writes ("attempt to write a
// readonly database"): the store (mediagoblin.DB) must open the file
// again, not fail every ban until serve restarts.
func TestReplacedMediaGoblinFileGetsTheBan(t *testing.T) {
	ctx := t.Context()
	inst := mgtest.NewSQLite(t, "notice@media.example.org")
	first := inst.AddUser(t, mgtest.User{Username: "bot1", Email: "bot1@example.net"})
	second := inst.AddUser(t, mgtest.User{Username: "bot2", Email: "bot2@example.net"})
	cfg := inst.Config(t)
	lazy := &LazyAccounts{Open: func(ctx context.Context) (Accounts, error) { return mediagoblin.Open(ctx, cfg) }}
	reg := openRegistry(t)
	w := New(reg, lazy, nil, nil)
	queueBan(t, reg, first)
	if _, err := w.RunOnce(ctx); err != nil {
		t.Fatal(err)
	}
	inst.Restore(t, nil)

	queueBan(t, reg, second)
	if _, err := w.RunOnce(ctx); err != nil {
		t.Fatal(err)
	}
	acts, err := reg.Actions(ctx, second)
	if err != nil || len(acts) != 1 {
		t.Fatal(acts, err)
	}
	fresh, err := mediagoblin.Open(ctx, cfg)
	if err != nil {
		t.Fatal(err)
	}
	defer fresh.Close()
	if banned, _, err := fresh.IsBanned(ctx, second); err != nil || !banned {
		t.Errorf("user %d not banned in the file MediaGoblin serves (%v): %s after %d attempts: %s", second, err, acts[0].State, acts[0].Attempts, acts[0].LastError)
	}

	// The store opened the file again itself: the worker kept it.
	if lazy.acc == nil {
		t.Error("the store was closed; want it kept")
	}
}
