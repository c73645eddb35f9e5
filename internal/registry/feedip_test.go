package registry

import (
	"context"
	"net/netip"
	"slices"
	"testing"
	"time"
)

// A restored IP listed by the peers in its IPv4-mapped spelling is the same
// address: Queue compares IPs unmapped, so the feed does not ban it again,
// nor does a bounce that names it so.
func TestRestoredIPInMappedSpelling(t *testing.T) {
	ctx := context.Background()
	db := restoreSharedIP(t) // 198.51.100.4 restored
	queued, err := db.BanFromFeed(ctx, "::ffff:198.51.100.4", "bouncemilter: listed", "a,b", t0.Add(48*time.Hour), t0.Add(2*time.Hour))
	if err != nil {
		t.Fatal(err)
	}
	if queued {
		t.Error("a feed listing ::ffff:198.51.100.4 queued a ban of the restored 198.51.100.4")
	}
	if _, err := db.RecordBounce(ctx, Bounce{Received: t0.Add(2 * time.Hour), Verdict: VerdictActed, Report: "{}"}, []Action{
		{UserID: 42, Kind: BanIP, Target: "::ffff:198.51.100.4", Reason: "bouncemilter: again"},
	}); err != nil {
		t.Fatal(err)
	}
	for _, ip := range []string{"198.51.100.4", "::ffff:198.51.100.4"} {
		if got := dueBans(t, db, ip); len(got) != 0 {
			t.Errorf("bans of %s queued: %+v", ip, got)
		}
	}
}

// A ban of an IP in its mapped spelling duplicates the pending ban of the
// address.
func TestMappedSpellingDuplicatesBan(t *testing.T) {
	ctx := context.Background()
	db := openTest(t)
	for _, ip := range []string{"192.0.2.9", "::ffff:192.0.2.9"} {
		if _, err := db.RecordBounce(ctx, Bounce{Received: t0, Verdict: VerdictActed, Report: "{}"}, []Action{
			{UserID: 1, Kind: BanIP, Target: ip, Reason: "bouncemilter: bounced"},
		}); err != nil {
			t.Fatal(err)
		}
	}
	due, err := db.DueActions(ctx, t0, 10)
	if err != nil {
		t.Fatal(err)
	}
	if len(due) != 1 || due[0].Target != "192.0.2.9" {
		t.Errorf("queued %+v; want one ban of 192.0.2.9", due)
	}
}

// AllowedIPs, which the banner must never cover, holds the IPs whose ban a
// restore lifted, not those of other unbans.
func TestAllowedIPsHoldRestoredIPs(t *testing.T) {
	ctx := context.Background()
	db := restoreSharedIP(t) // 198.51.100.4 restored
	if _, err := db.RecordBounce(ctx, Bounce{Received: t0, Verdict: VerdictActed, Report: "{}"}, []Action{
		{UserID: 50, Kind: BanIP, Target: "2001:db8:1:2::5", Reason: "bouncemilter: bounced"},
	}); err != nil {
		t.Fatal(err)
	}
	if err := db.Tx(ctx, func(tx *Tx) error {
		_, err := tx.Queue(ctx, Action{Kind: UnbanIP, Target: "203.0.113.8", Reason: "bouncemilter: no longer listed by enough peers"}, t0)
		return err
	}); err != nil {
		t.Fatal(err)
	}
	if err := db.Allow(ctx, AllowIP, "192.0.2.200", "office", t0); err != nil {
		t.Fatal(err)
	}
	got, err := db.AllowedIPs(ctx)
	if err != nil {
		t.Fatal(err)
	}
	want := []netip.Prefix{netip.MustParsePrefix("192.0.2.200/32"), netip.MustParsePrefix("198.51.100.4/32")}
	slices.SortFunc(got, func(a, b netip.Prefix) int { return a.Addr().Compare(b.Addr()) })
	if !slices.Equal(got, want) {
		t.Errorf("AllowedIPs = %v; want %v", got, want)
	}
}

// A feed ban whose network another ban still covers (this instance's own
// ban of a neighbour in the same /64) is forgotten when the listing goes,
// not lifted: lifting goes through the banner, which lifts the whole /64.
func TestUnbanFromFeedKeepsSharedNetwork(t *testing.T) {
	ctx := context.Background()
	for _, tc := range []struct {
		name     string
		own      string
		listed   string
		v6bits   int
		wantLift bool
	}{
		{"same /64", "2001:db8:1:2::5", "2001:db8:1:2::7", 64, false},
		{"another /64", "2001:db8:1:3::5", "2001:db8:1:2::7", 64, true},
		{"addresses alone", "2001:db8:1:2::5", "2001:db8:1:2::7", 128, true},
		{"IPv4 neighbour", "192.0.2.8", "192.0.2.7", 64, true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			db := openTest(t)
			if _, err := db.RecordBounce(ctx, Bounce{Received: t0, Verdict: VerdictActed, Report: "{}"}, []Action{
				{UserID: 7, Kind: BanIP, Target: tc.own, Reason: "bouncemilter: bounced"},
			}); err != nil {
				t.Fatal(err)
			}
			if ok, err := db.BanFromFeed(ctx, tc.listed, "bouncemilter: listed", "a,b", t0.Add(48*time.Hour), t0); err != nil || !ok {
				t.Fatalf("BanFromFeed = %v, %v", ok, err)
			}
			due, _ := db.DueActions(ctx, t0, 10)
			for _, a := range due {
				if err := db.MarkApplied(ctx, a.ID, t0, ""); err != nil {
					t.Fatal(err)
				}
			}
			lifted, err := db.UnbanFromFeed(ctx, tc.listed, "bouncemilter: no longer listed", tc.v6bits, t0.Add(time.Hour))
			if err != nil {
				t.Fatal(err)
			}
			due, _ = db.DueActions(ctx, t0.Add(time.Hour), 10)
			if lifted != tc.wantLift || (len(due) == 1) != tc.wantLift {
				t.Errorf("UnbanFromFeed = %v, queued %+v; want lifted %v", lifted, due, tc.wantLift)
			}
			bans, _ := db.FeedBans(ctx)
			if len(bans) != 0 {
				t.Errorf("feed bans left: %+v", bans)
			}
			var state ActionState
			if err := db.db.QueryRowContext(ctx, `SELECT state FROM actions WHERE kind = 'ban-ip' AND target = ?`, tc.listed).Scan(&state); err != nil {
				t.Fatal(err)
			}
			if state != Undone {
				t.Errorf("feed ban %s; want undone", state)
			}
			if err := db.db.QueryRowContext(ctx, `SELECT state FROM actions WHERE kind = 'ban-ip' AND target = ?`, tc.own).Scan(&state); err != nil {
				t.Fatal(err)
			}
			if state != Applied {
				t.Errorf("own ban %s; want applied", state)
			}
		})
	}
}
