package app

import (
	"bytes"
	"context"
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/bouncemilter/bouncemilter/internal/feed"
	"github.com/bouncemilter/bouncemilter/internal/registry"
)

// disable journals what an acted-on bounce of one sign-up proved.
func disable(t *testing.T, reg *registry.DB, id int64, name, email, ip string, when time.Time) {
	t.Helper()
	ctx := context.Background()
	err := reg.Tx(ctx, func(tx *registry.Tx) error {
		if err := tx.UpsertRegistration(ctx, registry.Registration{UserID: id, Username: name, Email: email, Created: when, Synced: when}); err != nil {
			return err
		}
		_, err := tx.SetIP(ctx, name, ip, "signup-log")
		return err
	})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := reg.RecordBounce(ctx, registry.Bounce{Received: when, Verdict: registry.VerdictActed, Report: "{}"}, []registry.Action{
		{UserID: id, Kind: registry.BanAccount, Target: registry.UserTarget(id), Reason: "bounced"},
		{UserID: id, Kind: registry.BanIP, Target: ip, Reason: "bounced"}}); err != nil {
		t.Fatal(err)
	}
}

// TestShowAndStatsNamePeers: accounts show and stats say which peers also
// listed a disabled sign-up's IP or address.
func TestShowAndStatsNamePeers(t *testing.T) {
	ctx := context.Background()
	now := time.Now().UTC().Truncate(time.Second)
	dir := t.TempDir()
	var peers []feed.Peer
	for _, name := range []string{"a.example", "b.example"} {
		peerReg, err := registry.Open(ctx, filepath.Join(dir, name, "registry.db"))
		if err != nil {
			t.Fatal(err)
		}
		disable(t, peerReg, 1, "x", "Bot@Spam.example", "192.0.2.1", now.Add(-time.Hour))
		if name == "a.example" {
			disable(t, peerReg, 2, "y", "other@spam.example", "192.0.2.2", now.Add(-time.Hour))
		}
		pub, err := feed.Keygen(filepath.Join(dir, name, "key"))
		if err != nil {
			t.Fatal(err)
		}
		key, _ := feed.LoadKey(filepath.Join(dir, name, "key"))
		www := filepath.Join(dir, name, "www")
		if _, err := feed.Export(ctx, peerReg, key, name, feed.DefaultTTL, www, now); err != nil {
			t.Fatal(err)
		}
		peerReg.Close()
		srv := httptest.NewServer(http.FileServer(http.Dir(www)))
		defer srv.Close()
		peers = append(peers, feed.Peer{Name: name, URL: srv.URL + "/feed.json", Key: pub, Weight: 1})
	}
	regPath := filepath.Join(dir, "ours", "registry.db")
	reg, err := registry.Open(ctx, regPath)
	if err != nil {
		t.Fatal(err)
	}
	disable(t, reg, 7, "bot", "bot@spam.example", "192.0.2.1", now.Add(-30*time.Minute))
	disable(t, reg, 8, "solo", "solo@spam.example", "192.0.2.2", now.Add(-30*time.Minute))
	if _, err := (&feed.Subscriber{Peers: peers, Store: reg}).Pull(ctx); err != nil {
		t.Fatal(err)
	}
	reg.Close()

	cfg := Defaults()
	cfg.Registry, cfg.MediaGoblinConfig = regPath, ""
	var b bytes.Buffer
	if err := Show(ctx, cfg, "bot", false, nil, &b); err != nil {
		t.Fatal(err)
	}
	if want := "  peers        IP listed by a.example, b.example\n               address listed by a.example, b.example\n"; !strings.Contains(b.String(), want) {
		t.Errorf("show:\n%s\nwant %q", b.String(), want)
	}
	b.Reset()
	if err := Show(ctx, cfg, "solo", true, nil, &b); err != nil {
		t.Fatal(err)
	}
	if want := `"listed_by":{"ip":["a.example"],"address":[]}`; !strings.Contains(strings.Join(strings.Fields(b.String()), ""), want) {
		t.Errorf("show --json:\n%s\nwant %s", b.String(), want)
	}

	b.Reset()
	if err := Stats(ctx, cfg, 1, false, &b); err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(b.String(), "PEERS THAT ALSO LISTED THEM") || !regexpLine(b.String(), "a.example", "2", "1") || !regexpLine(b.String(), "b.example", "1", "1") {
		t.Errorf("stats:\n%s", b.String())
	}
	b.Reset()
	if err := Stats(ctx, cfg, 1, true, &b); err != nil {
		t.Fatal(err)
	}
	var st struct {
		Peers []registry.PeerCount `json:"peers"`
	}
	if err := json.Unmarshal(b.Bytes(), &st); err != nil || len(st.Peers) != 2 || st.Peers[0] != (registry.PeerCount{Peer: "a.example", IPs: 2, Addresses: 1}) {
		t.Errorf("stats --json peers %+v, %v", st.Peers, err)
	}
}

// regexpLine reports whether a line of text has exactly these fields.
func regexpLine(text string, fields ...string) bool {
	for _, l := range strings.Split(text, "\n") {
		if strings.Join(strings.Fields(l), " ") == strings.Join(fields, " ") {
			return true
		}
	}
	return false
}
