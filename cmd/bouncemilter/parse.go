package main

import (
	"context"
	"flag"
	"fmt"
	"io"

	"github.com/bouncemilter/bouncemilter/internal/app"
	"github.com/bouncemilter/bouncemilter/internal/dsn"
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
	err := app.Parse(ctx, fs.Args(), *maxBytes, *asJSON, stdout, func(file, msg string) {
		fmt.Fprintf(stderr, "bouncemilter parse: %s: %s\n", file, msg)
	})
	return exit(stderr, "parse", err)
}
