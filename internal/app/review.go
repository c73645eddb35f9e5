package app

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"time"

	"github.com/bouncemilter/bouncemilter/internal/mediagoblin"
	"github.com/bouncemilter/bouncemilter/internal/registry"
	"github.com/bouncemilter/bouncemilter/internal/review"
)

// Show writes the whole story of the sign-ups who names (a username, an
// address, or an IP: every sign-up from it) from the registry, with each
// account's live state in MediaGoblin when cfg.MediaGoblinConfig is set
// (read-only). A name the registry does not know is
// registry.ErrNotFound.
func Show(ctx context.Context, cfg Config, who string, asJSON bool, log *slog.Logger, out io.Writer) error {
	reg, err := OpenExisting(ctx, cfg.Registry)
	if err != nil {
		return err
	}
	defer reg.Close()
	regs, err := reg.FindRegistrations(ctx, who)
	if err != nil {
		return err
	}
	var db *mediagoblin.DB
	var dbErr error
	if cfg.MediaGoblinConfig != "" && cfg.MediaGoblinConfig != NoMediaGoblin {
		mg, err := cfg.mediaGoblin(log)
		if err == nil {
			mg.ReadOnly = true // the review never writes
			db, err = mediagoblin.Open(ctx, mg)
		}
		if err != nil {
			dbErr = err
		} else {
			defer db.Close()
		}
	}
	accounts := make([]review.Account, 0, len(regs))
	for _, r := range regs {
		s, err := reg.Story(ctx, r)
		if err != nil {
			return err
		}
		a := review.Account{Story: s}
		if a.ListedBy, err = listedBy(ctx, reg, r, time.Now()); err != nil {
			return err
		}
		switch {
		case dbErr != nil:
			a.LiveError = dbErr.Error()
		case db != nil:
			if st, err := db.State(ctx, r.UserID); err != nil {
				a.LiveError = err.Error()
			} else {
				a.Live = &st
			}
		}
		accounts = append(accounts, a)
	}
	return review.WriteShow(out, accounts, asJSON)
}

// List writes the accounts whose ban matches f.
func List(ctx context.Context, cfg Config, f registry.ListFilter, asJSON bool, out io.Writer) (int, error) {
	reg, err := OpenExisting(ctx, cfg.Registry)
	if err != nil {
		return 0, err
	}
	defer reg.Close()
	list, err := reg.DisabledAccountsWhere(ctx, f)
	if err != nil {
		return 0, err
	}
	return len(list), review.WriteList(out, list, asJSON)
}

// Stats writes the numbers of the last days days, and the top networks
// and domains of their sign-ups.
func Stats(ctx context.Context, cfg Config, days int, asJSON bool, out io.Writer) error {
	if days < 1 || days > 366 {
		return usage("--days %d: want 1 to 366", days)
	}
	reg, err := OpenExisting(ctx, cfg.Registry)
	if err != nil {
		return err
	}
	defer reg.Close()
	st, err := reg.Stats(ctx, time.Now(), days, 10)
	if err != nil {
		return err
	}
	if st.Peers, err = peerCounts(ctx, reg, st.Since, time.Now()); err != nil {
		return err
	}
	return review.WriteStats(out, st, asJSON)
}

// AllowEntry is one allow-list entry: a username, an address or an IP.
type AllowEntry struct {
	Kind  registry.AllowKind
	Value string
}

// Allow protects each entry from every future action, before anything
// happened to it (Restore does it after), and says so on out.
//
// The registry must exist: an entry written to a new file at a mistyped
// path would protect nobody while saying it did.
func Allow(ctx context.Context, cfg Config, entries []AllowEntry, note string, out io.Writer) error {
	reg, err := OpenExisting(ctx, cfg.Registry)
	if err != nil {
		return err
	}
	defer reg.Close()
	for _, e := range entries {
		if err := reg.Allow(ctx, e.Kind, e.Value, note, time.Now()); err != nil {
			return err
		}
		fmt.Fprintf(out, "allow-listed %s %s\n", e.Kind, e.Value)
	}
	return nil
}
