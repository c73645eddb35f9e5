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
