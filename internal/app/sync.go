package app

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"sync"
	"time"

	"github.com/bouncemilter/bouncemilter/internal/mediagoblin"
	"github.com/bouncemilter/bouncemilter/internal/registry"
	"github.com/bouncemilter/bouncemilter/internal/syncer"
)

// Sync copies MediaGoblin's sign-ups and their IPs into the registry: once,
// or with cfg.Every until ctx is cancelled. Each run's summary goes to out
// (once) or to the log (every), and each run is recorded in the registry
// for doctor and the metrics. terminal, when set, gets a progress line.
func Sync(ctx context.Context, cfg Config, log *slog.Logger, out, terminal io.Writer) error {
	if cfg.Every < 0 || cfg.Follow < 0 || cfg.Retention <= 0 || cfg.Batch <= 0 || cfg.RefreshLimit <= 0 {
		return usage("--every, --follow, --retention, --batch and --refresh-limit must be positive")
	}
	if cfg.MediaGoblinConfig == NoMediaGoblin {
		return usage("sync needs MediaGoblin's database: --mediagoblin-config none is for serve only")
	}
	mg, err := cfg.mediaGoblin(log)
	if err != nil {
		return err
	}
	mg.ReadOnly = true // sync never writes to MediaGoblin's database
	reg, err := openRegistry(ctx, cfg.Registry)
	if err != nil {
		return err
	}
	defer reg.Close()
	feeds, err := cfg.afterSync(reg, log)
	if err != nil {
		return err
	}

	opts := syncer.Options{
		Retention:       cfg.Retention,
		Batch:           cfg.Batch,
		RefreshLimit:    cfg.RefreshLimit,
		AccessLogs:      cfg.AccessLogs,
		SignupLogs:      cfg.SignupLogs,
		TrustedProxies:  cfg.TrustedProxies,
		TrustUnixSocket: cfg.TrustUnixSocket,
		Window:          cfg.LinkWindow,
		IPv6Prefix:      cfg.IPv6Prefix,
		Log:             log,
	}
	if cfg.Every == 0 {
		opts.Terminal = terminal
	}
	once := func(ctx context.Context) error {
		// A fresh connection each run: after MediaGoblin's database was
		// restarted or its file replaced, nothing stale is kept.
		db, err := mediagoblin.Open(ctx, mg)
		if err != nil {
			return err
		}
		defer db.Close()
		sum, err := syncer.Run(ctx, db, reg, opts)
		if err != nil {
			return err
		}
		if err := reg.RecordSync(ctx, registry.SyncRun{At: time.Now(), Added: sum.Added, Linked: sum.Linked, Lines: sum.Lines}); err != nil {
			return err
		}
		log.Info("sync done", "summary", sum)
		if cfg.Every == 0 && out != nil {
			fmt.Fprintf(out, "sync: %s\n", sum)
		}
		return nil
	}

	log.Info("sync", "database", mg.SourceRedacted(), "registry", cfg.Registry,
		"access_logs", len(cfg.AccessLogs), "signup_logs", len(cfg.SignupLogs), "every", cfg.Every)
	if cfg.Every == 0 {
		if feeds != nil {
			// The feeds do not wait for MediaGoblin's database: a run
			// exports and pulls even when the sync fails.
			return errors.Join(once(ctx), feeds(ctx))
		}
		return once(ctx)
	}
	// The feeds and the StopForumSpam reports keep a loop of their own, at
	// the same interval with their own back-off: a stalled peer or twenty
	// reports spaced 5 s apart hold up no log poll, and a failure of
	// theirs backs off neither the sync nor the log following.
	var background sync.WaitGroup
	loopCtx, stop := context.WithCancel(ctx)
	defer func() {
		stop()
		background.Wait() // before the registry closes
	}()
	if feeds != nil {
		background.Go(func() { syncer.Every(loopCtx, cfg.Every, log.With("component", "feeds"), feeds) })
	}
	openMG := func(ctx context.Context) (syncer.Source, func(), error) {
		db, err := mediagoblin.Open(ctx, mg)
		if err != nil {
			return nil, nil, err
		}
		return db, func() { db.Close() }, nil
	}
	logsOnce := func(ctx context.Context) error {
		sum, err := syncer.RunLogs(ctx, openMG, reg, opts)
		if err == nil && sum.Lines > 0 {
			log.Info("logs followed", "summary", sum)
		}
		return err
	}
	err = syncer.Follow(loopCtx, cfg.Every, cfg.Follow, log, once, logsOnce)
	if errors.Is(err, context.Canceled) || errors.Is(err, context.DeadlineExceeded) {
		log.Info("sync stopped")
		return nil
	}
	return err
}
