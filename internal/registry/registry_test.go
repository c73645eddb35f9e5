package registry

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"sync"
	"testing"
	"time"
)

func openTest(t *testing.T) *DB {
	t.Helper()
	db, err := Open(context.Background(), filepath.Join(t.TempDir(), "sub", "registry.db"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { db.Close() })
	return db
}

var t0 = time.Date(2026, 11, 20, 10, 0, 0, 0, time.UTC)

func seed(t *testing.T, db *DB, regs ...Registration) {
	t.Helper()
	ctx := context.Background()
	err := db.Tx(ctx, func(tx *Tx) error {
		for _, r := range regs {
			if err := tx.UpsertRegistration(ctx, r); err != nil {
				return err
			}
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
}

func TestOpenTwiceKeepsData(t *testing.T) {
	ctx := context.Background()
	path := filepath.Join(t.TempDir(), "r.db")
	db, err := Open(ctx, path)
	if err != nil {
		t.Fatal(err)
	}
	if err := db.SetState(ctx, "cursor", "42"); err != nil {
		t.Fatal(err)
	}
	db.Close()
	db, err = Open(ctx, path)
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	v, err := db.State(ctx, "cursor")
	if err != nil || v != "42" {
		t.Fatalf("state = %q, %v; want 42", v, err)
	}
	if v, _ := db.State(ctx, "missing"); v != "" {
		t.Fatalf("missing state = %q", v)
	}
}

// serve and sync start together on a new registry (contrib/install.sh
// starts both units at once): every opener must find the schema made, none
// fail on the tables another created.
func TestOpenNewRegistryConcurrently(t *testing.T) {
	ctx := context.Background()
	for round := range 5 {
		path := filepath.Join(t.TempDir(), "r.db")
		errs := make(chan error, 4)
		for range cap(errs) {
			go func() {
				db, err := Open(ctx, path)
				if err == nil {
					err = db.SetState(ctx, "cursor", "1")
					db.Close()
				}
				errs <- err
			}()
		}
		for range cap(errs) {
			if err := <-errs; err != nil {
				t.Errorf("round %d: %v", round, err)
			}
		}
	}
}

func TestRegistrationsLookupAndUpsert(t *testing.T) {
	ctx := context.Background()
	db := openTest(t)
	seed(t, db,
		Registration{UserID: 1, Username: "admin", Email: "Admin@example.org", Created: t0, Verified: true, Privileged: true, Synced: t0},
		Registration{UserID: 2, Username: "bot1", Email: "bot@nowhere.example", Created: t0, Synced: t0},
		Registration{UserID: 3, Username: "bot2", Email: "BOT@nowhere.example", Created: t0, Synced: t0},
	)
	err := db.Tx(ctx, func(tx *Tx) error {
		ok, err := tx.SetIP(ctx, "bot1", "203.0.113.9", "combined")
		if !ok {
			t.Error("SetIP found no bot1")
		}
		return err
	})
	if err != nil {
		t.Fatal(err)
	}
	// A later sync must not forget the linked IP.
	seed(t, db, Registration{UserID: 2, Username: "bot1", Email: "bot@nowhere.example", Created: t0, Verified: true, Synced: t0.Add(time.Hour)})

	got, err := db.RegistrationsByEmail(ctx, "Bot@Nowhere.Example")
	if err != nil {
		t.Fatal(err)
	}
	if len(got) != 2 || got[0].UserID != 2 || got[1].UserID != 3 {
		t.Fatalf("lookup = %+v", got)
	}
	if got[0].IP != "203.0.113.9" || got[0].IPSource != "combined" || !got[0].Verified || !got[0].Synced.Equal(t0.Add(time.Hour)) {
		t.Fatalf("bot1 = %+v", got[0])
	}
	if _, err := db.Registration(ctx, 99); !errors.Is(err, ErrNotFound) {
		t.Fatalf("missing registration: %v", err)
	}
	if r, err := db.RegistrationByName(ctx, "admin"); err != nil || !r.Privileged {
		t.Fatalf("admin = %+v, %v", r, err)
	}
}

func TestJournalActionsLifecycle(t *testing.T) {
	ctx := context.Background()
	db := openTest(t)
	seed(t, db, Registration{UserID: 7, Username: "vandal", Email: "v@x.example", Created: t0, IP: "198.51.100.4", Synced: t0})

	ban := []Action{
		{UserID: 7, Kind: BanAccount, Target: UserTarget(7), Reason: "5.1.1"},
		{UserID: 7, Kind: BanIP, Target: "198.51.100.4", Reason: "5.1.1"},
	}
	id, err := db.RecordBounce(ctx, Bounce{Received: t0, QueueID: "ABC", Verdict: VerdictActed, Report: "{}"}, ban)
	if err != nil || id == 0 {
		t.Fatalf("record: %d, %v", id, err)
	}
	// The same bounce again queues nothing new.
	if _, err := db.RecordBounce(ctx, Bounce{Received: t0, QueueID: "DEF", Verdict: VerdictActed, Report: "{}"}, ban); err != nil {
		t.Fatal(err)
	}
	due, err := db.DueActions(ctx, t0, 10)
	if err != nil || len(due) != 2 {
		t.Fatalf("due = %+v, %v", due, err)
	}
	if err := db.MarkFailed(ctx, due[0].ID, errors.New("db down"), t0.Add(time.Minute)); err != nil {
		t.Fatal(err)
	}
	if err := db.MarkApplied(ctx, due[1].ID, t0, ""); err != nil {
		t.Fatal(err)
	}
	if due, _ := db.DueActions(ctx, t0, 10); len(due) != 0 {
		t.Fatalf("due after failure = %+v", due)
	}
	due, _ = db.DueActions(ctx, t0.Add(time.Minute), 10)
	if len(due) != 1 || due[0].Attempts != 1 || due[0].LastError != "db down" {
		t.Fatalf("retry = %+v", due)
	}
	if err := db.MarkApplied(ctx, due[0].ID, t0.Add(time.Minute), ""); err != nil {
		t.Fatal(err)
	}

	dis, err := db.DisabledAccounts(ctx)
	if err != nil || len(dis) != 1 || dis[0].Username != "vandal" || dis[0].State != Applied || dis[0].QueueID != "ABC" {
		t.Fatalf("disabled = %+v, %v", dis, err)
	}

	undo, err := db.Restore(ctx, 7, "false positive", t0.Add(time.Hour))
	if err != nil || len(undo) != 2 {
		t.Fatalf("restore = %+v, %v", undo, err)
	}
	if dis, _ := db.DisabledAccounts(ctx); len(dis) != 0 {
		t.Fatalf("still disabled: %+v", dis)
	}
	reg, _ := db.Registration(ctx, 7)
	if ok, err := db.Allowed(ctx, reg); err != nil || !ok {
		t.Fatalf("restored account not allow-listed: %v", err)
	}
	due, _ = db.DueActions(ctx, t0.Add(time.Hour), 10)
	if len(due) != 2 || due[0].Kind != UnbanAccount || due[1].Kind != UnbanIP {
		t.Fatalf("unbans = %+v", due)
	}
	counts, err := db.CountBounces(ctx)
	if err != nil || counts[VerdictActed] != 2 {
		t.Fatalf("counts = %v, %v", counts, err)
	}
}

func TestPruneKeepsAccountsWithActions(t *testing.T) {
	ctx := context.Background()
	db := openTest(t)
	old := t0.Add(-60 * 24 * time.Hour)
	seed(t, db,
		Registration{UserID: 1, Username: "old", Email: "o@x", Created: old, Synced: t0},
		Registration{UserID: 2, Username: "oldbanned", Email: "b@x", Created: old, Synced: t0},
		Registration{UserID: 3, Username: "new", Email: "n@x", Created: t0, Synced: t0},
	)
	if _, err := db.RecordBounce(ctx, Bounce{Received: t0, Verdict: VerdictActed, Report: "{}"},
		[]Action{{UserID: 2, Kind: BanAccount, Target: UserTarget(2)}}); err != nil {
		t.Fatal(err)
	}
	var n int64
	err := db.Tx(ctx, func(tx *Tx) (err error) {
		n, err = tx.PruneBefore(ctx, t0.Add(-30*24*time.Hour))
		return err
	})
	if err != nil || n != 1 {
		t.Fatalf("pruned %d, %v", n, err)
	}
	if c, _ := db.CountRegistrations(ctx); c != 2 {
		t.Fatalf("left %d", c)
	}
}

// Two processes (serve and sync) write at once: with WAL, the busy timeout
// and IMMEDIATE transactions, neither sees SQLITE_BUSY.
func TestConcurrentWriters(t *testing.T) {
	ctx := context.Background()
	path := filepath.Join(t.TempDir(), "r.db")
	a, err := Open(ctx, path)
	if err != nil {
		t.Fatal(err)
	}
	defer a.Close()
	b, err := Open(ctx, path)
	if err != nil {
		t.Fatal(err)
	}
	defer b.Close()
	var wg sync.WaitGroup
	errs := make(chan error, 400)
	for w := 0; w < 4; w++ {
		wg.Add(1)
		go func(w int) {
			defer wg.Done()
			for i := 0; i < 50; i++ {
				db := a
				if w%2 == 1 {
					db = b
				}
				id := int64(w*1000 + i)
				errs <- db.Tx(ctx, func(tx *Tx) error {
					return tx.UpsertRegistration(ctx, Registration{UserID: id, Username: UserTarget(id), Email: "x@y", Created: t0})
				})
				_, err := db.RecordBounce(ctx, Bounce{Received: t0, Verdict: VerdictNoMatch, Report: "{}"}, nil)
				errs <- err
			}
		}(w)
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		if err != nil {
			t.Fatal(err)
		}
	}
	if n, _ := a.CountRegistrations(ctx); n != 200 {
		t.Fatalf("registrations = %d", n)
	}
}

// Two sign-ups from one IP: the IP ban is queued once, under the first. Restoring
// the second must still lift it.
func TestRestoreLiftsSharedIPBan(t *testing.T) {
	ctx := context.Background()
	db := openTest(t)
	seed(t, db,
		Registration{UserID: 42, Username: "bot", Email: "bot@x.example", Created: t0, Synced: t0},
		Registration{UserID: 43, Username: "real", Email: "real@x.example", Created: t0, Synced: t0},
	)
	err := db.Tx(ctx, func(tx *Tx) error {
		for _, name := range []string{"bot", "real"} {
			if _, err := tx.SetIP(ctx, name, "198.51.100.4", "combined"); err != nil {
				return err
			}
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	for _, id := range []int64{42, 43} {
		_, err := db.RecordBounce(ctx, Bounce{Received: t0, Verdict: VerdictActed, Report: "{}"}, []Action{
			{UserID: id, Kind: BanAccount, Target: UserTarget(id)},
			{UserID: id, Kind: BanIP, Target: "198.51.100.4"},
		})
		if err != nil {
			t.Fatal(err)
		}
	}
	undo, err := db.Restore(ctx, 43, "false positive", t0)
	if err != nil {
		t.Fatal(err)
	}
	kinds := map[ActionKind]string{}
	for _, a := range undo {
		kinds[a.Kind] = a.Target
	}
	if kinds[UnbanAccount] != "43" || kinds[UnbanIP] != "198.51.100.4" {
		t.Fatalf("restore queued %+v; want the account and the shared IP lifted", undo)
	}
}

func TestNewRegistryIsNotWorldReadable(t *testing.T) {
	path := filepath.Join(t.TempDir(), "r.db")
	db, err := Open(context.Background(), path)
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	if err := db.SetState(context.Background(), "k", "v"); err != nil {
		t.Fatal(err)
	}
	for _, p := range []string{path, path + "-wal"} {
		fi, err := os.Stat(p)
		if err != nil {
			t.Fatal(err)
		}
		if fi.Mode().Perm()&0o007 != 0 {
			t.Errorf("%s has mode %v; want no access for others", p, fi.Mode().Perm())
		}
	}
}

func TestPruneJournalKeepsEvidenceOfBans(t *testing.T) {
	ctx := context.Background()
	db := openTest(t)
	old, recent := t0.Add(-60*24*time.Hour), t0
	if err := db.RecordSends(ctx, []Send{{Recipient: "a@x", Sent: old}, {Recipient: "b@x", Sent: recent}}); err != nil {
		t.Fatal(err)
	}
	evidence, err := db.RecordBounce(ctx, Bounce{Received: old, Verdict: VerdictActed, Report: "{}"},
		[]Action{{UserID: 1, Kind: BanAccount, Target: "1"}})
	if err != nil {
		t.Fatal(err)
	}
	stale, _ := db.RecordBounce(ctx, Bounce{Received: old, Verdict: VerdictNoMatch, Report: "{}"}, nil)
	fresh, _ := db.RecordBounce(ctx, Bounce{Received: recent, Verdict: VerdictNoMatch, Report: "{}"}, nil)
	var n int64
	err = db.Tx(ctx, func(tx *Tx) (err error) {
		n, err = tx.PruneJournal(ctx, t0.Add(-30*24*time.Hour))
		return err
	})
	if err != nil || n != 2 {
		t.Fatalf("pruned %d rows, %v; want the old send and the old unmatched bounce", n, err)
	}
	for id, want := range map[int64]bool{evidence: true, stale: false, fresh: true} {
		_, err := db.Bounce(ctx, id)
		if got := err == nil; got != want {
			t.Errorf("bounce %d kept = %v; want %v (%v)", id, got, want, err)
		}
	}
	if ok, _ := db.SentTo(ctx, "a@x", old.Add(-time.Hour)); ok {
		t.Error("the old send is still recorded")
	}
	if ok, _ := db.SentTo(ctx, "b@x", recent.Add(-time.Hour)); !ok {
		t.Error("the recent send was pruned")
	}
}
