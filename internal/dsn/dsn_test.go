package dsn

import (
	"bytes"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
)

// want is the expected result of one sample in testdata/dsn.
type want struct {
	bounce     bool
	kind       string
	recipients []Recipient // Address, Action, Status, Reason, Permanent are compared
	original   Original    // compared field by field when set
}

var samples = map[string]want{
	"postfix-userunknown.eml": {
		bounce: true, kind: "bounce",
		recipients: []Recipient{{Address: "NoSuchUser@example.net", Action: "failed", Status: "5.1.1", Reason: "userunknown", Permanent: true,
			Diagnostic: "550 5.1.1 <NoSuchUser@Example.NET>: Recipient address rejected: User unknown"}},
		original: Original{
			MessageID: "<20261126010201.4F1A21C0F2@mail.example.org>",
			From:      "notice@media.example.org",
			To:        "NoSuchUser@Example.NET",
			Subject:   "GNU MediaGoblin - Verify your email!",
			Date:      "Thu, 26 Nov 2026 01:02:01 +0000 (UTC)",
		},
	},
	"postfix-hdrs-only.eml": {
		bounce: true, kind: "bounce",
		recipients: []Recipient{{Address: "NoSuchUser@example.net", Action: "failed", Status: "5.1.1", Reason: "userunknown", Permanent: true}},
		original: Original{
			MessageID: "<20261126010201.4F1A21C0F2@mail.example.org>",
			To:        "NoSuchUser@Example.NET",
			Subject:   "GNU MediaGoblin - Verify your email!",
		},
	},
	"postfix-multi-rcpt.eml": {
		bounce: true, kind: "bounce",
		recipients: []Recipient{
			{Address: "NoSuchUser@example.net", Action: "failed", Status: "5.1.1", Reason: "userunknown", Permanent: true},
			{Address: "full@example.com", Action: "failed", Status: "5.2.2", Reason: "mailboxfull", Permanent: true},
			{Address: "bot@no-such-domain.example", Action: "failed", Status: "5.4.4", Reason: "hostunknown", Permanent: true},
		},
		original: Original{Subject: "GNU MediaGoblin - Verify your email!"},
	},
	"postfix-delayed.eml": {
		bounce: true, kind: "bounce",
		recipients: []Recipient{{Address: "slow@example.net", Action: "delayed", Status: "4.4.1", Reason: "networkerror", Permanent: false}},
		original:   Original{To: "slow@example.net", Subject: "GNU MediaGoblin - Verify your email!"},
	},
	"postfix-report-unavailable.eml": {
		// No per-recipient fields at all: the returned message's To is
		// the recipient, and nothing says why.
		bounce: true, kind: "bounce",
		recipients: []Recipient{{Address: "NoSuchUser@example.net", Action: "failed", Status: "5.0.0", Reason: "onhold", Permanent: true}},
		original:   Original{MessageID: "<20261126010201.4F1A21C0F2@mail.example.org>"},
	},
	"qmail-userunknown.eml": {
		bounce: true, kind: "bounce",
		recipients: []Recipient{{Address: "ghost@qmail.example", Action: "failed", Status: "5.1.1", Reason: "userunknown", Permanent: true}},
		original:   Original{MessageID: "<20261126010959.AAAA1C0F2@mail.example.org>", To: "ghost@qmail.example", Subject: "GNU MediaGoblin - Verify your email!"},
	},
	"exim-userunknown.eml": {
		bounce: true, kind: "bounce",
		recipients: []Recipient{{Address: "nobody-here@exim.example", Action: "failed", Status: "5.1.1", Reason: "userunknown", Permanent: true}},
		original:   Original{MessageID: "<20261126011059.BBBB1C0F2@mail.example.org>", Subject: "GNU MediaGoblin - Verify your email!"},
	},
	"exim-delayed.eml": {
		bounce: true, kind: "bounce",
		recipients: []Recipient{{Address: "slowpoke@exim.example", Action: "delayed", Status: "4.7.1", Reason: "networkerror", Permanent: false}},
	},
	"sendmail-userunknown.eml": {
		bounce: true, kind: "bounce",
		recipients: []Recipient{{Address: "Who.Is.This@sendmail.example", Action: "failed", Status: "5.1.1", Reason: "userunknown", Permanent: true}},
		original:   Original{MessageID: "<20261126011159.CCCC1C0F2@mail.example.org>"},
	},
	"sendmail-v5-transcript.eml": {
		bounce: true, kind: "bounce",
		recipients: []Recipient{{Address: "olduser@old.sendmail.example", Action: "failed", Status: "5.1.1", Reason: "userunknown", Permanent: true}},
		original:   Original{To: "olduser@old.sendmail.example", Subject: "GNU MediaGoblin - Verify your email!"},
	},
	"exchange-office365.eml": {
		bounce: true, kind: "bounce",
		recipients: []Recipient{{Address: "missing.person@o365.example", Action: "failed", Status: "5.1.10", Reason: "userunknown", Permanent: true}},
		original:   Original{MessageID: "<20261126011359.DDDD1C0F2@mail.example.org>"},
	},
	"exchange2003-text.eml": {
		bounce: true, kind: "bounce",
		recipients: []Recipient{{Address: "gone@ex2003.example", Action: "failed", Status: "5.1.1", Reason: "userunknown", Permanent: true}},
	},
	"gmail-userunknown.eml": {
		bounce: true, kind: "bounce",
		recipients: []Recipient{{Address: "not.a.real.user@gmail-example.test", Action: "failed", Status: "5.1.1", Reason: "userunknown", Permanent: true}},
		original:   Original{MessageID: "<20261126011559.EEEE1C0F2@mail.example.org>"},
	},
	"yahoo-userunknown.eml": {
		bounce: true, kind: "bounce",
		recipients: []Recipient{{Address: "vanished@yahoo-example.test", Action: "failed", Status: "5.1.1", Reason: "userunknown", Permanent: true}},
		original:   Original{To: "vanished@yahoo-example.test"},
	},
	"amazonses-bounce.eml": {
		bounce: true, kind: "bounce",
		recipients: []Recipient{{Address: "bounce@simulator.ses-example.test", Action: "failed", Status: "5.1.1", Reason: "userunknown", Permanent: true}},
	},
	"amazonses-complaint.eml": {kind: "feedback", recipients: []Recipient{}},
	"arf-abuse.eml":           {kind: "feedback", recipients: []Recipient{}},
	"autoreply.eml":           {kind: "vacation", recipients: []Recipient{}},
	"not-bounce-newsletter.eml": {
		recipients: []Recipient{},
	},
	"delivered.eml": {
		kind:       "delivered",
		recipients: []Recipient{{Address: "real.user@example.net", Action: "delivered", Status: "2.0.0", Reason: "delivered"}},
	},
	"messy-base64-status.eml": {
		bounce: true, kind: "bounce",
		recipients: []Recipient{
			{Address: "First@messy.example", Action: "failed", Status: "5.1.1", Reason: "userunknown", Permanent: true},
			{Address: `"john doe"@messy.example`, Action: "failed", Status: "5.1.1", Reason: "userunknown", Permanent: true},
			{Address: "tag+me=you@messy.example", Action: "delayed", Status: "4.2.2", Reason: "mailboxfull"},
		},
	},
	"rfc6533-global.eml": {
		bounce: true, kind: "bounce",
		recipients: []Recipient{{Address: "jörg@intl.example", Action: "failed", Status: "5.1.1", Reason: "userunknown", Permanent: true}},
		original:   Original{To: "jörg@intl.example", Subject: "GNU MediaGoblin - Verify your email!"},
	},
	// Free-text bounces of old and odd mail systems (issue 10), written
	// from their documented or widely quoted formats.
	"exchange55-smtpsvc-two-rcpts.eml": {
		bounce: true, kind: "bounce",
		recipients: []Recipient{
			{Address: "first.gone@ex55.example", Action: "failed", Status: "5.1.1", Reason: "userunknown", Permanent: true},
			{Address: "second.gone@ex55.example", Action: "failed", Status: "5.1.1", Reason: "userunknown", Permanent: true},
		},
	},
	"lotusnotes-userunknown.eml": {
		bounce: true, kind: "bounce",
		recipients: []Recipient{{Address: "nobody@notes.example", Action: "failed", Status: "5.1.1", Reason: "userunknown", Permanent: true}},
	},
	"groupwise-undeliverable.eml": {
		bounce: true, kind: "bounce",
		recipients: []Recipient{{Address: "lost.user@gw.example", Action: "failed", Status: "5.1.1", Reason: "userunknown", Permanent: true}},
	},
	"iplanet-userunknown.eml": {
		bounce: true, kind: "bounce",
		recipients: []Recipient{{Address: "absent@ms.iplanet.example", Action: "failed", Status: "5.1.1", Reason: "userunknown", Permanent: true}},
	},
	"gateway-homemade-wording.eml": {
		bounce: true, kind: "bounce",
		recipients: []Recipient{{Address: "student42@uni.example", Action: "failed", Status: "5.1.1", Reason: "userunknown", Permanent: true}},
	},
	"sendmail-aol-fatal-errors.eml": {
		bounce: true, kind: "bounce",
		recipients: []Recipient{
			{Address: "screenname1@aol.example", Action: "failed", Status: "5.1.1", Reason: "userunknown", Permanent: true},
			{Address: "screenname2@aol.example", Action: "failed", Status: "5.1.1", Reason: "userunknown", Permanent: true},
		},
	},
	"yahoo-old-unable.eml": {
		bounce: true, kind: "bounce",
		recipients: []Recipient{{Address: "nobody.here@yahoo.example", Action: "failed", Status: "5.1.1", Reason: "userunknown", Permanent: true}},
		original:   Original{To: "nobody.here@yahoo.example"},
	},
	"qmail-vpopmail-no-mailbox.eml": {
		bounce: true, kind: "bounce",
		recipients: []Recipient{
			{Address: "no.box@vpop.example", Action: "failed", Status: "5.1.1", Reason: "userunknown", Permanent: true},
			{Address: "also.gone@vpop.example", Action: "failed", Status: "5.1.1", Reason: "userunknown", Permanent: true},
		},
	},
	"oneline-userunknown.eml": {
		bounce: true, kind: "bounce",
		recipients: []Recipient{{Address: "nouser@tiny.example", Action: "failed", Status: "5.1.1", Reason: "userunknown", Permanent: true}},
	},
	// The report names the recipient; the returned message's From and
	// To (the list and its poster) must never be taken for it.
	"listserv-returned-from.eml": {
		bounce: true, kind: "bounce",
		recipients: []Recipient{{Address: "member.gone@list.example", Action: "failed", Status: "5.1.1", Reason: "userunknown", Permanent: true}},
		original:   Original{From: "poster@elsewhere.example", To: "announce@list.example"},
	},
	"gateway-several-on-one-line.eml": {
		bounce: true, kind: "bounce",
		recipients: []Recipient{
			{Address: "first.gone@corp.example", Action: "failed", Status: "5.1.1", Reason: "userunknown", Permanent: true},
			{Address: "second.gone@corp.example", Action: "failed", Status: "5.1.1", Reason: "userunknown", Permanent: true},
			{Address: "third.gone@corp.example", Action: "failed", Status: "5.1.1", Reason: "userunknown", Permanent: true},
		},
	},
	// The returned header quoted without a marker: its From and To are
	// not the failed recipient.
	"text-quoted-header-no-marker.eml": {
		bounce: true, kind: "bounce",
		recipients: []Recipient{{Address: "reader.gone@lists.example", Action: "failed", Status: "5.1.1", Reason: "userunknown", Permanent: true}},
	},
	// Warnings: delayed, never failed, whatever the remote's code.
	"exim-delay-keep-trying.eml": {
		bounce: true, kind: "bounce",
		recipients: []Recipient{{Address: "full.box@exim.example", Action: "delayed", Status: "5.2.2", Reason: "mailboxfull"}},
	},
	"groupwise-delay-will-retry.eml": {
		bounce: true, kind: "bounce",
		recipients: []Recipient{{Address: "slow.user@gw.example", Action: "delayed", Status: "5.2.2", Reason: "mailboxfull"}},
	},
	// Auto-replies with failure-like words are not bounces.
	"vacation-failure-words.eml":           {kind: "vacation", recipients: []Recipient{}},
	"exchange-oof-undeliverable-words.eml": {kind: "vacation", recipients: []Recipient{}},
	// A rewritten recipient: both addresses (see TestRewrittenRecipient).
	"postfix-rewritten-recipient.eml": {
		bounce: true, kind: "bounce",
		recipients: []Recipient{{Address: "NoSuchUser@example.net", Action: "failed", Status: "5.1.1", Reason: "userunknown", Permanent: true}},
	},
	"forwarded-bounce.eml": {
		bounce: true, kind: "bounce",
		recipients: []Recipient{{Address: "bot123@example.net", Action: "failed", Status: "5.1.1", Reason: "userunknown", Permanent: true}},
	},
}

func TestSamples(t *testing.T) {
	for name, w := range samples {
		t.Run(name, func(t *testing.T) {
			f, err := os.Open(filepath.Join("..", "..", "testdata", "dsn", name))
			if err != nil {
				t.Fatal(err)
			}
			defer f.Close()
			rep, err := Parse(f)
			if err != nil {
				t.Fatalf("Parse: %v", err)
			}
			checkReport(t, rep, w)
		})
	}
}

func checkReport(t *testing.T, rep *Report, w want) {
	t.Helper()
	if rep.Bounce != w.bounce || rep.Kind != w.kind {
		t.Errorf("bounce, kind = %v, %q; want %v, %q (format %q)", rep.Bounce, rep.Kind, w.bounce, w.kind, rep.Format)
	}
	if len(rep.Recipients) != len(w.recipients) {
		t.Fatalf("got %d recipients %+v; want %d", len(rep.Recipients), rep.Recipients, len(w.recipients))
	}
	for i, g := range rep.Recipients {
		e := w.recipients[i]
		if g.Address != e.Address || g.Action != e.Action || g.Status != e.Status || g.Reason != e.Reason || g.Permanent != e.Permanent {
			t.Errorf("recipient %d = %s %s %s %s %v; want %s %s %s %s %v", i,
				g.Address, g.Action, g.Status, g.Reason, g.Permanent,
				e.Address, e.Action, e.Status, e.Reason, e.Permanent)
		}
		if e.Diagnostic != "" && g.Diagnostic != e.Diagnostic {
			t.Errorf("recipient %d diagnostic = %q; want %q", i, g.Diagnostic, e.Diagnostic)
		}
	}
	o, e := rep.Original, w.original
	for _, c := range []struct{ name, got, want string }{
		{"Message-ID", o.MessageID, e.MessageID}, {"From", o.From, e.From}, {"To", o.To, e.To},
		{"Subject", o.Subject, e.Subject}, {"Date", o.Date, e.Date},
	} {
		if c.want != "" && c.got != c.want {
			t.Errorf("original %s = %q; want %q", c.name, c.got, c.want)
		}
	}
}

// TestCRLF checks that a message with CRLF line ends reads the same as
// with LF.
func TestCRLF(t *testing.T) {
	b, err := os.ReadFile(filepath.Join("..", "..", "testdata", "dsn", "postfix-multi-rcpt.eml"))
	if err != nil {
		t.Fatal(err)
	}
	crlf := strings.ReplaceAll(string(b), "\n", "\r\n")
	rep, err := Parse(strings.NewReader(crlf))
	if err != nil {
		t.Fatal(err)
	}
	checkReport(t, rep, samples["postfix-multi-rcpt.eml"])
}

// TestSampleMbox checks that each message of an mbox file gets its report.
func TestSampleMbox(t *testing.T) {
	f, err := os.Open(filepath.Join("..", "..", "testdata", "dsn", "mbox-two.mbox"))
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	reports, err := ParseAll(f)
	if err != nil {
		t.Fatal(err)
	}
	if len(reports) != 2 {
		t.Fatalf("got %d reports, want 2", len(reports))
	}
	checkReport(t, reports[0], samples["postfix-userunknown.eml"])
	checkReport(t, reports[1], samples["qmail-userunknown.eml"])
}

// A body line that starts with "From " but is no separator is read whole
// wherever it falls in the stream reader's buffer: looking at the line
// after it (is it a header field?) may move the buffer the line is in.
// Read in place, the same mbox gives the same reports.
func TestParseAllFromLineAtBufferEnd(t *testing.T) {
	head := "From MAILER-DAEMON Mon Nov 30 04:45:43 2026\n" +
		"From: MAILER-DAEMON@mx.example.net\nSubject: Undelivered Mail Returned to Sender\n\n" +
		"This is the mail system at host mx.example.net.\n\n"
	body := "From mx.example: <bob@example.com>: 550 5.1.1 user unknown\n" +
		"not a header line\n\n" +
		"From MAILER-DAEMON Mon Nov 30 04:45:44 2026\nFrom: MAILER-DAEMON@mx.example.net\n\nsecond\n"
	for pad := 3900; pad < 4300; pad++ {
		mbox := []byte(head + strings.Repeat("x", pad) + "\n" + body)
		streamed, err := ParseAll(bytes.NewReader(mbox))
		if err != nil {
			t.Fatal(err)
		}
		inPlace, err := (&Parser{}).ParseAllBytes(mbox)
		if err != nil {
			t.Fatal(err)
		}
		if !reflect.DeepEqual(streamed, inPlace) {
			t.Fatalf("padding %d: ParseAll\n%+v\nParseAllBytes\n%+v", pad, streamed[0], inPlace[0])
		}
	}
}

// TestAllSamplesListed makes sure every sample has its expected result.
func TestAllSamplesListed(t *testing.T) {
	files, err := filepath.Glob(filepath.Join("..", "..", "testdata", "dsn", "*.eml"))
	if err != nil {
		t.Fatal(err)
	}
	for _, f := range files {
		if _, ok := samples[filepath.Base(f)]; !ok {
			t.Errorf("%s has no entry in samples", filepath.Base(f))
		}
	}
}

// TestLegacyCharset checks that text in a legacy charset (here ISO-8859-1,
// and an RFC 2047 encoded word in the returned header) is decoded.
func TestLegacyCharset(t *testing.T) {
	msg := "From: MAILER-DAEMON@mx.example.fr\r\n" +
		"Subject: Mail delivery failed\r\n" +
		"Content-Type: multipart/mixed; boundary=b\r\n\r\n" +
		"--b\r\nContent-Type: text/plain; charset=iso-8859-1\r\nContent-Transfer-Encoding: 8bit\r\n\r\n" +
		"Le message n'a pas pu \xeatre remis \xe0 :\r\n\r\n  <d\xe9j\xe0@example.fr>: 550 5.1.1 utilisateur inconnu\r\n\r\n" +
		"--b\r\nContent-Type: message/rfc822\r\n\r\n" +
		"Subject: =?iso-8859-1?q?V=E9rifiez_votre_adresse?=\r\nTo: user@example.fr\r\n\r\nx\r\n--b--\r\n"
	rep, err := Parse(strings.NewReader(msg))
	if err != nil {
		t.Fatal(err)
	}
	if len(rep.Recipients) != 1 || rep.Recipients[0].Address != "déjà@example.fr" || rep.Recipients[0].Status != "5.1.1" {
		t.Errorf("recipients = %+v", rep.Recipients)
	}
	if rep.Original.Subject != "Vérifiez votre adresse" {
		t.Errorf("original subject = %q", rep.Original.Subject)
	}
}
