package e2e

// Fault tests: the milter is killed in the middle of a flood of bounces,
// and MediaGoblin's database goes away during one. Postfix is played by
// go-milter's client (package loadtest), so that the tests need no root and
// know exactly which answer each message got.

import (
	"context"
	"database/sql"
	"fmt"
	"net"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/emersion/go-milter"
	"github.com/jackc/pgx/v5"

	"github.com/bouncemilter/bouncemilter/internal/bounce"
	"github.com/bouncemilter/bouncemilter/internal/loadtest"
	"github.com/bouncemilter/bouncemilter/internal/mediagoblin/mgtest"
	"github.com/bouncemilter/bouncemilter/internal/returnpath"
	"github.com/bouncemilter/bouncemilter/internal/testenv"
)

// TestKilledMidFlood sends 2,000 authentic bounces over 20 connections,
// kills the milter with SIGKILL after about half of them were answered,
// restarts it and sends again every bounce that got no answer.
//
// Postfix with milter_default_action = accept delivers a message whose
// milter died: nothing is lost, and nothing needs a journal entry. The
// test instead resends those messages, as Postfix does when the milter is
// unreachable and milter_default_action = tempfail (or as the remote MTA
// does when smtpd answered 4xx): the harder case, because a bounce that was
// journalled just before the kill, whose DISCARD never reached Postfix, is
// journalled a second time.
//
// In the end every DISCARD Postfix saw has its bounce in the journal, and
// every journalled action was applied exactly once: MediaGoblin holds one
// ban per account and the ban log one line per IP, even though the kill can
// fall between a ban and its bookkeeping.
func TestKilledMidFlood(t *testing.T) {
	const n, conns = 2000, 20
	f := newFlood(t, mgtest.NewSQLite(t, sender), n)
	f.start(t)

	replied := make([]milter.ActionCode, n)
	var answered atomic.Int64
	killed, sent := make(chan struct{}), make(chan struct{})
	go func() {
		defer close(killed)
		for answered.Load() < n/2 {
			select {
			case <-sent:
				return // the milter stopped answering by itself
			case <-time.After(time.Millisecond):
			}
		}
		f.kill()
	}()
	unanswered := f.send(t, conns, floodIndexes(n), replied, &answered)
	close(sent)
	<-killed
	t.Logf("%d of %d bounces answered before the kill, %d not", n-len(unanswered), n, len(unanswered))
	if len(unanswered) == 0 {
		t.Fatal("the kill came after every bounce was answered; nothing was tested")
	}

	f.start(t)
	if left := f.send(t, conns, unanswered, replied, &answered); len(left) > 0 {
		t.Fatalf("%d bounces got no answer from the restarted milter", len(left))
	}
	// Once more while the worker is busy applying the journal, where a
	// kill can fall between a ban and its bookkeeping.
	if applied := f.waitAppliedAtLeast(t, n); applied < 2*n {
		f.kill()
		t.Logf("killed again with %d of %d actions applied", applied, 2*n)
		f.start(t)
	}
	f.waitApplied(t, 2*n)
	f.stop(t)

	for i, code := range replied {
		if code != milter.ActDiscard {
			t.Errorf("bounce %s: answer %q, want discard", f.msgs[i].QueueID, code)
		}
	}
	f.checkJournal(t, replied)
	f.checkExactlyOnce(t, n)
	t.Logf("bans found already made after a kill: %d", f.countLogged(t, "an interrupted ban had taken effect"))
}

// countLogged counts the lines of serve's logs holding msg.
func (f *flood) countLogged(t *testing.T, msg string) int {
	t.Helper()
	logs, _ := filepath.Glob(filepath.Join(f.dir, "serve-*.log"))
	n := 0
	for _, p := range logs {
		b, err := os.ReadFile(p)
		if err != nil {
			t.Fatal(err)
		}
		n += strings.Count(string(b), msg)
	}
	return n
}

// flood is a MediaGoblin instance with n unverified recent sign-ups, each
// from an IP of its own, the registry that knows them, and an authentic
// bounce for each.
type flood struct {
	inst     *mgtest.Instance
	dir      string
	registry string
	banLog   string
	addr     string // the milter's host:port
	args     []string
	users    []int64
	ips      []string
	msgs     []loadtest.Message

	serve   *exec.Cmd
	exited  chan struct{}
	logFile *os.File
	starts  int
}

func newFlood(t testing.TB, inst *mgtest.Instance, n int) *flood {
	t.Helper()
	f := &flood{inst: inst, dir: t.TempDir()}
	f.registry = filepath.Join(f.dir, "lib", "registry.db")
	f.banLog = filepath.Join(f.dir, "bans.log")
	f.addr = testenv.FreeAddr(t, "127.0.0.1")

	now := time.Now().UTC()
	first, last := inst.AddUsers(t, mgtest.Bulk{N: n, First: now.Add(-3 * time.Hour), Step: time.Second})
	var signups []floodSignup
	for id := first; id <= last; id++ {
		ip := floodIP(int(id - first))
		f.users = append(f.users, id)
		f.ips = append(f.ips, ip)
		signups = append(signups, floodSignup{ip: ip, username: fmt.Sprintf("user%d", id)})
	}
	accessLog := filepath.Join(f.dir, "access.log")
	writeFloodAccessLog(t, accessLog, now.Add(-3*time.Hour), signups)
	runBinary(t, "sync", "--mediagoblin-config", inst.IniPath, "--registry", f.registry, "--access-log", accessLog)

	// The key serve signs with and verifies against, made before it starts
	// so that the test can sign as serve does (see serve's flags --window
	// and --recipient-delimiter, left at their defaults).
	keys, err := returnpath.LoadOrCreate(filepath.Join(filepath.Dir(f.registry), "returnpath.keys"))
	if err != nil {
		t.Fatal(err)
	}
	signer := &returnpath.Signer{Keys: keys, MaxAge: bounce.DefaultPolicy().Window, Delimiter: "+"}
	for i, id := range f.users {
		failed := fmt.Sprintf("user%d@example.net", id)
		to, err := signer.Sign(sender, failed, now)
		if err != nil {
			t.Fatal(err)
		}
		f.msgs = append(f.msgs, loadtest.Bounce(sender, to, failed, loadtest.QueueID(i+1)))
	}
	// Every bounce of the flood is read: these tests are about the journal
	// and the actions, and a bounce over --max-inflight is accepted unread.
	f.args = []string{"serve", "--listen", "inet:" + f.addr, "--mediagoblin-config", inst.IniPath,
		"--registry", f.registry, "--banner", "log", "--ban-log", f.banLog, "--max-inflight", "1000"}
	return f
}

// floodIP is the i-th sign-up address, in 198.18.0.0/15 (RFC 2544).
func floodIP(i int) string {
	return fmt.Sprintf("198.%d.%d.%d", 18+i/62500, i/250%250, i%250+1)
}

type floodSignup struct{ ip, username string }

// writeFloodAccessLog writes the combined log lines of each sign-up: the
// POST answered 302, then the browser following it to the profile.
func writeFloodAccessLog(t testing.TB, path string, at time.Time, signups []floodSignup) {
	t.Helper()
	var b strings.Builder
	for i, s := range signups {
		ts := at.Add(time.Duration(i) * time.Second).Format("02/Jan/2006:15:04:05 -0700")
		fmt.Fprintf(&b, "%s - - [%s] \"POST /auth/register/ HTTP/1.1\" 302 0 \"https://media.example.org/auth/register/\" \"Mozilla/5.0\"\n", s.ip, ts)
		fmt.Fprintf(&b, "%s - - [%s] \"GET /u/%s/ HTTP/1.1\" 200 4096 \"https://media.example.org/auth/register/\" \"Mozilla/5.0\"\n", s.ip, ts, s.username)
	}
	if err := os.WriteFile(path, []byte(b.String()), 0o644); err != nil {
		t.Fatal(err)
	}
}

// runBinary runs a bouncemilter command to its end.
func runBinary(t testing.TB, args ...string) string {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	out, err := exec.CommandContext(ctx, binary, args...).CombinedOutput()
	if err != nil {
		t.Fatalf("bouncemilter %s: %v\n%s", strings.Join(args, " "), err, out)
	}
	return string(out)
}

// start starts serve (again) and waits for it to listen.
func (f *flood) start(t *testing.T, extra ...string) {
	t.Helper()
	f.starts++
	logf, err := os.Create(filepath.Join(f.dir, fmt.Sprintf("serve-%d.log", f.starts)))
	if err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(binary, append(append([]string{}, f.args...), extra...)...)
	cmd.Stdout, cmd.Stderr = logf, logf
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	f.serve, f.logFile, f.exited = cmd, logf, make(chan struct{})
	go func(exited chan struct{}) { cmd.Wait(); close(exited) }(f.exited)
	t.Cleanup(func() {
		cmd.Process.Kill()
		logf.Close()
		if t.Failed() {
			b, _ := os.ReadFile(logf.Name())
			t.Logf("%s:\n%s", filepath.Base(logf.Name()), lastLines(string(b), 60))
		}
	})
	testenv.WaitFor(t, 20*time.Second, "bouncemilter to listen", func() bool {
		c, err := net.DialTimeout("tcp", f.addr, time.Second)
		if err == nil {
			c.Close()
		}
		return err == nil
	})
}

// kill ends serve with SIGKILL: no shutdown, no flush, as a crash would.
func (f *flood) kill() {
	f.serve.Process.Signal(syscall.SIGKILL)
	<-f.exited
}

// stop ends serve with SIGTERM, as systemd does.
func (f *flood) stop(t *testing.T) {
	t.Helper()
	f.serve.Process.Signal(syscall.SIGTERM)
	select {
	case <-f.exited:
		if !f.serve.ProcessState.Success() {
			t.Errorf("bouncemilter serve exited with %v", f.serve.ProcessState)
		}
	case <-time.After(30 * time.Second):
		t.Error("bouncemilter serve did not stop on SIGTERM")
	}
}

// floodIndexes returns 0, 1, …, n-1: every message of a flood.
func floodIndexes(n int) []int {
	idx := make([]int, n)
	for i := range idx {
		idx[i] = i
	}
	return idx
}

// send passes the messages idx over conns connections, as Postfix's smtpd
// processes would, stores each answer in replied and counts it in answered.
// A connection whose milter stops answering ends; send returns the messages
// that got no answer, in order.
func (f *flood) send(t *testing.T, conns int, idx []int, replied []milter.ActionCode, answered *atomic.Int64) []int {
	t.Helper()
	queue := make(chan int, len(idx))
	for _, i := range idx {
		queue <- i
	}
	close(queue)
	var (
		mu         sync.Mutex
		unanswered []int
		wg         sync.WaitGroup
	)
	for range conns {
		wg.Add(1)
		go func() {
			defer wg.Done()
			c, err := loadtest.Dial("tcp", f.addr, loadtest.Remote, 30*time.Second)
			if err != nil {
				return // the milter is gone: what is left stays queued
			}
			defer c.Close()
			for i := range queue {
				res, err := c.Send(f.msgs[i])
				if err != nil {
					mu.Lock()
					unanswered = append(unanswered, i)
					mu.Unlock()
					return
				}
				replied[i] = res.Code
				answered.Add(1)
			}
		}()
	}
	wg.Wait()
	for i := range queue {
		unanswered = append(unanswered, i)
	}
	return unanswered
}

// openRegistryRO opens the registry's database for reading.
func openRegistryRO(t *testing.T, path string) *sql.DB {
	t.Helper()
	db, err := sql.Open("sqlite3", "file:"+path+"?mode=ro&_busy_timeout=10000")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { db.Close() })
	return db
}

// waitApplied waits until no action is pending and want actions exist.
func (f *flood) waitApplied(t *testing.T, want int) {
	t.Helper()
	db := openRegistryRO(t, f.registry)
	var total, pending int
	testenv.WaitFor(t, 3*time.Minute, fmt.Sprintf("the worker to apply %d actions", want), func() bool {
		err := db.QueryRow(`SELECT count(*), count(*) FILTER (WHERE state = 'pending') FROM actions`).Scan(&total, &pending)
		return err == nil && total >= want && pending == 0
	})
}

// waitAppliedAtLeast waits until min actions are applied and returns how
// many are.
func (f *flood) waitAppliedAtLeast(t *testing.T, min int) int {
	t.Helper()
	db := openRegistryRO(t, f.registry)
	var applied int
	testenv.WaitFor(t, 3*time.Minute, fmt.Sprintf("the worker to apply %d actions", min), func() bool {
		err := db.QueryRow(`SELECT count(*) FROM actions WHERE state = 'applied'`).Scan(&applied)
		return err == nil && applied >= min
	})
	return applied
}

// checkJournal checks that every bounce answered with DISCARD has its
// bounce in the journal, found by queue id.
func (f *flood) checkJournal(t *testing.T, replied []milter.ActionCode) {
	t.Helper()
	db := openRegistryRO(t, f.registry)
	rows, err := db.Query(`SELECT queue_id, verdict FROM bounces`)
	if err != nil {
		t.Fatal(err)
	}
	defer rows.Close()
	journalled := map[string]int{}
	for rows.Next() {
		var qid, verdict string
		if err := rows.Scan(&qid, &verdict); err != nil {
			t.Fatal(err)
		}
		if verdict != "acted" {
			t.Errorf("bounce %s journalled as %s", qid, verdict)
		}
		journalled[qid]++
	}
	if err := rows.Err(); err != nil {
		t.Fatal(err)
	}
	twice := 0
	for i, code := range replied {
		qid := f.msgs[i].QueueID
		if code == milter.ActDiscard && journalled[qid] == 0 {
			t.Errorf("bounce %s was discarded but is not in the journal", qid)
		}
		if journalled[qid] > 1 {
			twice++
		}
	}
	t.Logf("%d bounces journalled, %d of them twice (the answer was lost, the bounce sent again)", len(journalled), twice)
}

// checkExactlyOnce checks that every journalled action was applied, once:
// one action per account and per IP, each applied; MediaGoblin holds
// exactly those accounts' bans, the ban log exactly one line per IP.
func (f *flood) checkExactlyOnce(t *testing.T, n int) {
	t.Helper()
	db := openRegistryRO(t, f.registry)
	rows, err := db.Query(`SELECT kind, target, state FROM actions`)
	if err != nil {
		t.Fatal(err)
	}
	defer rows.Close()
	actions := map[string]map[string]int{}
	for rows.Next() {
		var kind, target, state string
		if err := rows.Scan(&kind, &target, &state); err != nil {
			t.Fatal(err)
		}
		if state != "applied" {
			t.Errorf("%s %s is %s", kind, target, state)
		}
		if actions[kind] == nil {
			actions[kind] = map[string]int{}
		}
		actions[kind][target]++
	}
	if err := rows.Err(); err != nil {
		t.Fatal(err)
	}
	for _, kind := range []string{"ban-account", "ban-ip"} {
		if len(actions[kind]) != n {
			t.Errorf("%d distinct %s actions, want %d", len(actions[kind]), kind, n)
		}
		for target, k := range actions[kind] {
			if k != 1 {
				t.Errorf("%s %s journalled %d times", kind, target, k)
			}
		}
	}

	// MediaGoblin: exactly the accounts of the ban-account actions.
	banned := map[string]bool{}
	mrows, err := f.inst.SQL().Query(`SELECT user_id, reason FROM core__user_bans`)
	if err != nil {
		t.Fatal(err)
	}
	defer mrows.Close()
	for mrows.Next() {
		var id int64
		var reason string
		if err := mrows.Scan(&id, &reason); err != nil {
			t.Fatal(err)
		}
		banned[fmt.Sprint(id)] = true
		if !strings.Contains(reason, "5.1.1") {
			t.Errorf("user %d banned for %q", id, reason)
		}
	}
	if err := mrows.Err(); err != nil {
		t.Fatal(err)
	}
	if len(banned) != len(actions["ban-account"]) {
		t.Errorf("MediaGoblin holds %d bans, the journal %d ban-account actions", len(banned), len(actions["ban-account"]))
	}
	for target := range actions["ban-account"] {
		if !banned[target] {
			t.Errorf("user %s not banned in MediaGoblin", target)
		}
	}

	// The ban log: one line per IP of the ban-ip actions, none twice.
	b, err := os.ReadFile(f.banLog)
	if err != nil {
		t.Fatal(err)
	}
	lines := map[string]int{}
	for _, line := range strings.Split(strings.TrimSuffix(string(b), "\n"), "\n") {
		_, rest, ok := strings.Cut(line, " bouncemilter: ban ")
		ip, _, _ := strings.Cut(rest, " ")
		if !ok || ip == "" {
			t.Errorf("ban log line %q", line)
			continue
		}
		lines[ip]++
	}
	dups := 0
	for ip, k := range lines {
		if k != 1 {
			dups++
			if dups <= 10 {
				t.Errorf("ban log holds %d lines for %s", k, ip)
			}
		}
		if actions["ban-ip"][ip] == 0 {
			t.Errorf("ban log bans %s, which no action asked for", ip)
		}
	}
	if dups > 0 {
		t.Errorf("%d IPs banned more than once in the ban log", dups)
	}
	for ip := range actions["ban-ip"] {
		if lines[ip] == 0 {
			t.Errorf("%s is not in the ban log", ip)
		}
	}
}

// lastLines returns the last n lines of s.
func lastLines(s string, n int) string {
	lines := strings.Split(strings.TrimRight(s, "\n"), "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return strings.Join(lines, "\n")
}

// TestMediaGoblinDownDuringFlood takes MediaGoblin's database away in the
// middle of a flood: the bounces keep being journalled and discarded, the
// account bans wait and are retried with back-off (and the IP bans wait
// for them), and when the database is back every action is applied, none
// twice.
//
// On PostgreSQL the instance's database refuses connections, as a stopped
// server would; on SQLite another process holds an exclusive lock, as a
// backup or a long migration would.
func TestMediaGoblinDownDuringFlood(t *testing.T) {
	t.Run("postgres", func(t *testing.T) {
		dbURL := testenv.Postgres(t)
		floodWhileDown(t, mgtest.NewPostgres(t, dbURL, sender), func() func() { return pgOutage(t, dbURL).end })
	})
	t.Run("sqlite-locked", func(t *testing.T) {
		inst := mgtest.NewSQLite(t, sender)
		floodWhileDown(t, inst, func() func() { return sqliteLock(t, inst) })
	})
}

// floodWhileDown sends 200 bounces, stops MediaGoblin's database with
// stop, sends 800 more, and starts it again with the function stop
// returned.
func floodWhileDown(t *testing.T, inst *mgtest.Instance, stop func() (restart func())) {
	const n, conns, before = 1000, 20, 200
	f := newFlood(t, inst, n)
	f.start(t)
	replied := make([]milter.ActionCode, n)
	var answered atomic.Int64
	idx := floodIndexes(n)

	if left := f.send(t, conns, idx[:before], replied, &answered); len(left) > 0 {
		t.Fatalf("%d bounces got no answer", len(left))
	}
	f.waitApplied(t, 2*before)

	restart := stop()
	start := time.Now()
	if left := f.send(t, conns, idx[before:], replied, &answered); len(left) > 0 {
		t.Fatalf("%d bounces got no answer while MediaGoblin was down", len(left))
	}
	testenv.WaitFor(t, time.Minute, "the worker to fail at MediaGoblin", func() bool {
		return f.countLogged(t, "action failed; will retry") > 0
	})
	time.Sleep(2 * time.Second)
	pending := f.pending(t)
	restart()
	t.Logf("MediaGoblin down for %v; %d bounces answered meanwhile, %d actions waiting when it came back",
		time.Since(start).Round(time.Millisecond), n-before, pending)
	if pending == 0 {
		t.Error("no action waited for MediaGoblin")
	}

	back := time.Now()
	f.waitApplied(t, 2*n)
	failures := f.countLogged(t, "action failed; will retry")
	t.Logf("every action applied %v after MediaGoblin came back; %d failed attempts", time.Since(back).Round(time.Millisecond), failures)
	// Back-off: each action is retried after 5 s, then 10 s, …; an outage
	// of a few seconds costs each action at most a couple of attempts.
	if failures > 2*2*n {
		t.Errorf("%d failed attempts at %d actions: retried without back-off", failures, 2*n)
	}
	f.stop(t)
	for i, code := range replied {
		if code != milter.ActDiscard {
			t.Errorf("bounce %s: answer %q, want discard", f.msgs[i].QueueID, code)
		}
	}
	f.checkJournal(t, replied)
	f.checkExactlyOnce(t, n)
}

// sqliteLock takes an exclusive lock on the instance's SQLite database from
// a process of its own and returns the function that releases it.
func sqliteLock(t *testing.T, inst *mgtest.Instance) func() {
	t.Helper()
	db, err := sql.Open("sqlite3", "file:"+filepath.Join(inst.Dir, "mediagoblin.db"))
	if err != nil {
		t.Fatal(err)
	}
	conn, err := db.Conn(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	if _, err := conn.ExecContext(context.Background(), `BEGIN EXCLUSIVE`); err != nil {
		t.Fatal(err)
	}
	var once sync.Once
	release := func() {
		once.Do(func() {
			if _, err := conn.ExecContext(context.Background(), `ROLLBACK`); err != nil {
				t.Error(err)
			}
			conn.Close()
			db.Close()
		})
	}
	t.Cleanup(release)
	return release
}

// pending returns how many actions are pending.
func (f *flood) pending(t *testing.T) int {
	t.Helper()
	var n int
	if err := openRegistryRO(t, f.registry).QueryRow(`SELECT count(*) FROM actions WHERE state = 'pending'`).Scan(&n); err != nil {
		t.Fatal(err)
	}
	return n
}

// outage is a PostgreSQL database that refuses connections.
type outage struct {
	t     *testing.T
	admin *sql.DB
	name  string
	ended bool
}

// pgOutage makes the database at dbURL refuse new connections and ends
// the open ones, as a stopped server would, leaving the other databases of
// the server (the tests running beside this one) alone. The role that
// owns the database may do both.
func pgOutage(t *testing.T, dbURL string) *outage {
	t.Helper()
	u, err := url.Parse(dbURL)
	if err != nil {
		t.Fatal(err)
	}
	o := &outage{t: t, name: strings.TrimPrefix(u.Path, "/")}
	u.Path = "/postgres"
	if o.admin, err = sql.Open("pgx", u.String()); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		o.end()
		o.admin.Close()
	})
	o.exec(`ALTER DATABASE ` + pgx.Identifier{o.name}.Sanitize() + ` WITH ALLOW_CONNECTIONS false`)
	o.exec(`SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = '` + o.name + `' AND pid <> pg_backend_pid()`)
	return o
}

func (o *outage) end() {
	if !o.ended {
		o.ended = true
		o.exec(`ALTER DATABASE ` + pgx.Identifier{o.name}.Sanitize() + ` WITH ALLOW_CONNECTIONS true`)
	}
}

func (o *outage) exec(q string) {
	o.t.Helper()
	if _, err := o.admin.Exec(q); err != nil {
		o.t.Fatalf("%s: %v", q, err)
	}
}
