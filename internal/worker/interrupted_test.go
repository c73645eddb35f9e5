package worker

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/bouncemilter/bouncemilter/internal/banner"
	"github.com/bouncemilter/bouncemilter/internal/registry"
)

// crashingQueue loses the bookkeeping of applied IP bans, as a process
// killed between the ban and MarkApplied would.
type crashingQueue struct {
	*registry.DB
}

var errKilled = errors.New("killed")

func (q crashingQueue) MarkApplied(ctx context.Context, id int64, now time.Time, banned string) error {
	acts, err := q.DB.DueActions(ctx, now.Add(time.Hour), 100)
	if err != nil {
		return err
	}
	for _, a := range acts {
		if a.ID == id && a.Kind == registry.BanIP {
			return errKilled
		}
	}
	return q.DB.MarkApplied(ctx, id, now, banned)
}

// A ban log line written just before a crash is not written again after
// the restart; a ban whose attempt was marked but never made is made.
func TestInterruptedBanIsNotRepeated(t *testing.T) {
	for _, tc := range []struct {
		name  string
		crash func(t *testing.T, db *registry.DB, log banner.Banner)
	}{
		{"after the ban", func(t *testing.T, db *registry.DB, log banner.Banner) {
			w := New(crashingQueue{db}, &target{}, log, nil)
			if _, err := w.RunOnce(t.Context()); !errors.Is(err, errKilled) {
				t.Fatalf("RunOnce = %v, want the simulated kill", err)
			}
		}},
		{"before the ban", func(t *testing.T, db *registry.DB, log banner.Banner) {
			due, err := db.DueActions(t.Context(), time.Now(), 10)
			if err != nil {
				t.Fatal(err)
			}
			for _, a := range due {
				if a.Kind == registry.BanIP {
					if err := db.MarkStarted(t.Context(), a.ID, time.Now()); err != nil {
						t.Fatal(err)
					}
				}
			}
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			db := openRegistry(t)
			path := filepath.Join(t.TempDir(), "bans.log")
			log, err := banner.New(banner.KindLog, banner.Options{LogPath: path})
			if err != nil {
				t.Fatal(err)
			}
			journal(t, db, 7, "203.0.113.7", time.Now())
			tc.crash(t, db, log)

			// The restarted worker.
			w := New(db, &target{}, log, nil)
			if _, err := w.RunOnce(t.Context()); err != nil {
				t.Fatal(err)
			}
			if got := states(t, db, 7); strings.Join(got, ",") != "ban-account applied,ban-ip applied" {
				t.Errorf("states = %q", got)
			}
			b, err := os.ReadFile(path)
			if err != nil {
				t.Fatal(err)
			}
			if n := strings.Count(string(b), " ban 203.0.113.7 "); n != 1 {
				t.Errorf("the ban log holds %d lines for the address:\n%s", n, b)
			}
		})
	}
}
