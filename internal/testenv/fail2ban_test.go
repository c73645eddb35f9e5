package testenv

import (
	"fmt"
	"os"
	"slices"
	"testing"
	"time"
)

func TestStartFail2ban(t *testing.T) {
	f := StartFail2ban(t, "")
	if got := f.Banned(t, "bouncemilter"); len(got) != 0 {
		t.Fatalf("a new jail bans %q", got)
	}

	// A line in the contrib format, as the banner package writes it.
	line := fmt.Sprintf("%s bouncemilter: ban 203.0.113.7 reason=\"5.1.1 user unknown\"\n", time.Now().UTC().Format("2006-01-02T15:04:05Z"))
	lf, err := os.OpenFile(f.BanLog, os.O_WRONLY|os.O_APPEND, 0)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := lf.WriteString(line); err != nil {
		t.Fatal(err)
	}
	lf.Close()
	f.WaitBanned(t, "bouncemilter", "203.0.113.7", 30*time.Second)

	f.Client(t, "set", "bouncemilter", "banip", "2001:db8::7")
	if got := f.Banned(t, "bouncemilter"); !slices.Contains(got, "2001:db8::7") || !slices.Contains(got, "203.0.113.7") {
		t.Errorf("after banip: banned %q", got)
	}
	f.Client(t, "set", "bouncemilter", "unbanip", "203.0.113.7")
	if got := f.Banned(t, "bouncemilter"); !slices.Equal(got, []string{"2001:db8::7"}) {
		t.Errorf("after unbanip: banned %q, want [2001:db8::7]", got)
	}
}
