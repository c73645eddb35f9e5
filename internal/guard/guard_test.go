package guard

import (
	"context"
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/bouncemilter/bouncemilter/internal/bounce"
	"github.com/bouncemilter/bouncemilter/internal/feed"
	"github.com/bouncemilter/bouncemilter/internal/registry"
)

var now = time.Now().UTC().Truncate(time.Second)

func openRegistry(t *testing.T) *registry.DB {
	t.Helper()
	reg, err := registry.Open(context.Background(), filepath.Join(t.TempDir(), "registry.db"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { reg.Close() })
	return reg
}

// signUp stores a sign-up as sync (or the sign-up copy) would.
func signUp(t *testing.T, reg *registry.DB, r registry.Registration) {
	t.Helper()
	ctx := context.Background()
	if r.Created.IsZero() {
		r.Created = now.Add(-time.Minute)
	}
	r.Synced = now
	err := reg.Tx(ctx, func(tx *registry.Tx) error {
		if err := tx.UpsertRegistration(ctx, r); err != nil {
			return err
		}
		if r.IP != "" {
			_, err := tx.SetIP(ctx, r.Username, r.IP, "signup-log")
			return err
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
}

// bounced journals what an acted-on bounce of the sign-up's mail proved.
func bounced(t *testing.T, reg *registry.DB, r registry.Registration) {
	t.Helper()
	signUp(t, reg, r)
	acts := []registry.Action{{UserID: r.UserID, Kind: registry.BanAccount, Target: registry.UserTarget(r.UserID), Reason: "bounced"}}
	if r.IP != "" {
		acts = append(acts, registry.Action{UserID: r.UserID, Kind: registry.BanIP, Target: r.IP, Reason: "bounced"})
	}
	if _, err := reg.RecordBounce(context.Background(), registry.Bounce{Received: now.Add(-time.Hour), Verdict: registry.VerdictActed, Report: "{}"}, acts); err != nil {
		t.Fatal(err)
	}
}

// peersListing makes two instances that both proved addr bad, publishes
// their feeds over loopback HTTP, and pulls them into reg.
func peersListing(t *testing.T, reg *registry.DB, addrs ...string) *feed.Subscriber {
	t.Helper()
	ctx := context.Background()
	var peers []feed.Peer
	for _, name := range []string{"a.example", "b.example"} {
		dir := t.TempDir()
		peerReg := openRegistry(t)
		for i, addr := range addrs {
			bounced(t, peerReg, registry.Registration{UserID: int64(i + 1), Username: "bot" + registry.UserTarget(int64(i+1)), Email: addr, IP: "192.0.2.1"})
		}
		pub, err := feed.Keygen(filepath.Join(dir, "key"))
		if err != nil {
			t.Fatal(err)
		}
		key, err := feed.LoadKey(filepath.Join(dir, "key"))
		if err != nil {
			t.Fatal(err)
		}
		if _, err := feed.Export(ctx, peerReg, key, name, feed.DefaultTTL, filepath.Join(dir, "www"), now); err != nil {
			t.Fatal(err)
		}
		srv := httptest.NewServer(http.FileServer(http.Dir(filepath.Join(dir, "www"))))
		t.Cleanup(srv.Close)
		peers = append(peers, feed.Peer{Name: name, URL: srv.URL + "/feed.json", Key: pub, Weight: 1})
	}
	s := &feed.Subscriber{Peers: peers, Store: reg}
	if sum, err := s.Pull(ctx); err != nil || sum.Accepted != 2 {
		t.Fatalf("pull %v, %v", sum, err)
	}
	return s
}

func actionsOf(t *testing.T, reg *registry.DB, userID int64) []string {
	t.Helper()
	acts, err := reg.Actions(context.Background(), userID)
	if err != nil {
		t.Fatal(err)
	}
	var out []string
	for _, a := range acts {
		out = append(out, string(a.Kind)+" "+a.Target)
	}
	return out
}

func TestGuard(t *testing.T) {
	ctx := context.Background()
	srv := startDNS(t)
	res, err := NewResolver(srv.addr, 300*time.Millisecond)
	if err != nil {
		t.Fatal(err)
	}
	reg := openRegistry(t)
	sub := peersListing(t, reg, "listed@known.test", "real@known.test")
	// An earlier sign-up with this address bounced here.
	bounced(t, reg, registry.Registration{UserID: 100, Username: "oldbot", Email: "again@known.test", IP: "198.51.100.100", Created: now.Add(-2 * time.Hour)})
	g := &Guard{Journal: reg, Policy: bounce.DefaultPolicy(), Peers: sub, DNS: res}

	cases := []struct {
		name    string
		reg     registry.Registration
		stop    bool
		actions []string
		how     string
	}{
		{"null MX", registry.Registration{UserID: 1, Username: "b1", Email: "b1@nullmx.test", IP: "203.0.113.1"}, true,
			[]string{"ban-account 1", "ban-ip 203.0.113.1"}, "null-mx"},
		{"no records", registry.Registration{UserID: 2, Username: "b2", Email: "b2@empty.test", IP: "203.0.113.2"}, true,
			[]string{"ban-account 2", "ban-ip 203.0.113.2"}, "no-address-records"},
		{"no such domain", registry.Registration{UserID: 3, Username: "b3", Email: "b3@gone.test"}, true,
			[]string{"ban-account 3"}, "no-such-domain"},
		// The same address, the domain's case aside (a case variant of
		// the local part is another address: TestLookalikeBanProvesNothing).
		{"own bounce before", registry.Registration{UserID: 4, Username: "b4", Email: "again@KNOWN.test", IP: "203.0.113.4"}, true,
			[]string{"ban-account 4", "ban-ip 203.0.113.4"}, KnownOwn},
		{"address hash listed by peers", registry.Registration{UserID: 5, Username: "b5", Email: "listed@known.test", IP: "203.0.113.5"}, true,
			[]string{"ban-account 5", "ban-ip 203.0.113.5"}, KnownPeers},
		// A verified user whose address peers list: the address works,
		// the listing is wrong. The mail goes, nothing is done.
		{"listed but verified", registry.Registration{UserID: 6, Username: "real", Email: "real@known.test", Verified: true}, false, nil, ""},
		// A domain without mail is a fact: the mail is stopped even for
		// a verified account, which is never acted on.
		{"null MX, verified", registry.Registration{UserID: 7, Username: "old", Email: "old@nullmx.test", Verified: true}, true, nil, "null-mx"},
		{"null MX, too old", registry.Registration{UserID: 8, Username: "older", Email: "older@nullmx.test", Created: now.Add(-30 * 24 * time.Hour)}, true, nil, "null-mx"},
		{"deliverable", registry.Registration{UserID: 9, Username: "b9", Email: "b9@good.test"}, false, nil, ""},
		{"resolver fails", registry.Registration{UserID: 10, Username: "b10", Email: "b10@broken.test"}, false, nil, ""},
		{"resolver slow", registry.Registration{UserID: 11, Username: "b11", Email: "b11@slow.test"}, false, nil, ""},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			signUp(t, reg, tc.reg)
			start := time.Now()
			stop, err := g.Stop(ctx, bounce.Envelope{QueueID: "Q" + registry.UserTarget(tc.reg.UserID), Sender: "notice@media.example.org", Recipients: []string{tc.reg.Email}})
			if err != nil {
				t.Fatal(err)
			}
			if d := time.Since(start); d > time.Second {
				t.Errorf("Stop took %v", d)
			}
			if stop != tc.stop {
				t.Errorf("stop = %v; want %v", stop, tc.stop)
			}
			got := actionsOf(t, reg, tc.reg.UserID)
			if strings.Join(got, ",") != strings.Join(tc.actions, ",") {
				t.Errorf("actions %v; want %v", got, tc.actions)
			}
		})
	}
	// Each stop is journalled, with how the address was known.
	rows, err := reg.SQL().QueryContext(ctx, `SELECT queue_id, client, report FROM bounces WHERE verdict = 'stopped' ORDER BY id`)
	if err != nil {
		t.Fatal(err)
	}
	defer rows.Close()
	got := map[string]string{}
	for rows.Next() {
		var q, client, report string
		rows.Scan(&q, &client, &report)
		if !json.Valid([]byte(report)) {
			t.Errorf("report %q is not JSON", report)
		}
		got[q] = client
	}
	for _, tc := range cases {
		q := "Q" + registry.UserTarget(tc.reg.UserID)
		if want := registry.GuardClient(tc.how); tc.stop && got[q] != want {
			t.Errorf("%s journalled as %q; want %q", tc.name, got[q], want)
		}
		if !tc.stop && got[q] != "" {
			t.Errorf("%s journalled though the mail went", tc.name)
		}
	}
	// What the peers said is not this instance's to publish again; what
	// DNS and its own bounces proved is.
	addrs, _ := reg.ProvenAddresses(ctx)
	var proven []string
	for _, p := range addrs {
		proven = append(proven, p.Value)
	}
	if want := "again@known.test,b1@nullmx.test,b2@empty.test,b3@gone.test"; strings.Join(proven, ",") != want {
		t.Errorf("proven addresses %v; want %s", proven, want)
	}
}

// TestGuardSeveralRecipients: one recipient that may receive the mail
// lets it go, whole.
func TestGuardSeveralRecipients(t *testing.T) {
	srv := startDNS(t)
	res, _ := NewResolver(srv.addr, 300*time.Millisecond)
	reg := openRegistry(t)
	signUp(t, reg, registry.Registration{UserID: 1, Username: "b1", Email: "b1@nullmx.test"})
	g := &Guard{Journal: reg, Policy: bounce.DefaultPolicy(), DNS: res}
	stop, err := g.Stop(context.Background(), bounce.Envelope{Recipients: []string{"b1@nullmx.test", "x@good.test"}})
	if err != nil || stop {
		t.Errorf("Stop = %v, %v; want the mail to go", stop, err)
	}
	if got := actionsOf(t, reg, 1); len(got) != 0 {
		t.Errorf("actions %v", got)
	}
}

// A look-alike that bounced and was banned (Victim@, or Kim@ with a Kelvin
// sign, for victim@ and kim@) proves nothing of the real address: her
// verification mail goes, and nothing happens to her account.
func TestLookalikeBanProvesNothing(t *testing.T) {
	for _, tc := range []struct{ lookalike, real string }{
		{"Victim@nowhere.example", "victim@nowhere.example"},
		{"\u212aim@nowhere.example", "kim@nowhere.example"},
	} {
		t.Run(tc.real, func(t *testing.T) {
			ctx := context.Background()
			reg := openRegistry(t)
			bounced(t, reg, registry.Registration{UserID: 1, Username: "lookalike", Email: tc.lookalike, IP: "198.51.100.9"})
			signUp(t, reg, registry.Registration{UserID: 2, Username: "real", Email: tc.real, IP: "192.0.2.7"})
			g := &Guard{Journal: reg, Policy: bounce.Policy{Window: 48 * time.Hour, Skew: time.Minute}, Now: func() time.Time { return now }}
			stop, err := g.Stop(ctx, bounce.Envelope{QueueID: "Q1", Recipients: []string{tc.real}})
			if err != nil {
				t.Fatal(err)
			}
			if stop || len(actionsOf(t, reg, 2)) > 0 {
				t.Errorf("mail to %s stopped (%v) or her account acted on (%v) because %s bounced", tc.real, stop, actionsOf(t, reg, 2), tc.lookalike)
			}
			// The look-alike itself is still proven.
			if stop, err := g.Stop(ctx, bounce.Envelope{QueueID: "Q2", Recipients: []string{tc.lookalike}}); err != nil || !stop {
				t.Errorf("mail to the look-alike %s: stop %v, %v", tc.lookalike, stop, err)
			}
		})
	}
}

// Bots sign up with plausible made-up addresses at big providers. A year
// ago one used john.smith1987@gmail.example, which did not exist then: its
// bounce disabled the bot, and the admin later deleted the bot's account in
// MediaGoblin (sync keeps the row, its history "still counts as proven").
// Today a real John creates that mailbox and signs up. The proof never
// expires, so the guard discards his verification mail, disables his new
// account and bans his IP, on a year-old bounce of somebody else's mail.
func TestOldProofStopsNothing(t *testing.T) {
	ctx := context.Background()
	reg := openRegistry(t)
	const addr = "john.smith1987@gmail.example"
	yearAgo := now.Add(-400 * 24 * time.Hour)
	bot := registry.Registration{UserID: 42, Username: "jsmith87", Email: addr, Created: yearAgo, IP: "203.0.113.9"}
	signUp(t, reg, bot)
	id, err := reg.RecordBounce(ctx, registry.Bounce{Received: yearAgo, Verdict: registry.VerdictActed, Report: "{}"},
		[]registry.Action{{UserID: 42, Kind: registry.BanAccount, Target: "42", Reason: "bounced"}})
	if err != nil || id == 0 {
		t.Fatal(id, err)
	}
	acts, err := reg.Actions(ctx, 42)
	if err != nil {
		t.Fatal(err)
	}
	if err := reg.MarkApplied(ctx, acts[0].ID, yearAgo, ""); err != nil {
		t.Fatal(err)
	}
	// The admin deletes the banned bot; sync notices.
	if err := reg.Tx(ctx, func(tx *registry.Tx) error {
		_, err := tx.DeleteRegistration(ctx, 42, now.Add(-200*24*time.Hour))
		return err
	}); err != nil {
		t.Fatal(err)
	}

	// The real owner of the address signs up now (copied as his mail passes).
	signUp(t, reg, registry.Registration{UserID: 900, Username: "john", Email: addr, Created: now.Add(-time.Second), IP: "198.51.100.20"})
	g := &Guard{Journal: reg, Policy: bounce.DefaultPolicy(), Now: func() time.Time { return now }}
	stop, err := g.Stop(ctx, bounce.Envelope{QueueID: "7C2E01A0B4", Sender: "notice@media.example.org", Recipients: []string{addr}})
	if err != nil {
		t.Fatal(err)
	}
	if stop || len(actionsOf(t, reg, 900)) != 0 {
		t.Errorf("a year-old bounce of a deleted bot's mail stopped the real owner's verification mail: stop %v, actions for him %q", stop, actionsOf(t, reg, 900))
	}
}

// restoreAfterCheck is the registry, with the admin's accounts restore
// (another process) committing right after the guard read the allow-list
// and before its journal entry's commit.
type restoreAfterCheck struct {
	*registry.DB
	t *testing.T
}

func (j restoreAfterCheck) Allowed(ctx context.Context, reg registry.Registration) (bool, error) {
	ok, err := j.DB.Allowed(ctx, reg)
	if _, err := j.DB.Restore(ctx, reg.UserID, "she wrote to us", now); err != nil {
		j.t.Fatal(err)
	}
	return ok, err
}

// A sign-up restored while the guard decides on its verification mail:
// the journal drops its actions, and the mail goes.
func TestStopRestoredMeanwhile(t *testing.T) {
	ctx := context.Background()
	reg := openRegistry(t)
	const addr = "xk7bot@example.net"
	bounced(t, reg, registry.Registration{UserID: 1, Username: "bot1", Email: addr, IP: "192.0.2.1"})
	signUp(t, reg, registry.Registration{UserID: 2, Username: "newcomer", Email: addr, Created: now.Add(-time.Second), IP: "198.51.100.20"})
	g := &Guard{Journal: restoreAfterCheck{reg, t}, Policy: bounce.DefaultPolicy(), Now: func() time.Time { return now }}
	stop, err := g.Stop(ctx, bounce.Envelope{QueueID: "5B1C02A0F3", Recipients: []string{addr}})
	if err != nil || stop {
		t.Errorf("Stop = %v, %v; want the mail of a sign-up restored meanwhile to go", stop, err)
	}
	if got := actionsOf(t, reg, 2); len(got) != 0 {
		t.Errorf("actions for the restored sign-up: %v", got)
	}
}
