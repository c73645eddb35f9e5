package mediagoblin_test

import (
	"context"
	"errors"
	"log/slog"

	"github.com/bouncemilter/bouncemilter/internal/mediagoblin"
)

// Ban an account after its verification mail bounced, leaving it alone when
// it turned out to be real, and retrying later when the database is down.
func Example() {
	ctx := context.Background()
	cfg, err := mediagoblin.LoadConfig("/srv/mediagoblin/mediagoblin.ini")
	if err != nil {
		slog.Error("mediagoblin config", "err", err)
		return
	}
	db, err := mediagoblin.Open(ctx, cfg)
	if err != nil {
		slog.Error("mediagoblin database", "err", err, "retry", errors.Is(err, mediagoblin.ErrUnavailable))
		return
	}
	defer db.Close()

	err = db.BanUser(ctx, 42, "bouncemilter: bot@nowhere.example bounced with 5.1.1")
	switch {
	case errors.Is(err, mediagoblin.ErrVerified), errors.Is(err, mediagoblin.ErrPrivileged):
		slog.Info("account left alone", "reason", err)
	case errors.Is(err, mediagoblin.ErrUnavailable):
		slog.Warn("will retry", "err", err)
	case err != nil:
		slog.Error("ban failed", "err", err)
	}
}
