package syncer

import (
	"context"
	"log/slog"
	"time"

	"github.com/bouncemilter/bouncemilter/internal/defaults"
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
	return Follow(ctx, interval, 0, log, run, nil)
}

// Follow is Every for `sync --every` with the web logs followed as they
// grow: full runs (full: MediaGoblin's database and the logs) at interval,
// and between them the logs alone (logs) every poll, the way fail2ban
// follows a log. A sign-up's IP is then linked a poll after the web server
// logged it, not up to a whole interval later. The two never run at the
// same time: they share the registry's log positions. The next full run
// is due an interval after the last one ended, not began, so that the logs
// are followed between two full runs however long one takes. After a
// failure of either, the next attempt is a full run, retried with back-off
// as in Every. A poll of zero, or not shorter than interval, is Every.
func Follow(ctx context.Context, interval, poll time.Duration, log *slog.Logger, full, logs func(context.Context) error) error {
	if poll <= 0 || poll >= interval || logs == nil {
		poll = interval
	}
	log = defaults.Log(log)
	var (
		backoff  time.Duration
		nextFull time.Time // zero: the next run is a full one
	)
	for {
		wait := poll
		run := logs
		isFull := run == nil || !time.Now().Before(nextFull)
		if isFull {
			run = full
		}
		err := run(ctx)
		if isFull {
			nextFull = time.Now().Add(interval)
		}
		if err != nil {
			if ctx.Err() != nil {
				return ctx.Err()
			}
			switch {
			case backoff == 0:
				backoff = min(minBackoff, interval)
			default:
				backoff = min(backoff*2, maxBackoff)
			}
			wait, nextFull = backoff, time.Time{}
			log.Error("run failed; retrying", "err", err, "retry_in", wait)
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
