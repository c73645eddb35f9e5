package app

import (
	"fmt"
	"io"
	"os"
	"time"

	"github.com/bouncemilter/bouncemilter/internal/returnpath"
)

// RotateKeys makes a new return-path signing key beside the registry; the
// old one keeps verifying for grace (0: dropped at once).
func RotateKeys(cfg Config, grace time.Duration, out io.Writer) error {
	// Registry names the database file; a directory given instead would
	// put the keys beside it, in its parent, where the milter never looks.
	if fi, err := os.Stat(cfg.Registry); err == nil && fi.IsDir() {
		return usage("--registry %s is a directory; give the registry database file (the keys live beside it)", cfg.Registry)
	}
	path := cfg.KeyFile()
	keys, err := returnpath.LoadOrCreate(path)
	if err == nil {
		err = keys.Rotate(time.Now(), grace)
	}
	if err != nil {
		return err
	}
	fmt.Fprintf(out, "%s: new key in use; the old one verifies for %s. Reload the milter (SIGHUP).\n", path, grace)
	return nil
}
