package app

import (
	"context"
	"io"
	"log/slog"

	"github.com/bouncemilter/bouncemilter/internal/doctor"
)

// Doctor checks the setup cfg describes (the one serve and sync run with),
// writes one line per check to out, and reports whether any check failed.
func Doctor(ctx context.Context, cfg Config, log *slog.Logger, out io.Writer) (failed bool) {
	dc := doctor.Config{
		Listen:            cfg.Listen,
		Postconf:          cfg.Postconf,
		MediaGoblinConfig: cfg.MediaGoblinConfig,
		MediaGoblinDB:     cfg.MediaGoblinDB,
		Registry:          cfg.Registry,
		ServiceUser:       cfg.ServiceUser,
		Banner:            cfg.Banner,
		BanLog:            cfg.BanLog,
		Jail:              cfg.Jail,
		Fail2banSocket:    cfg.Fail2banSocket,
		BanDuration:       cfg.BanDuration,
		IPv6Prefix:        cfg.IPv6Prefix,
		AccessLogs:        cfg.AccessLogs,
		SignupLogs:        cfg.SignupLogs,
		SyncMaxAge:        cfg.SyncMaxAge,
	}
	if cfg.SignReturnPath {
		dc.Delimiter = cfg.Delimiter
		dc.KeyFile = cfg.KeyFile()
	}
	return doctor.Write(out, doctor.Run(ctx, dc))
}
