package dsnfiles

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"reflect"
	"runtime"
	"strconv"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/bouncemilter/bouncemilter/internal/dsn"
)

// TestParseFilesOrder parses many files on several workers and checks that
// the results come back in the order of the input, a missing file in its
// place with its error.
func TestParseFilesOrder(t *testing.T) {
	samples, err := filepath.Glob(filepath.Join("..", "..", "testdata", "dsn", "*.eml"))
	if err != nil || len(samples) == 0 {
		t.Fatalf("no samples: %v", err)
	}
	var names []string
	for i := 0; i < 500; i++ {
		names = append(names, samples[i%len(samples)])
		if i == 123 {
			names = append(names, filepath.Join(t.TempDir(), "missing.eml"))
		}
	}
	for _, workers := range []int{1, 3, 8} {
		var got []Result
		err := ParseFiles(context.Background(), &dsn.Parser{}, names, workers, func(r Result) error {
			got = append(got, r)
			return nil
		})
		if err != nil {
			t.Fatal(err)
		}
		if len(got) != len(names) {
			t.Fatalf("workers %d: %d results for %d files", workers, len(got), len(names))
		}
		for i, r := range got {
			if r.File != names[i] {
				t.Fatalf("workers %d: result %d is %s, want %s", workers, i, r.File, names[i])
			}
			if want := ParseFile(&dsn.Parser{}, names[i]); !reflect.DeepEqual(r, want) {
				t.Fatalf("workers %d: result %d = %+v, want %+v", workers, i, r, want)
			}
		}
		if got[124].Error == "" {
			t.Errorf("missing file: no error")
		}
	}
}

// TestParseFilesStops checks that an error of emit, and a cancelled
// context, stop the run.
func TestParseFilesStops(t *testing.T) {
	name := filepath.Join("..", "..", "testdata", "dsn", "postfix-userunknown.eml")
	if _, err := os.Stat(name); err != nil {
		t.Fatal(err)
	}
	names := make([]string, 1000)
	for i := range names {
		names[i] = name
	}
	stop := errors.New("stop")
	n := 0
	err := ParseFiles(context.Background(), &dsn.Parser{}, names, 2, func(Result) error {
		n++
		if n == 10 {
			return stop
		}
		return nil
	})
	if !errors.Is(err, stop) || n != 10 {
		t.Errorf("err = %v after %d results; want stop after 10", err, n)
	}
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	err = ParseFiles(ctx, &dsn.Parser{}, names, 2, func(Result) error { return nil })
	if !errors.Is(err, context.Canceled) {
		t.Errorf("cancelled: err = %v", err)
	}
}

// TestRunUsesWorkers checks that many files are parsed by several workers
// at the same time (each parse waits until another runs beside it, which
// only happens if two run concurrently), that the default is one worker a
// core, and that the results never run more than a round ahead of emit.
func TestRunUsesWorkers(t *testing.T) {
	if got, want := poolSize(0, 1000), runtime.GOMAXPROCS(0); got != want {
		t.Errorf("poolSize(0, 1000) = %d, want GOMAXPROCS %d", got, want)
	}
	if got := poolSize(0, 1); got != 1 {
		t.Errorf("poolSize(0, 1) = %d, want 1", got)
	}
	const n, workers = 1000, 3
	var (
		active, parsed atomic.Int32
		once           sync.Once
		together       = make(chan struct{})
		mu             sync.Mutex
		seen           = map[int]bool{}
	)
	parse := func(w, i int) Result {
		if active.Add(1) >= 2 {
			once.Do(func() { close(together) })
		}
		select {
		case <-together:
		case <-time.After(10 * time.Second):
			t.Error("no second worker ran beside the first")
			once.Do(func() { close(together) })
		}
		active.Add(-1)
		parsed.Add(1)
		mu.Lock()
		seen[w] = true
		mu.Unlock()
		return Result{File: strconv.Itoa(i)}
	}
	emitted := 0
	err := run(context.Background(), n, workers, parse, func(r Result) error {
		if r.File != strconv.Itoa(emitted) {
			t.Fatalf("result %d is for file %s", emitted, r.File)
		}
		emitted++
		if ahead := int(parsed.Load()) - emitted; ahead > workers*maxChunk {
			t.Fatalf("%d results waiting, more than a round (%d)", ahead, workers*maxChunk)
		}
		return nil
	})
	if err != nil || emitted != n {
		t.Fatalf("err = %v after %d results, want %d", err, emitted, n)
	}
	if len(seen) != workers {
		t.Errorf("%d workers parsed, want %d", len(seen), workers)
	}
}

// TestRunStops checks that emit's error and a context cancelled during the
// run stop the workers at once: no further results are emitted, and the
// helpers are done before run returns.
func TestRunStops(t *testing.T) {
	stop := errors.New("stop")
	for _, workers := range []int{1, 2, 4} {
		ctx, cancel := context.WithCancel(context.Background())
		var parsed atomic.Int32
		var running atomic.Int32
		parse := func(w, i int) Result {
			running.Add(1)
			defer running.Add(-1)
			parsed.Add(1)
			return Result{}
		}
		n := 0
		err := run(ctx, 10000, workers, parse, func(Result) error {
			n++
			if n == 100 {
				return stop
			}
			return nil
		})
		if !errors.Is(err, stop) || n != 100 {
			t.Errorf("workers %d: err = %v after %d results; want stop after 100", workers, err, n)
		}
		if running.Load() != 0 {
			t.Errorf("workers %d: a worker still runs after return", workers)
		}
		if p := parsed.Load(); p > 100+int32(workers*maxChunk) {
			t.Errorf("workers %d: %d parsed after emit failed at 100", workers, p)
		}
		n = 0
		err = run(ctx, 10000, workers, parse, func(Result) error {
			n++
			if n == 100 {
				cancel()
			}
			return nil
		})
		if !errors.Is(err, context.Canceled) || n != 100 {
			t.Errorf("workers %d: err = %v after %d results; want Canceled after 100", workers, err, n)
		}
		cancel()
	}
}

// TestResultsOwnTheirBytes checks what the reuse of a worker's buffer
// relies on: a Result keeps nothing of the buffer its file was read into,
// so reading the next file over it changes nothing in the results held.
func TestResultsOwnTheirBytes(t *testing.T) {
	samples, _ := filepath.Glob(filepath.Join("..", "..", "testdata", "dsn", "*.eml"))
	p := &dsn.Parser{}
	var r reader
	defer r.close()
	var held []Result
	for _, name := range samples {
		held = append(held, parseFile(p, name, &r))
	}
	for i, name := range samples {
		if want := ParseFile(p, name); !reflect.DeepEqual(held[i], want) {
			t.Errorf("%s: after reading the other files into its buffer: %+v, want %+v", name, held[i], want)
		}
	}
}
