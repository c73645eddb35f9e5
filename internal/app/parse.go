package app

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"strings"

	"github.com/bouncemilter/bouncemilter/internal/dsn"
	"github.com/bouncemilter/bouncemilter/internal/dsnfiles"
)

// ErrFilesFailed is returned by Parse when a file could not be read or
// parsed; the others were printed, and each failure was reported.
var ErrFilesFailed = fmt.Errorf("some files failed: %w", ErrReported)

// Parse reads each file as a bounce (one message, or several in mbox form)
// and writes what it reports to out: a summary, or with asJSON one JSON
// object a file and message. A file that fails is reported to failed, after
// what was printed before it, and the others are still read.
func Parse(ctx context.Context, files []string, maxBytes int64, asJSON bool, out io.Writer, failed func(file, msg string)) error {
	p := &dsn.Parser{MaxBytes: maxBytes}
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
