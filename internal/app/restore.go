package app

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"time"

	"github.com/bouncemilter/bouncemilter/internal/banner"
	"github.com/bouncemilter/bouncemilter/internal/registry"
	"github.com/bouncemilter/bouncemilter/internal/worker"
)

// Restore undoes what was done to the accounts of names: their bans are
// cancelled or lifted and their username and address allow-listed. It
// lifts the bans at once where this process can (MediaGoblin's database;
// the IP ban with cfg.Banner fail2ban, log (through fail2ban-client) or
// nftables, usually as root), and leaves the rest queued for the running
// milter (all IP unbans with none or dry-run). It writes one line per
// name to out and what is still waiting to errOut; an error for one name
// does not stop the others, and is returned (joined) at the end.
func Restore(ctx context.Context, cfg Config, names []string, note string, log *slog.Logger, out, errOut io.Writer) error {
	var ipBanner banner.Banner
	switch cfg.Banner {
	case banner.KindLog:
		// serve's banner, from the configuration file: its bans are
		// fail2ban's jail's, lifted through fail2ban-client.
		cfg.Banner = banner.KindFail2ban
		fallthrough
	case banner.KindFail2ban, banner.KindNFTables:
		var err error
		// It only lifts bans: no allow-list to read.
		if ipBanner, err = cfg.banner(log, nil); err != nil {
			return usage("%v", err)
		}
	case banner.KindNone, banner.KindDryRun:
		// Nothing of serve's to lift here; the running milter's worker
		// applies the unbans queued.
	default:
		return usage("--banner %q cannot lift an IP ban here; use fail2ban (or log: through fail2ban-client), nftables, or none (the running milter lifts it)", cfg.Banner)
	}
	reg, err := OpenExisting(ctx, cfg.Registry)
	if err != nil {
		return err
	}
	defer reg.Close()
	var (
		failed error
		queued []registry.Action
	)
	for _, name := range names {
		r, err := reg.RegistrationByName(ctx, name)
		var acts []registry.Action
		if err == nil {
			acts, err = reg.Restore(ctx, r.UserID, note, time.Now())
		}
		if err != nil {
			failed = joinErr(failed, fmt.Errorf("%s: %w", name, err))
			continue
		}
		queued = append(queued, acts...)
		fmt.Fprintf(out, "%s: restored and allow-listed\n", name)
	}

	// Lift the bans now if this process can, and only those: whatever else
	// is queued belongs to the running milter's worker, and so does what
	// this process cannot do (with --banner none, the IP unbans).
	var mine []registry.Action
	for _, a := range queued {
		if a.Kind == registry.UnbanIP && ipBanner == nil {
			continue
		}
		mine = append(mine, a)
	}
	if len(mine) > 0 {
		mg, err := cfg.mediaGoblin(log)
		if err != nil {
			fmt.Fprintf(errOut, "%v; the running milter will lift the bans\n", err)
			return failed
		}
		w := worker.New(reg, cfg.accounts(mg, reg, log), ipBanner, log)
		if _, err := w.Apply(ctx, mine); err != nil {
			return joinErr(failed, err)
		}
	}
	for _, name := range names {
		r, err := reg.RegistrationByName(ctx, name)
		if err != nil {
			continue
		}
		acts, err := reg.Actions(ctx, r.UserID)
		if err != nil {
			continue
		}
		for _, a := range acts {
			if a.State == registry.Pending && (a.Kind == registry.UnbanAccount || a.Kind == registry.UnbanIP) {
				why := a.LastError
				if why == "" {
					why = "not tried"
				}
				fmt.Fprintf(errOut, "%s: %s %s not done yet (%s); the running milter retries it\n", name, a.Kind, a.Target, why)
			}
		}
	}
	return failed
}

func joinErr(a, b error) error {
	if a == nil {
		return b
	}
	return fmt.Errorf("%w; %w", a, b)
}
