package app

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"runtime"
	"runtime/debug"
	"strings"

	"github.com/bouncemilter/bouncemilter/internal/dsn"
	"github.com/bouncemilter/bouncemilter/internal/dsnfiles"
)

// ErrFilesFailed is returned by Parse when a file could not be read or
// parsed; the others were printed, and each failure was reported.
var ErrFilesFailed = errors.New("some files failed")

// Parse reads each file as a bounce (one message, or several in mbox form)
// and writes what it reports to out: a summary, or with asJSON one JSON
// object a file and message. A file that fails is reported to failed, after
// what was printed before it, and the others are still read.
func Parse(ctx context.Context, files []string, maxBytes int64, asJSON bool, out io.Writer, failed func(file, msg string)) error {
	p := &dsn.Parser{MaxBytes: maxBytes}
	defer tuneGC()()
	// One write per file would cost more than parsing it.
	w := bufio.NewWriter(out)
	defer w.Flush()
	var line []byte // one JSON line, reused from file to file
	var result error
	err := dsnfiles.ParseFiles(ctx, p, files, 0, func(res dsnfiles.Result) error {
		if res.Error != "" {
			result = ErrFilesFailed
			w.Flush()
			failed(res.File, res.Error)
		}
		if asJSON {
			line = append(res.AppendJSON(line[:0]), '\n')
			_, err := w.Write(line)
			return err
		}
		printSummary(w, res)
		return nil
	})
	if err != nil {
		return err
	}
	return result
}

// tuneGC sets the collector for a parse run and returns what restores it.
// The live heap of a run is tiny (the results of a round), but the parser
// allocates about 10 KB a message, so the heap grows to the collector's
// minimum goal (4 MB at GOGC=100) in fresh pages, each costing a page
// fault. A lower GC percent trades those pages for collections. Measured
// with perf stat over the shared corpus (632 files, 6.6 MB allocated; task
// clock, medians of 30 runs, two cores):
//
//	GOMAXPROCS=1  GOGC=100 75.9 ms, 1773 faults  50: 71.2, 1464  25: 69.2, 1350
//	GOMAXPROCS=2  GOGC=100 86.9 ms, 1955 faults  50: 95.2, 1757  25: 108.2, 1677  200: 90.2
//
// With one core the saved faults pay for the collections. With two or
// more every collection stops and restarts a running worker, and puts the
// idle one to marking, which costs more than the pages it saves, so the
// default stays. A memory limit (GOGC=off, GOMEMLIMIT=4-6 MiB) collected
// without end: 20 times the CPU. An operator's GOGC is left alone, and
// so is every other command's collector (serve is long-running, and its
// heap is not this one).
func tuneGC() (restore func()) {
	if runtime.GOMAXPROCS(0) != 1 || os.Getenv("GOGC") != "" {
		return func() {}
	}
	old := debug.SetGCPercent(25)
	return func() { debug.SetGCPercent(old) }
}

// printSummary writes the human-readable form: one line per file, then one
// indented line per recipient.
func printSummary(w io.Writer, res dsnfiles.Result) {
	switch {
	case res.Error != "" && res.Messages == 0:
		fmt.Fprintf(w, "%s: error: %s\n", res.File, res.Error)
		return
	case res.Bounce:
		fmt.Fprintf(w, "%s: bounce (%s), %d recipient(s)\n", res.File, res.Format, len(res.Recipients))
	case res.Kind != "":
		fmt.Fprintf(w, "%s: not a bounce (%s)\n", res.File, res.Kind)
	default:
		fmt.Fprintf(w, "%s: not a bounce\n", res.File)
	}
	for _, rc := range res.Recipients {
		perm := "temporary"
		if rc.Permanent {
			perm = "permanent"
		}
		fmt.Fprintf(w, "  %s %s %s %s %s\n", rc.Address, rc.Action, rc.Status, rc.Reason, perm)
		if rc.Diagnostic != "" {
			fmt.Fprintf(w, "    %s\n", truncate(rc.Diagnostic, 200))
		}
	}
	if o := res.Original; o != nil && (o.Subject != "" || o.MessageID != "") {
		fmt.Fprintf(w, "  original: %s %q\n", o.MessageID, o.Subject)
	}
}

func truncate(s string, n int) string {
	if len(s) <= n {
		return s
	}
	return strings.ToValidUTF8(s[:n], "") + "…"
}
