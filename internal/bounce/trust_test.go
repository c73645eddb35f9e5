package bounce

import (
	"context"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/bouncemilter/bouncemilter/internal/dsn"
	"github.com/bouncemilter/bouncemilter/internal/registry"
)

// spyJournal records the addresses the handler looked up.
type spyJournal struct {
	Journal
	lookups []string
}

func (s *spyJournal) RegistrationsByEmail(ctx context.Context, addr string) ([]registry.Registration, error) {
	s.lookups = append(s.lookups, addr)
	return s.Journal.RegistrationsByEmail(ctx, addr)
}

func failed(addr string, literal bool) dsn.Recipient {
	return dsn.Recipient{Address: addr, Literal: literal, Action: "failed", Status: "5.1.1", Reason: "userunknown", Permanent: true}
}

func report(rs ...dsn.Recipient) *dsn.Report {
	return &dsn.Report{Bounce: true, Kind: "bounce", Format: "rfc3464", Recipients: rs}
}

const victimAddr = "victim@example.net"

// victim is a real person who signed up a minute ago and has not opened
// the verification mail yet: the account an attacker wants to cost her.
func victim() registry.Registration {
	return registry.Registration{UserID: 7, Username: "victim", Email: victimAddr, Created: testNow.Add(-time.Minute), IP: "198.51.100.20"}
}

// Look-alike sign-ups (issue 9 §1): the attacker signs up with an address
// that the parser, cleaning up, could turn into the victim's, and the
// bounce of it is genuine. Only the literal address may be acted on, so
// the victim's account is never touched; the attacker's own may be.
func TestDecideActsOnlyOnLiteralAddresses(t *testing.T) {
	s := signer(t)
	tests := []struct {
		name      string
		signedTo  string // the address MediaGoblin mailed, and the tag names
		lookalike string // the attacker's sign-up address
		rcpt      dsn.Recipient
		acted     []int64
	}{
		{
			name:     "slash prefix cleaned by the parser",
			signedTo: "/victim@example.net", lookalike: "/victim@example.net",
			rcpt: failed(victimAddr, false),
		},
		{
			name:     "slash prefix kept literal",
			signedTo: "/victim@example.net", lookalike: "/victim@example.net",
			rcpt:  failed("/victim@example.net", true),
			acted: []int64{66},
		},
		{
			name:     "pipe prefix cleaned",
			signedTo: "|victim@example.net", lookalike: "|victim@example.net",
			rcpt: failed(victimAddr, false),
		},
		{
			name:     "quoted local part holding the address",
			signedTo: `"victim@example.net"@evil.example`, lookalike: `"victim@example.net"@evil.example`,
			rcpt: failed(victimAddr, false),
		},
		{
			name:     "case variant of the local part",
			signedTo: "Victim@example.net", lookalike: "Victim@example.net",
			rcpt:  failed("Victim@example.net", true),
			acted: []int64{66},
		},
		{
			name:     "Original-Recipient set by ORCPT, no tag for it",
			signedTo: "bot@evil.example", lookalike: "bot@evil.example",
			rcpt: func() dsn.Recipient {
				r := failed("bot@evil.example", true)
				r.OriginalAddress, r.OriginalLiteral = victimAddr, true
				return r
			}(),
			acted: []int64{66},
		},
		{
			// An alias the victim signed up with, expanded by her
			// domain: the member that failed is not her address.
			name:     "Original-Recipient tagged, another Final-Recipient",
			signedTo: victimAddr, lookalike: "bot@evil.example",
			rcpt: func() dsn.Recipient {
				r := failed("bob-left@example.net", true)
				r.OriginalAddress, r.OriginalLiteral = victimAddr, true
				return r
			}(),
		},
		{
			name:     "Original-Recipient tagged, Final-Recipient not literal",
			signedTo: "bot@evil.example", lookalike: "bot@evil.example",
			rcpt: func() dsn.Recipient {
				r := failed("bot@evil.example", false)
				r.OriginalAddress, r.OriginalLiteral = "bot@evil.example", true
				return r
			}(),
		},
		{
			// A pipe or a file in the alias the victim signed up
			// with failed: the parser shows the alias as the address.
			name:     "Original-Recipient tagged, Final-Recipient a pipe",
			signedTo: victimAddr, lookalike: "bot@evil.example",
			rcpt: func() dsn.Recipient {
				r := failed(victimAddr, true)
				r.OriginalAddress, r.OriginalLiteral, r.FromOriginal = victimAddr, true, true
				return r
			}(),
		},
		{
			name:     "Original-Recipient tagged, Final-Recipient in other case",
			signedTo: "bot@evil.example", lookalike: "bot@evil.example",
			rcpt: func() dsn.Recipient {
				r := failed("BOT@evil.example", true)
				r.OriginalAddress, r.OriginalLiteral = "bot@evil.example", true
				return r
			}(),
			acted: []int64{66},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			db := openRegistry(t)
			signUp(t, db, victim(), registry.Registration{UserID: 66, Username: "attacker", Email: tt.lookalike, Created: testNow.Add(-time.Minute), IP: "203.0.113.66"})
			// The victim's own verification mail was sent: the old "made by
			// this Postfix" path believed any bounce naming her.
			sent(t, db, victimAddr, testNow.Add(-time.Minute))
			sent(t, db, tt.signedTo, testNow.Add(-time.Minute))
			h := newHandler(db)
			h.Tags = s
			env := Envelope{QueueID: "8D3F11A0B5", Client: localClient, Generated: true, Recipients: []string{sign(t, s, tt.signedTo, testNow.Add(-time.Minute))}}
			acts, out, err := h.decide(t.Context(), env, report(tt.rcpt), testNow)
			if err != nil {
				t.Fatal(err)
			}
			var users []int64
			for _, a := range acts {
				if a.Kind == registry.BanAccount {
					users = append(users, a.UserID)
				}
			}
			if !slices.Equal(users, tt.acted) {
				t.Errorf("banned %v, want %v (%s)", users, tt.acted, out.Detail)
			}
			if out.Discard && len(tt.acted) == 0 {
				t.Errorf("discarded a bounce nothing was done for: %+v", out)
			}
		})
	}
}

// Contract with package registry's MediaGoblin fallback: a bounce that is
// not shown authentic never makes the handler look an address up.
func TestDecideLooksUpOnlyAuthenticAddresses(t *testing.T) {
	s := signer(t)
	db := openRegistry(t)
	signUp(t, db, victim())
	sent(t, db, victimAddr, testNow.Add(-time.Minute))
	tagOther := sign(t, s, "someone@example.net", testNow)
	for _, tt := range []struct {
		name string
		tags bool
		env  Envelope
	}{
		{"signing on, no tag, made by this Postfix", true, Envelope{Client: localClient, Recipients: []string{testSender}, Generated: true}},
		{"signing on, tag for another address", true, Envelope{Client: smtpClient, Recipients: []string{tagOther}}},
		{"signing off, over SMTP", false, Envelope{Client: smtpClient, Recipients: []string{testSender}}},
	} {
		t.Run(tt.name, func(t *testing.T) {
			spy := &spyJournal{Journal: db}
			h := newHandler(db)
			h.Journal = spy
			if tt.tags {
				h.Tags = s
			}
			acts, out, err := h.decide(t.Context(), tt.env, report(failed(victimAddr, true)), testNow)
			if err != nil {
				t.Fatal(err)
			}
			if len(acts) != 0 || out.Verdict != registry.VerdictSuspect {
				t.Errorf("forged bounce: %d actions, %+v", len(acts), out)
			}
			if len(spy.lookups) != 0 {
				t.Errorf("looked up %q for a bounce not shown authentic", spy.lookups)
			}
		})
	}
}

// With signing on, Postfix's own bounces come back to the signed address
// too: the "made by this Postfix" path is only for signing off.
func TestDecideSigningOnNeedsTheTag(t *testing.T) {
	db := openRegistry(t)
	signUp(t, db, bot())
	sent(t, db, botAddr, testNow.Add(-3*time.Second))
	h := newHandler(db)
	h.Tags = signer(t)
	out, err := h.Handle(t.Context(), localEnv(), fixture(t, "local-userunknown.eml"))
	if err != nil {
		t.Fatal(err)
	}
	if out.Verdict != registry.VerdictSuspect || out.Actions != 0 {
		t.Errorf("an untagged local bounce with signing on: %+v", out)
	}
}

// The tag proves the bounce answers mail from the sender address only
// when it sits on that address.
func TestDecideTagBaseIsSender(t *testing.T) {
	s := signer(t)
	good := sign(t, s, botAddr, testNow)
	_, tag, _ := strings.Cut(good, "+")
	for _, to := range []string{
		"postmaster+" + tag,
		strings.Replace("notice+"+tag, "media.example.org", "other.example", 1),
	} {
		db := openRegistry(t)
		signUp(t, db, bot())
		h := newHandler(db)
		h.Tags = s
		acts, out, err := h.decide(t.Context(), Envelope{Client: smtpClient, Recipients: []string{to}}, report(failed(botAddr, true)), testNow)
		if err != nil {
			t.Fatal(err)
		}
		if len(acts) != 0 {
			t.Errorf("a tag on %s acted: %+v", to, out)
		}
	}
}

// A report the parser cut short may name more than was read: never
// discard it, even when every recipient read was acted on (§3).
func TestDecideTruncatedIsNeverDiscarded(t *testing.T) {
	for _, discardSuspect := range []bool{false, true} {
		db := openRegistry(t)
		signUp(t, db, bot())
		sent(t, db, botAddr, testNow.Add(-3*time.Second))
		h := newHandler(db)
		h.DiscardSuspect = discardSuspect
		rep := report(failed(botAddr, true))
		rep.Truncated = true
		acts, out, err := h.decide(t.Context(), localEnv(), rep, testNow)
		if err != nil {
			t.Fatal(err)
		}
		if len(acts) == 0 || out.Discard {
			t.Errorf("truncated report: %d actions, discard %v", len(acts), out.Discard)
		}
		// A suspect one neither.
		_, out, err = h.decide(t.Context(), smtpEnv(), rep, testNow)
		if err != nil {
			t.Fatal(err)
		}
		if out.Verdict != registry.VerdictSuspect || out.Discard {
			t.Errorf("truncated suspect report with DiscardSuspect %v: %+v", discardSuspect, out)
		}
	}
}

// --trust-returned-headers compares whole addresses.
func TestReturnedMatches(t *testing.T) {
	tests := []struct {
		from, to string
		ok       bool
	}{
		{"notice@media.example.org", "xk7bot@example.net", true},
		{"GNU MediaGoblin <Notice@Media.Example.org>", "Someone <xk7bot@EXAMPLE.net>, other@example.org", true},
		{"evilnotice@media.example.org", "xk7bot@example.net", false},
		{"notice@media.example.org.evil.example", "xk7bot@example.net", false},
		{"notice@media.example.org", "axk7bot@example.net", false},
		{"notice@media.example.org", "xk7bot@example.net.evil.example", false},
		{"notice@media.example.org", "Xk7bot@example.net", false},
		{"notice@media.example.org, evil@evil.example", "xk7bot@example.net", false},
		{`"notice@media.example.org" <evil@evil.example>`, "xk7bot@example.net", false},
		{"notice@media.example.org", `"xk7bot@example.net" <evil@evil.example>`, false},
		{"", "xk7bot@example.net", false},
	}
	for _, tt := range tests {
		o := dsn.Original{From: tt.from, To: tt.to}
		if got := returnedMatches(o, "xk7bot@example.net", testSender); got != tt.ok {
			t.Errorf("returnedMatches(From %q, To %q) = %v, want %v", tt.from, tt.to, got, tt.ok)
		}
	}
}

// Without signed return paths, a bounce this Postfix made is believed for
// an address a send was recorded to. Its Original-Recipient comes from the
// ORCPT parameter the SMTP client chose (RFC 3461 section 4.2): anyone who
// may relay mail from the sender address can send to a dead address with
// ORCPT=rfc822;victim@example.net and get a genuine bounce naming her. So
// without a tag only Final-Recipient, which this Postfix wrote, may prove
// an address; in signed mode the tag names the address, whichever field
// holds it.
func TestUnsignedBouncesIgnoreOriginalRecipient(t *testing.T) {
	db := openRegistry(t)
	signUp(t, db, victim())
	sent(t, db, victimAddr, testNow.Add(-time.Minute))
	rcpt := failed("nosuch@dead.example", true)
	rcpt.OriginalAddress, rcpt.OriginalLiteral = victimAddr, true
	h := newHandler(db)
	for _, trustReturned := range []bool{false, true} {
		h.TrustReturnedHeaders = trustReturned
		rep := report(rcpt)
		rep.Original = dsn.Original{From: testSender, To: victimAddr}
		acts, out, err := h.decide(t.Context(), localEnv(), rep, testNow)
		if err != nil {
			t.Fatal(err)
		}
		if len(acts) != 0 || out.Discard {
			t.Errorf("trust returned headers %v: %d actions, discard %v (%s); want none", trustReturned, len(acts), out.Discard, out.Detail)
		}
	}
}

// A real person signs up with a team address, info@company.example, which
// company.example's Postfix expands to two mailboxes: alice@ (who gets the
// verification mail and will click it) and bob-left@ (whose mailbox was
// removed). The remote Postfix delivers to alice and sends a genuine DSN to
// the signed return path for the one member that failed: Final-Recipient
// bob-left@, Original-Recipient info@ (Postfix's enable_original_recipient,
// no ORCPT needed). The tag is valid for info@, so the handler takes the
// Original-Recipient as the address that does not exist and disables the
// real, one-minute-old account of info@ and bans alice's office IP: an
// alias's failed member proves nothing about the alias.
func TestAliasMemberFailureSparesTheAlias(t *testing.T) {
	const team = "info@company.example"
	dsnMsg := strings.ReplaceAll(`From: MAILER-DAEMON@mx.company.example (Mail Delivery System)
To: notice@media.example.org
Subject: Undelivered Mail Returned to Sender
MIME-Version: 1.0
Content-Type: multipart/report; report-type=delivery-status; boundary="B1"

--B1
Content-Type: text/plain

This is the mail system at host mx.company.example.

<bob-left@company.example> (expanded from <info@company.example>): unknown user:
    "bob-left"

--B1
Content-Type: message/delivery-status

Reporting-MTA: dns; mx.company.example
X-Postfix-Queue-ID: 4F1A2B3C4D
Arrival-Date: Thu, 26 Nov 2026 09:14:06 +0000 (UTC)

Final-Recipient: rfc822; bob-left@company.example
Original-Recipient: rfc822;info@company.example
Action: failed
Status: 5.1.1
Diagnostic-Code: X-Postfix; unknown user: "bob-left"

--B1
Content-Type: text/rfc822-headers

From: notice@media.example.org
To: info@company.example
Subject: GNU MediaGoblin - Verify your email!

--B1--
`, "\n", "\r\n")
	s := signer(t)
	db := openRegistry(t)
	signUp(t, db, registry.Registration{UserID: 7, Username: "acme", Email: team, Created: testNow.Add(-time.Minute), IP: "198.51.100.20"})
	h := newHandler(db)
	h.Tags = s
	env := Envelope{QueueID: "2B7A41A0C1", Client: Client{Host: "mx.company.example"}, Recipients: []string{sign(t, s, team, testNow.Add(-time.Minute))}}
	out, err := h.Handle(t.Context(), env, []byte(dsnMsg))
	if err != nil {
		t.Fatal(err)
	}
	acts, err := db.Actions(t.Context(), 7)
	if err != nil {
		t.Fatal(err)
	}
	if len(acts) != 0 || out.Discard {
		t.Errorf("one failed member of the alias %s disabled its real sign-up: verdict %s, discard %v, actions %q (%s)",
			team, out.Verdict, out.Discard, kinds(acts), out.Detail)
	}
}
