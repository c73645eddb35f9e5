package syncer_test

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/bouncemilter/bouncemilter/internal/accesslog"
	"github.com/bouncemilter/bouncemilter/internal/mediagoblin"
	"github.com/bouncemilter/bouncemilter/internal/mediagoblin/mgtest"
	"github.com/bouncemilter/bouncemilter/internal/registry"
	"github.com/bouncemilter/bouncemilter/internal/syncer"
	"github.com/bouncemilter/bouncemilter/internal/testenv"
)

const sender = "mediagoblin@example.org"

type env struct {
	t    *testing.T
	inst *mgtest.Instance
	mg   *mediagoblin.DB
	reg  *registry.DB
	opts syncer.Options
	dir  string
}

func backends(t *testing.T, fn func(t *testing.T, e *env)) {
	t.Run("sqlite", func(t *testing.T) { fn(t, newEnv(t, mgtest.NewSQLite(t, sender))) })
	t.Run("postgres", func(t *testing.T) { fn(t, newEnv(t, mgtest.NewPostgres(t, testenv.Postgres(t), sender))) })
}

func newEnv(t *testing.T, inst *mgtest.Instance) *env {
	t.Helper()
	ctx := context.Background()
	mg := inst.Open(t)
	dir := t.TempDir()
	reg, err := registry.Open(ctx, filepath.Join(dir, "registry.db"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { reg.Close() })
	return &env{t: t, inst: inst, mg: mg, reg: reg, dir: dir, opts: syncer.Options{Batch: 2}}
}

func (e *env) sync() syncer.Summary {
	e.t.Helper()
	sum, err := syncer.Run(context.Background(), e.mg, e.reg, e.opts)
	if err != nil {
		e.t.Fatalf("sync: %v", err)
	}
	return sum
}

func (e *env) reg1(name string) registry.Registration {
	e.t.Helper()
	r, err := e.reg.RegistrationByName(context.Background(), name)
	if err != nil {
		e.t.Fatalf("registration %s: %v", name, err)
	}
	return r
}

func (e *env) absent(name string) {
	e.t.Helper()
	if _, err := e.reg.RegistrationByName(context.Background(), name); !errors.Is(err, registry.ErrNotFound) {
		e.t.Errorf("%s in registry (err %v)", name, err)
	}
}

func (e *env) count() int64 {
	n, err := e.reg.CountRegistrations(context.Background())
	if err != nil {
		e.t.Fatal(err)
	}
	return n
}

func (e *env) writeLog(name string, lines ...string) string {
	e.t.Helper()
	p := filepath.Join(e.dir, name)
	f, err := os.OpenFile(p, os.O_APPEND|os.O_CREATE|os.O_WRONLY, 0o644)
	if err != nil {
		e.t.Fatal(err)
	}
	for _, l := range lines {
		fmt.Fprintln(f, l)
	}
	f.Close()
	return p
}

// banned journals the bounce of userID's mail at when, with an account
// ban and, when ip is set, an IP ban, and applies them as the worker would.
func (e *env) banned(when time.Time, userID int64, ip string) {
	e.t.Helper()
	ctx := context.Background()
	acts := []registry.Action{{UserID: userID, Kind: registry.BanAccount, Target: registry.UserTarget(userID), Reason: "bouncemilter: bounced"}}
	if ip != "" {
		acts = append(acts, registry.Action{UserID: userID, Kind: registry.BanIP, Target: ip, Reason: "bouncemilter: bounced"})
	}
	if _, err := e.reg.RecordBounce(ctx, registry.Bounce{Received: when, Verdict: registry.VerdictActed, Report: "{}"}, acts); err != nil {
		e.t.Fatal(err)
	}
	due, err := e.reg.DueActions(ctx, when, 10)
	if err != nil {
		e.t.Fatal(err)
	}
	for _, a := range due {
		if err := e.reg.MarkApplied(ctx, a.ID, when, ""); err != nil {
			e.t.Fatal(err)
		}
	}
}

func clf(t time.Time) string { return t.UTC().Format("02/Jan/2006:15:04:05 -0700") }

func combined(ip string, t time.Time, method, path string, status int) string {
	return fmt.Sprintf(`%s - - [%s] "%s %s HTTP/1.1" %d 100 "-" "Mozilla/5.0"`, ip, clf(t), method, path, status)
}

func signupLine(ip string, t time.Time, user string) string {
	return fmt.Sprintf(`bouncemilter-signup/1 %s [%s] "POST /auth/register/ HTTP/1.1" 302 "https://media.example.org/u/%s/" "-"`, ip, t.UTC().Format(time.RFC3339), user)
}

func TestSync(t *testing.T) {
	backends(t, func(t *testing.T, e *env) {
		now := time.Now().UTC().Truncate(time.Second)
		e.inst.AddUser(t, mgtest.User{Username: "old", Email: "old@example.net", Created: now.Add(-40 * 24 * time.Hour), Verified: true})
		bot := e.inst.AddUser(t, mgtest.User{Username: "bot", Email: "Bot@Nowhere.example", Created: now.Add(-time.Hour)})
		e.inst.AddUser(t, mgtest.User{Username: "real", Email: "real@example.net", Created: now.Add(-2 * time.Hour), Verified: true})
		e.inst.AddUser(t, mgtest.User{Username: "admin", Email: "admin@example.net", Created: now.Add(-3 * time.Hour), Admin: true})
		late := e.inst.AddUser(t, mgtest.User{Username: "late", Email: "late@example.net", Created: now.Add(-time.Hour)})

		// First sync.
		sum := e.sync()
		if sum.Added != 4 || e.count() != 4 {
			t.Errorf("first sync: %v; registry holds %d", sum, e.count())
		}
		e.absent("old")
		if r := e.reg1("bot"); r.UserID != bot || r.Verified || r.Privileged || r.Email != "Bot@Nowhere.example" || !r.Created.Equal(now.Add(-time.Hour)) {
			t.Errorf("bot = %+v", r)
		}
		if r := e.reg1("real"); !r.Verified || r.Privileged {
			t.Errorf("real = %+v", r)
		}
		if r := e.reg1("admin"); r.Verified || !r.Privileged {
			t.Errorf("admin = %+v", r)
		}
		regs, _ := e.reg.RegistrationsByEmail(context.Background(), "bot@nowhere.example")
		if len(regs) != 1 {
			t.Errorf("lookup by email: %v", regs)
		}

		// Nothing copied twice.
		if sum := e.sync(); sum.Added != 0 || e.count() != 4 {
			t.Errorf("second sync: %v", sum)
		}

		// Incremental, and verification after sync.
		e.inst.AddUser(t, mgtest.User{Username: "newbie", Email: "newbie@example.net", Created: now})
		e.inst.Grant(t, late, "active")
		sum = e.sync()
		if sum.Added != 1 || sum.Refreshed != 1 || e.count() != 5 {
			t.Errorf("incremental sync: %v", sum)
		}
		if !e.reg1("late").Verified {
			t.Error("late still unverified after verifying")
		}
		if e.reg1("newbie").Verified {
			t.Error("newbie verified")
		}

		// Promoted to moderator while unverified.
		e.inst.Grant(t, bot, "moderator")
		if sum := e.sync(); sum.Refreshed != 1 || !e.reg1("bot").Privileged {
			t.Errorf("after promotion: %v, bot %+v", sum, e.reg1("bot"))
		}

		// Deleted in MediaGoblin.
		nb := e.reg1("newbie").UserID
		e.inst.DeleteUser(t, nb)
		if sum := e.sync(); sum.Vanished != 1 {
			t.Errorf("after deletion: %v", sum)
		}
		e.absent("newbie")

		// Pruning: a month and a half later, everything has aged out.
		e.opts.Now = func() time.Time { return now.Add(45 * 24 * time.Hour) }
		sum = e.sync()
		if sum.Pruned != 4 || e.count() != 0 {
			t.Errorf("prune: %v; %d left", sum, e.count())
		}
	})
}

func TestSyncLinksIPs(t *testing.T) {
	backends(t, func(t *testing.T, e *env) {
		now := time.Now().UTC().Truncate(time.Second)
		for _, n := range []string{"bot1", "bot2", "exact", "twice"} {
			e.inst.AddUser(t, mgtest.User{Username: n, Email: n + "@nowhere.example", Created: now.Add(-time.Minute)})
		}
		t0 := now.Add(-time.Minute)
		access := e.writeLog("access.log",
			combined("203.0.113.1", t0, "POST", "/auth/register/", 302),
			combined("203.0.113.1", t0.Add(time.Second), "GET", "/u/bot1/", 200),
			combined("203.0.113.2", t0, "POST", "/auth/register/", 302),
			combined("203.0.113.3", t0, "POST", "/auth/register/", 302),
			combined("203.0.113.2", t0.Add(time.Second), "GET", "/u/twice/", 200),
			combined("203.0.113.3", t0.Add(2*time.Second), "GET", "/u/twice/", 200),
			combined("203.0.113.4", t0.Add(3*time.Second), "POST", "/auth/register/", 302), // its GET comes later
		)
		signup := e.writeLog("signup.log", signupLine("198.51.100.5", t0, "exact"))
		e.opts.AccessLogs, e.opts.SignupLogs = []string{access}, []string{signup}
		sum := e.sync()
		if sum.Linked != 2 || sum.Ambiguous != 1 {
			t.Errorf("links: %v", sum)
		}
		for name, want := range map[string]string{"bot1": "203.0.113.1 combined-log", "exact": "198.51.100.5 signup-log", "twice": " ", "bot2": " "} {
			if r := e.reg1(name); r.IP+" "+r.IPSource != want {
				t.Errorf("%s linked to %q, want %q", name, r.IP+" "+r.IPSource, want)
			}
		}
		// The GET after the POST that ended the last read.
		e.writeLog("access.log", combined("203.0.113.4", t0.Add(4*time.Second), "GET", "/u/bot2/", 200))
		if sum := e.sync(); sum.Linked != 1 || sum.Lines != 1 {
			t.Errorf("second read: %v", sum)
		}
		if r := e.reg1("bot2"); r.IP != "203.0.113.4" {
			t.Errorf("bot2 = %q", r.IP)
		}

		// Rotation: rename, new file.
		e.inst.AddUser(t, mgtest.User{Username: "bot3", Email: "bot3@nowhere.example", Created: now})
		e.writeLog("access.log", combined("203.0.113.9", now, "POST", "/auth/register/", 302))
		if err := os.Rename(access, access+".1"); err != nil {
			t.Fatal(err)
		}
		e.writeLog("access.log", combined("203.0.113.9", now.Add(time.Second), "GET", "/u/bot3/", 200))
		if sum := e.sync(); sum.Linked != 1 || e.reg1("bot3").IP != "203.0.113.9" {
			t.Errorf("after rotation: %v, bot3 %q", sum, e.reg1("bot3").IP)
		}
		// Nothing read twice.
		if sum := e.sync(); sum.Lines != 0 || sum.Linked != 0 {
			t.Errorf("idle run: %v", sum)
		}
	})
}

func TestSyncGarbledLog(t *testing.T) {
	e := newEnv(t, mgtest.NewSQLite(t, sender))
	e.inst.AddUser(t, mgtest.User{Username: "bot", Email: "bot@nowhere.example"})
	e.opts.AccessLogs = []string{e.writeLog("access.log", `{"json":"is not combined"}`, `{"json":"is not combined"}`)}
	sum, err := syncer.Run(context.Background(), e.mg, e.reg, e.opts)
	if !errors.Is(err, accesslog.ErrGarbled) {
		t.Fatalf("err = %v, want ErrGarbled", err)
	}
	if syncer.Retryable(err) {
		t.Error("a garbled log is not retryable")
	}
	if sum.Added != 0 || e.count() != 0 {
		t.Errorf("registry written despite the error: %v", sum)
	}
	e.opts.AccessLogs = []string{filepath.Join(e.dir, "missing.log")}
	if _, err := syncer.Run(context.Background(), e.mg, e.reg, e.opts); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("missing log: err = %v", err)
	}
}

// proxy forwards loopback TCP connections to target until stopped: a
// database that goes down and comes back.
type proxy struct {
	ln     net.Listener
	target string
	mu     sync.Mutex
	conns  []net.Conn
}

func startProxy(t *testing.T, addr, target string) *proxy {
	t.Helper()
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	p := &proxy{ln: ln, target: target}
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			u, err := net.Dial("tcp", target)
			if err != nil {
				c.Close()
				continue
			}
			p.mu.Lock()
			p.conns = append(p.conns, c, u)
			p.mu.Unlock()
			go func() { io.Copy(u, c); u.Close() }()
			go func() { io.Copy(c, u); c.Close() }()
		}
	}()
	t.Cleanup(p.stop)
	return p
}

func (p *proxy) stop() {
	p.ln.Close()
	p.mu.Lock()
	defer p.mu.Unlock()
	for _, c := range p.conns {
		c.Close()
	}
	p.conns = nil
}

// flaky fails over once, after its first batch: the database goes down in
// the middle of a sync.
type flaky struct {
	syncer.Source
	calls int
	down  func()
}

func (f *flaky) UsersAfter(ctx context.Context, after int64, limit int) ([]mediagoblin.User, error) {
	f.calls++
	if f.calls == 2 {
		f.down()
	}
	return f.Source.UsersAfter(ctx, after, limit)
}

func TestSyncDatabaseDown(t *testing.T) {
	pgURL := testenv.Postgres(t)
	inst := mgtest.NewPostgres(t, pgURL, sender)
	for i := 0; i < 5; i++ {
		inst.AddUser(t, mgtest.User{Username: fmt.Sprintf("u%d", i), Email: fmt.Sprintf("u%d@example.net", i)})
	}
	u, _ := url.Parse(pgURL)
	target := u.Host
	if u.Port() == "" {
		t.Skip("BOUNCEMILTER_TEST_PG must name a TCP host:port for this test")
	}
	ln, _ := net.Listen("tcp", "127.0.0.1:0")
	addr := ln.Addr().String()
	ln.Close()
	p := startProxy(t, addr, target)
	u.Host = addr
	ctx := context.Background()
	mg, err := mediagoblin.Open(ctx, mediagoblin.Config{Backend: mediagoblin.Postgres, Source: u.String()})
	if err != nil {
		t.Fatal(err)
	}
	defer mg.Close()
	reg, err := registry.Open(ctx, filepath.Join(t.TempDir(), "registry.db"))
	if err != nil {
		t.Fatal(err)
	}
	defer reg.Close()

	src := &flaky{Source: mg, down: p.stop}
	sum, err := syncer.Run(ctx, src, reg, syncer.Options{Batch: 2})
	if !errors.Is(err, mediagoblin.ErrUnavailable) || !syncer.Retryable(err) {
		t.Fatalf("err = %v, want ErrUnavailable", err)
	}
	// The first batch is stored with its cursor; nothing else.
	if n, _ := reg.CountRegistrations(ctx); n != 2 || sum.Added != 2 {
		t.Errorf("after failure: %d stored, summary %v", n, sum)
	}
	// The database is back.
	startProxy(t, addr, target)
	sum, err = syncer.Run(ctx, mg, reg, syncer.Options{Batch: 2})
	if err != nil {
		t.Fatal(err)
	}
	if n, _ := reg.CountRegistrations(ctx); n != 5 || sum.Added != 3 {
		t.Errorf("after recovery: %d stored, summary %v", n, sum)
	}
}

func TestEvery(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	calls := 0
	err := syncer.Every(ctx, time.Millisecond, nil, func(context.Context) error {
		calls++
		if calls == 3 {
			cancel()
		}
		return nil
	})
	if !errors.Is(err, context.Canceled) || calls != 3 {
		t.Errorf("Every = %v after %d calls", err, calls)
	}
}

// SQLite hands the id of a deleted newest user to the next sign-up: the
// new account is copied, without what the registry knew of the old one.
func TestSyncReusedID(t *testing.T) {
	e := newEnv(t, mgtest.NewSQLite(t, sender))
	now := time.Now().UTC().Truncate(time.Second)
	e.inst.AddUser(t, mgtest.User{Username: "first", Email: "first@example.net", Created: now})
	gone := e.inst.AddUser(t, mgtest.User{Username: "gone", Email: "gone@example.net", Created: now})
	e.opts.AccessLogs = []string{e.writeLog("access.log",
		combined("203.0.113.1", now, "POST", "/auth/register/", 302),
		combined("203.0.113.1", now.Add(time.Second), "GET", "/u/gone/", 200))}
	e.sync()
	if e.reg1("gone").IP != "203.0.113.1" {
		t.Fatal("gone not linked")
	}
	e.inst.DeleteUser(t, gone)
	again := e.inst.AddUser(t, mgtest.User{Username: "again", Email: "again@example.net", Created: now})
	if again != gone {
		t.Skipf("SQLite did not reuse id %d (got %d)", gone, again)
	}
	sum := e.sync()
	if r := e.reg1("again"); r.UserID != again || r.IP != "" {
		t.Errorf("again = %+v (summary %v)", r, sum)
	}
	e.absent("gone")
}

// The newest users deleted, a run with nothing new to copy lowers the
// cursor for good: SQLite hands the freed ids out again, and a cursor left
// above them would read past the next sign-up, which the milter's copies
// (reading after the cursor) would miss too.
func TestSyncCursorLoweredWithNothingToCopy(t *testing.T) {
	e := newEnv(t, mgtest.NewSQLite(t, sender))
	now := time.Now().UTC().Truncate(time.Second)
	e.inst.AddUser(t, mgtest.User{Username: "first", Email: "first@example.net", Created: now})
	second := e.inst.AddUser(t, mgtest.User{Username: "second", Email: "second@example.net", Created: now})
	third := e.inst.AddUser(t, mgtest.User{Username: "third", Email: "third@example.net", Created: now})
	e.sync()
	e.inst.DeleteUser(t, third)
	e.inst.DeleteUser(t, second)
	e.sync() // nothing to copy
	next := e.inst.AddUser(t, mgtest.User{Username: "next", Email: "next@example.net", Created: now})
	if next != second {
		t.Skipf("SQLite did not reuse id %d (got %d)", second, next)
	}
	sum := e.sync()
	if r := e.reg1("next"); r.UserID != next {
		t.Errorf("the sign-up that took a freed id was not copied: %+v (summary %v)", r, sum)
	}
}

// A run re-reads at most RefreshLimit unverified sign-ups and the next goes
// on from there, so every one is seen within a few runs.
func TestSyncRefreshLimit(t *testing.T) {
	e := newEnv(t, mgtest.NewSQLite(t, sender))
	var ids []int64
	for i := 0; i < 5; i++ {
		ids = append(ids, e.inst.AddUser(t, mgtest.User{Username: fmt.Sprintf("u%d", i), Email: fmt.Sprintf("u%d@example.net", i)}))
	}
	e.sync()
	for _, id := range ids {
		e.inst.Grant(t, id, "active")
	}
	e.opts.RefreshLimit = 2
	var checked []int
	for i := 0; i < 3; i++ {
		checked = append(checked, e.sync().Checked)
	}
	if fmt.Sprint(checked) != "[2 2 1]" {
		t.Errorf("checked per run %v, want [2 2 1]", checked)
	}
	for i := range ids {
		if r := e.reg1(fmt.Sprintf("u%d", i)); !r.Verified {
			t.Errorf("u%d still unverified", i)
		}
	}
	// Nothing left to re-read.
	if sum := e.sync(); sum.Checked != 0 {
		t.Errorf("after all verified: %v", sum)
	}
}

// The newest user deleted and its id handed to a new sign-up before the
// next sync saw either: the new account is copied all the same.
func TestSyncReusedIDBetweenRuns(t *testing.T) {
	e := newEnv(t, mgtest.NewSQLite(t, sender))
	now := time.Now().UTC().Truncate(time.Second)
	e.inst.AddUser(t, mgtest.User{Username: "first", Email: "first@example.net", Created: now, Verified: true})
	gone := e.inst.AddUser(t, mgtest.User{Username: "gone", Email: "gone@example.net", Created: now, Verified: true})
	e.sync()
	e.inst.DeleteUser(t, gone)
	again := e.inst.AddUser(t, mgtest.User{Username: "again", Email: "again@example.net", Created: now})
	if again != gone {
		t.Skipf("SQLite did not reuse id %d (got %d)", gone, again)
	}
	e.sync()
	if r := e.reg1("again"); r.UserID != again || r.Verified {
		t.Errorf("again = %+v", r)
	}
	e.absent("gone")
	if !e.reg1("first").Verified {
		t.Error("first lost")
	}
}

// An IP ban that rested on an inferred link is lifted when exact evidence
// names another address for the sign-up, and sync says so: the summary
// counts it and a warning names the sign-up and the address.
func TestSyncWithdrawsIPBanOfReplacedLink(t *testing.T) {
	backends(t, func(t *testing.T, e *env) {
		ctx := context.Background()
		now := time.Now().UTC().Truncate(time.Second)
		t0 := now.Add(-time.Minute)
		bot := e.inst.AddUser(t, mgtest.User{Username: "bot", Email: "bot@nowhere.example", Created: t0})
		access := e.writeLog("access.log",
			combined("203.0.113.1", t0, "POST", "/auth/register/", 302),
			combined("203.0.113.1", t0.Add(time.Second), "GET", "/u/bot/", 200))
		e.opts.AccessLogs = []string{access}
		if sum := e.sync(); sum.Linked != 1 || e.reg1("bot").IP != "203.0.113.1" {
			t.Fatalf("first sync: %v, bot linked to %q", sum, e.reg1("bot").IP)
		}
		// The bounce of bot's verification mail bans the account and the
		// address the access log pointed to.
		if _, err := e.reg.RecordBounce(ctx, registry.Bounce{Received: now, Verdict: registry.VerdictActed, Report: "{}"}, []registry.Action{
			{UserID: bot, Kind: registry.BanAccount, Target: registry.UserTarget(bot), Reason: "bounced"},
			{UserID: bot, Kind: registry.BanIP, Target: "203.0.113.1", Reason: "bounced"},
		}); err != nil {
			t.Fatal(err)
		}
		// The sign-up log, exact, names another address.
		e.opts.SignupLogs = []string{e.writeLog("signup.log", signupLine("198.51.100.5", t0, "bot"))}
		var logged bytes.Buffer
		e.opts.Log = slog.New(slog.NewTextHandler(&logged, nil))
		sum := e.sync()
		if sum.Withdrawn != 1 || sum.IPBans != 1 {
			t.Errorf("second sync: %+v; want 1 IP ban withdrawn and 1 queued", sum)
		}
		if !strings.Contains(logged.String(), "IP bans lifted") || !strings.Contains(logged.String(), "bot 203.0.113.1") {
			t.Errorf("no warning naming bot and 203.0.113.1:\n%s", logged.String())
		}
		acts, err := e.reg.Actions(ctx, bot)
		if err != nil {
			t.Fatal(err)
		}
		var wrong, right bool
		for _, a := range acts {
			switch {
			case a.Kind == registry.BanIP && a.Target == "203.0.113.1":
				wrong = a.State == registry.Cancelled
			case a.Kind == registry.BanIP && a.Target == "198.51.100.5":
				right = a.State == registry.Pending
			}
		}
		if !wrong || !right {
			t.Errorf("actions of bot = %+v; want the ban of 203.0.113.1 cancelled and one of 198.51.100.5 pending", acts)
		}
	})
}

// A banned bot is MediaGoblin's newest account; the admin deletes it and
// SQLite gives its id to the next sign-up, a real person. Nothing of the
// bot reaches her: not its IP link, not its bans (one still waiting, as
// when MediaGoblin was down), not its place in the feed of proven vandals;
// her own IP, linked by the sign-up log, is not banned.
func TestSyncReusedIDOfBannedBot(t *testing.T) {
	e := newEnv(t, mgtest.NewSQLite(t, sender))
	ctx := context.Background()
	now := time.Now().UTC().Truncate(time.Second)
	e.inst.AddUser(t, mgtest.User{Username: "first", Email: "first@example.net", Created: now.Add(-time.Hour)})
	bot := e.inst.AddUser(t, mgtest.User{Username: "bot", Email: "bot@nowhere.example", Created: now.Add(-time.Hour)})
	e.opts.AccessLogs = []string{e.writeLog("access.log",
		combined("203.0.113.66", now.Add(-time.Hour), "POST", "/auth/register/", 302),
		combined("203.0.113.66", now.Add(-time.Hour+time.Second), "GET", "/u/bot/", 200))}
	e.sync()
	if _, err := e.reg.RecordBounce(ctx, registry.Bounce{Received: now.Add(-time.Hour), Verdict: registry.VerdictActed, Report: "{}"}, []registry.Action{
		{UserID: bot, Kind: registry.BanAccount, Target: registry.UserTarget(bot), Reason: "bouncemilter: bounced"},
		{UserID: bot, Kind: registry.BanIP, Target: "203.0.113.66", Reason: "bouncemilter: bounced"},
	}); err != nil {
		t.Fatal(err)
	}
	e.inst.DeleteUser(t, bot)
	real := e.inst.AddUser(t, mgtest.User{Username: "real", Email: "real@example.net", Created: now})
	if real != bot {
		t.Skipf("SQLite did not reuse id %d (got %d)", bot, real)
	}
	e.opts.SignupLogs = []string{e.writeLog("signup.log", signupLine("198.51.100.5", now, "real"))}
	e.sync()
	if r := e.reg1("real"); r.UserID != real || r.IP != "198.51.100.5" {
		t.Errorf("real = %+v; want linked to her own address only", r)
	}
	acts, err := e.reg.Actions(ctx, real)
	if err != nil {
		t.Fatal(err)
	}
	for _, a := range acts {
		if a.Kind == registry.BanAccount || a.Kind == registry.BanIP {
			t.Errorf("a ban counts as the real person's: %+v", a)
		}
	}
	due, err := e.reg.DueActions(ctx, now.Add(time.Hour), 100)
	if err != nil {
		t.Fatal(err)
	}
	for _, a := range due {
		if a.Kind == registry.BanAccount || a.Kind == registry.BanIP {
			t.Errorf("a ban is still due: %+v", a)
		}
	}
	ips, err := e.reg.ProvenIPs(ctx)
	if err != nil {
		t.Fatal(err)
	}
	addrs, err := e.reg.ProvenAddresses(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if len(ips)+len(addrs) != 0 {
		t.Errorf("proven for the feed: %+v %+v", ips, addrs)
	}
}

// A banned bot's account is deleted and a real person later picks its
// username. What the web server's log says of the name is hers: her IP
// link goes to her registration, and the bot's ban bans neither her nor
// her IP.
func TestSyncReusedUsernameOfBannedBot(t *testing.T) {
	backends(t, func(t *testing.T, e *env) {
		ctx := context.Background()
		now := time.Now().UTC().Truncate(time.Second)
		bot := e.inst.AddUser(t, mgtest.User{Username: "foo", Email: "foo@nowhere.example", Created: now.Add(-2 * time.Hour)})
		e.sync()
		e.banned(now.Add(-2*time.Hour), bot, "")
		e.inst.DeleteUser(t, bot)
		e.inst.AddUser(t, mgtest.User{Username: "other", Email: "other@example.net", Created: now.Add(-time.Hour)})
		real := e.inst.AddUser(t, mgtest.User{Username: "foo", Email: "foo@example.net", Created: now})
		e.opts.SignupLogs = []string{e.writeLog("signup.log", signupLine("198.51.100.5", now, "foo"))}
		sum := e.sync()
		if r := e.reg1("foo"); r.UserID != real || r.IP != "198.51.100.5" {
			t.Errorf("foo = %+v; want her registration, linked to her address", r)
		}
		if sum.IPBans != 0 {
			t.Errorf("sync queued %d IP bans for her link", sum.IPBans)
		}
		due, err := e.reg.DueActions(ctx, now.Add(time.Hour), 100)
		if err != nil {
			t.Fatal(err)
		}
		for _, a := range due {
			if a.Kind == registry.BanIP || a.Kind == registry.BanAccount {
				t.Errorf("a ban is due: %+v", a)
			}
		}
	})
}

// MediaGoblin stamps core__users.created with microseconds
// (datetime.utcnow); the registry keeps whole seconds. A full sync that
// changed nothing in MediaGoblin must not take a recent unverified sign-up
// for another account under the same id: that would drop its IP link and
// retire its bans, and accounts restore would then lift nothing.
func TestSyncRefreshSubSecondCreated(t *testing.T) {
	backends(t, func(t *testing.T, e *env) {
		ctx := context.Background()
		created := time.Now().UTC().Add(-time.Minute).Truncate(time.Second).Add(123456 * time.Microsecond)
		bot := e.inst.AddUser(t, mgtest.User{Username: "bot", Email: "bot@nowhere.example", Created: created})
		e.opts.SignupLogs = []string{e.writeLog("signup.log", signupLine("203.0.113.9", created, "bot"))}
		e.sync()
		if r := e.reg1("bot"); r.IP != "203.0.113.9" {
			t.Fatalf("bot = %+v", r)
		}
		now := time.Now().UTC()
		e.banned(now, bot, "203.0.113.9")
		if sum := e.sync(); sum.Refreshed != 0 {
			t.Errorf("a sync that changed nothing in MediaGoblin refreshed %v", sum)
		}
		if r := e.reg1("bot"); r.IP != "203.0.113.9" {
			t.Errorf("bot's IP link after the second sync: %q", r.IP)
		}
		if acts, err := e.reg.Actions(ctx, bot); err != nil || len(acts) != 2 {
			t.Errorf("bot's own actions after the second sync: %+v (%v); want its 2 bans", acts, err)
		}
		unbans, err := e.reg.Restore(ctx, bot, "ticket", now)
		if err != nil {
			t.Fatal(err)
		}
		var account bool
		for _, u := range unbans {
			account = account || u.Kind == registry.UnbanAccount
		}
		if !account {
			t.Errorf("restore queued %+v: no unban of the account bouncemilter banned", unbans)
		}
	})
}

// A banned bot is deleted and SQLite gives its id to the next sign-up,
// another bot, whose verification mail bounces too. Its account ban is
// queued: the first bot's ban of the same id, retired with it, is history
// and no duplicate.
func TestSyncReusedIDBotIsBanned(t *testing.T) {
	e := newEnv(t, mgtest.NewSQLite(t, sender))
	ctx := context.Background()
	now := time.Now().UTC().Truncate(time.Second)
	e.inst.AddUser(t, mgtest.User{Username: "first", Email: "first@example.net", Created: now.Add(-time.Hour)})
	bot := e.inst.AddUser(t, mgtest.User{Username: "bot", Email: "bot@nowhere.example", Created: now.Add(-time.Hour)})
	e.sync()
	e.banned(now.Add(-time.Hour), bot, "")
	e.inst.DeleteUser(t, bot)
	bot2 := e.inst.AddUser(t, mgtest.User{Username: "bot2", Email: "bot2@nowhere.example", Created: now})
	if bot2 != bot {
		t.Skipf("SQLite did not reuse id %d (got %d)", bot, bot2)
	}
	e.sync()
	if _, err := e.reg.RecordBounce(ctx, registry.Bounce{Received: now, Verdict: registry.VerdictActed, Report: "{}"}, []registry.Action{
		{UserID: bot2, Kind: registry.BanAccount, Target: registry.UserTarget(bot2), Reason: "bouncemilter: bot2 bounced"},
	}); err != nil {
		t.Fatal(err)
	}
	acts, err := e.reg.Actions(ctx, bot2)
	if err != nil {
		t.Fatal(err)
	}
	if len(acts) != 1 || acts[0].Kind != registry.BanAccount || acts[0].State != registry.Pending {
		t.Errorf("bot2's actions %+v; want its account ban pending", acts)
	}
}

// On PostgreSQL a sign-up takes its id from a sequence when MediaGoblin
// inserts it, not when it commits: of two sign-ups at once, the higher id
// may commit first. A sync between the two commits copies the higher one
// but keeps its cursor below the missing id, so that the milter's copy
// (which reads only after the cursor) and the next sync find the lower
// one once it is committed.
func TestSyncSignupCommittedAfterHigherID(t *testing.T) {
	e := newEnv(t, mgtest.NewPostgres(t, testenv.Postgres(t), sender))
	ctx := context.Background()
	now := time.Now().UTC().Truncate(time.Second)
	ts := now.Format("2006-01-02 15:04:05.000000")

	// MediaGoblin's request for "slow" has inserted its rows, taking the
	// next id, and has not committed yet.
	tx, err := e.inst.SQL().BeginTx(ctx, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer tx.Rollback()
	var slow int64
	if err := tx.QueryRowContext(ctx, `INSERT INTO core__users (type, created, updated) VALUES ('user_local', $1, $1) RETURNING id`, ts).Scan(&slow); err != nil {
		t.Fatal(err)
	}
	if _, err := tx.ExecContext(ctx, `INSERT INTO core__local_users (id, username, email, pw_hash, wants_comment_notification, wants_notifications, uploaded)
		VALUES ($1, 'slow', 'slow@nowhere.example', 'x', true, true, 0)`, slow); err != nil {
		t.Fatal(err)
	}
	fast := e.inst.AddUser(t, mgtest.User{Username: "fast", Email: "fast@nowhere.example", Created: now})
	if sum := e.sync(); sum.Cursor >= slow {
		t.Errorf("sync passed uncommitted id %d: %v (cursor %d)", slow, sum, sum.Cursor)
	}
	e.reg1("fast")
	if err := tx.Commit(); err != nil {
		t.Fatal(err)
	}
	cursor, err := e.reg.SyncCursor(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if us, err := e.mg.UsersByEmail(ctx, []string{"slow@nowhere.example"}, cursor); err != nil || len(us) != 1 {
		t.Errorf("the milter's copy after cursor %d finds %+v (%v); want slow (id %d)", cursor, us, err, slow)
	}
	if sum := e.sync(); sum.Cursor != fast {
		t.Errorf("second sync: %v, cursor %d; want %d", sum, sum.Cursor, fast)
	}
	e.reg1("slow")
}

// An id that never commits (a rolled-back or deleted sign-up) holds the
// cursor back only until the sign-up read above it is a minute old.
func TestSyncCursorPassesSettledGap(t *testing.T) {
	backends(t, func(t *testing.T, e *env) {
		now := time.Now().UTC().Truncate(time.Second)
		first := e.inst.AddUser(t, mgtest.User{Username: "first", Email: "first@example.net", Created: now})
		gone := e.inst.AddUser(t, mgtest.User{Username: "gone", Email: "gone@example.net", Created: now})
		last := e.inst.AddUser(t, mgtest.User{Username: "last", Email: "last@example.net", Created: now})
		e.inst.DeleteUser(t, gone)
		e.opts.Now = func() time.Time { return now }
		if sum := e.sync(); sum.Cursor != first || e.count() != 2 {
			t.Errorf("sync right after the sign-ups: cursor %d, %d registered; want cursor %d, 2", sum.Cursor, e.count(), first)
		}
		e.opts.Now = func() time.Time { return now.Add(time.Minute) }
		if sum := e.sync(); sum.Cursor != last {
			t.Errorf("sync a minute later: cursor %d; want %d", sum.Cursor, last)
		}
	})
}
