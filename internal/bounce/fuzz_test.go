package bounce

import (
	"bytes"
	"context"
	"fmt"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/bouncemilter/bouncemilter/internal/dsn"
	"github.com/bouncemilter/bouncemilter/internal/registry"
	"github.com/bouncemilter/bouncemilter/internal/returnpath"
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

// anyoneJournal has an eligible sign-up for every address it is asked
// about, so that whatever the handler shows authentic, it acts on.
type anyoneJournal struct {
	byID    map[int64]string
	actions []registry.Action
}

func (j *anyoneJournal) RegistrationsByEmail(ctx context.Context, addr string) ([]registry.Registration, error) {
	id := int64(len(j.byID) + 1)
	j.byID[id] = addr
	return []registry.Registration{{UserID: id, Username: fmt.Sprint("u", id), Email: addr, Created: testNow.Add(-time.Minute)}}, nil
}

func (j *anyoneJournal) Allowed(context.Context, registry.Registration) (bool, error) {
	return false, nil
}

func (j *anyoneJournal) SentTo(context.Context, string, time.Time) (bool, error) { return true, nil }

func (j *anyoneJournal) Record(ctx context.Context, b registry.Bounce, acts []registry.Action) (registry.Recorded, error) {
	j.actions = append(j.actions, acts...)
	return registry.Recorded{ID: 1, Verdict: b.Verdict, Detail: b.Detail, Actions: len(acts)}, nil
}

// FuzzActsOnlyOnLiteralTagged asserts issue 9's rule over any message:
// every address acted on is one the report wrote literally, as a
// Final-Recipient or an Original-Recipient, and the bounce's address
// carries a valid tag on the sender's address for exactly it.
func FuzzActsOnlyOnLiteralTagged(f *testing.F) {
	addFixtures(f, func(msg []byte) { f.Add(msg, "Xk7bot@example.net") })
	const dsnMsg = "Content-Type: multipart/report; report-type=delivery-status; boundary=b\n\n--b\nContent-Type: message/delivery-status\n\nReporting-MTA: dns; x\n\nFinal-Recipient: rfc822; %s\nOriginal-Recipient: rfc822; %s\nAction: failed\nStatus: 5.1.1\n\n--b--\n"
	for _, a := range []string{"/victim@example.net", "|victim@example.net", `"victim@example.net"@evil.example`, "victim+2Fx@example.net", "Victim@EXAMPLE.net"} {
		f.Add([]byte(fmt.Sprintf(dsnMsg, a, "victim@example.net")), a)
		f.Add([]byte(fmt.Sprintf(dsnMsg, "<"+a+">", a)), a)
	}
	f.Add([]byte("From: MAILER-DAEMON\nSubject: failure notice\n\n<victim@example.net>:\nSorry, no mailbox here by that name. (#5.1.1)\n"), "victim@example.net")
	keys, err := returnpath.LoadOrCreate(filepath.Join(f.TempDir(), "returnpath.keys"))
	if err != nil {
		f.Fatal(err)
	}
	s := &returnpath.Signer{Keys: keys}
	f.Fuzz(func(t *testing.T, msg []byte, signedFor string) {
		to, err := s.Sign(testSender, signedFor, testNow)
		if err != nil {
			return
		}
		j := &anyoneJournal{byID: map[int64]string{}}
		h := newHandler(nil)
		h.Journal, h.Tags = j, s
		if _, err := h.Handle(t.Context(), Envelope{Client: localClient, Recipients: []string{to}}, msg); err != nil {
			t.Fatal(err)
		}
		if len(j.actions) == 0 {
			return
		}
		rep, _ := dsn.Parse(bytes.NewReader(msg))
		for _, a := range j.actions {
			addr := j.byID[a.UserID]
			literal := false
			for _, r := range rep.Recipients {
				literal = literal || r.Literal && r.Address == addr || r.OriginalLiteral && r.OriginalAddress == addr
			}
			if !literal {
				t.Errorf("acted on %q, which the report does not write literally: %+v", addr, rep.Recipients)
			}
			if err := s.VerifySender(testSender, to, addr, testNow); err != nil {
				t.Errorf("acted on %q without a valid tag: %v", addr, err)
			}
		}
	})
}
