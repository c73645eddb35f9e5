package bounce

import (
	"testing"
	"time"

	"github.com/bouncemilter/bouncemilter/internal/registry"
)

// BenchmarkHandle is the cost of deciding on one bounce that acts, most of
// it the durable journal write (one transaction, synchronous=FULL).
func BenchmarkHandle(b *testing.B) {
	db, err := registry.Open(b.Context(), b.TempDir()+"/r.db")
	if err != nil {
		b.Fatal(err)
	}
	defer db.Close()
	err = db.Tx(b.Context(), func(tx *registry.Tx) error { return tx.UpsertRegistration(b.Context(), bot()) })
	if err != nil {
		b.Fatal(err)
	}
	if err := db.RecordSends(b.Context(), []registry.Send{{Recipient: botAddr, Sent: testNow.Add(-time.Second)}}); err != nil {
		b.Fatal(err)
	}
	h := newHandler(db)
	msg, env := fixture(b, "local-userunknown.eml"), localEnv()
	b.SetBytes(int64(len(msg)))
	for b.Loop() {
		out, err := h.Handle(b.Context(), env, msg)
		if err != nil || out.Verdict != registry.VerdictActed {
			b.Fatal(out, err)
		}
	}
}

// BenchmarkHandleNotBounce is the cost for a message that is no bounce:
// parsing and a journal write.
func BenchmarkHandleNotBounce(b *testing.B) {
	db, err := registry.Open(b.Context(), b.TempDir()+"/r.db")
	if err != nil {
		b.Fatal(err)
	}
	defer db.Close()
	h := newHandler(db)
	msg, env := fixture(b, "not-bounce.eml"), smtpEnv()
	for b.Loop() {
		if _, err := h.Handle(b.Context(), env, msg); err != nil {
			b.Fatal(err)
		}
	}
}
