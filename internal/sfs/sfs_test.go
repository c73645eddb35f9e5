package sfs

import (
	"context"
	"net/http"
	"net/http/httptest"
	"path/filepath"
	"sort"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/bouncemilter/bouncemilter/internal/registry"
)

var t0 = time.Now().UTC().Truncate(time.Second)

// api plays StopForumSpam's add.php: 200 for a good submission, 403 with
// a reason in a paragraph for a refused one, 500 once for "flaky".
type api struct {
	mu        sync.Mutex
	got       []map[string]string
	flakyOnce bool
}

func (a *api) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	if r.Method != http.MethodPost || r.ParseForm() != nil {
		http.Error(w, "bad request", http.StatusBadRequest)
		return
	}
	a.mu.Lock()
	defer a.mu.Unlock()
	f := map[string]string{}
	for _, k := range []string{"username", "ip_addr", "email", "evidence", "api_key"} {
		f[k] = r.PostForm.Get(k)
	}
	a.got = append(a.got, f)
	switch {
	case f["api_key"] != "KEY123":
		w.WriteHeader(http.StatusForbidden)
		w.Write([]byte("<p>invalid api key</p>"))
	case f["username"] == "dupe":
		w.WriteHeader(http.StatusForbidden)
		w.Write([]byte("<html><p>already reported</p></html>"))
	case f["username"] == "flaky" && !a.flakyOnce:
		a.flakyOnce = true
		w.WriteHeader(http.StatusInternalServerError)
	}
}

func (a *api) users() []string {
	a.mu.Lock()
	defer a.mu.Unlock()
	var out []string
	for _, f := range a.got {
		out = append(out, f["username"])
	}
	return out
}

// vandal journals a proven sign-up; applied says whether the worker
// applied its bans.
func vandal(t *testing.T, reg *registry.DB, id int64, name, ip string, verdict registry.Verdict, client string, applied bool) {
	t.Helper()
	ctx := context.Background()
	r := registry.Registration{UserID: id, Username: name, Email: name + "@spam.example", Created: t0.Add(-time.Hour), Synced: t0}
	reg.Tx(ctx, func(tx *registry.Tx) error {
		tx.UpsertRegistration(ctx, r)
		_, err := tx.SetIP(ctx, name, ip, "signup-log")
		return err
	})
	if _, err := reg.RecordBounce(ctx, registry.Bounce{Received: t0, Verdict: verdict, Client: client, Report: "{}"}, []registry.Action{
		{UserID: id, Kind: registry.BanAccount, Target: registry.UserTarget(id), Reason: "mail to " + r.Email + " bounced (5.1.1)"},
		{UserID: id, Kind: registry.BanIP, Target: ip, Reason: "bounced"},
	}); err != nil {
		t.Fatal(err)
	}
	if applied {
		acts, _ := reg.Actions(ctx, id)
		for _, a := range acts {
			reg.MarkApplied(ctx, a.ID, t0, "")
		}
	}
}

func TestReporter(t *testing.T) {
	ctx := context.Background()
	reg, err := registry.Open(ctx, filepath.Join(t.TempDir(), "registry.db"))
	if err != nil {
		t.Fatal(err)
	}
	defer reg.Close()
	vandal(t, reg, 1, "bot", "203.0.113.1", registry.VerdictActed, "", true)
	vandal(t, reg, 2, "pending", "203.0.113.2", registry.VerdictActed, "", false)
	vandal(t, reg, 3, "restored", "203.0.113.3", registry.VerdictActed, "", true)
	vandal(t, reg, 4, "office", "203.0.113.4", registry.VerdictActed, "", true)
	vandal(t, reg, 5, "peersaid", "203.0.113.5", registry.VerdictStopped, registry.GuardClient("peers"), true)
	vandal(t, reg, 6, "dupe", "203.0.113.6", registry.VerdictActed, "", true)
	vandal(t, reg, 7, "flaky", "203.0.113.7", registry.VerdictActed, "", true)
	vandal(t, reg, 8, "nullmx", "203.0.113.8", registry.VerdictStopped, registry.GuardClient("null-mx"), true)
	if _, err := reg.Restore(ctx, 3, "a real user", t0); err != nil {
		t.Fatal(err)
	}
	if err := reg.Allow(ctx, registry.AllowIP, "203.0.113.4", "office NAT", t0); err != nil {
		t.Fatal(err)
	}

	a := &api{}
	srv := httptest.NewServer(a)
	defer srv.Close()
	var slept []time.Duration
	r := &Reporter{Journal: reg, Key: "KEY123", URL: srv.URL + "/add.php", Interval: 3 * time.Second,
		Sleep: func(ctx context.Context, d time.Duration) error { slept = append(slept, d); return nil }}

	sum, err := r.Run(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if sum.Accepted != 2 || sum.Refused != 1 || sum.Failed != 1 {
		t.Errorf("first run %v; want 2 reported, 1 refused, 1 failed", sum)
	}
	got := a.users()
	sort.Strings(got)
	if want := []string{"bot", "dupe", "flaky", "nullmx"}; len(got) != len(want) || got[0] != want[0] || got[1] != want[1] || got[2] != want[2] || got[3] != want[3] {
		t.Errorf("submitted %v; want %v", got, want)
	}
	// Rate limited: a pause before each submission but the first.
	if len(slept) != 3 || slept[0] != 3*time.Second {
		t.Errorf("slept %v; want 3 pauses of 3s", slept)
	}
	a.mu.Lock()
	first := a.got[0]
	a.mu.Unlock()
	if first["username"] != "bot" || first["ip_addr"] != "203.0.113.1" || first["email"] != "bot@spam.example" || first["evidence"] == "" {
		t.Errorf("submission %v", first)
	}

	// The next run tries only the one that failed; the refused one is not
	// sent again.
	sum, err = r.Run(ctx)
	if err != nil || sum.Accepted != 1 || sum.Refused != 0 || sum.Failed != 0 {
		t.Errorf("second run %v, %v; want the flaky one reported", sum, err)
	}
	if sum, _ := r.Run(ctx); sum != (Summary{}) {
		t.Errorf("third run %v; want nothing", sum)
	}

	// Journalled: what was sent and answered.
	rows, err := reg.SQL().QueryContext(ctx, `SELECT username, ip, email, status, response FROM sfs_reports ORDER BY user_id`)
	if err != nil {
		t.Fatal(err)
	}
	defer rows.Close()
	var journal []string
	for rows.Next() {
		var u, ip, email, status, resp string
		rows.Scan(&u, &ip, &email, &status, &resp)
		journal = append(journal, u+" "+status+" "+resp)
	}
	want := []string{"bot accepted ", "dupe refused already reported", "flaky accepted ", "nullmx accepted "}
	if len(journal) != len(want) {
		t.Fatalf("journal %q; want %q", journal, want)
	}
	for i := range want {
		if journal[i] != want[i] {
			t.Errorf("journal[%d] = %q; want %q", i, journal[i], want[i])
		}
	}
}

func TestReporterStopsWithContext(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	reg, err := registry.Open(ctx, filepath.Join(t.TempDir(), "registry.db"))
	if err != nil {
		t.Fatal(err)
	}
	defer reg.Close()
	vandal(t, reg, 1, "a", "203.0.113.1", registry.VerdictActed, "", true)
	vandal(t, reg, 2, "b", "203.0.113.2", registry.VerdictActed, "", true)
	srv := httptest.NewServer(&api{})
	defer srv.Close()
	r := &Reporter{Journal: reg, Key: "KEY123", URL: srv.URL, Interval: time.Hour}
	go func() { time.Sleep(200 * time.Millisecond); cancel() }()
	start := time.Now()
	sum, err := r.Run(ctx)
	if err == nil || sum.Accepted != 1 || time.Since(start) > 10*time.Second {
		t.Errorf("Run = %v, %v after %v; want one report, then the context's error", sum, err, time.Since(start))
	}
}

// journal returns the rows of sfs_reports as "username status".
func journal(t *testing.T, reg *registry.DB) []string {
	t.Helper()
	rows, err := reg.SQL().QueryContext(context.Background(), `SELECT username, status FROM sfs_reports ORDER BY user_id`)
	if err != nil {
		t.Fatal(err)
	}
	defer rows.Close()
	var out []string
	for rows.Next() {
		var u, status string
		if err := rows.Scan(&u, &status); err != nil {
			t.Fatal(err)
		}
		out = append(out, u+" "+status)
	}
	return out
}

// TestRestoreDuringRun: Run lists its vandals once and then spaces its
// submissions out (20 of them take about 95 s); an account restored or
// allow-listed while it waits is not reported when its turn comes.
func TestRestoreDuringRun(t *testing.T) {
	ctx := context.Background()
	reg, err := registry.Open(ctx, filepath.Join(t.TempDir(), "registry.db"))
	if err != nil {
		t.Fatal(err)
	}
	defer reg.Close()
	vandal(t, reg, 1, "first", "203.0.113.1", registry.VerdictActed, "", true)
	vandal(t, reg, 2, "restored", "203.0.113.2", registry.VerdictActed, "", true)
	vandal(t, reg, 3, "allowed", "203.0.113.3", registry.VerdictActed, "", true)
	vandal(t, reg, 4, "last", "203.0.113.4", registry.VerdictActed, "", true)
	a := &api{}
	srv := httptest.NewServer(a)
	defer srv.Close()
	pauses := 0
	r := &Reporter{Journal: reg, Key: "KEY123", URL: srv.URL, Sleep: func(ctx context.Context, d time.Duration) error {
		pauses++
		if pauses > 1 {
			return nil
		}
		// The admin acts while the reporter waits after its first report.
		if _, err := reg.Restore(ctx, 2, "a real person", t0); err != nil {
			return err
		}
		return reg.Allow(ctx, registry.AllowUser, "allowed", "a real person too", t0)
	}}
	sum, err := r.Run(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if got := a.users(); len(got) != 2 || got[0] != "first" || got[1] != "last" {
		t.Errorf("submitted %v; want first and last only", got)
	}
	if sum != (Summary{Accepted: 2, Skipped: 2}) {
		t.Errorf("run %v; want 2 reported, 2 skipped", sum)
	}
	// One pause between the two submissions; none for the skipped ones.
	if pauses != 1 {
		t.Errorf("%d pauses; want 1", pauses)
	}
	if got := journal(t, reg); len(got) != 2 || got[0] != "first accepted" || got[1] != "last accepted" {
		t.Errorf("journal %q; want first and last accepted", got)
	}
}

// TestOverlappingRuns: two sync processes reporting at once (two handles on
// one registry file) report each vandal once.
func TestOverlappingRuns(t *testing.T) {
	ctx := context.Background()
	path := filepath.Join(t.TempDir(), "registry.db")
	reg, err := registry.Open(ctx, path)
	if err != nil {
		t.Fatal(err)
	}
	defer reg.Close()
	other, err := registry.Open(ctx, path)
	if err != nil {
		t.Fatal(err)
	}
	defer other.Close()
	for id := int64(1); id <= 6; id++ {
		vandal(t, reg, id, "v"+registry.UserTarget(id), "203.0.113."+registry.UserTarget(id), registry.VerdictActed, "", true)
	}
	a := &api{}
	var second *Reporter
	var secondSum Summary
	var secondErr error
	var started atomic.Bool
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, req *http.Request) {
		// While the first run's first submission is in flight, the
		// second run starts and goes through the whole list.
		if started.CompareAndSwap(false, true) {
			secondSum, secondErr = second.Run(req.Context())
		}
		a.ServeHTTP(w, req)
	}))
	defer srv.Close()
	noSleep := func(context.Context, time.Duration) error { return nil }
	first := &Reporter{Journal: reg, Key: "KEY123", URL: srv.URL, Sleep: noSleep}
	second = &Reporter{Journal: other, Key: "KEY123", URL: srv.URL, Sleep: noSleep}
	sum, err := first.Run(ctx)
	if err != nil || secondErr != nil {
		t.Fatal(err, secondErr)
	}
	got := a.users()
	sort.Strings(got)
	if len(got) != 6 {
		t.Errorf("submitted %v; want each of the 6 once", got)
	}
	for i := 1; i < len(got); i++ {
		if got[i] == got[i-1] {
			t.Errorf("%s reported twice", got[i])
		}
	}
	// The second run does not list the one the first has claimed; the
	// first finds the rest reported when their turn comes.
	if sum != (Summary{Accepted: 1, Skipped: 5}) || secondSum != (Summary{Accepted: 5}) {
		t.Errorf("runs %v and %v; want 1 reported, 5 skipped and 5 reported", sum, secondSum)
	}
	if j := journal(t, reg); len(j) != 6 {
		t.Errorf("journal %q; want 6 rows", j)
	}
}

// TestFailureReleasesClaim: a submission that fails leaves no claim behind,
// so the next run tries again at once.
func TestFailureReleasesClaim(t *testing.T) {
	ctx := context.Background()
	reg, err := registry.Open(ctx, filepath.Join(t.TempDir(), "registry.db"))
	if err != nil {
		t.Fatal(err)
	}
	defer reg.Close()
	vandal(t, reg, 1, "flaky", "203.0.113.1", registry.VerdictActed, "", true)
	a := &api{}
	srv := httptest.NewServer(a)
	defer srv.Close()
	r := &Reporter{Journal: reg, Key: "KEY123", URL: srv.URL}
	if sum, err := r.Run(ctx); err != nil || sum != (Summary{Failed: 1}) {
		t.Fatalf("first run %v, %v; want 1 failed", sum, err)
	}
	if j := journal(t, reg); len(j) != 0 {
		t.Errorf("journal after a failure %q; want nothing", j)
	}
	if sum, err := r.Run(ctx); err != nil || sum != (Summary{Accepted: 1}) {
		t.Errorf("second run %v, %v; want 1 reported", sum, err)
	}
}
