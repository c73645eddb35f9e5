package registry

import (
	"context"
	"testing"
	"time"
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
	// The office sign-up's bounce came before its allow-listed IP was
	// linked: had the link come first, nothing would have been done, so the
	// account ban is lifted.
	office, err := db.Actions(ctx, 4)
	if err != nil {
		t.Fatal(err)
	}
	if len(office) != 2 || office[0].Kind != BanAccount || office[0].State != Cancelled ||
		office[1].Kind != UnbanAccount || office[1].State != Pending || office[1].Target != UserTarget(4) {
		t.Errorf("actions of the office sign-up = %+v", office)
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
	// The bot is banned, then deleted, and SQLite gives its id to the
	// next sign-up, whose mail the milter copies before any sync: nothing
	// of the bot becomes the new account's.
	if _, err := db.RecordBounce(ctx, Bounce{Received: t0, Verdict: VerdictActed, Report: "{}"},
		[]Action{{UserID: 18, Kind: BanAccount, Target: UserTarget(18), Reason: "bounced"}}); err != nil {
		t.Fatal(err)
	}
	later := t0.Add(time.Hour)
	if err := db.StoreRegistrations(ctx, []Registration{{UserID: 18, Username: "real", Email: "real@example.net", Created: later, Synced: later}}); err != nil {
		t.Fatal(err)
	}
	if reg, err := db.Registration(ctx, 18); err != nil || reg.Username != "real" || reg.IP != "" {
		t.Errorf("the new account under id 18: %+v, %v; want real, with no IP", reg, err)
	}
	if acts, err := db.Actions(ctx, 18); err != nil || len(acts) != 0 {
		t.Errorf("actions of the new account: %+v, %v; want none", acts, err)
	}
	due, err := db.DueActions(ctx, later, 10)
	if err != nil {
		t.Fatal(err)
	}
	for _, a := range due {
		if a.Kind == BanAccount || a.Kind == BanIP {
			t.Errorf("the bot's ban is still due: %+v", a)
		}
	}
}

// The handler read the registration before sync linked its IP, and sync
// looked for the account ban before the bounce was journalled: the bounce's
// own transaction sees the link and queues the IP ban.
func TestRecordBounceQueuesIPBanOfLinkedSignup(t *testing.T) {
	ctx := context.Background()
	db := openTest(t)
	seed(t, db, Registration{UserID: 1, Username: "bot", Email: "bot@nowhere.example", Created: t0, Synced: t0})
	if err := db.Tx(ctx, func(tx *Tx) error {
		queued, err := tx.QueueLinkedIPBan(ctx, "bot", "192.0.2.1", t0) // no bounce yet
		if queued {
			t.Error("an IP ban queued before any bounce")
		}
		if err != nil {
			return err
		}
		_, err = tx.SetIP(ctx, "bot", "192.0.2.1", "signup-log")
		return err
	}); err != nil {
		t.Fatal(err)
	}
	// The bounce's actions, as decided from the registration read before
	// the link: no IP.
	if _, err := db.RecordBounce(ctx, Bounce{Received: t0, Verdict: VerdictActed, Report: "{}"},
		[]Action{{UserID: 1, Kind: BanAccount, Target: UserTarget(1), Reason: "bounced"}}); err != nil {
		t.Fatal(err)
	}
	acts, err := db.Actions(ctx, 1)
	if err != nil {
		t.Fatal(err)
	}
	if len(acts) != 2 || acts[1].Kind != BanIP || acts[1].Target != "192.0.2.1" || acts[1].BounceID != acts[0].BounceID {
		t.Errorf("actions = %+v, want the account ban and a ban of 192.0.2.1", acts)
	}
	// A bounce that names the IP itself queues it once.
	seed(t, db, Registration{UserID: 2, Username: "bot2", Email: "bot2@nowhere.example", Created: t0, Synced: t0})
	if err := db.Tx(ctx, func(tx *Tx) error { _, err := tx.SetIP(ctx, "bot2", "192.0.2.2", "signup-log"); return err }); err != nil {
		t.Fatal(err)
	}
	if _, err := db.RecordBounce(ctx, Bounce{Received: t0, Verdict: VerdictActed, Report: "{}"}, []Action{
		{UserID: 2, Kind: BanAccount, Target: UserTarget(2), Reason: "bounced"},
		{UserID: 2, Kind: BanIP, Target: "192.0.2.2", Reason: "bounced"},
	}); err != nil {
		t.Fatal(err)
	}
	if acts, _ := db.Actions(ctx, 2); len(acts) != 2 {
		t.Errorf("actions of bot2 = %+v, want one IP ban", acts)
	}
	// Linked meanwhile to an allow-listed IP: the account ban the handler
	// decided without the IP is not queued.
	seed(t, db, Registration{UserID: 3, Username: "office", Email: "office@nowhere.example", Created: t0, Synced: t0})
	if err := db.Allow(ctx, AllowIP, "192.0.2.3", "office NAT", t0); err != nil {
		t.Fatal(err)
	}
	if err := db.Tx(ctx, func(tx *Tx) error { _, err := tx.SetIP(ctx, "office", "192.0.2.3", "signup-log"); return err }); err != nil {
		t.Fatal(err)
	}
	id, err := db.RecordBounce(ctx, Bounce{Received: t0, Verdict: VerdictActed, Report: "{}"},
		[]Action{{UserID: 3, Kind: BanAccount, Target: UserTarget(3), Reason: "bounced"}})
	if err != nil {
		t.Fatal(err)
	}
	if acts, _ := db.Actions(ctx, 3); len(acts) != 0 {
		t.Errorf("actions of the office sign-up = %+v, want none", acts)
	}
	if b, err := db.Bounce(ctx, id); err != nil || b.Verdict != VerdictIneligible {
		t.Errorf("bounce journalled %s, %q (%v); want it ineligible", b.Verdict, b.Detail, err)
	}
}

// A ban of an address that the web log no longer links to the sign-up is
// lifted, unless another banned sign-up is still linked to that address.
func TestWithdrawIPBan(t *testing.T) {
	ctx := context.Background()
	db := openTest(t)
	seed(t, db,
		Registration{UserID: 1, Username: "bot", Email: "bot@nowhere.example", IP: "192.0.2.1", Created: t0, Synced: t0},
		Registration{UserID: 2, Username: "bot2", Email: "bot2@nowhere.example", IP: "192.0.2.2", Created: t0, Synced: t0},
		Registration{UserID: 3, Username: "bot3", Email: "bot3@nowhere.example", IP: "192.0.2.2", Created: t0, Synced: t0},
	)
	if err := db.Tx(ctx, func(tx *Tx) error {
		for name, ip := range map[string]string{"bot": "192.0.2.1", "bot2": "192.0.2.2", "bot3": "192.0.2.2"} {
			if _, err := tx.SetIP(ctx, name, ip, "combined-log"); err != nil {
				return err
			}
		}
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	for _, u := range []struct {
		id int64
		ip string
	}{{1, "192.0.2.1"}, {2, "192.0.2.2"}, {3, "192.0.2.2"}} {
		if _, err := db.RecordBounce(ctx, Bounce{Received: t0, Verdict: VerdictActed, Report: "{}"}, []Action{
			{UserID: u.id, Kind: BanAccount, Target: UserTarget(u.id), Reason: "bounced"},
			{UserID: u.id, Kind: BanIP, Target: u.ip, Reason: "bounced"},
		}); err != nil {
			t.Fatal(err)
		}
	}
	acts, _ := db.Actions(ctx, 1)
	if err := db.MarkApplied(ctx, acts[1].ID, t0, ""); err != nil {
		t.Fatal(err)
	}
	withdraw := func(name, ip string) bool {
		t.Helper()
		var lifted bool
		if err := db.Tx(ctx, func(tx *Tx) error {
			var err error
			lifted, err = tx.WithdrawIPBan(ctx, name, ip, 64, t0)
			return err
		}); err != nil {
			t.Fatal(err)
		}
		return lifted
	}
	if !withdraw("bot", "192.0.2.1") {
		t.Error("the ban of bot's former address was not lifted")
	}
	acts, _ = db.Actions(ctx, 1)
	if len(acts) != 3 || acts[1].State != Undone || acts[2].Kind != UnbanIP || acts[2].Target != "192.0.2.1" || acts[2].State != Pending {
		t.Errorf("actions of bot = %+v", acts)
	}
	// bot3's own bounce still justifies a ban of 192.0.2.2 (queued once,
	// under bot2).
	if withdraw("bot2", "192.0.2.2") {
		t.Error("the ban of 192.0.2.2 was lifted while bot3 is still linked to it")
	}
	if withdraw("bot", "192.0.2.9") {
		t.Error("a ban of an address never banned was lifted")
	}
}

// An address banned, restored, banned again and restored again gets its
// second unban: an unban applied long ago is history, not a duplicate.
func TestSecondUnbanOfOneAddress(t *testing.T) {
	ctx := context.Background()
	db := openTest(t)
	queue := func(a Action) int64 {
		t.Helper()
		var id int64
		if err := db.Tx(ctx, func(tx *Tx) error {
			var err error
			id, err = tx.Queue(ctx, a, t0)
			return err
		}); err != nil {
			t.Fatal(err)
		}
		return id
	}
	for round := 1; round <= 2; round++ {
		ban := queue(Action{UserID: int64(round), Kind: BanIP, Target: "192.0.2.7", Reason: "bounced"})
		if ban == 0 {
			t.Fatalf("round %d: ban not queued", round)
		}
		if err := db.MarkApplied(ctx, ban, t0, ""); err != nil {
			t.Fatal(err)
		}
		// Lifted as restore lifts it: undone, and an unban queued.
		var unban int64
		if err := db.Tx(ctx, func(tx *Tx) error {
			undo, err := tx.liftBan(ctx, Action{ID: ban, State: Applied, Kind: BanIP, Target: "192.0.2.7"}, int64(round), "restored", t0)
			unban = undo.ID
			return err
		}); err != nil {
			t.Fatal(err)
		}
		if unban == 0 {
			t.Fatalf("round %d: unban not queued", round)
		}
		if err := db.MarkApplied(ctx, unban, t0, ""); err != nil {
			t.Fatal(err)
		}
	}
}

// A ban whose link the web log withdraws is not lifted through the banner
// while another ban in force covers the network the banner grouped it in:
// the banner would lift that network, setting free the other sign-up's bot.
// Its journal entry is ended all the same.
func TestWithdrawIPBanKeepsSharedNetwork(t *testing.T) {
	for _, tc := range []struct {
		v6bits    int
		wantUnban bool
	}{{64, false}, {0, true}} {
		ctx := context.Background()
		db := openTest(t)
		seed(t, db,
			Registration{UserID: 1, Username: "bot", Email: "bot@nowhere.example", Created: t0, Synced: t0},
			Registration{UserID: 2, Username: "bot2", Email: "bot2@nowhere.example", Created: t0, Synced: t0},
		)
		ips := map[int64]string{1: "2001:db8:1:2::a", 2: "2001:db8:1:2::b"}
		for id, name := range map[int64]string{1: "bot", 2: "bot2"} {
			if err := db.Tx(ctx, func(tx *Tx) error { _, err := tx.SetIP(ctx, name, ips[id], "combined-log"); return err }); err != nil {
				t.Fatal(err)
			}
			if _, err := db.RecordBounce(ctx, Bounce{Received: t0, Verdict: VerdictActed, Report: "{}"}, []Action{
				{UserID: id, Kind: BanAccount, Target: UserTarget(id), Reason: "bounced"},
				{UserID: id, Kind: BanIP, Target: ips[id], Reason: "bounced"},
			}); err != nil {
				t.Fatal(err)
			}
			acts, _ := db.Actions(ctx, id)
			if err := db.MarkApplied(ctx, acts[1].ID, t0, "2001:db8:1:2::/64"); err != nil {
				t.Fatal(err)
			}
		}
		if err := db.Tx(ctx, func(tx *Tx) error {
			_, err := tx.WithdrawIPBan(ctx, "bot", ips[1], tc.v6bits, t0)
			return err
		}); err != nil {
			t.Fatal(err)
		}
		acts, _ := db.Actions(ctx, 1)
		if acts[1].State != Undone {
			t.Errorf("v6bits %d: bot's IP ban is %s, want undone", tc.v6bits, acts[1].State)
		}
		queued := len(acts) == 3 && acts[2].Kind == UnbanIP
		if queued != tc.wantUnban {
			t.Errorf("v6bits %d: unban queued %v, want %v (actions %+v)", tc.v6bits, queued, tc.wantUnban, acts)
		}
	}
}
