package guard

import (
	"context"
	"log/slog"
	"net"
	"strings"
	"testing"
	"time"

	"github.com/bouncemilter/bouncemilter/internal/bounce"
	"github.com/bouncemilter/bouncemilter/internal/filter"
	"github.com/bouncemilter/bouncemilter/internal/registry"
	"github.com/bouncemilter/bouncemilter/internal/testenv"
)

// TestGuardWithPostfix: MediaGoblin's verification mails go through a real
// Postfix to the real filter with the guard; the guard asks a DNS server of
// the test's own. Mail to a null-MX domain, to a domain without records and
// to an address known bad is discarded and its sign-up journalled for
// action; mail to a deliverable domain, and mail whose domain the resolver
// is too slow to answer for, reaches the remote server.
func TestGuardWithPostfix(t *testing.T) {
	ctx := context.Background()
	const sender = "notice@media.example.org"
	dnsSrv := startDNS(t)
	res, err := NewResolver(dnsSrv.addr, 500*time.Millisecond)
	if err != nil {
		t.Fatal(err)
	}
	reg := openRegistry(t)
	bounced(t, reg, registry.Registration{UserID: 100, Username: "oldbot", Email: "bot@good.test", IP: "198.51.100.100", Created: now.Add(-2 * time.Hour)})
	signups := []registry.Registration{
		{UserID: 1, Username: "nullmx", Email: "bot@nullmx.test", IP: "203.0.113.1"},
		{UserID: 2, Username: "empty", Email: "bot@empty.test", IP: "203.0.113.2"},
		{UserID: 3, Username: "slow", Email: "bot@slow.test", IP: "203.0.113.3"},
		{UserID: 4, Username: "again", Email: "bot@good.test", IP: "203.0.113.4"},
		{UserID: 5, Username: "real", Email: "someone@good.test", IP: "203.0.113.5"},
	}
	for _, s := range signups {
		signUp(t, reg, s)
	}

	remote := testenv.StartSMTPServer(t, "127.0.0.2:0", nil)
	_, port, _ := net.SplitHostPort(remote.Addr)
	milterAddr := testenv.FreeAddr(t, "127.0.0.1")
	transports := map[string]string{}
	for _, d := range []string{"nullmx.test", "empty.test", "slow.test", "good.test"} {
		transports[d] = "smtp:[127.0.0.2]:" + port
	}
	pf := testenv.StartPostfix(t, testenv.PostfixConfig{Transports: transports, Main: testenv.ContribMain(t, "inet:"+milterAddr)})

	g := &Guard{Journal: reg, Policy: bounce.DefaultPolicy(), DNS: res}
	handler := &bounce.Handler{Journal: reg, Policy: bounce.DefaultPolicy(), Sender: sender}
	log := slog.New(slog.NewTextHandler(testWriter{t}, nil))
	f, err := filter.New(filter.Config{Sender: sender, Delimiter: "+", Guard: g}, handler, reg, nil, log)
	if err != nil {
		t.Fatal(err)
	}
	ln, err := net.Listen("tcp", milterAddr)
	if err != nil {
		t.Fatal(err)
	}
	sctx, stop := context.WithCancel(ctx)
	done := make(chan struct{})
	go func() { f.Serve(sctx, ln, time.Second); close(done) }()
	t.Cleanup(func() { stop(); <-done })

	for _, s := range signups {
		msg := "From: " + sender + "\r\nTo: " + s.Email + "\r\nSubject: GNU MediaGoblin - Verify your email!\r\n\r\nHi " + s.Username + ",\r\n"
		if err := testenv.SendMail(pf.SMTP, sender, []string{s.Email}, msg); err != nil {
			t.Fatalf("send to %s: %v", s.Email, err)
		}
	}
	testenv.WaitFor(t, 30*time.Second, "the deliverable mails to reach the remote server", func() bool {
		return len(remote.MessagesTo("bot@slow.test")) == 1 && len(remote.MessagesTo("someone@good.test")) == 1
	})
	testenv.WaitFor(t, 10*time.Second, "Postfix to log three DISCARDs", func() bool {
		return strings.Count(pf.LogText(t), "milter triggers DISCARD action") == 3
	})
	for _, rcpt := range []string{"bot@nullmx.test", "bot@empty.test", "bot@good.test"} {
		if got := remote.MessagesTo(rcpt); len(got) != 0 {
			t.Errorf("%s received %d messages; the guard should have stopped them", rcpt, len(got))
		}
	}
	want := map[int64]string{
		1: "ban-account 1,ban-ip 203.0.113.1",
		2: "ban-account 2,ban-ip 203.0.113.2",
		3: "",
		4: "ban-account 4,ban-ip 203.0.113.4",
		5: "",
	}
	for id, w := range want {
		if got := strings.Join(actionsOf(t, reg, id), ","); got != w {
			t.Errorf("user %d: actions %q; want %q", id, got, w)
		}
	}
}

type testWriter struct{ t *testing.T }

func (w testWriter) Write(p []byte) (int, error) {
	w.t.Log(strings.TrimRight(string(p), "\n"))
	return len(p), nil
}
