package worker

import (
	"context"
	"errors"
	"fmt"
	"maps"
	"net/netip"
	"path/filepath"
	"reflect"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/bouncemilter/bouncemilter/internal/banner"
	"github.com/bouncemilter/bouncemilter/internal/mediagoblin"
	"github.com/bouncemilter/bouncemilter/internal/refusal"
	"github.com/bouncemilter/bouncemilter/internal/registry"
)

var t0 = time.Date(2026, 11, 26, 9, 14, 8, 0, time.UTC)

// clock is a settable time source; the registry keeps whole seconds.
type clock struct {
	mu sync.Mutex
	t  time.Time
}

func (c *clock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.t
}

func (c *clock) Advance(d time.Duration) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.t = c.t.Add(d)
}

// target records what the worker asked MediaGoblin and the banner to do.
// fail, when set, is asked first and may make the call fail.
type target struct {
	mu    sync.Mutex
	calls []string
	fail  func(call string) error
}

func (tg *target) do(call string) error {
	tg.mu.Lock()
	defer tg.mu.Unlock()
	if tg.fail != nil {
		if err := tg.fail(call); err != nil {
			return err
		}
	}
	tg.calls = append(tg.calls, call)
	return nil
}

func (tg *target) Calls() []string {
	tg.mu.Lock()
	defer tg.mu.Unlock()
	return slices.Clone(tg.calls)
}

func (tg *target) BanUser(ctx context.Context, userID int64, reason string) error {
	if reason == "" {
		return errors.New("ban without a reason")
	}
	return tg.do(fmt.Sprintf("ban-user %d", userID))
}

func (tg *target) UnbanUser(ctx context.Context, userID int64) error {
	return tg.do(fmt.Sprintf("unban-user %d", userID))
}

func (tg *target) Ban(ctx context.Context, ip netip.Addr, reason string) error {
	return tg.do("ban-ip " + ip.String())
}

func (tg *target) Unban(ctx context.Context, ip netip.Addr) error {
	return tg.do("unban-ip " + ip.String())
}

func openRegistry(t *testing.T) *registry.DB {
	t.Helper()
	db, err := registry.Open(t.Context(), filepath.Join(t.TempDir(), "r.db"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { db.Close() })
	return db
}

// journal does what the bounce handler does for an acted bounce: a
// sign-up, a bounce, an account ban and an IP ban.
func journal(t *testing.T, db *registry.DB, userID int64, ip string, now time.Time) {
	t.Helper()
	ctx := t.Context()
	name := fmt.Sprintf("bot%d", userID)
	err := db.Tx(ctx, func(tx *registry.Tx) error {
		err := tx.UpsertRegistration(ctx, registry.Registration{UserID: userID, Username: name, Email: name + "@example.net", Created: now.Add(-time.Minute), Synced: now})
		if err != nil {
			return err
		}
		_, err = tx.SetIP(ctx, name, ip, "combined")
		return err
	})
	if err != nil {
		t.Fatal(err)
	}
	reason := fmt.Sprintf("bouncemilter: mail to %s@example.net bounced permanently (5.1.1 userunknown)", name)
	_, err = db.RecordBounce(ctx, registry.Bounce{Received: now, Verdict: registry.VerdictActed, Report: "{}"}, []registry.Action{
		{UserID: userID, Kind: registry.BanAccount, Target: registry.UserTarget(userID), Reason: reason},
		{UserID: userID, Kind: registry.BanIP, Target: ip, Reason: reason},
	})
	if err != nil {
		t.Fatal(err)
	}
}

func states(t *testing.T, db *registry.DB, userID int64) []string {
	t.Helper()
	acts, err := db.Actions(t.Context(), userID)
	if err != nil {
		t.Fatal(err)
	}
	var out []string
	for _, a := range acts {
		out = append(out, fmt.Sprintf("%s %s", a.Kind, a.State))
	}
	return out
}

// mediaGoblinDown is a target whose account bans fail, as with
// MediaGoblin's database unreachable, while *down holds.
func mediaGoblinDown(down *bool) *target {
	return &target{fail: func(call string) error {
		if *down && strings.HasPrefix(call, "ban-user") {
			return errors.New("connect to MediaGoblin's database: connection refused")
		}
		return nil
	}}
}

func newWorker(db *registry.DB, tg interface {
	Accounts
	Banner
}, c *clock) *Worker {
	w := New(db, tg, tg, nil)
	w.Now = c.Now
	return w
}

func TestRunOnceBansAccountThenIP(t *testing.T) {
	db := openRegistry(t)
	c := &clock{t: t0}
	tg := &target{}
	journal(t, db, 42, "203.0.113.9", t0)
	w := newWorker(db, tg, c)

	n, err := w.RunOnce(t.Context())
	if err != nil {
		t.Fatal(err)
	}
	if n != 2 {
		t.Errorf("RunOnce applied %d, want 2", n)
	}
	if got, want := tg.Calls(), []string{"ban-user 42", "ban-ip 203.0.113.9"}; !slices.Equal(got, want) {
		t.Errorf("calls = %q, want %q", got, want)
	}
	if got, want := states(t, db, 42), []string{"ban-account applied", "ban-ip applied"}; !slices.Equal(got, want) {
		t.Errorf("states = %q, want %q", got, want)
	}

	// Applied actions leave the queue: running again does nothing.
	c.Advance(time.Hour)
	n, err = w.RunOnce(t.Context())
	if err != nil || n != 0 {
		t.Errorf("second RunOnce = %d, %v; want 0, nil", n, err)
	}
	if got := tg.Calls(); len(got) != 2 {
		t.Errorf("second run called the targets again: %q", got)
	}
}

// An IP ban goes ahead only once MediaGoblin holds the account's ban.
func TestIPBanWaitsForAccountBan(t *testing.T) {
	db := openRegistry(t)
	c := &clock{t: t0}
	down := true
	tg := mediaGoblinDown(&down)
	journal(t, db, 42, "203.0.113.9", t0)
	w := newWorker(db, tg, c)

	n, err := w.RunOnce(t.Context())
	if err != nil || n != 0 {
		t.Fatalf("RunOnce with MediaGoblin down = %d, %v", n, err)
	}
	if got := tg.Calls(); len(got) != 0 {
		t.Errorf("the IP was banned before the account: %q", got)
	}
	acts, err := db.Actions(t.Context(), 42)
	if err != nil {
		t.Fatal(err)
	}
	ban, ipBan := acts[0], acts[1]
	if ban.State != registry.Pending || ban.Attempts != 1 || !strings.Contains(ban.LastError, "connection refused") {
		t.Errorf("account ban after a failure = %+v", ban)
	}
	// Waiting is not failing: the IP ban keeps no error and no attempt.
	if ipBan.State != registry.Pending || ipBan.Attempts != 0 || ipBan.LastError != "" {
		t.Errorf("waiting IP ban = %+v", ipBan)
	}

	// Still down, before the back-off is over: nothing is tried.
	c.Advance(time.Second)
	if _, err := w.RunOnce(t.Context()); err != nil {
		t.Fatal(err)
	}
	if got := states(t, db, 42); !slices.Equal(got, []string{"ban-account pending", "ban-ip pending"}) {
		t.Errorf("states = %q", got)
	}

	down = false
	c.Advance(5 * time.Second)
	n, err = w.RunOnce(t.Context())
	if err != nil || n != 2 {
		t.Fatalf("RunOnce after MediaGoblin came back = %d, %v; want 2", n, err)
	}
	if got, want := tg.Calls(), []string{"ban-user 42", "ban-ip 203.0.113.9"}; !slices.Equal(got, want) {
		t.Errorf("calls = %q, want %q", got, want)
	}
}

// IP bans waiting for their account bans (MediaGoblin's database down
// during a flood) are not due: a hundred of them, a full batch, hide no
// action queued after them (here a peers' IP ban, which waits for no
// account) while the outage lasts; and once MediaGoblin is back, each
// follows its account ban in the same run.
func TestWaitingIPBansDoNotStarveTheQueue(t *testing.T) {
	db := openRegistry(t)
	c := &clock{t: t0}
	down := true
	tg := mediaGoblinDown(&down)
	for i := range 100 {
		journal(t, db, int64(1000+i), fmt.Sprintf("198.51.100.%d", i), t0)
	}
	w := newWorker(db, tg, c)
	if _, err := w.RunOnce(t.Context()); err != nil {
		t.Fatal(err)
	}
	if _, err := db.BanFromFeed(t.Context(), "192.0.2.77", "listed by peers", "peer-a", t0.Add(24*time.Hour), c.Now()); err != nil {
		t.Fatal(err)
	}
	c.Advance(time.Second) // the worker's next poll
	if _, err := w.RunOnce(t.Context()); err != nil {
		t.Fatal(err)
	}
	if got := tg.Calls(); !slices.Equal(got, []string{"ban-ip 192.0.2.77"}) {
		t.Errorf("calls with MediaGoblin down = %q; want the peers' IP ban alone", got)
	}

	down = false
	c.Advance(10 * time.Minute) // past any account ban's back-off
	n, err := w.RunOnce(t.Context())
	if err != nil || n != 200 {
		t.Errorf("RunOnce after MediaGoblin came back = %d, %v; want 200 (each account ban and its IP ban)", n, err)
	}
	if got := states(t, db, 1099); !slices.Equal(got, []string{"ban-account applied", "ban-ip applied"}) {
		t.Errorf("last user = %q", got)
	}
}

var errVerified = refusal.New("mediagoblin: account is verified")

// When MediaGoblin refuses the account ban (the user verified meanwhile),
// the IP belongs to a real user too: the IP ban is refused, never retried.
func TestIPBanRefusedWhenAccountBanRefused(t *testing.T) {
	db := openRegistry(t)
	c := &clock{t: t0}
	tg := &target{fail: func(call string) error {
		if call == "ban-user 42" {
			return fmt.Errorf("ban user 42: %w", errVerified)
		}
		return nil
	}}
	journal(t, db, 42, "203.0.113.9", t0)
	w := newWorker(db, tg, c)

	if _, err := w.RunOnce(t.Context()); err != nil {
		t.Fatal(err)
	}
	if got := tg.Calls(); len(got) != 0 {
		t.Errorf("calls = %q, want none", got)
	}
	acts, err := db.Actions(t.Context(), 42)
	if err != nil {
		t.Fatal(err)
	}
	if got, want := states(t, db, 42), []string{"ban-account refused", "ban-ip refused"}; !slices.Equal(got, want) {
		t.Fatalf("states = %q, want %q", got, want)
	}
	if !strings.Contains(acts[0].LastError, "verified") || !strings.Contains(acts[1].LastError, "refused") {
		t.Errorf("errors = %q, %q", acts[0].LastError, acts[1].LastError)
	}

	// Refused is final.
	c.Advance(24 * time.Hour)
	if n, err := w.RunOnce(t.Context()); n != 0 || err != nil {
		t.Errorf("RunOnce a day later = %d, %v", n, err)
	}
	if got := tg.Calls(); len(got) != 0 {
		t.Errorf("a refused action was retried: %q", got)
	}
}

// An error that is not a refusal is an outage: retried.
func TestUnknownErrorIsRetried(t *testing.T) {
	db := openRegistry(t)
	c := &clock{t: t0}
	tg := &target{fail: func(call string) error {
		if call == "ban-user 42" {
			return fmt.Errorf("ban user 42: %w", errors.New("database is locked"))
		}
		return nil
	}}
	journal(t, db, 42, "203.0.113.9", t0)
	w := newWorker(db, tg, c)
	if _, err := w.RunOnce(t.Context()); err != nil {
		t.Fatal(err)
	}
	if got, want := states(t, db, 42), []string{"ban-account pending", "ban-ip pending"}; !slices.Equal(got, want) {
		t.Errorf("states = %q, want %q", got, want)
	}
}

func TestBackoff(t *testing.T) {
	db := openRegistry(t)
	c := &clock{t: t0}
	failures := 0
	tg := &target{fail: func(call string) error {
		if call == "ban-ip 203.0.113.9" && failures < 6 {
			failures++
			return errors.New("fail2ban-client: cannot connect to the server socket")
		}
		return nil
	}}
	journal(t, db, 42, "203.0.113.9", t0)
	w := newWorker(db, tg, c)
	w.MaxBackoff = time.Minute

	var waits []time.Duration
	for range 6 {
		if _, err := w.RunOnce(t.Context()); err != nil {
			t.Fatal(err)
		}
		acts, err := db.Actions(t.Context(), 42)
		if err != nil {
			t.Fatal(err)
		}
		ip := acts[1]
		if ip.State != registry.Pending || !strings.Contains(ip.LastError, "fail2ban-client") {
			t.Fatalf("IP ban after failure %d = %+v", len(waits)+1, ip)
		}
		wait := ip.NextAttempt.Sub(c.Now())
		waits = append(waits, wait)

		// Not yet due a second early.
		c.Advance(wait - time.Second)
		before := failures
		if _, err := w.RunOnce(t.Context()); err != nil {
			t.Fatal(err)
		}
		if failures != before {
			t.Fatalf("tried again %v after a failure, before the back-off of %v was over", wait-time.Second, wait)
		}
		c.Advance(time.Second)
	}
	want := []time.Duration{5 * time.Second, 10 * time.Second, 20 * time.Second, 40 * time.Second, time.Minute, time.Minute}
	if !slices.Equal(waits, want) {
		t.Errorf("back-off = %v, want %v", waits, want)
	}

	n, err := w.RunOnce(t.Context())
	if err != nil || n != 1 {
		t.Fatalf("RunOnce after fail2ban came back = %d, %v; want 1", n, err)
	}
	acts, err := db.Actions(t.Context(), 42)
	if err != nil {
		t.Fatal(err)
	}
	if ip := acts[1]; ip.State != registry.Applied || ip.Attempts != 7 || ip.LastError != "" {
		t.Errorf("IP ban after success = %+v", ip)
	}
	if got, want := tg.Calls(), []string{"ban-user 42", "ban-ip 203.0.113.9"}; !slices.Equal(got, want) {
		t.Errorf("calls = %q, want %q", got, want)
	}
}

func TestDefaultBackoff(t *testing.T) {
	w := &Worker{}
	for attempts, want := range map[int]time.Duration{
		0: 5 * time.Second, 1: 10 * time.Second, 6: 320 * time.Second,
		7: 10 * time.Minute, 100: 10 * time.Minute, 1 << 20: 10 * time.Minute,
	} {
		if got := w.backoff(attempts); got != want {
			t.Errorf("backoff(%d) = %v, want %v", attempts, got, want)
		}
	}
}

// What the admin restores stays restored: applied bans are lifted,
// pending ones never applied.
func TestUnbanAfterRestore(t *testing.T) {
	t.Run("applied", func(t *testing.T) {
		db := openRegistry(t)
		c := &clock{t: t0}
		tg := &target{}
		journal(t, db, 42, "203.0.113.9", t0)
		w := newWorker(db, tg, c)
		if _, err := w.RunOnce(t.Context()); err != nil {
			t.Fatal(err)
		}
		c.Advance(time.Hour)
		if _, err := db.Restore(t.Context(), 42, "a real person", c.Now()); err != nil {
			t.Fatal(err)
		}
		n, err := w.RunOnce(t.Context())
		if err != nil || n != 2 {
			t.Fatalf("RunOnce after restore = %d, %v; want 2", n, err)
		}
		want := []string{"ban-user 42", "ban-ip 203.0.113.9", "unban-user 42", "unban-ip 203.0.113.9"}
		if got := tg.Calls(); !slices.Equal(got, want) {
			t.Errorf("calls = %q, want %q", got, want)
		}
		want = []string{"ban-account undone", "ban-ip undone", "unban-account applied", "unban-ip applied"}
		if got := states(t, db, 42); !slices.Equal(got, want) {
			t.Errorf("states = %q, want %q", got, want)
		}
	})
	t.Run("pending", func(t *testing.T) {
		db := openRegistry(t)
		c := &clock{t: t0}
		tg := &target{}
		journal(t, db, 42, "203.0.113.9", t0)
		if _, err := db.Restore(t.Context(), 42, "a real person", t0); err != nil {
			t.Fatal(err)
		}
		w := newWorker(db, tg, c)
		if _, err := w.RunOnce(t.Context()); err != nil {
			t.Fatal(err)
		}
		// Lifting a ban that was never applied is harmless; applying
		// the cancelled ban is not.
		want := []string{"unban-user 42", "unban-ip 203.0.113.9"}
		if got := tg.Calls(); !slices.Equal(got, want) {
			t.Errorf("calls = %q, want %q", got, want)
		}
		want = []string{"ban-account cancelled", "ban-ip cancelled", "unban-account applied", "unban-ip applied"}
		if got := states(t, db, 42); !slices.Equal(got, want) {
			t.Errorf("states = %q, want %q", got, want)
		}
	})
}

func TestNoBannerRefusesIPActions(t *testing.T) {
	db := openRegistry(t)
	c := &clock{t: t0}
	tg := &target{}
	journal(t, db, 42, "203.0.113.9", t0)
	w := New(db, tg, nil, nil)
	w.Now = c.Now
	if _, err := w.RunOnce(t.Context()); err != nil {
		t.Fatal(err)
	}
	if got, want := states(t, db, 42), []string{"ban-account applied", "ban-ip refused"}; !slices.Equal(got, want) {
		t.Errorf("states = %q, want %q", got, want)
	}
	acts, _ := db.Actions(t.Context(), 42)
	if !strings.Contains(acts[1].LastError, ErrNoBanner.Error()) {
		t.Errorf("IP ban error = %q", acts[1].LastError)
	}
}

func TestMalformedActionsAreRefused(t *testing.T) {
	db := openRegistry(t)
	c := &clock{t: t0}
	tg := &target{}
	err := db.Tx(t.Context(), func(tx *registry.Tx) error {
		for _, a := range []registry.Action{
			{UserID: 1, Kind: registry.BanAccount, Target: "not-a-number", Reason: "r"},
			{UserID: 2, Kind: registry.BanIP, Target: "300.1.2.3", Reason: "r"},
			{UserID: 3, Kind: "reboot", Target: "3", Reason: "r"},
		} {
			if _, err := tx.Queue(t.Context(), a, t0); err != nil {
				return err
			}
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	w := newWorker(db, tg, c)
	if _, err := w.RunOnce(t.Context()); err != nil {
		t.Fatal(err)
	}
	for id := int64(1); id <= 3; id++ {
		if got := states(t, db, id); len(got) != 1 || !strings.HasSuffix(got[0], " refused") {
			t.Errorf("user %d: %q, want refused", id, got)
		}
	}
	if got := tg.Calls(); len(got) != 0 {
		t.Errorf("calls = %q", got)
	}
}

// More actions than one batch of the queue are all applied in one run.
func TestRunOnceDrainsTheQueue(t *testing.T) {
	db := openRegistry(t)
	c := &clock{t: t0}
	tg := &target{}
	for i := range 130 {
		journal(t, db, int64(100+i), fmt.Sprintf("198.51.100.%d", i), t0)
	}
	w := newWorker(db, tg, c)
	n, err := w.RunOnce(t.Context())
	if err != nil {
		t.Fatal(err)
	}
	if n != 260 {
		t.Errorf("RunOnce applied %d, want 260", n)
	}
}

func TestRunOnceQueueUnavailable(t *testing.T) {
	db := openRegistry(t)
	db.Close()
	w := newWorker(db, &target{}, &clock{t: t0})
	if _, err := w.RunOnce(t.Context()); err == nil {
		t.Error("RunOnce on a closed registry succeeded")
	}
}

func TestWakeNeverBlocks(t *testing.T) {
	w := New(nil, nil, nil, nil)
	done := make(chan struct{})
	go func() {
		for range 10 {
			w.Wake()
		}
		(&Worker{}).Wake() // made without New
		close(done)
	}()
	select {
	case <-done:
	case <-time.After(5 * time.Second):
		t.Fatal("Wake blocked")
	}
}

// Run applies what is journalled as soon as it is woken, long before its
// poll interval, and returns once ctx is cancelled.
func TestRunWakeAndCancel(t *testing.T) {
	db := openRegistry(t)
	tg := &target{}
	w := New(db, tg, tg, nil)
	w.Poll = time.Hour
	ctx, cancel := context.WithCancel(t.Context())
	defer cancel()
	ran := make(chan error, 1)
	go func() { ran <- w.Run(ctx) }()

	// Let Run start and find the queue empty, then journal and wake it.
	time.Sleep(50 * time.Millisecond)
	journal(t, db, 42, "203.0.113.9", time.Now())
	w.Wake()
	deadline := time.Now().Add(10 * time.Second)
	for len(tg.Calls()) < 2 {
		if time.Now().After(deadline) {
			t.Fatalf("woken worker applied %q in 10s", tg.Calls())
		}
		time.Sleep(10 * time.Millisecond)
	}

	cancel()
	select {
	case err := <-ran:
		if err != nil {
			t.Errorf("Run = %v, want nil", err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("Run did not return after cancel")
	}
}

// A Run whose queue cannot be read keeps going (it logs) and still stops
// on cancel.
func TestRunSurvivesQueueErrors(t *testing.T) {
	db := openRegistry(t)
	db.Close()
	w := New(db, &target{}, nil, nil)
	w.Poll = 10 * time.Millisecond
	ctx, cancel := context.WithTimeout(t.Context(), 100*time.Millisecond)
	defer cancel()
	if err := w.Run(ctx); err != nil {
		t.Errorf("Run = %v", err)
	}
}

// MediaGoblin's database is down when the milter starts: the bans wait in
// the queue, and the store is opened once it can be, then kept.
func TestLazyAccounts(t *testing.T) {
	db := openRegistry(t)
	c := &clock{t: t0}
	tg := &target{}
	opens, up := 0, false
	lazy := &LazyAccounts{Open: func(ctx context.Context) (Accounts, error) {
		opens++
		if !up {
			return nil, errors.New("connect to postgresql:///mediagoblin: connection refused")
		}
		return tg, nil
	}}
	journal(t, db, 42, "203.0.113.9", t0)
	w := New(db, lazy, tg, nil)
	w.Now = c.Now

	if n, err := w.RunOnce(t.Context()); err != nil || n != 0 {
		t.Fatalf("RunOnce with the database down = %d, %v", n, err)
	}
	acts, err := db.Actions(t.Context(), 42)
	if err != nil {
		t.Fatal(err)
	}
	if acts[0].State != registry.Pending || !strings.Contains(acts[0].LastError, "connection refused") {
		t.Errorf("account ban = %+v", acts[0])
	}

	up = true
	c.Advance(5 * time.Second)
	if n, err := w.RunOnce(t.Context()); err != nil || n != 2 {
		t.Fatalf("RunOnce with the database up = %d, %v; want 2", n, err)
	}
	if err := lazy.UnbanUser(t.Context(), 42); err != nil {
		t.Fatal(err)
	}
	if opens != 2 {
		t.Errorf("opened %d times, want 2 (one failure, then kept)", opens)
	}
	if got, want := tg.Calls(), []string{"ban-user 42", "ban-ip 203.0.113.9", "unban-user 42"}; !slices.Equal(got, want) {
		t.Errorf("calls = %q, want %q", got, want)
	}
}

// A store that bans one by one (no BatchAccounts) is closed by BanUsers
// after a failure that is not a refusal, as by BanUser: the next attempt
// opens it again instead of using connections a restarted server dropped.
// A refusal keeps it.
func TestLazyAccountsBanUsersOneByOneFailure(t *testing.T) {
	for _, tc := range []struct {
		name  string
		err   error
		opens int
	}{
		{"connection lost", errors.New("connection reset by peer"), 2},
		{"refused", mediagoblin.ErrVerified, 1},
	} {
		t.Run(tc.name, func(t *testing.T) {
			tg := &target{fail: func(string) error { return tc.err }}
			opens := 0
			lazy := &LazyAccounts{Open: func(ctx context.Context) (Accounts, error) { opens++; return tg, nil }}
			for range 2 {
				refused, err := lazy.BanUsers(t.Context(), map[int64]string{42: "test"})
				if err != nil || !errors.Is(refused[42], tc.err) {
					t.Fatalf("BanUsers = %v, %v; want user 42 refused with %v", refused, err, tc.err)
				}
			}
			if opens != tc.opens {
				t.Errorf("opened %d times, want %d", opens, tc.opens)
			}
		})
	}
}

// batchTarget bans accounts together, as mediagoblin.DB.BanUsers does.
type batchTarget struct {
	*target
	batches [][]int64
	refuse  map[int64]error
}

func (b *batchTarget) BanUsers(ctx context.Context, bans map[int64]string) (map[int64]error, error) {
	ids := slices.Sorted(maps.Keys(bans))
	b.batches = append(b.batches, ids)
	refused := map[int64]error{}
	for _, id := range ids {
		if err := b.refuse[id]; err != nil {
			refused[id] = err
			continue
		}
		if err := b.BanUser(ctx, id, bans[id]); err != nil {
			return nil, err
		}
	}
	return refused, nil
}

func TestRunOnceBansAccountsTogether(t *testing.T) {
	db := openRegistry(t)
	c := &clock{t: t0}
	errVerified := refusal.New("verified meanwhile")
	tg := &batchTarget{target: &target{}, refuse: map[int64]error{43: errVerified}}
	for i, ip := range []string{"203.0.113.1", "203.0.113.2", "203.0.113.3"} {
		journal(t, db, int64(41+i), ip, t0)
	}
	w := newWorker(db, tg, c)

	if _, err := w.RunOnce(t.Context()); err != nil {
		t.Fatal(err)
	}
	if want := [][]int64{{41, 42, 43}}; !reflect.DeepEqual(tg.batches, want) {
		t.Errorf("batches = %v; want one with all three accounts", tg.batches)
	}
	if got, want := tg.Calls(), []string{"ban-user 41", "ban-user 42", "ban-ip 203.0.113.1", "ban-ip 203.0.113.2"}; !slices.Equal(got, want) {
		t.Errorf("calls = %q, want %q", got, want)
	}
	if got, want := states(t, db, 43), []string{"ban-account refused", "ban-ip refused"}; !slices.Equal(got, want) {
		t.Errorf("user 43 = %q, want %q: an account verified meanwhile keeps its IP", got, want)
	}
}

// A batch that fails as a whole (MediaGoblin down) leaves every account ban
// to retry, and their IP bans waiting.
func TestRunOnceBatchFailureRetriesAll(t *testing.T) {
	db := openRegistry(t)
	c := &clock{t: t0}
	down := errors.New("database down")
	tg := &batchTarget{target: &target{fail: func(call string) error {
		if strings.HasPrefix(call, "ban-user") {
			return down
		}
		return nil
	}}}
	journal(t, db, 1, "203.0.113.1", t0)
	journal(t, db, 2, "203.0.113.2", t0)
	w := newWorker(db, tg, c)
	if _, err := w.RunOnce(t.Context()); err != nil {
		t.Fatal(err)
	}
	for _, id := range []int64{1, 2} {
		if got, want := states(t, db, id), []string{"ban-account pending", "ban-ip pending"}; !slices.Equal(got, want) {
			t.Errorf("user %d = %q, want %q", id, got, want)
		}
	}
	if calls := tg.Calls(); len(calls) != 0 {
		t.Errorf("calls = %q; want none while the database is down", calls)
	}
}

// The journal keeps what an IP ban banned when the banner bans more than
// the address: the /64 of an IPv6 sign-up, not when the /64 holds an
// allow-listed address (then the address alone is banned), never for
// IPv4.
func TestIPBanRecordsTheNetworkBanned(t *testing.T) {
	db := openRegistry(t)
	c := &clock{t: t0}
	tg := &target{}
	journal(t, db, 1, "2001:db8:4:7::99", t0)
	journal(t, db, 2, "2001:db8:5:1::99", t0)
	journal(t, db, 3, "203.0.113.9", t0)
	w := newWorker(db, tg, c)
	w.Banner = banner.Guard(banner.Nop{}, banner.Options{Allow: []netip.Prefix{netip.MustParsePrefix("2001:db8:5:1::1/128")}, IPv6Prefix: 64})
	if _, err := w.RunOnce(t.Context()); err != nil {
		t.Fatal(err)
	}
	for user, want := range map[int64]string{1: "2001:db8:4:7::/64", 2: "", 3: ""} {
		acts, err := db.Actions(t.Context(), user)
		if err != nil {
			t.Fatal(err)
		}
		if len(acts) != 2 || acts[1].Kind != registry.BanIP || acts[1].State != registry.Applied || acts[1].Banned != want {
			t.Errorf("actions of user %d = %+v; want the IP ban applied, banned %q", user, acts, want)
		}
	}
}

// An address the admin allow-listed (accounts allow --ip) keeps its /64
// unbanned: a bot from the same network has its own address banned, and
// the journal says so.
func TestAllowListedIPKeepsItsNetwork(t *testing.T) {
	db := openRegistry(t)
	c := &clock{t: t0}
	journal(t, db, 1, "2001:db8:4:7::99", t0)
	if err := db.Allow(t.Context(), registry.AllowIP, "2001:db8:4:7::1", "the office", t0); err != nil {
		t.Fatal(err)
	}
	w := newWorker(db, &target{}, c)
	b, err := banner.New(banner.KindNone, banner.Options{IPv6Prefix: 64, AllowFrom: db.AllowedIPs})
	if err != nil {
		t.Fatal(err)
	}
	w.Banner = b
	if _, err := w.RunOnce(t.Context()); err != nil {
		t.Fatal(err)
	}
	acts, err := db.Actions(t.Context(), 1)
	if err != nil {
		t.Fatal(err)
	}
	if len(acts) != 2 || acts[1].State != registry.Applied || acts[1].Banned != "" {
		t.Errorf("actions = %+v; want the IP ban applied to the address alone", acts)
	}
}
