package defaults

import (
	"bytes"
	"log/slog"
	"testing"
	"time"
)

func TestNow(t *testing.T) {
	fixed := time.Date(2026, 11, 30, 8, 0, 0, 0, time.UTC)
	if got := Now(func() time.Time { return fixed }); !got.Equal(fixed) {
		t.Errorf("Now(fixed) = %v, want %v", got, fixed)
	}
	before := time.Now()
	if got := Now(nil); got.Before(before) {
		t.Errorf("Now(nil) = %v, before %v", got, before)
	}
}

func TestLog(t *testing.T) {
	var buf bytes.Buffer
	l := slog.New(slog.NewTextHandler(&buf, nil))
	if Log(l) != l {
		t.Error("Log(l) is not l")
	}
	Log(nil).Error("dropped")
	if buf.Len() != 0 {
		t.Errorf("the discarding logger wrote to another: %q", buf.String())
	}
}
