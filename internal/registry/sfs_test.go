package registry

import (
	"context"
	"testing"
	"time"
)

// sfsVandal journals a sign-up whose account and IP bans were applied on
// this instance's own evidence.
func sfsVandal(t *testing.T, db *DB, id int64, name, ip string) {
	t.Helper()
	ctx := context.Background()
	r := Registration{UserID: id, Username: name, Email: name + "@spam.example", Created: t0.Add(-time.Hour), Synced: t0}
	if err := db.Tx(ctx, func(tx *Tx) error {
		if err := tx.UpsertRegistration(ctx, r); err != nil {
			return err
		}
		_, err := tx.SetIP(ctx, name, ip, "signup-log")
		return err
	}); err != nil {
		t.Fatal(err)
	}
	if _, err := db.RecordBounce(ctx, Bounce{Received: t0, Verdict: VerdictActed, Report: "{}"}, []Action{
		{UserID: id, Kind: BanAccount, Target: UserTarget(id), Reason: "bounced"},
		{UserID: id, Kind: BanIP, Target: ip, Reason: "bounced"},
	}); err != nil {
		t.Fatal(err)
	}
	acts, err := db.Actions(ctx, id)
	if err != nil {
		t.Fatal(err)
	}
	for _, a := range acts {
		if err := db.MarkApplied(ctx, a.ID, t0, ""); err != nil {
			t.Fatal(err)
		}
	}
}

func unreportedIDs(t *testing.T, db *DB, now time.Time) []int64 {
	t.Helper()
	vs, err := db.Unreported(context.Background(), 10, now)
	if err != nil {
		t.Fatal(err)
	}
	var ids []int64
	for _, v := range vs {
		ids = append(ids, v.UserID)
	}
	return ids
}

// TestClaimReport: a claim keeps a sign-up from every other run until it
// is settled, released, or lapses; a restore or an allow-listing made
// after Unreported listed a sign-up makes ClaimReport refuse it.
func TestClaimReport(t *testing.T) {
	ctx := context.Background()
	db := openTest(t)
	sfsVandal(t, db, 1, "one", "203.0.113.1")
	sfsVandal(t, db, 2, "two", "203.0.113.2")
	sfsVandal(t, db, 3, "three", "203.0.113.3")
	sfsVandal(t, db, 4, "four", "203.0.113.4")
	now := t0.Add(time.Minute)
	if got := unreportedIDs(t, db, now); len(got) != 4 {
		t.Fatalf("unreported %v; want 1 to 4", got)
	}

	claim := func(id int64, at time.Time) bool {
		t.Helper()
		v, ok, err := db.ClaimReport(ctx, id, at)
		if err != nil {
			t.Fatal(err)
		}
		if ok && (v.UserID != id || v.IP == "" || v.Evidence == "") {
			t.Errorf("claimed %+v", v)
		}
		return ok
	}
	if !claim(1, now) {
		t.Fatal("first claim of 1 refused")
	}
	// Another run, as long as the claim holds: neither listed nor claimed.
	if claim(1, now.Add(time.Minute)) {
		t.Error("1 claimed twice")
	}
	if got := unreportedIDs(t, db, now.Add(time.Minute)); len(got) != 3 || got[0] != 2 {
		t.Errorf("unreported while 1 is claimed %v; want 2 3 4", got)
	}
	// A claim a crash left behind lapses: not within minutes, but in time.
	if claim(1, now.Add(sfsClaimTTL-time.Second)) {
		t.Error("claim of 1 lapsed before sfsClaimTTL")
	}
	later := now.Add(sfsClaimTTL + time.Second)
	if got := unreportedIDs(t, db, later); len(got) != 4 {
		t.Errorf("unreported after the claim lapsed %v; want 1 to 4", got)
	}
	if !claim(1, later) {
		t.Fatal("lapsed claim of 1 not taken over")
	}
	// Settled: never again.
	if err := db.Reported(ctx, Vandal{UserID: 1, Username: "one", IP: "203.0.113.1", Email: "one@spam.example"}, true, "", later); err != nil {
		t.Fatal(err)
	}
	var status string
	var n int
	if err := db.SQL().QueryRowContext(ctx, `SELECT status, count(*) FROM sfs_reports WHERE user_id = 1`).Scan(&status, &n); err != nil || status != "accepted" || n != 1 {
		t.Errorf("report of 1: %q ×%d, %v; want one accepted", status, n, err)
	}
	if claim(1, later.Add(2*sfsClaimTTL)) {
		t.Error("reported 1 claimed again")
	}

	// Released after a failure: the next run tries again.
	if !claim(2, now) {
		t.Fatal("claim of 2 refused")
	}
	if err := db.ReleaseReport(ctx, 2); err != nil {
		t.Fatal(err)
	}
	if !claim(2, now) {
		t.Error("released claim of 2 not taken again")
	}
	// Release never removes a settled report.
	if err := db.ReleaseReport(ctx, 1); err != nil {
		t.Fatal(err)
	}
	if claim(1, later.Add(2*sfsClaimTTL)) {
		t.Error("release removed the report of 1")
	}

	// Restored, or allow-listed, after Unreported listed them.
	if _, err := db.Restore(ctx, 3, "a real person", now); err != nil {
		t.Fatal(err)
	}
	if err := db.Allow(ctx, AllowIP, "203.0.113.4", "office NAT", now); err != nil {
		t.Fatal(err)
	}
	if claim(3, now) {
		t.Error("restored 3 claimed")
	}
	if claim(4, now) {
		t.Error("allow-listed 4 claimed")
	}
}
