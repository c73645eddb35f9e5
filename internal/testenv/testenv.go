// Package testenv runs the real services that bouncemilter's tests need —
// fail2ban, PostgreSQL, Postfix, a remote SMTP server — privately for one
// test, and decides what happens when one is missing.
//
// Every helper takes the test's testing.TB, cleans up after itself through
// t.Cleanup, and calls Require for what it needs: a test whose service is
// missing is skipped on a developer's machine and fails under CI=true, where
// nothing may be skipped. scripts/services.sh installs and starts what the
// helpers need.
//
// It is for tests and test helpers only; the program never imports it.
package testenv

import (
	"os"
	"path/filepath"
	"testing"
)

// Require skips the test with reason when ok is false, or fails it when the
// environment variable CI is "true": in CI every service is installed, so a
// missing one is a broken CI, not a test to skip.
func Require(t testing.TB, ok bool, reason string) {
	t.Helper()
	if ok {
		return
	}
	if os.Getenv("CI") == "true" {
		t.Fatalf("CI=true and %s", reason)
	}
	t.Skip(reason)
}

// RepoRoot returns the repository's root directory, the first directory
// holding go.mod at or above the test's working directory (its package's
// directory). Files shipped in the repository, such as contrib/, are found
// from it.
func RepoRoot(t testing.TB) string {
	t.Helper()
	dir, err := os.Getwd()
	if err != nil {
		t.Fatal(err)
	}
	for {
		if _, err := os.Stat(filepath.Join(dir, "go.mod")); err == nil {
			return dir
		}
		parent := filepath.Dir(dir)
		if parent == dir {
			t.Fatal("no go.mod at or above the working directory")
		}
		dir = parent
	}
}
