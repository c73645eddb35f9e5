package syncer

import (
	"context"
	"log/slog"
	"time"
)

// Back-off bounds after failed runs in Every.
const (
	minBackoff = 5 * time.Second
	maxBackoff = 10 * time.Minute
)

// Every calls run at once and then every interval until ctx is done. After
// a failure it retries sooner than interval at first, then backs off,
// doubling the wait from 5 s up to 10 min, and returns to interval after a
// success. It returns ctx's error.
func Every(ctx context.Context, interval time.Duration, log *slog.Logger, run func(context.Context) error) error {
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	backoff := time.Duration(0)
	for {
		wait := interval
		if err := run(ctx); err != nil {
			if ctx.Err() != nil {
				return ctx.Err()
			}
			switch {
			case backoff == 0:
				backoff = min(minBackoff, interval)
			default:
				backoff = min(backoff*2, maxBackoff)
			}
			wait = backoff
			log.Error("sync failed; retrying", "err", err, "retry_in", wait)
		} else {
			backoff = 0
		}
		t := time.NewTimer(wait)
		select {
		case <-ctx.Done():
			t.Stop()
			return ctx.Err()
		case <-t.C:
		}
	}
}
