package metrics

import (
	"context"
	"errors"
	"io"
	"net/http/httptest"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/bouncemilter/bouncemilter/internal/bounce"
	"github.com/bouncemilter/bouncemilter/internal/registry"
)

type fakeHandler struct{ out bounce.Outcome }

func (h fakeHandler) Handle(ctx context.Context, env bounce.Envelope, msg []byte) (bounce.Outcome, error) {
	return h.out, nil
}

func scrape(t *testing.T, m *Metrics) string {
	t.Helper()
	rec := httptest.NewRecorder()
	m.Handler(nil).ServeHTTP(rec, httptest.NewRequest("GET", "/metrics", nil))
	b, _ := io.ReadAll(rec.Result().Body)
	return string(b)
}

// TestDecorators counts through the decorators over a real registry: the
// queue's counts need the actions' kinds, which only ReadyActions gives.
func TestDecorators(t *testing.T) {
	ctx := context.Background()
	reg, err := registry.Open(ctx, filepath.Join(t.TempDir(), "r.db"))
	if err != nil {
		t.Fatal(err)
	}
	defer reg.Close()
	m := New(reg)
	now := time.Now()

	h := m.WrapHandler(fakeHandler{bounce.Outcome{Verdict: registry.VerdictNotBounce, Detail: "unreadable: boom"}})
	h.Handle(ctx, bounce.Envelope{}, nil)
	h = m.WrapHandler(fakeHandler{bounce.Outcome{Verdict: registry.VerdictActed}})
	h.Handle(ctx, bounce.Envelope{}, nil)
	m.WrapSends(reg).RecordSends(ctx, []registry.Send{{Recipient: "a@b.example", Sent: now}})
	m.Message(KindOther)

	if _, err := reg.RecordBounce(ctx, registry.Bounce{Received: now, Verdict: registry.VerdictActed, Report: "{}"}, []registry.Action{
		{UserID: 1, Kind: registry.BanAccount, Target: "1", Reason: "r"},
		// No account behind it (a peers' ban): ready alongside, not
		// waiting for the account ban.
		{Kind: registry.BanIP, Target: "203.0.113.7", Reason: "r"},
	}); err != nil {
		t.Fatal(err)
	}
	q := m.WrapQueue(reg)
	due, err := q.ReadyActions(ctx, now, 10)
	if err != nil || len(due) != 2 {
		t.Fatalf("due = %v, %v", due, err)
	}
	q.MarkFailed(ctx, due[1].ID, errors.New("down"), now)
	if before := scrape(t, m); !strings.Contains(before, "bouncemilter_action_backlog 2\n") {
		t.Errorf("backlog before: %s", grep(before, "backlog"))
	}
	q.MarkApplied(ctx, due[0].ID, now, "")
	q.MarkRefused(ctx, due[1].ID, errors.New("no"), now)
	if err := reg.RecordSync(ctx, registry.SyncRun{At: time.Unix(1700000000, 0)}); err != nil {
		t.Fatal(err)
	}

	got := scrape(t, m)
	for _, want := range []string{
		`bouncemilter_messages_total{kind="bounce"} 2`,
		`bouncemilter_messages_total{kind="outgoing"} 1`,
		`bouncemilter_messages_total{kind="other"} 1`,
		`bouncemilter_bounces_total{verdict="acted"} 1`,
		`bouncemilter_bounces_total{verdict="not-bounce"} 1`,
		`bouncemilter_parse_errors_total 1`,
		`bouncemilter_decision_seconds_count 2`,
		`bouncemilter_actions_total{kind="ban-account",result="applied"} 1`,
		`bouncemilter_actions_total{kind="ban-ip",result="failed"} 1`,
		`bouncemilter_actions_total{kind="ban-ip",result="refused"} 1`,
		`bouncemilter_action_backlog 0`,
		`bouncemilter_last_sync_timestamp_seconds 1.7e+09`,
	} {
		if !strings.Contains(got, want+"\n") {
			t.Errorf("scrape lacks %q", want)
		}
	}
	if t.Failed() {
		t.Log(grep(got, "bouncemilter_"))
	}
}

func grep(s, sub string) string {
	var out []string
	for _, l := range strings.Split(s, "\n") {
		if strings.Contains(l, sub) && !strings.HasPrefix(l, "#") {
			out = append(out, l)
		}
	}
	return strings.Join(out, "\n")
}
