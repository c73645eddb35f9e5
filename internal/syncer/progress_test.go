package syncer

import (
	"bytes"
	"strings"
	"testing"
	"time"
)

func TestBar(t *testing.T) {
	for _, tt := range []struct {
		n, total int64
		want     string
	}{
		{0, 100, "[..............................]"},
		{50, 100, "[###############...............]"},
		{100, 100, "[##############################]"},
		{150, 100, "[##############################]"},
		{5, 0, "[##############################]"},
	} {
		if got := bar(tt.n, tt.total); got != tt.want {
			t.Errorf("bar(%d, %d) = %s, want %s", tt.n, tt.total, got, tt.want)
		}
	}
}

func TestProgressOnTerminal(t *testing.T) {
	var term bytes.Buffer
	p := newProgress(Options{Terminal: &term}, "users", 10)
	p.last = time.Time{} // draw at once
	p.add(5)
	p.done()
	out := term.String()
	if !strings.HasPrefix(out, "\r[###############") || !strings.HasSuffix(out, "5/5 users (0s)\n") {
		t.Errorf("progress output %q", out)
	}
}
