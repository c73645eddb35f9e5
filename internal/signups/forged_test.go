package signups_test

import (
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/bouncemilter/bouncemilter/internal/bounce"
	"github.com/bouncemilter/bouncemilter/internal/mediagoblin/mgtest"
	"github.com/bouncemilter/bouncemilter/internal/registry"
	"github.com/bouncemilter/bouncemilter/internal/returnpath"
	"github.com/bouncemilter/bouncemilter/internal/signups"
)

func dsnFor(failed string) []byte {
	return []byte(strings.ReplaceAll(`From: MAILER-DAEMON@mx.remote.example (Mail Delivery System)
To: `+sender+`
Subject: Undelivered Mail Returned to Sender
MIME-Version: 1.0
Content-Type: multipart/report; report-type=delivery-status; boundary="B1"

--B1
Content-Type: text/plain

<`+failed+`>: host mx.remote.example said: 550 5.1.1 User unknown

--B1
Content-Type: message/delivery-status

Reporting-MTA: dns; mx.remote.example

Final-Recipient: rfc822; `+failed+`
Action: failed
Status: 5.1.1
Diagnostic-Code: smtp; 550 5.1.1 <`+failed+`>: User unknown

--B1--
`, "\n", "\r\n"))
}

// With the fallback to MediaGoblin in place, a forged bounce (no valid tag
// for the address it names) still never makes the milter query MediaGoblin:
// the handler shows a bounce authentic before it looks the address up. A
// genuine one for a sign-up the registry does not know yet finds it there
// and acts.
func TestForgedBounceNeverQueriesMediaGoblin(t *testing.T) {
	e := newEnv(t, mgtest.NewSQLite(t, sender))
	now := time.Now().UTC().Truncate(time.Second)
	victim := e.inst.AddUser(t, mgtest.User{Username: "victim", Email: "victim@example.net", Created: now.Add(-time.Minute)})
	keys, err := returnpath.LoadOrCreate(filepath.Join(t.TempDir(), "returnpath.keys"))
	if err != nil {
		t.Fatal(err)
	}
	signer := &returnpath.Signer{Keys: keys}
	h := &bounce.Handler{
		Journal: signups.Journal{Journal: e.reg, Copier: e.copier},
		Policy:  bounce.DefaultPolicy(),
		Sender:  sender,
		Tags:    signer,
	}
	otherTag, err := signer.Sign(sender, "someone@example.net", now)
	if err != nil {
		t.Fatal(err)
	}
	// Over SMTP from anywhere: to the bare sender, and to a valid tag for
	// another address.
	for _, to := range []string{sender, otherTag} {
		env := bounce.Envelope{QueueID: "1F00", Recipients: []string{to},
			Client: bounce.Client{Host: "mx.attacker.example"}}
		out, err := h.Handle(t.Context(), env, dsnFor("victim@example.net"))
		if err != nil {
			t.Fatal(err)
		}
		if out.Actions != 0 || out.Discard {
			t.Errorf("forged bounce to %s: %+v", to, out)
		}
	}
	if n := e.reads.Load(); n != 0 {
		t.Fatalf("forged bounces made %d reads of MediaGoblin; want none", n)
	}

	good, err := signer.Sign(sender, "victim@example.net", now)
	if err != nil {
		t.Fatal(err)
	}
	out, err := h.Handle(t.Context(), bounce.Envelope{QueueID: "2F00", Recipients: []string{good},
		Client: bounce.Client{Host: "mx.remote.example"}}, dsnFor("victim@example.net"))
	if err != nil {
		t.Fatal(err)
	}
	if out.Verdict != registry.VerdictActed || e.reads.Load() != 1 {
		t.Errorf("genuine bounce: %+v after %d reads of MediaGoblin; want acted after one", out, e.reads.Load())
	}
	if acts, _ := e.reg.Actions(t.Context(), victim); len(acts) != 1 || acts[0].Kind != registry.BanAccount {
		t.Errorf("actions = %+v", acts)
	}
}
