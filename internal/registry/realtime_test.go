package registry

import (
	"context"
	"testing"
)

func TestQueueLinkedIPBan(t *testing.T) {
	ctx := context.Background()
	db := openTest(t)
	seed(t, db,
		Registration{UserID: 1, Username: "bot", Email: "bot@nowhere.example", Created: t0, Synced: t0},
		Registration{UserID: 2, Username: "quiet", Email: "quiet@nowhere.example", Created: t0, Synced: t0},
		Registration{UserID: 3, Username: "restored", Email: "restored@nowhere.example", Created: t0, Synced: t0},
		Registration{UserID: 4, Username: "office", Email: "office@nowhere.example", Created: t0, Synced: t0},
	)
	ban := func(user int64) {
		t.Helper()
		if _, err := db.RecordBounce(ctx, Bounce{Received: t0, Verdict: VerdictActed, Report: "{}"},
			[]Action{{UserID: user, Kind: BanAccount, Target: UserTarget(user), Reason: "bounced"}}); err != nil {
			t.Fatal(err)
		}
	}
	ban(1)
	ban(3)
	ban(4)
	if _, err := db.Restore(ctx, 3, "", t0); err != nil {
		t.Fatal(err)
	}
	if err := db.Allow(ctx, AllowIP, "192.0.2.4", "office NAT", t0); err != nil {
		t.Fatal(err)
	}
	link := func(name, ip string) bool {
		t.Helper()
		var queued bool
		if err := db.Tx(ctx, func(tx *Tx) error {
			var err error
			queued, err = tx.QueueLinkedIPBan(ctx, name, ip, t0)
			return err
		}); err != nil {
			t.Fatal(err)
		}
		return queued
	}
	for _, c := range []struct {
		name, ip string
		want     bool
	}{
		{"bot", "192.0.2.1", true},
		{"bot", "192.0.2.1", false},      // already queued
		{"quiet", "192.0.2.2", false},    // no bounce banned it
		{"restored", "192.0.2.3", false}, // the admin restored it
		{"office", "192.0.2.4", false},   // allow-listed IP
		{"nobody", "192.0.2.5", false},
	} {
		if got := link(c.name, c.ip); got != c.want {
			t.Errorf("QueueLinkedIPBan(%s, %s) = %v, want %v", c.name, c.ip, got, c.want)
		}
	}
	acts, err := db.Actions(ctx, 1)
	if err != nil {
		t.Fatal(err)
	}
	if len(acts) != 2 || acts[1].Kind != BanIP || acts[1].Target != "192.0.2.1" || acts[1].Reason != "bounced" ||
		acts[1].BounceID != acts[0].BounceID || acts[1].State != Pending {
		t.Errorf("actions of bot = %+v", acts)
	}
}

func TestSyncCursorAndStore(t *testing.T) {
	ctx := context.Background()
	db := openTest(t)
	if c, err := db.SyncCursor(ctx); err != nil || c != 0 {
		t.Fatalf("SyncCursor = %d, %v", c, err)
	}
	if err := db.SetState(ctx, StateSyncCursor, "17"); err != nil {
		t.Fatal(err)
	}
	if c, err := db.SyncCursor(ctx); err != nil || c != 17 {
		t.Fatalf("SyncCursor = %d, %v", c, err)
	}
	seed(t, db, Registration{UserID: 18, Username: "bot", Email: "bot@nowhere.example", Created: t0, Synced: t0})
	if err := db.Tx(ctx, func(tx *Tx) error { _, err := tx.SetIP(ctx, "bot", "192.0.2.1", "signup-log"); return err }); err != nil {
		t.Fatal(err)
	}
	if err := db.StoreRegistrations(ctx, []Registration{{UserID: 18, Username: "bot", Email: "bot@nowhere.example", Created: t0, Synced: t0}}); err != nil {
		t.Fatal(err)
	}
	reg, err := db.Registration(ctx, 18)
	if err != nil || reg.IP != "192.0.2.1" {
		t.Errorf("after StoreRegistrations: %+v, %v; want the IP kept", reg, err)
	}
}
