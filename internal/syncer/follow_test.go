package syncer_test

import (
	"context"
	"errors"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/bouncemilter/bouncemilter/internal/mediagoblin/mgtest"
	"github.com/bouncemilter/bouncemilter/internal/registry"
	"github.com/bouncemilter/bouncemilter/internal/syncer"
)

// The real order of a bot's sign-up: MediaGoblin commits the user and
// sends the mail, the bounce bans the account before the web server has
// logged the sign-up, and only then the log line comes. The logs-only run
// copies the sign-up it names, links it, and queues the IP ban that waited.
func TestRunLogsLinksAndQueuesWaitingIPBan(t *testing.T) {
	backends(t, func(t *testing.T, e *env) {
		ctx := context.Background()
		now := time.Now().UTC().Truncate(time.Second)
		e.inst.AddUser(t, mgtest.User{Username: "early", Email: "early@example.net", Created: now.Add(-time.Hour)})
		signup := e.writeLog("signup.log")
		e.opts.SignupLogs = []string{signup}
		e.sync()

		bot := e.inst.AddUser(t, mgtest.User{Username: "bot", Email: "bot@nowhere.example", Created: now})
		// What the milter copies when the verification mail passes.
		if err := e.reg.StoreRegistrations(ctx, []registry.Registration{{UserID: bot, Username: "bot", Email: "bot@nowhere.example", Created: now, Synced: now}}); err != nil {
			t.Fatal(err)
		}
		if _, err := e.reg.RecordBounce(ctx, registry.Bounce{Received: now, Verdict: registry.VerdictActed, Report: "{}"},
			[]registry.Action{{UserID: bot, Kind: registry.BanAccount, Target: registry.UserTarget(bot), Reason: "bounced"}}); err != nil {
			t.Fatal(err)
		}
		// A sign-up that neither the milter nor a full sync has copied yet.
		late := e.inst.AddUser(t, mgtest.User{Username: "late", Email: "late@example.net", Created: now})

		opened := 0
		open := func(context.Context) (syncer.Source, func(), error) {
			opened++
			return e.mg, func() {}, nil
		}
		// Nothing new in the log: MediaGoblin is not read.
		if sum, err := syncer.RunLogs(ctx, open, e.reg, e.opts); err != nil || opened != 0 || sum.Lines != 0 {
			t.Fatalf("idle RunLogs = %v, %v; opened %d", sum, err, opened)
		}
		e.writeLog("signup.log", signupLine("192.0.2.7", now, "bot"), signupLine("192.0.2.8", now, "late"))
		sum, err := syncer.RunLogs(ctx, open, e.reg, e.opts)
		if err != nil {
			t.Fatal(err)
		}
		if sum.Linked != 2 || sum.IPBans != 1 || sum.Added != 2 || opened != 1 {
			t.Errorf("RunLogs = %+v, opened %d; want 2 linked, 1 IP ban, 2 copied (bot again, and late)", sum, opened)
		}
		if r := e.reg1("late"); r.UserID != late || r.IP != "192.0.2.8" {
			t.Errorf("late = %+v", r)
		}
		acts, err := e.reg.Actions(ctx, bot)
		if err != nil {
			t.Fatal(err)
		}
		if len(acts) != 2 || acts[1].Kind != registry.BanIP || acts[1].Target != "192.0.2.7" || acts[1].State != registry.Pending {
			t.Errorf("actions of bot = %+v", acts)
		}
		if acts, _ := e.reg.Actions(ctx, late); len(acts) != 0 {
			t.Errorf("late, never bounced, got actions %+v", acts)
		}
	})
}

func TestFollow(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	var fulls, logs atomic.Int32
	failOnce := true
	err := syncer.Follow(ctx, time.Hour, time.Millisecond, nil,
		func(context.Context) error {
			fulls.Add(1)
			return nil
		},
		func(context.Context) error {
			if logs.Add(1) == 5 {
				cancel()
			}
			return nil
		})
	if !errors.Is(err, context.Canceled) || fulls.Load() != 1 || logs.Load() != 5 {
		t.Errorf("Follow = %v after %d full and %d logs runs; want 1 and 5", err, fulls.Load(), logs.Load())
	}

	// A failed logs run is followed by a full one.
	ctx, cancel = context.WithCancel(context.Background())
	fulls.Store(0)
	logs.Store(0)
	err = syncer.Follow(ctx, 10*time.Millisecond, time.Millisecond, nil,
		func(context.Context) error {
			if fulls.Add(1) == 2 {
				cancel()
			}
			return nil
		},
		func(context.Context) error {
			logs.Add(1)
			if failOnce {
				failOnce = false
				return errors.New("log gone")
			}
			return nil
		})
	if !errors.Is(err, context.Canceled) || fulls.Load() != 2 || logs.Load() != 1 {
		t.Errorf("Follow after a failure = %v, %d full, %d logs; want a full run right after the failed one", err, fulls.Load(), logs.Load())
	}
}

// A full run longer than the interval (sync's feeds and StopForumSpam
// reports, a stalled MediaGoblin) leaves the logs followed between two full
// runs: the next one is due an interval after the last ended, not began,
// so a bot's IP is still linked within a poll, not a full run later.
func TestFollowSlowFullRun(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 600*time.Millisecond)
	defer cancel()
	var mu sync.Mutex
	var runs []string
	record := func(kind string) {
		mu.Lock()
		defer mu.Unlock()
		runs = append(runs, kind)
	}
	syncer.Follow(ctx, 50*time.Millisecond, time.Millisecond, nil,
		func(ctx context.Context) error {
			record("full")
			select { // longer than the interval
			case <-time.After(80 * time.Millisecond):
			case <-ctx.Done():
			}
			return nil
		},
		func(context.Context) error {
			record("logs")
			return nil
		})
	mu.Lock()
	defer mu.Unlock()
	fulls := 0
	for i, kind := range runs {
		if kind != "full" {
			continue
		}
		fulls++
		if i > 0 && runs[i-1] == "full" {
			t.Errorf("full run %d came right after another, the logs not followed between them", fulls)
		}
	}
	if fulls < 2 {
		t.Errorf("%d full runs in 600 ms at an interval of 50 ms; want at least 2", fulls)
	}
}
