// Package syncer keeps the registry true to MediaGoblin: it copies new local
// users, refreshes the state of recent unverified ones, prunes sign-ups
// older than the retention window, and links sign-ups to the IP addresses
// the web server's logs show.
//
// It only reads MediaGoblin's database, in batches of single statements, so
// that MediaGoblin is never locked for long. Every batch is written to the
// registry together with its cursor in one transaction, and the IP links
// together with the log positions they were read up to, so that a run
// stopped anywhere (the database went down, a log is garbled, the process
// was killed) leaves the registry consistent and the next run resumes.
package syncer

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/netip"
	"path/filepath"
	"strconv"
	"time"

	"github.com/bouncemilter/bouncemilter/internal/accesslog"
	"github.com/bouncemilter/bouncemilter/internal/defaults"
	"github.com/bouncemilter/bouncemilter/internal/mediagoblin"
	"github.com/bouncemilter/bouncemilter/internal/registry"
)

// Source is what a sync reads from MediaGoblin. *mediagoblin.DB is one.
type Source interface {
	UsersAfter(ctx context.Context, afterID int64, limit int) ([]mediagoblin.User, error)
	UsersByID(ctx context.Context, ids []int64) ([]mediagoblin.User, error)
	MaxUserID(ctx context.Context) (int64, error)
}

// Defaults for Options.
const (
	DefaultRetention = 30 * 24 * time.Hour
	DefaultBatch     = 5000
	// DefaultRefreshLimit bounds how many unverified sign-ups one run
	// re-reads.
	DefaultRefreshLimit = 2000
	refreshBatch        = 1000
	// commitGrace is how long the cursor waits for a missing id below a
	// sign-up that was read. PostgreSQL hands ids out from a sequence at
	// insert, not at commit: of two sign-ups at once the higher id may
	// commit first, and a copy between the two commits sees a gap where
	// the lower one will be. MediaGoblin commits a sign-up within its
	// request, so an id missing below one created this long ago was
	// rolled back or deleted, and is passed. (The transactions still in
	// progress, pg_current_snapshot, would not tell: an INSERT takes its
	// id before its transaction gets an xid.)
	commitGrace = time.Minute
)

// Registry state keys. Log positions are keyed by the log's absolute path.
const (
	stateCursor = registry.StateSyncCursor
	// stateCursorName is the username of the user at the cursor, to notice
	// when SQLite has handed its id to another account.
	stateCursorName = "sync.cursor.name"
	stateRefresh    = "sync.refresh"
	stateLinker     = "sync.linker"
	stateLogPrefix  = "sync.log:"
)

// Options configure a sync.
type Options struct {
	// Retention: sign-ups older than this are neither copied nor kept.
	// Zero means DefaultRetention.
	Retention time.Duration
	// Batch is how many users one statement reads and one registry
	// transaction writes. Zero means DefaultBatch.
	Batch int
	// RefreshLimit bounds how many recent unverified sign-ups one run
	// re-reads (see DefaultRefreshLimit, used when zero).
	RefreshLimit int
	// AccessLogs are web server logs in combined (or sign-up) format.
	AccessLogs []string
	// SignupLogs are logs in the sign-up format of contrib/nginx and
	// contrib/apache. They are read exactly like AccessLogs (the format is
	// told per line); the two lists only document intent.
	SignupLogs []string
	// TrustedProxies and Window: see accesslog.Options.
	TrustedProxies []netip.Prefix
	// TrustUnixSocket: see accesslog.Options.
	TrustUnixSocket bool
	Window          time.Duration
	// IPv6Prefix is serve's --ipv6-prefix: when a link is withdrawn, an
	// IPv6 ban is not lifted while another ban covers the network the
	// banner grouped it in (registry.Tx.WithdrawIPBan).
	IPv6Prefix int
	// Log receives periodic progress lines and notable events.
	Log *slog.Logger
	// Terminal, when set, receives a progress line redrawn in place
	// instead of periodic log lines; pass os.Stderr when it is a terminal.
	Terminal io.Writer
	// Now is the clock; nil means time.Now.
	Now func() time.Time
}

// Summary tells what one run did.
type Summary struct {
	Added     int // new sign-ups copied
	Checked   int // recent unverified sign-ups re-read
	Refreshed int // of those, how many changed (verified, promoted, renamed)
	Vanished  int // of those, how many no longer exist in MediaGoblin
	Pruned    int64
	Linked    int // IPs linked
	Ambiguous int // usernames whose evidence named several addresses
	Unmatched int // links to usernames the registry does not hold
	// IPBans counts IP bans queued because a link arrived for a sign-up
	// whose bounce had already banned the account.
	IPBans int
	// Withdrawn counts the sign-ups whose IP ban was lifted because the
	// link that justified it was withdrawn (see
	// registry.Tx.WithdrawIPBan).
	Withdrawn int
	Lines     int // log lines read
	Malformed int // of those, how many did not parse
	Lost      int // rotated logs whose unread rest was not found
	Cursor    int64
	Elapsed   time.Duration
}

func (s Summary) String() string {
	return fmt.Sprintf("added %d, refreshed %d (of %d checked, %d vanished), pruned %d, linked %d, ambiguous %d, IP bans queued %d, withdrawn %d, log lines %d (%d malformed), in %s",
		s.Added, s.Refreshed, s.Checked, s.Vanished, s.Pruned, s.Linked, s.Ambiguous, s.IPBans, s.Withdrawn, s.Lines, s.Malformed, s.Elapsed.Round(time.Millisecond))
}

// LogValue makes a Summary print as attributes in slog.
func (s Summary) LogValue() slog.Value {
	return slog.GroupValue(
		slog.Int("added", s.Added), slog.Int("refreshed", s.Refreshed), slog.Int("checked", s.Checked),
		slog.Int("vanished", s.Vanished), slog.Int64("pruned", s.Pruned), slog.Int("linked", s.Linked),
		slog.Int("ambiguous", s.Ambiguous), slog.Int("unmatched", s.Unmatched),
		slog.Int("ip_bans", s.IPBans), slog.Int("withdrawn", s.Withdrawn), slog.Int("lines", s.Lines),
		slog.Int("malformed", s.Malformed), slog.Int64("cursor", s.Cursor), slog.Duration("elapsed", s.Elapsed))
}

// Opener opens MediaGoblin's database for one run; done closes it.
type Opener func(ctx context.Context) (src Source, done func(), err error)

// RunLogs reads only what the web server's logs gained since the last run,
// and links it: what `sync --every` does between its full runs, every
// second or so, so that a sign-up's IP is linked (and an IP ban that waited
// for it queued) moments after the web server logged the sign-up. When the
// new lines name sign-ups, the users MediaGoblin created after the cursor
// are copied first (one range read on its primary key), so that no link
// waits for the next full run; otherwise MediaGoblin is not read at all,
// and a log that did not change costs a stat and a read of its state.
func RunLogs(ctx context.Context, open Opener, reg *registry.DB, opts Options) (Summary, error) {
	s := newRun(reg, opts)
	err := s.logsOnly(ctx, open)
	s.sum.Elapsed = s.opts.Now().Sub(s.start)
	return s.sum, err
}

func (s *run) logsOnly(ctx context.Context, open Opener) error {
	links, err := s.readLogs(ctx)
	if err != nil || !links.changed {
		return err
	}
	if len(links.links) > 0 {
		src, done, err := open(ctx)
		if err != nil {
			return err
		}
		defer done()
		s.src = src
		if _, err := s.copyNew(ctx); err != nil {
			return err
		}
	}
	return s.applyLinks(ctx, links)
}

// Run performs one sync. On error the registry holds every batch committed
// before it, and the summary counts them.
func Run(ctx context.Context, src Source, reg *registry.DB, opts Options) (Summary, error) {
	s := newRun(reg, opts)
	s.src = src
	err := s.do(ctx)
	s.sum.Elapsed = s.opts.Now().Sub(s.start)
	return s.sum, err
}

func newRun(reg *registry.DB, opts Options) *run {
	if opts.Retention <= 0 {
		opts.Retention = DefaultRetention
	}
	if opts.Batch <= 0 {
		opts.Batch = DefaultBatch
	}
	if opts.RefreshLimit <= 0 {
		opts.RefreshLimit = DefaultRefreshLimit
	}
	opts.Log = defaults.Log(opts.Log)
	if opts.Now == nil {
		opts.Now = time.Now
	}
	s := &run{reg: reg, opts: opts, start: opts.Now()}
	s.cutoff = s.start.Add(-opts.Retention)
	return s
}

type run struct {
	src    Source
	reg    *registry.DB
	opts   Options
	start  time.Time
	cutoff time.Time
	sum    Summary
}

func (s *run) do(ctx context.Context) error {
	// The logs first: a sign-up logged before this point is committed in
	// MediaGoblin before it, so the user copy below will hold it.
	links, err := s.readLogs(ctx)
	if err != nil {
		return err
	}
	cursorAtStart, err := s.copyNew(ctx)
	if err != nil {
		return err
	}
	if err := s.refresh(ctx, cursorAtStart); err != nil {
		return err
	}
	if err := s.reg.Tx(ctx, func(tx *registry.Tx) error {
		n, err := tx.PruneBefore(ctx, s.cutoff)
		s.sum.Pruned = n
		if err != nil {
			return err
		}
		_, err = tx.PruneJournal(ctx, s.cutoff)
		return err
	}); err != nil {
		return fmt.Errorf("prune: %w", err)
	}
	return s.applyLinks(ctx, links)
}

// copyNew copies users past the cursor, batch by batch, each batch and the
// cursor in one registry transaction. Users created before the retention
// window are skipped: they are too old to act on.
//
// The cursor never passes an id that may still be committed: it stops
// below a missing id until the sign-up read above it is commitGrace old,
// while the users above are copied all the same (and again at each run
// until the cursor passes them). So every user up to the cursor is in
// the registry, and the milter's copies, which read only after it, find
// a sign-up committed late.
func (s *run) copyNew(ctx context.Context) (int64, error) {
	v, err := s.reg.State(ctx, stateCursor)
	if err != nil {
		return 0, err
	}
	var cursor int64
	if v != "" {
		if cursor, err = strconv.ParseInt(v, 10, 64); err != nil {
			return 0, fmt.Errorf("registry state %s = %q: %w", stateCursor, v, err)
		}
	}
	start := cursor
	s.sum.Cursor = cursor
	maxID, err := s.src.MaxUserID(ctx)
	if err != nil {
		return start, err
	}
	if cursor, err = s.checkCursor(ctx, cursor, maxID); err != nil {
		return start, err
	}
	// Ids the registry holds already (up to the old cursor, and those
	// copied above it: by an earlier run, or by the milter when a
	// sign-up's mail passed) may have been handed to new accounts: what
	// the registry knew under them (an IP link above all) is then another
	// account's.
	reusedUpTo, err := s.reg.MaxRegisteredID(ctx)
	if err != nil {
		return start, err
	}
	settled := s.opts.Now().Add(-commitGrace)
	held := false
	prog := newProgress(s.opts, "users", maxID-cursor)
	defer prog.done()
	for read := cursor; ; {
		users, err := s.src.UsersAfter(ctx, read, s.opts.Batch)
		if err != nil {
			return start, err
		}
		if len(users) == 0 {
			return start, nil
		}
		last := users[len(users)-1].ID
		next, name := cursor, ""
		for _, u := range users {
			if held || u.ID > next+1 && u.Created.After(settled) {
				held = true // an id below u may still be committed
				break
			}
			next, name = u.ID, u.Username
		}
		regs := make([]registry.Registration, 0, len(users))
		err = s.reg.Tx(ctx, func(tx *registry.Tx) error {
			for _, u := range users {
				if u.ID <= reusedUpTo {
					if err := tx.RetireIfReused(ctx, s.registration(u), s.opts.Now()); err != nil {
						return err
					}
				}
				if !u.Created.Before(s.cutoff) {
					regs = append(regs, s.registration(u))
				}
			}
			if err := tx.UpsertRegistrations(ctx, regs); err != nil {
				return err
			}
			if next == cursor {
				return nil
			}
			return setCursor(ctx, tx, next, name)
		})
		if err != nil {
			return start, fmt.Errorf("store users %d–%d: %w", users[0].ID, last, err)
		}
		s.sum.Added += len(regs)
		s.sum.Cursor = next
		prog.add(last - read)
		cursor, read = next, last
	}
}

// checkCursor returns where copying must resume. Normally that is the
// cursor, but SQLite (MediaGoblin's tables have no AUTOINCREMENT) gives a
// new row the highest id plus one, so after the newest accounts were
// deleted their ids are handed out again, at or below the cursor. That
// happens only when the cursor's own account is gone: when it is missing,
// every id above the highest one left was deleted and copying resumes from
// there; when its id names another account now, one batch is read again.
// PostgreSQL's sequences never reuse ids; there this changes nothing.
func (s *run) checkCursor(ctx context.Context, cursor, maxID int64) (int64, error) {
	if cursor == 0 {
		return 0, nil
	}
	name, err := s.reg.State(ctx, stateCursorName)
	if err != nil {
		return cursor, err
	}
	us, err := s.src.UsersByID(ctx, []int64{cursor})
	if err != nil {
		return cursor, err
	}
	switch {
	case len(us) == 0 && maxID < cursor:
		s.opts.Log.Info("newest users deleted in MediaGoblin; lowering the sync cursor", "max_id", maxID, "cursor", cursor)
		// Stored now, even when no user follows: SQLite hands the
		// freed ids out again, and a cursor left above them would
		// read past the next sign-up.
		return maxID, s.saveCursor(ctx, maxID)
	case len(us) == 1 && name != "" && us[0].Username != name:
		s.opts.Log.Info("MediaGoblin reused the ids of deleted users; reading the last batch again", "cursor", cursor)
		return max(0, cursor-int64(s.opts.Batch)), nil
	}
	return cursor, nil
}

// saveCursor stores cursor and the username of its user (none for 0).
func (s *run) saveCursor(ctx context.Context, cursor int64) error {
	var name string
	if cursor > 0 {
		us, err := s.src.UsersByID(ctx, []int64{cursor})
		if err != nil {
			return err
		}
		if len(us) == 1 {
			name = us[0].Username
		}
	}
	return s.reg.Tx(ctx, func(tx *registry.Tx) error { return setCursor(ctx, tx, cursor, name) })
}

// setCursor stores the cursor and the username of its user in tx.
func setCursor(ctx context.Context, tx *registry.Tx, cursor int64, name string) error {
	if err := tx.SetState(ctx, stateCursorName, name); err != nil {
		return err
	}
	return tx.SetState(ctx, stateCursor, strconv.FormatInt(cursor, 10))
}

func (s *run) registration(u mediagoblin.User) registry.Registration {
	return registry.Registration{
		UserID: u.ID, Username: u.Username, Email: u.Email, Created: u.Created,
		Verified: u.Verified, Privileged: u.Privileged, Synced: s.start,
	}
}

// refresh re-reads recent unverified sign-ups that the registry held before
// this run: one that verified its address or was made a moderator since
// must no longer be acted on. Verified ones are not re-read: they are never
// acted on whatever happens later.
//
// A run re-reads at most Options.RefreshLimit of them, going on where the
// previous run stopped and wrapping around, so that a run stays cheap
// however many unverified sign-ups a bot flood left inside the window; on a
// normal instance every one of them is re-read at each run. A stale state
// is never dangerous on its own: mediagoblin.DB.BanUser re-checks it in the
// banning transaction.
func (s *run) refresh(ctx context.Context, upTo int64) error {
	v, err := s.reg.State(ctx, stateRefresh)
	if err != nil {
		return err
	}
	after, _ := strconv.ParseInt(v, 10, 64)
	if after >= upTo {
		after = 0
	}
	from, wrapped := after, after == 0
	budget := s.opts.RefreshLimit
	for budget > 0 {
		regs, err := s.reg.UnverifiedSince(ctx, s.cutoff, after, min(refreshBatch, budget))
		if err != nil {
			return err
		}
		var ids []int64
		known := map[int64]registry.Registration{}
		for _, r := range regs {
			if r.UserID > upTo || (wrapped && from > 0 && r.UserID > from) {
				break // copied by this very run, or already re-read by it
			}
			ids = append(ids, r.UserID)
			known[r.UserID] = r
		}
		if len(ids) == 0 {
			if wrapped {
				after = 0
				break
			}
			after, wrapped = 0, true
			continue
		}
		users, err := s.src.UsersByID(ctx, ids)
		if err != nil {
			return err
		}
		current := map[int64]mediagoblin.User{}
		for _, u := range users {
			current[u.ID] = u
		}
		after = ids[len(ids)-1]
		var refreshed, vanished int
		err = s.reg.Tx(ctx, func(tx *registry.Tx) error {
			for _, id := range ids {
				old := known[id]
				u, ok := current[id]
				renamed := ok && !old.SameAccount(s.registration(u))
				switch {
				case !ok:
					if _, err := tx.DeleteRegistration(ctx, id, s.opts.Now()); err != nil {
						return err
					}
					vanished++
					continue
				case renamed:
					// The id now names another account (SQLite
					// reuses the highest id after a deletion): what
					// the registry knew, IP and bans included, is not
					// this user's.
					if err := tx.RetireRegistration(ctx, id, s.opts.Now()); err != nil {
						return err
					}
				}
				if !renamed && u.Verified == old.Verified && u.Privileged == old.Privileged && u.Email == old.Email {
					continue
				}
				if err := tx.UpsertRegistration(ctx, s.registration(u)); err != nil {
					return err
				}
				refreshed++
			}
			return tx.SetState(ctx, stateRefresh, strconv.FormatInt(after, 10))
		})
		if err != nil {
			return fmt.Errorf("refresh users %d–%d: %w", ids[0], ids[len(ids)-1], err)
		}
		s.sum.Checked += len(ids)
		s.sum.Refreshed += refreshed
		s.sum.Vanished += vanished
		budget -= len(ids)
	}
	if after == 0 {
		return s.reg.SetState(ctx, stateRefresh, "0")
	}
	return nil
}

// logRead is what reading the logs produced, to be committed at the end.
type logRead struct {
	links     []accesslog.Link
	ambiguous []string
	positions map[string]accesslog.Position
	linker    []byte
	// changed: a log gained lines or moved (rotated); otherwise there is
	// nothing to store.
	changed bool
}

func (s *run) readLogs(ctx context.Context) (*logRead, error) {
	paths := append(append([]string(nil), s.opts.AccessLogs...), s.opts.SignupLogs...)
	out := &logRead{positions: map[string]accesslog.Position{}}
	if len(paths) == 0 {
		return out, nil
	}
	linker := accesslog.NewLinker(accesslog.Options{Window: s.opts.Window, TrustedProxies: s.opts.TrustedProxies, TrustUnixSocket: s.opts.TrustUnixSocket})
	saved, err := s.reg.State(ctx, stateLinker)
	if err != nil {
		return nil, err
	}
	if err := linker.Restore([]byte(saved)); err != nil {
		s.opts.Log.Warn("dropping unreadable linker state", "err", err)
	}
	for _, p := range paths {
		abs, err := filepath.Abs(p)
		if err != nil {
			return nil, fmt.Errorf("access log %s: %w", p, err)
		}
		if _, seen := out.positions[abs]; seen {
			continue
		}
		var pos accesslog.Position
		v, err := s.reg.State(ctx, stateLogPrefix+abs)
		if err != nil {
			return nil, err
		}
		if v != "" {
			if err := json.Unmarshal([]byte(v), &pos); err != nil {
				s.opts.Log.Warn("unreadable log position; reading the log from its start", "log", abs, "err", err)
				pos = accesslog.Position{}
			}
		}
		next, st, err := accesslog.Read(ctx, abs, pos, linker.Add)
		s.sum.Lines += st.Lines
		s.sum.Malformed += st.Malformed
		if err != nil {
			return nil, fmt.Errorf("access log %s: %w", abs, err)
		}
		if st.Lost {
			s.sum.Lost++
			s.opts.Log.Warn("log was rotated and its unread rest not found (rotated twice between runs, or compressed under another name): sign-ups may be missed", "log", abs)
		}
		if st.Malformed > 0 {
			// Only reported now, never fatal past a file's start:
			// said where an admin looks.
			s.opts.Log.Warn("malformed log lines skipped", "log", abs, "lines", st.Malformed)
		}
		out.positions[abs] = next
		if st.Lines > 0 {
			out.changed = true
		} else if b, err := json.Marshal(next); err != nil || string(b) != v {
			out.changed = true
		}
	}
	out.links, out.ambiguous = linker.Result()
	if out.linker, err = linker.State(); err != nil {
		return nil, err
	}
	return out, nil
}

// applyLinks stores the links, the log positions and the linker's pending
// evidence in one transaction.
func (s *run) applyLinks(ctx context.Context, lr *logRead) error {
	if len(lr.positions) == 0 {
		return nil
	}
	var linked, ambiguous, unmatched, ipBans int
	// withdrawn lists the sign-ups whose ban of an address was lifted,
	// "username ip", told once the transaction holds.
	var withdrawn []string
	withdraw := func(tx *registry.Tx, username, ip string) error {
		lifted, err := tx.WithdrawIPBan(ctx, username, ip, s.opts.IPv6Prefix, s.opts.Now())
		if lifted {
			withdrawn = append(withdrawn, username+" "+ip)
		}
		return err
	}
	err := s.reg.Tx(ctx, func(tx *registry.Tx) error {
		for _, k := range lr.links {
			ip, source, err := tx.LinkedIP(ctx, k.Username)
			if err != nil {
				return err
			}
			switch {
			case ip == k.IP.String():
				if source != k.Source && k.Source == accesslog.SourceLocation {
					break // upgrade an inferred link to an exact one
				}
				continue
			case ip == "":
			case source == accesslog.SourceLocation && k.Source == accesslog.SourceCombined:
				continue // exact evidence stands
			case source == accesslog.SourceCombined && k.Source == accesslog.SourceLocation:
				// exact evidence replaces inferred
			default:
				// Two runs saw different addresses for one sign-up:
				// believe neither.
				if _, err := tx.SetIP(ctx, k.Username, "", ""); err != nil {
					return err
				}
				if err := withdraw(tx, k.Username, ip); err != nil {
					return err
				}
				ambiguous++
				continue
			}
			if ip != "" && ip != k.IP.String() {
				// Exact evidence names another address than the one
				// inferred: a ban of the inferred one was a mistake.
				if err := withdraw(tx, k.Username, ip); err != nil {
					return err
				}
			}
			ok, err := tx.SetIP(ctx, k.Username, k.IP.String(), k.Source)
			if err != nil {
				return err
			}
			if !ok {
				unmatched++
				continue
			}
			linked++
			queued, err := tx.QueueLinkedIPBan(ctx, k.Username, k.IP.String(), s.opts.Now())
			if err != nil {
				return err
			}
			if queued {
				ipBans++
			}
		}
		for _, name := range lr.ambiguous {
			ambiguous++
			// An earlier inferred link is now contradicted.
			if ip, source, err := tx.LinkedIP(ctx, name); err != nil {
				return err
			} else if source == accesslog.SourceCombined {
				if _, err := tx.SetIP(ctx, name, "", ""); err != nil {
					return err
				}
				if err := withdraw(tx, name, ip); err != nil {
					return err
				}
			}
		}
		for path, pos := range lr.positions {
			b, err := json.Marshal(pos)
			if err != nil {
				return err
			}
			if err := tx.SetState(ctx, stateLogPrefix+path, string(b)); err != nil {
				return err
			}
		}
		return tx.SetState(ctx, stateLinker, string(lr.linker))
	})
	if err != nil {
		return fmt.Errorf("store IP links: %w", err)
	}
	s.sum.Linked, s.sum.Ambiguous, s.sum.Unmatched, s.sum.IPBans = linked, ambiguous, unmatched, ipBans
	s.sum.Withdrawn = len(withdrawn)
	if len(withdrawn) > 0 {
		s.opts.Log.Warn("IP bans lifted: the web log no longer links their sign-ups to those addresses (a waiting ban cancelled, an applied one undone with an unban queued)", "bans", withdrawn)
	}
	if len(lr.ambiguous) > 0 {
		s.opts.Log.Info("sign-ups left unlinked: the logs name several addresses", "usernames", lr.ambiguous)
	}
	return nil
}

// Retryable reports whether a failed run may succeed when tried again:
// MediaGoblin's database was unreachable or busy.
func Retryable(err error) bool {
	return errors.Is(err, mediagoblin.ErrUnavailable)
}
