package main

import (
	"bufio"
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"strings"

	"github.com/bouncemilter/bouncemilter/internal/dsn"
	"github.com/bouncemilter/bouncemilter/internal/dsnfiles"
)

// runParse implements "bouncemilter parse [--json] FILE...": it reads each
// file as a bounce (one message, or several in mbox form) and prints what it
// reports. It exits 1 when a file cannot be read, after printing the others,
// and 2 on a usage error.
func runParse(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	fs := flag.NewFlagSet("parse", flag.ContinueOnError)
	fs.SetOutput(stderr)
	asJSON := fs.Bool("json", false, "print one JSON object per file and line: file, bounce, kind, format, recipients (address, literal, original_address, original_literal, action, status, reason, permanent, diagnostic), original headers, error")
	maxBytes := fs.Int64("max-bytes", dsn.DefaultMaxBytes, "read at most this many bytes of each message; the rest is skipped and the result marked truncated")
	fs.Usage = func() {
		fmt.Fprintf(stderr, "Usage: bouncemilter parse [--json] FILE...\n\n"+
			"Parse each FILE as a bounce (a delivery status notification, RFC 3464, or one of\n"+
			"the common non-standard formats) and print its failed and delayed recipients.\n"+
			"A file may hold one message or several in mbox form. \"-\" reads standard input.\n\nFlags:\n")
		fs.PrintDefaults()
	}
	if err := parseFlags(fs, args, nil); err != nil {
		return exitCode(err)
	}
	if fs.NArg() == 0 {
		fs.Usage()
		return 2
	}
	p := &dsn.Parser{MaxBytes: *maxBytes}
	// One write per file would cost more than parsing it.
	out := bufio.NewWriter(stdout)
	defer out.Flush()
	enc := json.NewEncoder(out)
	enc.SetEscapeHTML(false)
	status := 0
	err := dsnfiles.ParseFiles(ctx, p, fs.Args(), 0, func(res dsnfiles.Result) error {
		if res.Error != "" {
			status = 1
			out.Flush()
			fmt.Fprintf(stderr, "bouncemilter parse: %s: %s\n", res.File, res.Error)
		}
		if *asJSON {
			return enc.Encode(res)
		}
		printSummary(out, res)
		return nil
	})
	if err != nil {
		fmt.Fprintf(stderr, "bouncemilter parse: %v\n", err)
		return 1
	}
	return status
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
