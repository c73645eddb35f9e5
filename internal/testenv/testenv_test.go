package testenv

import (
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
)

// TestRequire runs TestRequireHelper in a child process, with and without
// CI=true, and checks that the missing service skips the test, or fails it
// under CI.
func TestRequire(t *testing.T) {
	if os.Getenv("TESTENV_REQUIRE_CHILD") != "" {
		return // the child runs TestRequireHelper only
	}
	for _, tc := range []struct {
		ci       string
		wantFail bool
		want     string
	}{
		{ci: "", want: "--- SKIP: TestRequireHelper"},
		{ci: "false", want: "--- SKIP: TestRequireHelper"},
		{ci: "true", wantFail: true, want: "CI=true and the service is missing"},
	} {
		t.Run("CI="+tc.ci, func(t *testing.T) {
			cmd := exec.Command(os.Args[0], "-test.run=^TestRequireHelper$", "-test.v")
			cmd.Env = append(os.Environ(), "TESTENV_REQUIRE_CHILD=1", "CI="+tc.ci)
			out, err := cmd.CombinedOutput()
			if failed := err != nil; failed != tc.wantFail {
				t.Errorf("child failed = %v (%v), want %v\n%s", failed, err, tc.wantFail, out)
			}
			if !strings.Contains(string(out), tc.want) {
				t.Errorf("child output lacks %q:\n%s", tc.want, out)
			}
			if strings.Contains(string(out), "after Require") {
				t.Errorf("the test went on after Require:\n%s", out)
			}
		})
	}
}

func TestRequireHelper(t *testing.T) {
	if os.Getenv("TESTENV_REQUIRE_CHILD") == "" {
		return // only as TestRequire's child: it skips or fails on purpose
	}
	Require(t, true, "never said")
	Require(t, false, "the service is missing")
	t.Log("after Require")
}

func TestRepoRoot(t *testing.T) {
	root := RepoRoot(t)
	if _, err := os.Stat(filepath.Join(root, "go.mod")); err != nil {
		t.Fatal(err)
	}
	wd, _ := os.Getwd()
	if rel, err := filepath.Rel(root, wd); err != nil || rel != filepath.Join("internal", "testenv") {
		t.Errorf("RepoRoot = %s, the test runs in %s", root, wd)
	}
}
