package main

import (
	"context"
	"flag"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"time"

	"github.com/bouncemilter/bouncemilter/internal/returnpath"
)

const keysUsage = `Usage:
  bouncemilter keys rotate [--registry PATH] [--grace DURATION]

Makes a new key for signing MediaGoblin's envelope sender. Tags made with the
old key keep verifying for --grace (default: the tags' lifetime plus a day),
then it is dropped; --grace 0 drops it at once (a leaked key). Send SIGHUP to
the running milter (systemctl reload bouncemilter) so that it signs with the
new key.
`

func runKeys(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	if len(args) == 0 || args[0] != "rotate" {
		fmt.Fprint(stderr, keysUsage)
		return 2
	}
	fs := flag.NewFlagSet("keys rotate", flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.Usage = func() { fmt.Fprint(stderr, keysUsage+"\nFlags:\n"); fs.PrintDefaults() }
	regPath := fs.String("registry", defaultRegistry, "the registry SQLite database; the key file returnpath.keys lives beside it")
	grace := fs.Duration("grace", returnpath.DefaultGrace, "how long the old key keeps verifying")
	if err := parseFlags(fs, args[1:], map[string]bool{"registry": true}); err != nil {
		return exitCode(err)
	}
	// --registry names the database file; a directory given instead would
	// put the keys beside it, in its parent, where the milter never looks.
	if fi, err := os.Stat(*regPath); err == nil && fi.IsDir() {
		fmt.Fprintf(stderr, "bouncemilter keys rotate: --registry %s is a directory; give the registry database file (the keys live beside it)\n", *regPath)
		return 2
	}
	path := filepath.Join(filepath.Dir(*regPath), "returnpath.keys")
	keys, err := returnpath.LoadOrCreate(path)
	if err == nil {
		err = keys.Rotate(time.Now(), *grace)
	}
	if err != nil {
		fmt.Fprintf(stderr, "bouncemilter keys rotate: %v\n", err)
		return 1
	}
	fmt.Fprintf(stdout, "%s: new key in use; the old one verifies for %s. Reload the milter (SIGHUP).\n", path, *grace)
	return 0
}
