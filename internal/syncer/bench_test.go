package syncer_test

import (
	"bufio"
	"context"
	"fmt"
	"os"
	"path/filepath"
	"runtime"
	"runtime/debug"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/bouncemilter/bouncemilter/internal/mediagoblin/mgtest"
	"github.com/bouncemilter/bouncemilter/internal/registry"
	"github.com/bouncemilter/bouncemilter/internal/syncer"
	"github.com/bouncemilter/bouncemilter/internal/testenv"
)

// The sizes issue 4 sets targets for: a first sync of 1,000,000 users
// (under 30 s) and an incremental sync of 1,000 new users on top of them
// (under 1 s), each within 100 MB peak memory, on both backends.
//
//	go test -run '^$' -bench . -benchtime 1x ./internal/syncer/
//
// The users are spread over the last 29 days, all inside the retention
// window, so that the first sync stores every one of them; one in ten is
// unverified (a heavy bot flood), which is what refresh re-reads at each
// incremental run.
const (
	benchUsers       = 1_000_000
	benchIncremental = 1_000
)

func BenchmarkSync(b *testing.B) {
	b.Run("sqlite", func(b *testing.B) { benchSync(b, mgtest.NewSQLite(b, sender)) })
	b.Run("postgres", func(b *testing.B) { benchSync(b, mgtest.NewPostgres(b, testenv.Postgres(b), sender)) })
}

func benchSync(b *testing.B, inst *mgtest.Instance) {
	ctx := context.Background()
	now := time.Now().UTC()
	start := time.Now()
	inst.AddUsers(b, mgtest.Bulk{N: benchUsers, First: now.Add(-29 * 24 * time.Hour), Step: 29 * 24 * time.Hour / benchUsers, VerifiedEvery: 10})
	if inst.Postgres {
		inst.SQL().Exec(`ANALYZE`)
	}
	b.Logf("created %d MediaGoblin users in %s", benchUsers, time.Since(start).Round(time.Millisecond))
	mg := inst.Open(b)

	var (
		reg *registry.DB
		err error
	)
	b.Run(fmt.Sprintf("first-%d", benchUsers), func(b *testing.B) {
		for i := 0; i < b.N; i++ {
			b.StopTimer()
			if reg != nil {
				reg.Close()
			}
			reg, err = registry.Open(ctx, filepath.Join(b.TempDir(), "registry.db"))
			if err != nil {
				b.Fatal(err)
			}
			b.StartTimer()
			sum, wall, peak := measure(b, func() (syncer.Summary, error) {
				return syncer.Run(ctx, mg, reg, syncer.Options{})
			})
			if sum.Added != benchUsers {
				b.Fatalf("added %d, want %d", sum.Added, benchUsers)
			}
			report(b, "first sync", benchUsers, wall, peak)
		}
	})
	if reg == nil {
		return
	}
	defer reg.Close()
	b.Run(fmt.Sprintf("incremental-%d", benchIncremental), func(b *testing.B) {
		for i := 0; i < b.N; i++ {
			b.StopTimer()
			inst.AddUsers(b, mgtest.Bulk{N: benchIncremental, First: time.Now().UTC(), Step: time.Millisecond, VerifiedEvery: 10})
			b.StartTimer()
			sum, wall, peak := measure(b, func() (syncer.Summary, error) {
				return syncer.Run(ctx, mg, reg, syncer.Options{})
			})
			if sum.Added != benchIncremental {
				b.Fatalf("added %d, want %d", sum.Added, benchIncremental)
			}
			report(b, fmt.Sprintf("incremental sync (%d unverified re-checked)", sum.Checked), benchIncremental, wall, peak)
		}
	})
}

// measure runs fn and returns its wall time and the process's peak
// resident memory while it ran (VmHWM, reset first through clear_refs).
//
// It also prints the CPU time this process used: on a shared machine the
// wall time includes waiting for a core.
func measure(b *testing.B, fn func() (syncer.Summary, error)) (syncer.Summary, time.Duration, int64) {
	b.Helper()
	runtime.GC()
	debug.FreeOSMemory()
	os.WriteFile("/proc/self/clear_refs", []byte("5"), 0)
	cpu0 := cpuTime()
	start := time.Now()
	sum, err := fn()
	wall := time.Since(start)
	if err != nil {
		b.Fatal(err)
	}
	cpu := cpuTime() - cpu0
	b.ReportMetric(cpu.Seconds(), "cpu-s")
	fmt.Printf("%s: CPU time of this process %s\n", b.Name(), cpu.Round(time.Millisecond))
	return sum, wall, peakRSS()
}

// cpuTime is the user and system time this process has used.
func cpuTime() time.Duration {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		return 0
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

func report(b *testing.B, what string, n int, wall time.Duration, peak int64) {
	b.ReportMetric(float64(peak)/(1<<20), "peak-MB")
	b.ReportMetric(float64(n)/wall.Seconds(), "users/s")
	fmt.Printf("%s: %s of %d users: %s, peak RSS %.1f MB\n", b.Name(), what, n, wall.Round(time.Millisecond), float64(peak)/(1<<20))
}

// peakRSS reads VmHWM from /proc/self/status, in bytes; 0 off Linux.
func peakRSS() int64 {
	f, err := os.Open("/proc/self/status")
	if err != nil {
		return 0
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		if v, ok := strings.CutPrefix(sc.Text(), "VmHWM:"); ok {
			kb, _ := strconv.ParseInt(strings.TrimSpace(strings.TrimSuffix(strings.TrimSpace(v), "kB")), 10, 64)
			return kb << 10
		}
	}
	return 0
}
