// Package dsnfiles parses bounce files with package dsn: one file (a
// single message or an mbox of several) into one Result, and many files on
// every core, with the results handed back in the order of the input. It
// opens and reads the files, which package dsn does not; it decides nothing
// about the bounces.
package dsnfiles

import (
	"context"
	"os"
	"runtime"
	"sync"
	"sync/atomic"

	"github.com/bouncemilter/bouncemilter/internal/dsn"
)

// Result is what one file reports: the reports of all its messages merged.
// Its JSON form is the line "bouncemilter parse --json" prints.
type Result struct {
	File   string `json:"file"`
	Bounce bool   `json:"bounce"`
	Kind   string `json:"kind,omitempty"`
	Format string `json:"format,omitempty"`
	// Recipients holds the failed and delayed recipients only.
	Recipients []dsn.Recipient `json:"recipients"`
	Original   *dsn.Original   `json:"original,omitempty"`
	Messages   int             `json:"messages,omitempty"`
	Truncated  bool            `json:"truncated,omitempty"`
	Error      string          `json:"error,omitempty"`
}

// ParseFile parses the file name ("-" is standard input) and merges the
// reports of its messages. A file that cannot be read gives a Result with
// Error set.
func ParseFile(p *dsn.Parser, name string) Result {
	return parseFile(p, name, nil)
}

// parseFile is ParseFile reading the file with the worker's reader r (nil:
// none), which reads a small file into one buffer reused from file to
// file (and its pages) instead of allocating one per file. Package dsn
// copies what its reports keep, so the buffer may be overwritten once the
// file is parsed.
func parseFile(p *dsn.Parser, name string, r *reader) Result {
	res := Result{File: name, Recipients: []dsn.Recipient{}}
	var reports []*dsn.Report
	var err error
	if name == "-" {
		reports, err = p.ParseAll(os.Stdin)
	} else {
		// Read whole and parsed in place. dsn.Parser.MaxBytes caps
		// what is parsed; the file is one the operator named, not
		// mail from a stranger.
		var b []byte
		if b, err = readFile(name, r); err != nil {
			res.Error = err.Error()
			return res
		}
		reports, err = p.ParseAllBytes(b)
	}
	if err != nil {
		res.Error = err.Error()
	}
	res.Messages = len(reports)
	if len(reports) == 1 && reports[0].Recipients != nil {
		// A file of one message, the usual: its report's recipients
		// are kept where they are, filtered in place (the report is
		// this function's alone), instead of copied.
		res.Recipients = reports[0].Recipients[:0]
	}
	for _, rep := range reports {
		if rep.Bounce {
			res.Bounce = true
		}
		if res.Kind == "" || rep.Bounce && res.Kind != "bounce" {
			res.Kind = rep.Kind
		}
		if res.Format == "" || rep.Bounce && len(rep.Recipients) > 0 && len(res.Recipients) == 0 {
			res.Format = rep.Format
		}
		res.Truncated = res.Truncated || rep.Truncated
		for _, rc := range rep.Recipients {
			// A success notification lists no failed recipients.
			if rc.Action == "failed" || rc.Action == "delayed" {
				res.Recipients = append(res.Recipients, rc)
			}
		}
		if res.Original == nil && rep.Original != (dsn.Original{}) {
			res.Original = &rep.Original
		}
	}
	return res
}

// ParseFiles parses the files on workers goroutines (every core when
// workers <= 0), the calling one among them, and calls emit with each
// Result in the order of names, on the calling goroutine. It stops at the
// first error of emit, or when ctx is done, and returns that error.
func ParseFiles(ctx context.Context, p *dsn.Parser, names []string, workers int, emit func(Result) error) error {
	workers = poolSize(workers, len(names))
	// One reader a worker, kept from round to round.
	readers := make([]reader, workers)
	defer func() {
		for i := range readers {
			readers[i].close()
		}
	}()
	return run(ctx, len(names), workers, func(w, i int) Result {
		return parseFile(p, names[i], &readers[w])
	}, emit)
}

// poolSize is the number of workers for n files: workers, or every core
// when workers <= 0, and never more than there are files.
func poolSize(workers, n int) int {
	if workers <= 0 {
		workers = runtime.GOMAXPROCS(0)
	}
	return max(1, min(workers, n))
}

// run calls parse(w, i) for every i below n, w being the number (0 to
// workers-1) of the worker that runs it, and emit with the results in the
// order of i.
//
// The work goes in rounds: each worker takes a contiguous chunk of at most
// maxChunk files, so a round costs one goroutine start and at most one
// wake-up of the caller per helper, and the results waiting for their turn
// never exceed a round. The caller is worker 0 and parses the first chunk
// of each round, emitting as it goes, then emits what the helpers parsed.
// Handing files over one by one costs more CPU in the scheduler (waking
// and parking threads) than parsing a typical bounce; batches through
// channels, fed by a goroutine of their own, cost about what rounds cost
// (measured over the corpus) with more to go wrong.
func run(ctx context.Context, n, workers int, parse func(w, i int) Result, emit func(Result) error) error {
	// out[k] holds the results of helper k+1 in the current round.
	out := make([][]Result, workers-1)
	var (
		wg   sync.WaitGroup
		stop atomic.Bool
	)
	halt := func(err error) error {
		stop.Store(true)
		wg.Wait()
		return err
	}
	for lo := 0; lo < n; {
		per := min(maxChunk, (n-lo+workers-1)/workers)
		hi := min(lo+per*workers, n)
		helpers := 0
		for from := lo + per; from < hi; from += per {
			k, to := helpers, min(from+per, hi)
			helpers++
			wg.Add(1)
			go func() {
				defer wg.Done()
				res := out[k][:0]
				for i := from; i < to && !stop.Load() && ctx.Err() == nil; i++ {
					res = append(res, parse(k+1, i))
				}
				out[k] = res
			}()
		}
		for i := lo; i < lo+per; i++ {
			if err := ctx.Err(); err != nil {
				return halt(err)
			}
			if err := emit(parse(0, i)); err != nil {
				return halt(err)
			}
		}
		wg.Wait()
		for k := range helpers {
			for _, res := range out[k] {
				if err := ctx.Err(); err != nil {
					return err
				}
				if err := emit(res); err != nil {
					return err
				}
			}
			// Let the collector have the results; keep the slice.
			clear(out[k])
		}
		lo = hi
	}
	return ctx.Err()
}

// readFile returns the contents of the file name. A regular file of at
// most maxReuse bytes is read by r into its buffer (grown when needed),
// anything else (or everything, when r is nil) into a buffer of its own,
// as os.ReadFile does.
func readFile(name string, r *reader) ([]byte, error) {
	if r != nil {
		if b, ok, err := r.readSmall(name); ok || err != nil {
			return b, err
		}
	}
	return os.ReadFile(name)
}

// firstBuffer is the size of a worker's buffer before a larger file grows
// it: most bounces fit. A buffer this large comes from fresh memory that
// needs no zeroing, so only the pages a file is read into are touched.
const firstBuffer = 128 << 10

// maxReuse bounds the buffer a worker keeps: bounces are a few kilobytes,
// and a large file (an mbox of many) is read once into its own buffer.
const maxReuse = 1 << 20

// maxChunk caps the files a worker parses in one round: it bounds the
// results held for their turn, and lets a run of large files still spread
// over the workers.
const maxChunk = 64
