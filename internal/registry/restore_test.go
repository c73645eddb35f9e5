package registry

import (
	"context"
	"fmt"
	"testing"
	"time"
)

// restoreSharedIP bans bot (42) and real (43), who signed up from one
// address, and has the admin restore real.
func restoreSharedIP(t *testing.T) *DB {
	t.Helper()
	ctx := context.Background()
	db := openTest(t)
	seed(t, db,
		Registration{UserID: 42, Username: "bot", Email: "bot@x.example", Created: t0, Synced: t0},
		Registration{UserID: 43, Username: "real", Email: "real@x.example", Created: t0, Synced: t0},
	)
	if err := db.Tx(ctx, func(tx *Tx) error {
		for _, name := range []string{"bot", "real"} {
			if _, err := tx.SetIP(ctx, name, "198.51.100.4", "combined-log"); err != nil {
				return err
			}
		}
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	for _, id := range []int64{43, 42} {
		if _, err := db.RecordBounce(ctx, Bounce{Received: t0, Verdict: VerdictActed, Report: "{}"}, []Action{
			{UserID: id, Kind: BanAccount, Target: UserTarget(id), Reason: "bouncemilter: bounced"},
			{UserID: id, Kind: BanIP, Target: "198.51.100.4", Reason: "bouncemilter: bounced"},
		}); err != nil {
			t.Fatal(err)
		}
	}
	due, err := db.DueActions(ctx, t0, 100)
	if err != nil {
		t.Fatal(err)
	}
	for _, a := range due {
		if err := db.MarkApplied(ctx, a.ID, t0, ""); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := db.Restore(ctx, 43, "a real person", t0.Add(time.Hour)); err != nil {
		t.Fatal(err)
	}
	return db
}

// dueBans returns the bans of ip due by a day after t0.
func dueBans(t *testing.T, db *DB, ip string) []Action {
	t.Helper()
	due, err := db.DueActions(context.Background(), t0.Add(24*time.Hour), 100)
	if err != nil {
		t.Fatal(err)
	}
	var out []Action
	for _, a := range due {
		if a.Kind == BanIP && a.Target == ip {
			out = append(out, a)
		}
	}
	return out
}

// The IP whose ban a restore lifted, because a real person uses it, is
// not banned again by anything bouncemilter learns later about another
// sign-up from it: a late bounce, a new link from the web log, a peer's
// feed. The other sign-up's account ban still stands.
func TestRestoredIPIsNotBannedAgain(t *testing.T) {
	ctx := context.Background()
	t.Run("late bounce", func(t *testing.T) {
		db := restoreSharedIP(t)
		if _, err := db.RecordBounce(ctx, Bounce{Received: t0.Add(2 * time.Hour), Verdict: VerdictActed, Report: "{}"}, []Action{
			{UserID: 42, Kind: BanAccount, Target: UserTarget(42), Reason: "bouncemilter: again"},
			{UserID: 42, Kind: BanIP, Target: "198.51.100.4", Reason: "bouncemilter: again"},
		}); err != nil {
			t.Fatal(err)
		}
		if got := dueBans(t, db, "198.51.100.4"); len(got) != 0 {
			t.Errorf("the restored IP is banned again: %+v", got)
		}
	})
	t.Run("link", func(t *testing.T) {
		db := restoreSharedIP(t)
		var queued bool
		if err := db.Tx(ctx, func(tx *Tx) error {
			if _, err := tx.SetIP(ctx, "bot", "198.51.100.4", "signup-log"); err != nil {
				return err
			}
			var err error
			queued, err = tx.QueueLinkedIPBan(ctx, "bot", "198.51.100.4", t0.Add(2*time.Hour))
			return err
		}); err != nil {
			t.Fatal(err)
		}
		if queued || len(dueBans(t, db, "198.51.100.4")) != 0 {
			t.Error("the restored IP is banned again by a link")
		}
	})
	t.Run("feed", func(t *testing.T) {
		db := restoreSharedIP(t)
		ok, err := db.BanFromFeed(ctx, "198.51.100.4", "bouncemilter: listed by peers", "a.example", t0.Add(30*24*time.Hour), t0.Add(2*time.Hour))
		if err != nil {
			t.Fatal(err)
		}
		if ok || len(dueBans(t, db, "198.51.100.4")) != 0 {
			t.Error("the restored IP is banned again from a feed")
		}
	})
	t.Run("other IPs", func(t *testing.T) {
		db := restoreSharedIP(t)
		if _, err := db.RecordBounce(ctx, Bounce{Received: t0.Add(2 * time.Hour), Verdict: VerdictActed, Report: "{}"}, []Action{
			{UserID: 42, Kind: BanIP, Target: "198.51.100.5", Reason: "bouncemilter: bounced"},
		}); err != nil {
			t.Fatal(err)
		}
		if len(dueBans(t, db, "198.51.100.5")) != 1 {
			t.Error("another IP is not banned")
		}
	})
}

// Allow-listing a user, an address or an IP cancels the bans still
// waiting for them (MediaGoblin down, say): the worker does not read the
// allow-list, and "protected from every future action" must not depend on
// whether the bans were applied yet. The IP protects the sign-ups linked
// to it: their account bans go too.
func TestAllowCancelsWaitingBans(t *testing.T) {
	ctx := context.Background()
	for _, tc := range []struct {
		kind  AllowKind
		value string
	}{{AllowUser, "u"}, {AllowEmail, "U@X.example"}, {AllowIP, "198.51.100.9"}} {
		t.Run(string(tc.kind), func(t *testing.T) {
			db := openTest(t)
			seed(t, db, Registration{UserID: 7, Username: "u", Email: "u@x.example", Created: t0, Synced: t0},
				Registration{UserID: 8, Username: "other", Email: "other@x.example", Created: t0, Synced: t0})
			if err := db.Tx(ctx, func(tx *Tx) error {
				_, err := tx.SetIP(ctx, "u", "198.51.100.9", "signup-log")
				return err
			}); err != nil {
				t.Fatal(err)
			}
			for _, id := range []int64{7, 8} {
				ip := "198.51.100.9"
				if id == 8 {
					ip = "198.51.100.8"
				}
				if _, err := db.RecordBounce(ctx, Bounce{Received: t0, Verdict: VerdictActed, Report: "{}"}, []Action{
					{UserID: id, Kind: BanAccount, Target: UserTarget(id), Reason: "bouncemilter: bounced"},
					{UserID: id, Kind: BanIP, Target: ip, Reason: "bouncemilter: bounced"},
				}); err != nil {
					t.Fatal(err)
				}
			}
			if err := db.Allow(ctx, tc.kind, tc.value, "office", t0.Add(time.Minute)); err != nil {
				t.Fatal(err)
			}
			due, err := db.DueActions(ctx, t0.Add(24*time.Hour), 100)
			if err != nil {
				t.Fatal(err)
			}
			var left []string
			for _, a := range due {
				if a.Kind == BanAccount || a.Kind == BanIP {
					left = append(left, string(a.Kind)+" "+a.Target)
				}
			}
			if got, want := fmt.Sprint(left), "[ban-account 8 ban-ip 198.51.100.8]"; got != want {
				t.Errorf("bans due after allowing %s %s: %s, want %s", tc.kind, tc.value, got, want)
			}
		})
	}
}

// A restore lifts its bans at once, from another process, while the
// milter's worker may be applying one of them: its unban can run before
// the ban lands. The ban, marked applied after it was cancelled, gets its
// unban queued again, so that it does not stay in force.
func TestBanAppliedAfterItsCancellation(t *testing.T) {
	ctx := context.Background()
	db := openTest(t)
	seed(t, db, Registration{UserID: 43, Username: "real", Email: "real@x.example", Created: t0, Synced: t0, IP: "198.51.100.4"})
	if _, err := db.RecordBounce(ctx, Bounce{Received: t0, Verdict: VerdictActed, Report: "{}"}, []Action{
		{UserID: 43, Kind: BanAccount, Target: UserTarget(43), Reason: "bouncemilter: bounced"},
		{UserID: 43, Kind: BanIP, Target: "198.51.100.4", Reason: "bouncemilter: bounced"},
	}); err != nil {
		t.Fatal(err)
	}
	bans, err := db.DueActions(ctx, t0, 10) // the worker takes them
	if err != nil || len(bans) != 2 {
		t.Fatalf("due = %v, %v", bans, err)
	}
	unbans, err := db.Restore(ctx, 43, "a real person", t0.Add(time.Second))
	if err != nil {
		t.Fatal(err)
	}
	for _, u := range unbans { // the restore applies its unbans at once
		if err := db.MarkApplied(ctx, u.ID, t0.Add(time.Second), ""); err != nil {
			t.Fatal(err)
		}
	}
	for _, b := range bans { // then the worker's bans land
		if err := db.MarkApplied(ctx, b.ID, t0.Add(2*time.Second), ""); err != nil {
			t.Fatal(err)
		}
	}
	due, err := db.DueActions(ctx, t0.Add(time.Hour), 10)
	if err != nil {
		t.Fatal(err)
	}
	var got []string
	for _, a := range due {
		got = append(got, string(a.Kind)+" "+a.Target)
	}
	if want := "[unban-account 43 unban-ip 198.51.100.4]"; fmt.Sprint(got) != want {
		t.Errorf("due after the late bans = %v, want %s", got, want)
	}
	acts, _ := db.Actions(ctx, 43)
	for _, a := range acts[:2] {
		if a.State != Cancelled {
			t.Errorf("%s %s is %s, want it still cancelled", a.Kind, a.Target, a.State)
		}
	}
}
