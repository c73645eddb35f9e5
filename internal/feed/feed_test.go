package feed

import (
	"bytes"
	"context"
	"errors"
	"net"
	"net/http"
	"net/http/httptest"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"aead.dev/minisign"

	"github.com/bouncemilter/bouncemilter/internal/banner"
	"github.com/bouncemilter/bouncemilter/internal/registry"
	"github.com/bouncemilter/bouncemilter/internal/testenv"
	"github.com/bouncemilter/bouncemilter/internal/worker"
)

var t0 = time.Date(2026, 11, 20, 10, 0, 0, 0, time.UTC)

// instance is one MediaGoblin hoster: its registry, its key, and the web
// server that publishes its feed.
type instance struct {
	name string
	reg  *registry.DB
	key  minisign.PrivateKey
	pub  minisign.PublicKey
	dir  string
	srv  *httptest.Server
	next int64
}

func newInstance(t *testing.T, name string) *instance {
	t.Helper()
	dir := t.TempDir()
	reg, err := registry.Open(context.Background(), filepath.Join(dir, "registry.db"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { reg.Close() })
	keyPath := filepath.Join(dir, "feed.key")
	pub, err := Keygen(keyPath)
	if err != nil {
		t.Fatal(err)
	}
	key, err := LoadKey(keyPath)
	if err != nil {
		t.Fatal(err)
	}
	in := &instance{name: name, reg: reg, key: key, pub: pub, dir: filepath.Join(dir, "www"), next: 1}
	in.srv = httptest.NewServer(http.FileServer(http.Dir(in.dir)))
	t.Cleanup(in.srv.Close)
	return in
}

// prove journals what a bounce of the sign-up of email from ip proves: the
// account ban and the IP ban, as the bounce handler queues them.
func (in *instance) prove(t *testing.T, email, ip string, when time.Time) int64 {
	t.Helper()
	ctx := context.Background()
	id := in.next
	in.next++
	reg := registry.Registration{UserID: id, Username: "bot" + registry.UserTarget(id), Email: email, Created: when.Add(-time.Minute), IP: ip, Synced: when}
	if err := in.reg.Tx(ctx, func(tx *registry.Tx) error {
		if err := tx.UpsertRegistration(ctx, reg); err != nil {
			return err
		}
		_, err := tx.SetIP(ctx, reg.Username, ip, "signup-log")
		return err
	}); err != nil {
		t.Fatal(err)
	}
	acts := []registry.Action{{UserID: id, Kind: registry.BanAccount, Target: registry.UserTarget(id), Reason: "test"}}
	if ip != "" {
		acts = append(acts, registry.Action{UserID: id, Kind: registry.BanIP, Target: ip, Reason: "test"})
	}
	if _, err := in.reg.RecordBounce(ctx, registry.Bounce{Received: when, Verdict: registry.VerdictActed, Report: "{}"}, acts); err != nil {
		t.Fatal(err)
	}
	return id
}

func (in *instance) export(t *testing.T, now time.Time) *Feed {
	t.Helper()
	f, err := Export(context.Background(), in.reg, in.key, in.name, DefaultTTL, in.dir, now)
	if err != nil {
		t.Fatal(err)
	}
	return f
}

func (in *instance) peer(weight float64) Peer {
	return Peer{Name: in.name, URL: in.srv.URL + "/feed.json", Key: in.pub, Weight: weight}
}

// clock is a settable time for the subscriber.
type clock struct {
	mu sync.Mutex
	t  time.Time
}

func (c *clock) now() time.Time  { c.mu.Lock(); defer c.mu.Unlock(); return c.t }
func (c *clock) set(t time.Time) { c.mu.Lock(); c.t = t; c.mu.Unlock() }

func subscriber(in *instance, c *clock, peers ...Peer) *Subscriber {
	return &Subscriber{Peers: peers, Store: in.reg, Now: c.now, Timeout: 5 * time.Second}
}

// feedBans returns the IPs with a ban from the feeds that is pending.
func pendingBans(t *testing.T, in *instance) []string {
	t.Helper()
	bans, err := in.reg.FeedBans(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	var out []string
	for ip, b := range bans {
		if b.State == registry.Pending || b.State == registry.Applied {
			out = append(out, ip)
		}
	}
	return sorted(out)
}

func sorted(s []string) []string {
	for i := range s {
		for j := i + 1; j < len(s); j++ {
			if s[j] < s[i] {
				s[i], s[j] = s[j], s[i]
			}
		}
	}
	return s
}

func TestKeygen(t *testing.T) {
	path := filepath.Join(t.TempDir(), "k")
	if _, err := Keygen(path); err != nil {
		t.Fatal(err)
	}
	fi, err := os.Stat(path)
	if err != nil {
		t.Fatal(err)
	}
	if fi.Mode().Perm() != 0o600 {
		t.Errorf("secret key mode %v, want 0600", fi.Mode().Perm())
	}
	if _, err := Keygen(path); err == nil {
		t.Error("keygen replaced an existing key")
	}
	pubText, err := os.ReadFile(path + ".pub")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := ParsePublicKey(string(pubText)); err != nil {
		t.Errorf("public key file does not parse: %v", err)
	}
}

func TestExportOnlyWhatABounceProved(t *testing.T) {
	ctx := context.Background()
	a := newInstance(t, "a.example")
	a.prove(t, "Bot1@Spam.example", "192.0.2.1", t0)
	a.prove(t, "bot1@spam.example", "192.0.2.1", t0.Add(time.Hour)) // the same again
	restored := a.prove(t, "real@example.org", "198.51.100.7", t0)
	a.prove(t, "office@example.org", "203.0.113.9", t0)
	if _, err := a.reg.Restore(ctx, restored, "false positive", t0.Add(2*time.Hour)); err != nil {
		t.Fatal(err)
	}
	if err := a.reg.Allow(ctx, registry.AllowIP, "203.0.113.9", "office", t0); err != nil {
		t.Fatal(err)
	}
	if err := a.reg.Allow(ctx, registry.AllowEmail, "office@example.org", "office", t0); err != nil {
		t.Fatal(err)
	}
	// A bounce that led to nothing, and a stopped mail known only from
	// the peers, prove nothing of this instance's own.
	if _, err := a.reg.RecordBounce(ctx, registry.Bounce{Received: t0, Verdict: registry.VerdictNoMatch, Report: "{}"}, nil); err != nil {
		t.Fatal(err)
	}
	if err := a.reg.Tx(ctx, func(tx *registry.Tx) error {
		return tx.UpsertRegistration(ctx, registry.Registration{UserID: 99, Username: "echo", Email: "echo@spam.example", Created: t0, IP: "192.0.2.99", Synced: t0})
	}); err != nil {
		t.Fatal(err)
	}
	if _, err := a.reg.RecordBounce(ctx, registry.Bounce{Received: t0, Verdict: registry.VerdictStopped, Client: registry.GuardClient("peers"), Report: "{}"},
		[]registry.Action{{UserID: 99, Kind: registry.BanAccount, Target: "99", Reason: "t"}, {UserID: 99, Kind: registry.BanIP, Target: "192.0.2.99", Reason: "t"}}); err != nil {
		t.Fatal(err)
	}

	f := a.export(t, t0.Add(3*time.Hour))
	if len(f.IPs) != 1 || f.IPs[0].IP != "192.0.2.1" || f.IPs[0].Count != 2 ||
		!f.IPs[0].FirstSeen.Equal(t0) || !f.IPs[0].LastSeen.Equal(t0.Add(time.Hour)) || !f.IPs[0].Expires.Equal(t0.Add(time.Hour+DefaultTTL)) {
		t.Errorf("ips = %+v; want 192.0.2.1 alone, seen twice", f.IPs)
	}
	if len(f.Addresses) != 1 || f.Addresses[0].SHA256 != HashAddress("bot1@spam.example") {
		t.Errorf("addresses = %+v; want the hash of bot1@spam.example alone", f.Addresses)
	}
	txt, err := os.ReadFile(filepath.Join(a.dir, TextFile))
	if err != nil || string(txt) != "192.0.2.1\n" {
		t.Errorf("feed.txt = %q, %v", txt, err)
	}
	data, _ := os.ReadFile(filepath.Join(a.dir, JSONFile))
	if bytes.Contains(bytes.ToLower(data), []byte("spam.example")) {
		t.Error("feed.json holds an address in clear")
	}
	sig, _ := os.ReadFile(filepath.Join(a.dir, SignatureFile))
	if _, err := Verify(a.pub, data, sig); err != nil {
		t.Errorf("own feed does not verify: %v", err)
	}
}

func TestHashAddress(t *testing.T) {
	got := HashAddress("  Bot@SPAM.example ")
	if got != HashAddress("bot@spam.example") {
		t.Error("normalisation differs for case and white space")
	}
	// Only ASCII is lowercased: a look-alike with the Kelvin sign or a
	// capital dotted I is not the real address.
	if HashAddress("\u212aim@spam.example") == HashAddress("kim@spam.example") || HashAddress("V\u0130ctim@spam.example") == HashAddress("victim@spam.example") {
		t.Error("a Unicode look-alike hashes as the real address")
	}
	out, err := exec.Command("sh", "-c", "printf %s bot@spam.example | sha256sum").Output()
	if err != nil {
		t.Fatal(err)
	}
	if !strings.HasPrefix(string(out), got) {
		t.Errorf("HashAddress = %s; sha256sum says %s", got, out)
	}
}

func TestSignatureVerifiesWithMinisign(t *testing.T) {
	_, err := exec.LookPath("minisign")
	testenv.Require(t, err == nil, "the minisign tool is not installed (Debian package minisign)")
	a := newInstance(t, "a.example")
	a.prove(t, "bot@spam.example", "192.0.2.1", t0)
	f := a.export(t, t0.Add(time.Hour))
	pub := filepath.Join(filepath.Dir(a.dir), "feed.key.pub")
	out, err := exec.Command("minisign", "-V", "-p", pub, "-m", filepath.Join(a.dir, JSONFile)).CombinedOutput()
	if err != nil {
		t.Fatalf("minisign -V: %v\n%s", err, out)
	}
	if want := "Trusted comment: " + trustedComment(f.Name, f.Made); !strings.Contains(string(out), want) {
		t.Errorf("minisign says:\n%s\nwant %q", out, want)
	}
	// And a tampered feed fails with it too.
	p := filepath.Join(a.dir, JSONFile)
	data, _ := os.ReadFile(p)
	os.WriteFile(p, bytes.Replace(data, []byte("192.0.2.1"), []byte("192.0.2.2"), 1), 0o644)
	if out, err := exec.Command("minisign", "-V", "-p", pub, "-m", p).CombinedOutput(); err == nil {
		t.Errorf("minisign verified a tampered feed:\n%s", out)
	}
}

// TestThreeInstances: a and b both proved one IP and one address, a alone
// another; c subscribes to both and bans only what both list.
func TestThreeInstances(t *testing.T) {
	ctx := context.Background()
	a, b, c := newInstance(t, "a.example"), newInstance(t, "b.example"), newInstance(t, "c.example")
	a.prove(t, "shared@spam.example", "192.0.2.1", t0)
	b.prove(t, "SHARED@spam.example", "192.0.2.1", t0.Add(time.Minute))
	a.prove(t, "alone@spam.example", "192.0.2.2", t0)
	a.export(t, t0.Add(time.Hour))
	b.export(t, t0.Add(time.Hour))
	clk := &clock{t: t0.Add(2 * time.Hour)}

	s := subscriber(c, clk, a.peer(1), b.peer(1))
	sum, err := s.Pull(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if sum.Accepted != 2 || sum.Banned != 1 {
		t.Errorf("summary %v; want 2 accepted, 1 banned", sum)
	}
	if got := pendingBans(t, c); len(got) != 1 || got[0] != "192.0.2.1" {
		t.Errorf("bans %v; want 192.0.2.1 alone", got)
	}
	due, _ := c.reg.DueActions(ctx, clk.now(), 10)
	if len(due) != 1 || due[0].Kind != registry.BanIP || due[0].Target != "192.0.2.1" || !strings.Contains(due[0].Reason, "a.example,b.example") {
		t.Errorf("queued %+v; want one IP ban naming both peers", due)
	}
	for addr, want := range map[string]bool{"shared@spam.example": true, "alone@spam.example": false, "nobody@example.org": false} {
		got, peers, err := s.AddressListed(ctx, addr)
		if err != nil || got != want {
			t.Errorf("AddressListed(%s) = %v %v, %v; want %v", addr, got, peers, err, want)
		}
	}
	// The same again changes nothing.
	sum, err = s.Pull(ctx)
	if err != nil || sum.Unchanged != 2 || sum.Banned != 0 {
		t.Errorf("second pull %v, %v; want 2 unchanged, nothing banned", sum, err)
	}

	// Weights: a alone with weight 2 reaches the threshold.
	s.Peers = []Peer{a.peer(2), b.peer(1)}
	if sum, err = s.Pull(ctx); err != nil || sum.Banned != 1 {
		t.Errorf("weighted pull %v, %v; want one more ban", sum, err)
	}
	if got := pendingBans(t, c); len(got) != 2 {
		t.Errorf("bans %v; want both IPs", got)
	}
}

// TestSameKeyCountsOnce: one publisher listed under two names is one peer.
func TestSameKeyCountsOnce(t *testing.T) {
	ctx := context.Background()
	a, c := newInstance(t, "a.example"), newInstance(t, "c.example")
	a.prove(t, "x@spam.example", "192.0.2.1", t0)
	a.export(t, t0.Add(time.Hour))
	twice := a.peer(1)
	twice.Name = "a-mirror"
	s := subscriber(c, &clock{t: t0.Add(2 * time.Hour)}, a.peer(1), twice)
	sum, err := s.Pull(ctx)
	if err != nil || sum.Accepted != 2 || sum.Banned != 0 {
		t.Errorf("pull %v, %v; want both accepted and nothing banned", sum, err)
	}
	if ok, _, _ := s.AddressListed(ctx, "x@spam.example"); ok {
		t.Error("an address listed by one key under two names counted twice")
	}
}

func TestRefusedFeeds(t *testing.T) {
	ctx := context.Background()
	a, b, c := newInstance(t, "a.example"), newInstance(t, "b.example"), newInstance(t, "c.example")
	a.prove(t, "x@spam.example", "192.0.2.1", t0)
	b.prove(t, "x@spam.example", "192.0.2.1", t0)
	a.export(t, t0.Add(time.Hour))
	b.export(t, t0.Add(time.Hour))
	good, _ := os.ReadFile(filepath.Join(a.dir, JSONFile))
	goodSig, _ := os.ReadFile(filepath.Join(a.dir, SignatureFile))
	forger := newInstance(t, "forger")
	forged := Sign(forger.key, good, "a.example", t0.Add(time.Hour))
	big := append(bytes.Repeat([]byte(" "), 2000), good...)

	cases := []struct {
		name      string
		data, sig []byte
		want      error
	}{
		{"forged", good, forged, ErrSignature},
		{"tampered", bytes.Replace(good, []byte("192.0.2.1"), []byte("192.0.2.3"), 1), goodSig, ErrSignature},
		{"truncated", good[:len(good)/2], goodSig, ErrSignature},
		{"oversized", big, Sign(a.key, big, "a.example", t0.Add(time.Hour)), ErrTooLarge},
		{"garbage signature", good, []byte("not a signature"), ErrSignature},
		{"no signature", good, nil, nil},
		{"garbage signed", []byte("{\"version\":1}"), Sign(a.key, []byte("{\"version\":1}"), "a.example", t0), ErrFormat},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			mux := http.NewServeMux()
			mux.HandleFunc("/feed.json", func(w http.ResponseWriter, r *http.Request) { w.Write(tc.data) })
			if tc.sig != nil {
				mux.HandleFunc("/feed.json.minisig", func(w http.ResponseWriter, r *http.Request) { w.Write(tc.sig) })
			}
			srv := httptest.NewServer(mux)
			defer srv.Close()
			bad := Peer{Name: "bad-" + strings.ReplaceAll(tc.name, " ", "-"), URL: srv.URL + "/feed.json", Key: a.pub, Weight: 1}
			s := subscriber(c, &clock{t: t0.Add(2 * time.Hour)}, bad, b.peer(1))
			s.MaxSize = int64(len(good) + 1000)
			sum, err := s.Pull(ctx)
			if err != nil {
				t.Fatal(err)
			}
			if sum.Failed != 1 || sum.Banned != 0 {
				t.Errorf("summary %v; want the bad peer failed and nothing banned", sum)
			}
			st, _ := c.reg.FeedPeerState(ctx, bad.Name)
			if st.Errors != 1 || st.LastError == "" || st.Entries != 0 {
				t.Errorf("peer state %+v; want one error recorded and no entries", st)
			}
			if tc.want != nil {
				if _, err := s.pullOne(ctx, bad); !errors.Is(err, tc.want) {
					t.Errorf("err = %v; want %v", err, tc.want)
				}
			}
		})
	}
}

func TestReplay(t *testing.T) {
	ctx := context.Background()
	a, c := newInstance(t, "a.example"), newInstance(t, "c.example")
	a.prove(t, "x@spam.example", "192.0.2.1", t0)
	a.export(t, t0.Add(time.Hour))
	oldData, _ := os.ReadFile(filepath.Join(a.dir, JSONFile))
	oldSig, _ := os.ReadFile(filepath.Join(a.dir, SignatureFile))
	a.export(t, t0.Add(2*time.Hour))
	s := subscriber(c, &clock{t: t0.Add(3 * time.Hour)}, a.peer(1))
	if sum, err := s.Pull(ctx); err != nil || sum.Accepted != 1 {
		t.Fatalf("pull %v, %v", sum, err)
	}
	// An attacker in the path serves the older, validly signed feed.
	os.WriteFile(filepath.Join(a.dir, JSONFile), oldData, 0o644)
	os.WriteFile(filepath.Join(a.dir, SignatureFile), oldSig, 0o644)
	if _, err := s.pullOne(ctx, a.peer(1)); !errors.Is(err, ErrReplay) {
		t.Errorf("older feed: err = %v; want ErrReplay", err)
	}
	sum, _ := s.Pull(ctx)
	st, _ := c.reg.FeedPeerState(ctx, "a.example")
	if sum.Failed != 1 || !st.LastMade.Equal(t0.Add(2*time.Hour)) || !strings.Contains(st.LastError, "replayed") {
		t.Errorf("after replay: %v, state %+v", sum, st)
	}
	// A feed from the far future would block every later one: refused.
	a.export(t, t0.Add(48*time.Hour))
	if _, err := s.pullOne(ctx, a.peer(1)); !errors.Is(err, ErrFormat) {
		t.Errorf("future feed: err = %v; want ErrFormat", err)
	}
}

func TestExpiryAndUnban(t *testing.T) {
	ctx := context.Background()
	a, b, c := newInstance(t, "a.example"), newInstance(t, "b.example"), newInstance(t, "c.example")
	a.prove(t, "x@spam.example", "192.0.2.1", t0)
	b.prove(t, "x@spam.example", "192.0.2.1", t0.Add(24*time.Hour))
	idB := b.prove(t, "y@spam.example", "192.0.2.2", t0)
	a.prove(t, "y@spam.example", "192.0.2.2", t0)
	a.export(t, t0.Add(25*time.Hour))
	b.export(t, t0.Add(25*time.Hour))
	clk := &clock{t: t0.Add(26 * time.Hour)}
	s := subscriber(c, clk, a.peer(1), b.peer(1))
	if sum, err := s.Pull(ctx); err != nil || sum.Banned != 2 {
		t.Fatalf("pull %v, %v; want 2 banned", sum, err)
	}
	bans, _ := c.reg.FeedBans(ctx)
	// a's listing of 192.0.2.1 ends first: the ban lasts as long as both list it.
	if got := bans["192.0.2.1"].Expires; !got.Equal(t0.Add(DefaultTTL)) {
		t.Errorf("ban expires %v; want %v", got, t0.Add(DefaultTTL))
	}

	// b restores the account of 192.0.2.2: its next feed drops it, and
	// c lifts the ban, through the journal.
	if _, err := b.reg.Restore(ctx, idB, "mistake", t0.Add(27*time.Hour)); err != nil {
		t.Fatal(err)
	}
	b.export(t, t0.Add(28*time.Hour))
	clk.set(t0.Add(29 * time.Hour))
	sum, err := s.Pull(ctx)
	if err != nil || sum.Unbanned != 1 {
		t.Fatalf("pull %v, %v; want 1 unbanned", sum, err)
	}
	due, _ := c.reg.DueActions(ctx, clk.now(), 10)
	var unbans []string
	for _, d := range due {
		if d.Kind == registry.UnbanIP {
			unbans = append(unbans, d.Target)
		}
	}
	if len(unbans) != 1 || unbans[0] != "192.0.2.2" {
		t.Errorf("unbans queued %v; want 192.0.2.2", unbans)
	}

	// Time passes until a's listing of 192.0.2.1 expires: unbanned too,
	// with no new feed at all.
	clk.set(t0.Add(DefaultTTL + time.Minute))
	if sum, err := s.Pull(ctx); err != nil || sum.Unbanned != 1 {
		t.Errorf("after expiry: %v, %v; want 1 unbanned", sum, err)
	}
	if got := pendingBans(t, c); len(got) != 0 {
		t.Errorf("bans left %v", got)
	}
	// Listed again later: banned again (a second unban is not skipped
	// either).
	a.prove(t, "z@spam.example", "192.0.2.1", t0.Add(DefaultTTL))
	b.prove(t, "z@spam.example", "192.0.2.1", t0.Add(DefaultTTL))
	a.export(t, t0.Add(DefaultTTL+2*time.Minute))
	b.export(t, t0.Add(DefaultTTL+2*time.Minute))
	clk.set(t0.Add(DefaultTTL + 3*time.Minute))
	if sum, err := s.Pull(ctx); err != nil || sum.Banned != 1 {
		t.Errorf("listed again: %v, %v; want 1 banned", sum, err)
	}
}

func TestBansRespectAllowListAndNeverBan(t *testing.T) {
	ctx := context.Background()
	a, b, c := newInstance(t, "a.example"), newInstance(t, "b.example"), newInstance(t, "c.example")
	for _, in := range []*instance{a, b} {
		in.prove(t, "x@spam.example", "192.0.2.1", t0)
		in.prove(t, "y@spam.example", "198.51.100.1", t0)
		in.prove(t, "z@spam.example", "203.0.113.1", t0)
		in.export(t, t0.Add(time.Hour))
	}
	if err := c.reg.Allow(ctx, registry.AllowIP, "192.0.2.1", "our office", t0); err != nil {
		t.Fatal(err)
	}
	s := subscriber(c, &clock{t: t0.Add(2 * time.Hour)}, a.peer(1), b.peer(1))
	s.NeverBan = []netip.Prefix{netip.MustParsePrefix("198.51.100.0/24")}
	if _, err := s.Pull(ctx); err != nil {
		t.Fatal(err)
	}
	if got := pendingBans(t, c); len(got) != 1 || got[0] != "203.0.113.1" {
		t.Errorf("bans %v; want 203.0.113.1 alone", got)
	}
}

func TestUnreachablePeer(t *testing.T) {
	ctx := context.Background()
	a, b, c := newInstance(t, "a.example"), newInstance(t, "b.example"), newInstance(t, "c.example")
	for _, in := range []*instance{a, b} {
		in.prove(t, "x@spam.example", "192.0.2.1", t0)
		in.export(t, t0.Add(time.Hour))
	}
	addr := testenv.FreeAddr(t, "127.0.0.1")
	gone := Peer{Name: "gone", URL: "http://" + addr + "/feed.json", Key: a.pub, Weight: 1}
	// A peer that accepts and never answers is cut by the timeout.
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	slow := Peer{Name: "slow", URL: "http://" + ln.Addr().String() + "/feed.json", Key: a.pub, Weight: 1}
	s := subscriber(c, &clock{t: t0.Add(2 * time.Hour)}, gone, slow, a.peer(1), b.peer(1))
	s.Timeout = 500 * time.Millisecond
	sum, err := s.Pull(ctx)
	if err != nil || sum.Failed != 2 || sum.Accepted != 2 || sum.Banned != 1 {
		t.Errorf("pull %v, %v; want 2 failed, 2 accepted, 1 banned", sum, err)
	}
}

func TestParsePeers(t *testing.T) {
	a := newInstance(t, "a.example")
	pubFile, _ := a.pub.MarshalText()
	lines := strings.Split(strings.TrimSpace(string(pubFile)), "\n")
	pubText := lines[len(lines)-1]
	good := "# peers\n\na https://a.example/feed.json " + pubText + "\nb http://b.example/f.json " + pubText + " 2.5\n"
	peers, err := ParsePeers(strings.NewReader(good))
	if err != nil || len(peers) != 2 || peers[0].Weight != 1 || peers[1].Weight != 2.5 {
		t.Fatalf("ParsePeers = %+v, %v", peers, err)
	}
	for _, bad := range []string{
		"a https://a.example/feed.json",
		"a ftp://a.example/feed.json " + pubText,
		"a https://a.example/feed.json notakey",
		"a https://a.example/feed.json " + pubText + " -1",
		"a https://a.example/feed.json " + pubText + "\na https://a.example/feed.json " + pubText,
	} {
		if _, err := ParsePeers(strings.NewReader(bad)); err == nil {
			t.Errorf("ParsePeers(%q) accepted it", bad)
		}
	}
}

func FuzzParse(f *testing.F) {
	f.Add([]byte(`{"version":1,"name":"a","made":"2026-11-20T10:00:00Z","ips":[{"ip":"192.0.2.0/24","first_seen":"2026-11-20T10:00:00Z","last_seen":"2026-11-20T10:00:00Z","count":1,"expires":"2026-12-20T10:00:00Z"}],"addresses":[]}`))
	f.Add([]byte(`{"version":1}`))
	f.Fuzz(func(t *testing.T, data []byte) {
		feed, err := Parse(data)
		if err != nil {
			return
		}
		out, err := feed.Marshal()
		if err != nil {
			t.Fatal(err)
		}
		if _, err := Parse(out); err != nil {
			t.Fatalf("a feed that parsed does not parse after Marshal: %v", err)
		}
	})
}

func FuzzParsePeers(f *testing.F) {
	f.Add("a https://a.example/feed.json RWQf6LRCGA9i53mlYecO4IzT51TGPpvWucNSCh1CBM0QTaLn73Y7GFO3 2")
	f.Fuzz(func(t *testing.T, s string) {
		ParsePeers(strings.NewReader(s))
	})
}

// TestExpiryCapped: a peer that vouches for an entry for a century has it
// count for MaxExpiry after its feed was made.
func TestExpiryCapped(t *testing.T) {
	ctx := context.Background()
	a, b, c := newInstance(t, "a.example"), newInstance(t, "b.example"), newInstance(t, "c.example")
	for _, in := range []*instance{a, b} {
		in.prove(t, "x@spam.example", "192.0.2.1", t0)
		f, err := Build(ctx, in.reg, in.name, 100*365*24*time.Hour, t0.Add(time.Hour))
		if err != nil {
			t.Fatal(err)
		}
		data, _ := f.Marshal()
		os.MkdirAll(in.dir, 0o755)
		os.WriteFile(filepath.Join(in.dir, JSONFile), data, 0o644)
		os.WriteFile(filepath.Join(in.dir, SignatureFile), Sign(in.key, data, f.Name, f.Made), 0o644)
	}
	s := subscriber(c, &clock{t: t0.Add(2 * time.Hour)}, a.peer(1), b.peer(1))
	if sum, err := s.Pull(ctx); err != nil || sum.Banned != 1 {
		t.Fatalf("pull %v, %v", sum, err)
	}
	bans, _ := c.reg.FeedBans(ctx)
	if got, want := bans["192.0.2.1"].Expires, t0.Add(time.Hour+MaxExpiry); !got.Equal(want) {
		t.Errorf("ban expires %v; want %v", got, want)
	}
}

// banLog records what the worker's banner was asked to do.
type banLog struct {
	mu     sync.Mutex
	banned map[netip.Addr]bool
}

func (b *banLog) Ban(ctx context.Context, ip netip.Addr, reason string) error {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.banned[ip] = true
	return nil
}

func (b *banLog) Unban(ctx context.Context, ip netip.Addr) error {
	b.mu.Lock()
	defer b.mu.Unlock()
	delete(b.banned, ip)
	return nil
}

type noAccounts struct{}

func (noAccounts) BanUser(ctx context.Context, id int64, reason string) error { return nil }
func (noAccounts) UnbanUser(ctx context.Context, id int64) error              { return nil }

// TestSharedBansThroughTheWorker: the bans the listings call for are
// applied, and lifted, by the same worker and banner as local ones, and
// the never-ban guard of the banner refuses what it protects.
func TestSharedBansThroughTheWorker(t *testing.T) {
	ctx := context.Background()
	a, b, c := newInstance(t, "a.example"), newInstance(t, "b.example"), newInstance(t, "c.example")
	for _, in := range []*instance{a, b} {
		in.prove(t, "x@spam.example", "192.0.2.1", t0)
		in.prove(t, "y@spam.example", "198.51.100.1", t0)
		in.export(t, t0.Add(time.Hour))
	}
	clk := &clock{t: t0.Add(2 * time.Hour)}
	s := subscriber(c, clk, a.peer(1), b.peer(1))
	if _, err := s.Pull(ctx); err != nil {
		t.Fatal(err)
	}
	bl := &banLog{banned: map[netip.Addr]bool{}}
	w := worker.New(c.reg, noAccounts{}, banner.Guarded(bl, []netip.Prefix{netip.MustParsePrefix("198.51.100.0/24")}), nil)
	w.Now = clk.now
	if _, err := w.RunOnce(ctx); err != nil {
		t.Fatal(err)
	}
	if !bl.banned[netip.MustParseAddr("192.0.2.1")] || bl.banned[netip.MustParseAddr("198.51.100.1")] {
		t.Errorf("banner holds %v; want 192.0.2.1 and not the never-ban network", bl.banned)
	}
	// The listings expire: the worker lifts the ban.
	clk.set(t0.Add(DefaultTTL + time.Hour))
	if _, err := s.Pull(ctx); err != nil {
		t.Fatal(err)
	}
	if _, err := w.RunOnce(ctx); err != nil {
		t.Fatal(err)
	}
	if len(bl.banned) != 0 {
		t.Errorf("banner still holds %v after the listings expired", bl.banned)
	}
}
