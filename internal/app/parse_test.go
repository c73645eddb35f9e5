package app

import (
	"context"
	"path/filepath"
	"runtime"
	"runtime/debug"
	"testing"
)

// gcWriter records the collector's GC percent while Parse writes.
type gcWriter struct{ percent int }

func (w *gcWriter) Write(b []byte) (int, error) {
	w.percent = debug.SetGCPercent(1000)
	debug.SetGCPercent(w.percent)
	return len(b), nil
}

// TestParseGC checks that Parse lowers the GC percent only on one core and
// when the operator did not set GOGC, and restores it afterwards.
func TestParseGC(t *testing.T) {
	file := filepath.Join("..", "..", "testdata", "dsn", "postfix-userunknown.eml")
	for _, c := range []struct {
		procs int
		gogc  string
		want  int
	}{
		{1, "", 25},
		{2, "", 100},
		{1, "100", 100},
	} {
		defer runtime.GOMAXPROCS(runtime.GOMAXPROCS(c.procs))
		t.Setenv("GOGC", c.gogc)
		defer debug.SetGCPercent(debug.SetGCPercent(100))
		var w gcWriter
		err := Parse(context.Background(), []string{file}, 0, true, &w, func(file, msg string) { t.Errorf("%s: %s", file, msg) })
		if err != nil {
			t.Fatal(err)
		}
		if w.percent != c.want {
			t.Errorf("GOMAXPROCS=%d GOGC=%q: GC percent %d while parsing, want %d", c.procs, c.gogc, w.percent, c.want)
		}
		if got := debug.SetGCPercent(100); got != 100 {
			t.Errorf("GOMAXPROCS=%d GOGC=%q: GC percent %d after Parse, want 100 again", c.procs, c.gogc, got)
		}
	}
}
