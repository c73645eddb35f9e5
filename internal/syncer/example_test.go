package syncer_test

import (
	"context"
	"log/slog"
	"os"

	"github.com/bouncemilter/bouncemilter/internal/mediagoblin"
	"github.com/bouncemilter/bouncemilter/internal/registry"
	"github.com/bouncemilter/bouncemilter/internal/syncer"
)

// One sync run, as `bouncemilter sync` does it.
func Example() {
	ctx := context.Background()
	log := slog.New(slog.NewTextHandler(os.Stderr, nil))
	cfg, err := mediagoblin.LoadConfig("/srv/mediagoblin/mediagoblin.ini")
	if err != nil {
		log.Error("config", "err", err)
		return
	}
	mg, err := mediagoblin.Open(ctx, cfg)
	if err != nil {
		log.Error("mediagoblin", "err", err, "retry", syncer.Retryable(err))
		return
	}
	defer mg.Close()
	reg, err := registry.Open(ctx, "/var/lib/bouncemilter/registry.db")
	if err != nil {
		log.Error("registry", "err", err)
		return
	}
	defer reg.Close()
	sum, err := syncer.Run(ctx, mg, reg, syncer.Options{
		AccessLogs: []string{"/var/log/nginx/access.log"},
		SignupLogs: []string{"/var/log/nginx/mediagoblin-signup.log"},
		Log:        log,
	})
	if err != nil {
		log.Error("sync", "err", err, "retry", syncer.Retryable(err))
		return
	}
	log.Info("synced", "summary", sum)
}
