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

// parseFile is ParseFile reading the file into *buf when it is small
// enough, so that a worker parsing many files reuses one buffer (and its
// pages) instead of allocating one per file. Package dsn copies what its
// reports keep, so the buffer may be overwritten once the file is parsed.
func parseFile(p *dsn.Parser, name string, buf *[]byte) Result {
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
		if b, err = readFile(name, buf); err != nil {
			res.Error = err.Error()
			return res
		}
		reports, err = p.ParseAllBytes(b)
	}
	if err != nil {
		res.Error = err.Error()
	}
	res.Messages = len(reports)
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
			o := rep.Original
			res.Original = &o
		}
	}
	return res
}

// ParseFiles parses the files on workers goroutines (every core when
// workers <= 0) and calls emit with each Result in the order of names.
// Files go to the workers in small batches: handing over each file alone
// costs the scheduler more CPU than parsing a typical bounce. At most a
// few batches per worker wait for their turn, so memory does not grow with
// the number of files. It stops at the first error of emit, or when ctx is
// done, and returns that error.
func ParseFiles(ctx context.Context, p *dsn.Parser, names []string, workers int, emit func(Result) error) error {
	if workers <= 0 {
		workers = runtime.GOMAXPROCS(0)
	}
	batch := min(maxBatch, max(1, len(names)/(4*workers)))
	workers = min(workers, max(1, (len(names)+batch-1)/batch))
	// Each batch gets a slot, queued in input order; the queue's
	// capacity bounds how far ahead of emit the workers run.
	type slot = chan []Result
	queue := make(chan slot, 2*workers)
	jobs := make(chan func(*[]byte), workers)
	done := make(chan struct{})
	defer close(done)
	for range workers {
		go func() {
			var buf []byte
			for job := range jobs {
				job(&buf)
			}
		}()
	}
	go func() {
		defer close(jobs)
		defer close(queue)
		for i := 0; i < len(names); i += batch {
			part := names[i:min(i+batch, len(names))]
			s := make(slot, 1)
			select {
			case queue <- s:
			case <-done:
				return
			case <-ctx.Done():
				return
			}
			job := func(buf *[]byte) {
				out := make([]Result, 0, len(part))
				for _, name := range part {
					if ctx.Err() != nil {
						break
					}
					out = append(out, parseFile(p, name, buf))
				}
				s <- out
			}
			select {
			case jobs <- job:
			case <-done:
				return
			}
		}
	}()
	for s := range queue {
		var results []Result
		select {
		case results = <-s:
		case <-ctx.Done():
			return ctx.Err()
		}
		for _, res := range results {
			if err := emit(res); err != nil {
				return err
			}
		}
	}
	return ctx.Err()
}

// readFile returns the contents of the file name. A regular file of at
// most maxReuse bytes is read into *buf (grown when needed), anything else
// into a buffer of its own, as os.ReadFile does.
func readFile(name string, buf *[]byte) ([]byte, error) {
	if buf != nil {
		if b, ok, err := readSmall(name, buf); ok || err != nil {
			return b, err
		}
	}
	return os.ReadFile(name)
}

// maxReuse bounds the buffer a worker keeps: bounces are a few kilobytes,
// and a large file (an mbox of many) is read once into its own buffer.
const maxReuse = 1 << 20

// maxBatch caps the files of one batch, so that a run of large files
// still spreads over the workers.
const maxBatch = 32
