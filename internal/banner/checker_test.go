package banner

import (
	"context"
	"net/netip"
	"path/filepath"
	"testing"
	"time"
)

func TestLogFileBannedSince(t *testing.T) {
	ctx := context.Background()
	l, err := NewLogFile(filepath.Join(t.TempDir(), "bans.log"))
	if err != nil {
		t.Fatal(err)
	}
	t1 := time.Date(2026, 11, 26, 1, 2, 3, 0, time.UTC)
	l.now = func() time.Time { return t1 }
	if err := l.Ban(ctx, netip.MustParseAddr("203.0.113.7"), `reason with "203.0.113.9 " in it`); err != nil {
		t.Fatal(err)
	}
	l.now = func() time.Time { return t1.Add(time.Minute) }
	if err := l.Ban(ctx, netip.MustParseAddr("2001:db8::1"), "v6"); err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		ip    string
		since time.Time
		want  bool
	}{
		{"203.0.113.7", t1, true},
		{"203.0.113.7", t1.Add(999 * time.Millisecond), true}, // same second
		{"203.0.113.7", t1.Add(-time.Hour), true},
		{"203.0.113.7", t1.Add(time.Second), false},
		{"203.0.113.70", t1, false}, // a prefix of another address
		{"203.0.113.9", t1, false},  // only inside a reason
		{"::ffff:203.0.113.7", t1, true},
		{"2001:db8::1", t1.Add(time.Minute), true},
		{"2001:db8::1", t1.Add(2 * time.Minute), false},
	} {
		got, err := l.BannedSince(ctx, netip.MustParseAddr(tc.ip), tc.since)
		if err != nil || got != tc.want {
			t.Errorf("BannedSince(%s, %v) = %v, %v; want %v", tc.ip, tc.since, got, err, tc.want)
		}
	}
}

// Guarded keeps a LogFile's BannedSince, and adds none to a Banner
// without one.
func TestGuardedChecker(t *testing.T) {
	l, err := NewLogFile(filepath.Join(t.TempDir(), "bans.log"))
	if err != nil {
		t.Fatal(err)
	}
	if _, ok := Guarded(l, nil).(Checker); !ok {
		t.Error("a guarded LogFile is not a Checker")
	}
	if _, ok := Guarded(Nop{}, nil).(Checker); ok {
		t.Error("a guarded Nop is a Checker")
	}
}
