package main

import (
	"bufio"
	"bytes"
	"errors"
	"flag"
	"fmt"
	"io"
	"io/fs"
	"os"
	"strconv"
	"strings"

	"github.com/spf13/pflag"

	"github.com/bouncemilter/bouncemilter/internal/app"
)

// DefaultConfig is the configuration file serve, sync and doctor read when
// --config is not given (a missing default file is no error).
const DefaultConfig = "/etc/bouncemilter/bouncemilter.conf"

// errUsage is a command line that cannot be run: exit status 2.
var errUsage = errors.New("usage error")

// parseFlags parses args into fs the way admins type them: flags before or
// after names (pflag, not the standard package, which stops at the first
// name), --name value and --name=value. It then reads the configuration
// file (--config, or DefaultConfig when it exists) for the settings named
// in conf (nil: no file; allKeys: every setting of serve and sync); a
// flag given on the command line wins over the file. The names left are
// fs.Args().
//
// It returns flag.ErrHelp after printing the usage for --help, and an
// error wrapping errUsage, after saying why, for anything else wrong.
func parseFlags(fs *flag.FlagSet, args []string, conf map[string]bool) error {
	out := fs.Output()
	// The standard package prints "-name"; pflag reads "--name": say so.
	fs.SetOutput(dashes{out})
	pfs := pflag.NewFlagSet(fs.Name(), pflag.ContinueOnError)
	pfs.SortFlags = false
	pfs.SetOutput(io.Discard)
	pfs.AddGoFlagSet(fs)
	var configPath string
	if conf != nil {
		pfs.StringVar(&configPath, "config", "", "")
		fs.String("config", DefaultConfig, "configuration `file` (key = value lines; a flag on the command line wins)")
	}
	err := pfs.Parse(args)
	switch {
	case errors.Is(err, pflag.ErrHelp):
		fs.Usage()
		return flag.ErrHelp
	case err != nil:
		fmt.Fprintf(out, "bouncemilter %s: %v\n", fs.Name(), err)
		return fmt.Errorf("%w: %v", errUsage, err)
	}
	if conf != nil {
		explicit := pfs.Changed("config")
		if !explicit {
			configPath = DefaultConfig
		}
		if err := applyConfig(pfs, configPath, explicit, conf); err != nil {
			fmt.Fprintf(out, "bouncemilter %s: %v\n", fs.Name(), err)
			return fmt.Errorf("%w: %v", errUsage, err)
		}
	}
	// Hand the names to fs, so that fs.Args() has them; "--" keeps a name
	// that starts with "-" from being read as a flag.
	return fs.Parse(append([]string{"--"}, pfs.Args()...))
}

// exitCode is the exit status for an error of parseFlags.
func exitCode(err error) int {
	if errors.Is(err, flag.ErrHelp) {
		return 0
	}
	return 2
}

// applyConfig sets, from the file at path, the flags of pfs named in keys
// that the command line did not set. The file holds "key = value" lines
// named as the long flags are; blank lines and lines starting with # or ;
// are comments; a value may be in double quotes; a repeatable flag takes
// one line per value. A key that is no flag of serve or sync is an error
// (a typo must not pass unseen); one of the other command's is skipped.
func applyConfig(pfs *pflag.FlagSet, path string, explicit bool, keys map[string]bool) error {
	data, err := os.ReadFile(path)
	if errors.Is(err, fs.ErrNotExist) && !explicit {
		return nil
	}
	if err != nil {
		return fmt.Errorf("config: %w", err)
	}
	fromCommandLine := map[string]bool{}
	pfs.Visit(func(f *pflag.Flag) { fromCommandLine[f.Name] = true })
	known := configKeys()
	sc := bufio.NewScanner(bytes.NewReader(data))
	for n := 1; sc.Scan(); n++ {
		l := strings.TrimSpace(sc.Text())
		if l == "" || l[0] == '#' || l[0] == ';' {
			continue
		}
		key, value, ok := strings.Cut(l, "=")
		key, value = strings.TrimSpace(key), strings.TrimSpace(value)
		if !ok || key == "" {
			return fmt.Errorf("%s:%d: want key = value", path, n)
		}
		if len(value) >= 2 && value[0] == '"' && value[len(value)-1] == '"' {
			if value, err = strconv.Unquote(value); err != nil {
				return fmt.Errorf("%s:%d: %v", path, n, err)
			}
		}
		if !known[key] {
			return fmt.Errorf("%s:%d: unknown setting %q", path, n, key)
		}
		if keys != nil && !keys[key] && !keys[allKeysMarker] || pfs.Lookup(key) == nil || fromCommandLine[key] {
			continue
		}
		if err := pfs.Set(key, value); err != nil {
			return fmt.Errorf("%s:%d: %s: %v", path, n, key, err)
		}
	}
	return sc.Err()
}

// allKeysMarker in a key set means every setting.
const allKeysMarker = "*"

// allKeys makes parseFlags read every setting of the file.
var allKeys = map[string]bool{allKeysMarker: true}

// configKeys are the settings a configuration file may hold: every flag of
// serve and sync (and of doctor, which takes both).
func configKeys() map[string]bool {
	keys := map[string]bool{}
	for _, define := range []func(*flag.FlagSet){defineServe, defineSync, defineDoctor} {
		fs := flag.NewFlagSet("", flag.ContinueOnError)
		define(fs)
		fs.VisitAll(func(f *flag.Flag) { keys[f.Name] = true })
	}
	keys["log-format"] = true
	return keys
}

// dashes writes the standard package's usage with pflag's double dashes.
type dashes struct{ w io.Writer }

func (d dashes) Write(p []byte) (int, error) {
	q := bytes.ReplaceAll(p, []byte("\n  -"), []byte("\n  --"))
	if bytes.HasPrefix(q, []byte("  -")) && !bytes.HasPrefix(q, []byte("  --")) {
		q = append([]byte("  --"), q[3:]...)
	}
	if _, err := d.w.Write(q); err != nil {
		return 0, err
	}
	return len(p), nil
}

// defaultRegistry is the registry the commands use without --registry.
const defaultRegistry = app.DefaultRegistry
