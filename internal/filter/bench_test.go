package filter

import (
	"testing"
	"time"

	"github.com/emersion/go-milter"

	"github.com/bouncemilter/bouncemilter/internal/bounce"
	"github.com/bouncemilter/bouncemilter/internal/registry"
)

// The benchmarks drive the milter over loopback TCP with go-milter's
// client as Postfix does: ordinary mail arrives one message after another
// on one smtpd connection and is answered at MAIL FROM; each bounce that
// Postfix makes itself comes through cleanup on a connection of its own
// and is read whole. Compare them with
//
//	go test -run '^$' -bench . -benchmem ./internal/filter/

func BenchmarkOrdinaryMail(b *testing.B) {
	srv := serve(b, Config{}, discarding(), nil, nil, time.Second)
	c := dialSMTP(b, srv.addr)
	m := ordinary("alice@example.com", "bob@media.example.org")
	for b.Loop() {
		if _, act, _ := c.send(m); act.Code != milter.ActAccept {
			b.Fatalf("answer %q", act.Code)
		}
		c.s.Close()
	}
}

// BenchmarkBounce is the milter's own cost for a bounce: buffering and
// the protocol, with a handler that decides at once.
func BenchmarkBounce(b *testing.B) {
	srv := serve(b, Config{}, &recorder{out: bounce.Outcome{Discard: true}}, nil, nil, time.Second)
	h := srv.f.handler.(*recorder)
	m := bounceOf(b, sender)
	b.SetBytes(int64(len(m.body)))
	for b.Loop() {
		c := dialLocal(b, srv.addr)
		if _, act, _ := c.send(m); act.Code != milter.ActDiscard {
			b.Fatalf("answer %q", act.Code)
		}
		c.s.Close()
		h.mu.Lock()
		h.calls = h.calls[:0]
		h.mu.Unlock()
	}
}

// BenchmarkBounceJournalled adds the real handler: parsing, look-ups and
// the durable journal write (synchronous=FULL) before DISCARD.
func BenchmarkBounceJournalled(b *testing.B) {
	db := openRegistry(b)
	now := time.Now()
	err := db.Tx(b.Context(), func(tx *registry.Tx) error {
		return tx.UpsertRegistration(b.Context(), registry.Registration{UserID: 42, Username: "xk7bot", Email: "Xk7bot@example.net", Created: now, Synced: now})
	})
	if err != nil {
		b.Fatal(err)
	}
	if err := db.RecordSends(b.Context(), []registry.Send{{Recipient: "Xk7bot@example.net", Sent: now}}); err != nil {
		b.Fatal(err)
	}
	h := &bounce.Handler{Journal: db, Policy: bounce.DefaultPolicy(), Sender: sender}
	srv := serve(b, Config{}, h, db, nil, time.Second)
	m := bounceOf(b, sender)
	for b.Loop() {
		c := dialLocal(b, srv.addr)
		if _, act, _ := c.send(m); act.Code != milter.ActDiscard {
			b.Fatalf("answer %q", act.Code)
		}
		c.s.Close()
	}
}
