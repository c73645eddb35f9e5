package e2e

// The load benchmark: bouncemilter serve, driven as Postfix drives it, beside
// a milter that does nothing, built with the same library. Run it with
//
//	go test -run '^$' -bench Load -benchtime 1x ./e2e/
//
// or scripts/bench.sh. It prints, for each milter and workload, the
// throughput, the latency from the end of the message (or the command that
// got the final answer) to the answer, the errors, and each process's peak
// resident memory. The targets (ordinary mail within 1.1× of the do-nothing
// milter, bounces at p99 under 5 ms, peak RSS under 100 MB, no errors) are
// reported, not asserted: a slow machine is not a failed test.
//
// BOUNCEMILTER_BENCH_BINARY names another build of bouncemilter to measure
// instead of the one TestMain builds (one that writes a CPU profile, say).

import (
	"cmp"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/emersion/go-milter"

	"github.com/bouncemilter/bouncemilter/internal/loadtest"
	"github.com/bouncemilter/bouncemilter/internal/mediagoblin/mgtest"
	"github.com/bouncemilter/bouncemilter/internal/testenv"
)

const (
	loadMessages = 10_000
	loadConns    = 50
	pacedRate    = 1000 // messages a second
)

func BenchmarkLoad(b *testing.B) {
	setup := newLoadSetup(b)
	defer setup.close()

	rows := []loadRow{}
	// run measures one workload on one milter rounds times and keeps the
	// round of median throughput (with the errors of all).
	run := func(name string, p *loadProc, msgs []loadtest.Message, want milter.ActionCode, rate float64, rounds int) {
		b.Run(name, func(b *testing.B) {
			var r loadRow
			for range b.N {
				var all []loadRow
				errors := 0
				for range rounds {
					all = append(all, drive(p, msgs, want, rate))
					errors += all[len(all)-1].errors
				}
				slices.SortFunc(all, func(x, y loadRow) int { return cmp.Compare(x.rate, y.rate) })
				r = all[len(all)/2]
				r.errors = errors
			}
			r.name = name
			b.ReportMetric(r.rate, "msgs/s")
			b.ReportMetric(float64(r.p50.Microseconds())/1000, "p50-ms")
			b.ReportMetric(float64(r.p99.Microseconds())/1000, "p99-ms")
			b.ReportMetric(float64(r.errors), "errors")
			b.ReportMetric(float64(r.cpu.Microseconds()), "cpu-µs/msg")
			rows = append(rows, r)
		})
	}
	// As fast as the connections go: throughput, and latency that is
	// mostly waiting for the CPU when the load generator shares it.
	// Ordinary mail takes a fraction of a second: the median of 5 rounds.
	run("ordinary/bouncemilter", setup.serve, setup.ordinary, milter.ActAccept, 0, 5)
	run("ordinary/noop-mail", setup.noopMail, setup.ordinary, milter.ActAccept, 0, 5)
	run("ordinary/noop-eob", setup.noopEOB, setup.ordinary, milter.ActAccept, 0, 5)
	run("bounces/bouncemilter", setup.serve, setup.bounces, milter.ActDiscard, 0, 1)
	run("bounces/noop-eob", setup.noopEOB, setup.bounces, milter.ActAccept, 0, 1)
	// Paced: a flood well beyond what a botnet's sign-ups cause (each
	// bounce answers one sign-up), below saturation, so that the latency
	// is the milter's own. Every sign-up is banned already; the bounces
	// are journalled again and their actions deduplicated.
	run(fmt.Sprintf("bounces@%d/s/bouncemilter", pacedRate), setup.serve, setup.bounces, milter.ActDiscard, pacedRate, 1)
	run(fmt.Sprintf("bounces@%d/s/noop-eob", pacedRate), setup.noopEOB, setup.bounces, milter.ActAccept, pacedRate, 1)

	fmt.Printf("\n%-28s %8s %10s %10s %10s %7s\n", "workload/milter", "msgs/s", "p50", "p99", "CPU/msg", "errors")
	for _, r := range rows {
		fmt.Printf("%-28s %8.0f %10s %10s %10s %7d\n", r.name, r.rate, r.p50.Round(time.Microsecond), r.p99.Round(time.Microsecond), r.cpu.Round(time.Microsecond), r.errors)
	}
	byName := map[string]loadRow{}
	for _, r := range rows {
		byName[r.name] = r
	}
	if bm, noop := byName["ordinary/bouncemilter"], byName["ordinary/noop-mail"]; bm.rate > 0 && noop.rate > 0 {
		fmt.Printf("\nordinary mail: noop-mail / bouncemilter throughput = %.3f\n", noop.rate/bm.rate)
	}
	fmt.Printf("\n%-28s %10s\n", "process", "peak RSS")
	for _, p := range []*loadProc{setup.serve, setup.noopMail, setup.noopEOB} {
		rss, err := loadtest.PeakRSS(p.cmd.Process.Pid)
		if err != nil {
			b.Fatal(err)
		}
		fmt.Printf("%-28s %7.1f MB\n", p.name, float64(rss)/(1<<20))
		b.ReportMetric(float64(rss)/(1<<20), p.name+"-peak-RSS-MB")
	}
}

type loadRow struct {
	name     string
	rate     float64
	p50, p99 time.Duration
	cpu      time.Duration // the milter's processor time per message
	errors   int
}

// drive sends msgs over loadConns connections, as many smtpd processes
// would, and measures. With rate > 0, message i is sent no sooner than
// i/rate seconds after the start; otherwise as fast as the connections go.
func drive(p *loadProc, msgs []loadtest.Message, want milter.ActionCode, rate float64) loadRow {
	cpu0, _ := loadtest.CPUTime(p.cmd.Process.Pid)
	queue := make(chan int, len(msgs))
	if rate <= 0 {
		for i := range msgs {
			queue <- i
		}
		close(queue)
	} else {
		queue = make(chan int)
		go func() {
			defer close(queue)
			start := time.Now()
			for i := range msgs {
				time.Sleep(time.Until(start.Add(time.Duration(float64(i) / rate * float64(time.Second)))))
				queue <- i
			}
		}()
	}
	lat := make([]time.Duration, len(msgs))
	var (
		mu     sync.Mutex
		errors int
		wg     sync.WaitGroup
	)
	fail := func() { mu.Lock(); errors++; mu.Unlock() }
	start := time.Now()
	for range loadConns {
		wg.Add(1)
		go func() {
			defer wg.Done()
			c, err := loadtest.Dial("tcp", p.addr, loadtest.Remote, 30*time.Second)
			if err != nil {
				fail()
				return
			}
			defer c.Close()
			for i := range queue {
				res, err := c.Send(msgs[i])
				if err != nil || res.Code != want {
					fail()
					if err != nil {
						return
					}
				}
				lat[i] = res.Latency
			}
		}()
	}
	wg.Wait()
	elapsed := time.Since(start)
	cpu1, _ := loadtest.CPUTime(p.cmd.Process.Pid)
	return loadRow{
		cpu:    (cpu1 - cpu0) / time.Duration(len(msgs)),
		rate:   float64(len(msgs)) / elapsed.Seconds(),
		p50:    loadtest.Percentile(lat, 50),
		p99:    loadtest.Percentile(lat, 99),
		errors: errors,
	}
}

type loadProc struct {
	name string
	addr string
	cmd  *exec.Cmd
}

type loadSetup struct {
	serve, noopMail, noopEOB *loadProc
	bounces, ordinary        []loadtest.Message
	procs                    []*loadProc
}

func newLoadSetup(b *testing.B) *loadSetup {
	b.Helper()
	dir := b.TempDir()
	noop := filepath.Join(dir, "noopmilter")
	if out, err := exec.Command("go", "build", "-o", noop, "../internal/loadtest/noopmilter").CombinedOutput(); err != nil {
		b.Fatalf("build noopmilter: %v\n%s", err, out)
	}
	f := newFlood(b, mgtest.NewSQLite(b, sender), loadMessages)
	s := &loadSetup{bounces: f.msgs}
	for i := range loadMessages {
		s.ordinary = append(s.ordinary, loadtest.Ordinary("friend@else.example", "admin@media.example.org", loadtest.QueueID(1<<30+i)))
	}
	// Another build may be measured in its place (one that writes a CPU
	// profile, say).
	bin := binary
	if alt := os.Getenv("BOUNCEMILTER_BENCH_BINARY"); alt != "" {
		bin = alt
	}
	s.serve = s.start(b, "bouncemilter", f.addr, filepath.Join(f.dir, "serve.log"), bin, f.args...)
	addr := testenv.FreeAddr(b, "127.0.0.1")
	s.noopMail = s.start(b, "noop-mail", addr, os.DevNull, noop, "-listen", addr, "-accept-at", "mail")
	addr = testenv.FreeAddr(b, "127.0.0.1")
	s.noopEOB = s.start(b, "noop-eob", addr, os.DevNull, noop, "-listen", addr, "-accept-at", "eob")
	return s
}

// start runs a milter listening on addr, with its output in logPath.
func (s *loadSetup) start(b *testing.B, name, addr, logPath, path string, args ...string) *loadProc {
	b.Helper()
	logf, err := os.Create(logPath)
	if err != nil {
		b.Fatal(err)
	}
	cmd := exec.Command(path, args...)
	cmd.Stdout, cmd.Stderr = logf, logf
	if err := cmd.Start(); err != nil {
		b.Fatal(err)
	}
	p := &loadProc{name: name, addr: addr, cmd: cmd}
	s.procs = append(s.procs, p)
	b.Cleanup(func() { logf.Close() })
	testenv.WaitFor(b, 20*time.Second, name+" to listen", func() bool {
		c, err := net.DialTimeout("tcp", addr, time.Second)
		if err == nil {
			c.Close()
		}
		return err == nil
	})
	return p
}

// close stops the milters.
func (s *loadSetup) close() {
	for _, p := range s.procs {
		p.cmd.Process.Signal(syscall.SIGTERM)
		done := make(chan struct{})
		go func() { p.cmd.Wait(); close(done) }()
		select {
		case <-done:
		case <-time.After(20 * time.Second):
			p.cmd.Process.Kill()
			<-done
		}
	}
}
