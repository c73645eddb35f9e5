package bounce

import (
	"bytes"
	"os"
	"path/filepath"
	"testing"

	"github.com/bouncemilter/bouncemilter/internal/registry"
)

func addFixtures(f *testing.F, add func(msg []byte)) {
	files, err := filepath.Glob(filepath.Join("testdata", "*.eml"))
	if err != nil {
		f.Fatal(err)
	}
	for _, name := range files {
		b, err := os.ReadFile(name)
		if err != nil {
			f.Fatal(err)
		}
		add(b)
	}
}

// FuzzHandle feeds arbitrary messages to a handler over a real registry
// that holds an eligible sign-up with a recorded send: whatever arrives,
// Handle journals it without error, and asks for a discard only when it
// queued actions for every failed recipient.
func FuzzHandle(f *testing.F) {
	addFixtures(f, func(msg []byte) {
		f.Add(msg, true)
		f.Add(msg, false)
	})
	f.Add([]byte(""), true)
	f.Add([]byte("Content-Type: multipart/report; report-type=delivery-status; boundary=b\n\n--b\nContent-Type: message/delivery-status\n\nFinal-Recipient: rfc822; Xk7bot@example.net\nAction: failed\nStatus: 5.1.1\n\n--b--\n"), true)

	db, err := registry.Open(f.Context(), filepath.Join(f.TempDir(), "r.db"))
	if err != nil {
		f.Fatal(err)
	}
	f.Cleanup(func() { db.Close() })
	err = db.Tx(f.Context(), func(tx *registry.Tx) error { return tx.UpsertRegistration(f.Context(), bot()) })
	if err != nil {
		f.Fatal(err)
	}
	if err := db.RecordSends(f.Context(), []registry.Send{{Recipient: botAddr, Sent: testNow}}); err != nil {
		f.Fatal(err)
	}
	h := newHandler(db)

	f.Fuzz(func(t *testing.T, msg []byte, local bool) {
		env := smtpEnv()
		if local {
			env = localEnv()
		}
		out, err := h.Handle(t.Context(), env, msg)
		if err != nil {
			t.Fatalf("Handle: %v", err)
		}
		if out.BounceID == 0 {
			t.Error("not journalled")
		}
		if out.Discard && (out.Verdict != registry.VerdictActed || out.Actions == 0) {
			t.Errorf("discard with %+v", out)
		}
		if out.Verdict == registry.VerdictActed && !local {
			t.Errorf("acted on a bounce over SMTP without a tag: %+v", out)
		}
	})
}

// FuzzHeaderOf checks that the journalled header is the start of the
// message, ends before the first blank line and respects its cap.
func FuzzHeaderOf(f *testing.F) {
	addFixtures(f, func(msg []byte) { f.Add(msg, 16<<10) })
	f.Add([]byte("A: b\r\n\r\nbody\n\nmore"), 3)
	f.Add([]byte("A: b\n\nbody\r\n\r\n"), 100)
	f.Fuzz(func(t *testing.T, msg []byte, max int) {
		if max < 0 {
			max = -max
		}
		if max < 0 { // the most negative int
			max = 0
		}
		h := headerOf(msg, max)
		if len(h) > max || !bytes.HasPrefix(msg, []byte(h)) {
			t.Fatalf("headerOf(%q, %d) = %q", msg, max, h)
		}
		if bytes.Contains([]byte(h), []byte("\n\n")) || bytes.Contains([]byte(h), []byte("\r\n\r\n")) {
			t.Fatalf("headerOf(%q, %d) = %q runs into the body", msg, max, h)
		}
	})
}
