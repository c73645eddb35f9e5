// Package defaults holds what the other packages fall back on when a caller
// leaves a field unset: the system clock, and a logger that discards. It
// keeps no state.
package defaults

import (
	"log/slog"
	"time"
)

// Now returns now(), or the system clock's time when now is nil.
func Now(now func() time.Time) time.Time {
	if now != nil {
		return now()
	}
	return time.Now()
}

// Log returns l, or a logger that discards everything when l is nil.
func Log(l *slog.Logger) *slog.Logger {
	if l != nil {
		return l
	}
	return slog.New(slog.DiscardHandler)
}
