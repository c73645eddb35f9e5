package dsn

import (
	"fmt"
	"strings"
	"testing"
)

// These tests hold every recogniser to the rule of Recipient.Literal: an
// address is literal only when it is exactly what the report wrote, so that
// a look-alike sign-up ("/victim@example.net", "|victim@example.net", a
// quoted local part holding the victim's address, an xtext escape) can
// never be read as the victim's own address and acted on.

const victim = "victim@example.net"

// Message templates, one per way of naming a recipient. %s is the address
// as the report writes it.
var (
	dsnTemplate = "From: MAILER-DAEMON@mx.example.org\r\nSubject: Undelivered Mail Returned to Sender\r\n" +
		"Content-Type: multipart/report; report-type=delivery-status; boundary=b\r\n\r\n" +
		"--b\r\nContent-Type: text/plain\r\n\r\nYour message could not be delivered.\r\n\r\n" +
		"--b\r\nContent-Type: message/delivery-status\r\n\r\nReporting-MTA: dns; mx.example.org\r\n\r\n" +
		"%s" +
		"Action: failed\r\nStatus: 5.1.1\r\nDiagnostic-Code: smtp; 550 5.1.1 User unknown\r\n\r\n--b--\r\n"
	qmailTemplate = "From: MAILER-DAEMON@mx.qmail.example\r\nSubject: failure notice\r\n\r\n" +
		"Hi. This is the qmail-send program at mx.qmail.example.\r\n" +
		"I'm afraid I wasn't able to deliver your message to the following addresses.\r\n" +
		"This is a permanent error; I've given up. Sorry it didn't work out.\r\n\r\n" +
		"<%s>:\r\nSorry, no mailbox here by that name. (#5.1.1)\r\n"
	eximTemplate = "From: Mail Delivery System <Mailer-Daemon@mx.exim.example>\r\n" +
		"Subject: Mail delivery failed: returning message to sender\r\n\r\n" +
		"This message was created automatically by mail delivery software.\r\n\r\n" +
		"A message that you sent could not be delivered to one or more of its\r\n" +
		"recipients. This is a permanent error. The following address(es) failed:\r\n\r\n" +
		"  %s\r\n    host mx.example.net [192.0.2.1]: 550 5.1.1 User unknown\r\n"
	sentenceTemplate = "From: postmaster@gw.example.edu\r\nSubject: Undeliverable mail\r\n\r\n" +
		"There was an error delivering your mail to %s: 550 5.1.1 user unknown.\r\n"
	failedHeaderTemplate = "From: Mail Delivery System <Mailer-Daemon@mx.exim.example>\r\n" +
		"X-Failed-Recipients: %s\r\nSubject: Mail delivery failed\r\n\r\n" +
		"Die Nachricht konnte nicht zugestellt werden: 550 5.1.1\r\n"
)

type lit struct {
	addr    string
	literal bool
}

func TestLiteralMarking(t *testing.T) {
	for _, c := range []struct {
		name string
		msg  string
		want []lit
	}{
		// Genuine reports: the address is literal in every format.
		{"dsn genuine", fmt.Sprintf(dsnTemplate, "Final-Recipient: rfc822; Victim@Example.NET\r\n"), []lit{{"Victim@example.net", true}}},
		{"dsn angle brackets", fmt.Sprintf(dsnTemplate, "Final-Recipient: rfc822; <victim@example.net>\r\n"), []lit{{victim, true}}},
		{"qmail genuine", fmt.Sprintf(qmailTemplate, victim), []lit{{victim, true}}},
		{"exim genuine", fmt.Sprintf(eximTemplate, victim), []lit{{victim, true}}},
		{"sentence genuine", fmt.Sprintf(sentenceTemplate, victim), []lit{{victim, true}}},
		{"sentence in brackets", fmt.Sprintf(sentenceTemplate, "<"+victim+">"), []lit{{victim, true}}},
		{"exim name-addr", fmt.Sprintf(eximTemplate, "someone@example.org <victim@example.net>:"), []lit{{victim, true}}},
		{"exim list", fmt.Sprintf(eximTemplate, "a@example.org, |victim@example.net"), []lit{{"a@example.org", true}}},
		{"exim quoted whole", fmt.Sprintf(eximTemplate, `"victim@example.net":`), []lit{{victim, true}}},
		{"x-failed-recipients genuine", fmt.Sprintf(failedHeaderTemplate, victim), []lit{{victim, true}}},
		{"xtext-looking text address is what was written", fmt.Sprintf(qmailTemplate, "victim+2Bbox@example.net"), []lit{{"victim+2Bbox@example.net", true}}},

		// A leading slash (a file recipient to Exim and Sendmail).
		{"dsn slash", fmt.Sprintf(dsnTemplate, "Final-Recipient: rfc822; /victim@example.net\r\n"), []lit{{victim, false}}},
		{"exim slash", fmt.Sprintf(eximTemplate, "/victim@example.net"), nil},
		{"sentence slash", fmt.Sprintf(sentenceTemplate, "/victim@example.net"), nil},
		{"dsn file path", fmt.Sprintf(dsnTemplate, "Final-Recipient: rfc822; /home/u/.forward/victim@example.net\r\n"), []lit{{victim, false}}},

		// A pipe.
		{"dsn pipe", fmt.Sprintf(dsnTemplate, "Final-Recipient: rfc822; |victim@example.net\r\n"), []lit{{"|victim@example.net", false}}},
		{"dsn pipe command", fmt.Sprintf(dsnTemplate, "Final-Recipient: rfc822; |/usr/bin/prog victim@example.net\r\n"), []lit{{victim, false}}},
		{"exim pipe", fmt.Sprintf(eximTemplate, "|victim@example.net"), []lit{{victim, false}}},
		{"exim bullet glued", fmt.Sprintf(eximTemplate, "-victim@example.net"), []lit{{victim, false}}},
		{"x-failed-recipients pipe", fmt.Sprintf(failedHeaderTemplate, "|victim@example.net"), []lit{{"|victim@example.net", false}}},

		// A quoted local part holding the address.
		{"dsn quoted", fmt.Sprintf(dsnTemplate, "Final-Recipient: rfc822; \"victim@example.net\"@evil.example\r\n"), []lit{{`"victim@example.net"@evil.example`, false}}},
		{"qmail quoted", fmt.Sprintf(qmailTemplate, `"victim@example.net"@evil.example`), []lit{{`victim@example.net"@evil.example`, false}}},
		{"sentence quoted", fmt.Sprintf(sentenceTemplate, `"victim@example.net"@evil.example`), []lit{{victim, false}}},
		{"sentence glued at", fmt.Sprintf(sentenceTemplate, "x@victim@example.net"), []lit{{victim, false}}},

		// Unicode case folding would turn the Kelvin sign into "k".
		{"dsn kelvin sign", fmt.Sprintf(dsnTemplate, "Final-Recipient: utf-8; kate@\u212Amail.example\r\n"), []lit{{"kate@kmail.example", false}}},
		{"qmail kelvin sign", fmt.Sprintf(qmailTemplate, "kate@\u212Amail.example"), []lit{{"kate@kmail.example", false}}},

		// xtext (RFC 3461 section 4) that decoding changed.
		{"dsn xtext", fmt.Sprintf(dsnTemplate, "Final-Recipient: rfc822; victim+2Bbox@example.net\r\n"), []lit{{"victim+box@example.net", false}}},

		// The address only in the text part: the report's own field
		// names none, so the text's is swapped in, never literal.
		{"dsn address only in text", strings.Replace(fmt.Sprintf(dsnTemplate, "Final-Recipient: rfc822; @relay.example.org:unknown\r\n"),
			"Your message could not be delivered.", "<victim@example.net>: 550 5.1.1 User unknown", 1), []lit{{victim, false}}},

		// Rewritten recipients: both fields, each literal on its own.
		{"dsn original differs", fmt.Sprintf(dsnTemplate, "Original-Recipient: rfc822; victim@example.net\r\nFinal-Recipient: rfc822; box123@mail.example.net\r\n"),
			[]lit{{"box123@mail.example.net", true}}},
		{"dsn original look-alike", fmt.Sprintf(dsnTemplate, "Original-Recipient: rfc822; /victim@example.net\r\nFinal-Recipient: rfc822; box123@mail.example.net\r\n"),
			[]lit{{"box123@mail.example.net", true}}},
	} {
		t.Run(c.name, func(t *testing.T) {
			rep, err := Parse(strings.NewReader(c.msg))
			if err != nil {
				t.Fatal(err)
			}
			var got []lit
			for _, r := range rep.Recipients {
				got = append(got, lit{r.Address, r.Literal})
				if r.Literal && !strings.Contains(c.msg, r.Address[:strings.LastIndexByte(r.Address, '@')+1]) {
					t.Errorf("literal %q does not occur in the message", r.Address)
				}
			}
			if fmt.Sprint(got) != fmt.Sprint(c.want) {
				t.Errorf("recipients (address, literal) = %v, want %v (format %q)", got, c.want, rep.Format)
			}
		})
	}
}

// TestRewrittenRecipient checks that a report whose Original-Recipient
// differs from its Final-Recipient gives both, each literal, and that an
// xtext-encoded ORCPT copied as is comes decoded and not literal.
func TestRewrittenRecipient(t *testing.T) {
	for _, c := range []struct {
		name, msg   string
		final, orig string
		origLiteral bool
	}{
		{"template", fmt.Sprintf(dsnTemplate, "Original-Recipient: rfc822; Victim@Example.NET\r\nFinal-Recipient: rfc822; box123@mail.example.net\r\n"),
			"box123@mail.example.net", "Victim@example.net", true},
		{"postfix sample", string(sample(t, "postfix-rewritten-recipient.eml")), "NoSuchUser@example.net", "Old.Name@example.com", true},
		{"xtext", fmt.Sprintf(dsnTemplate, "Original-Recipient: rfc822; victim+2Bbox@example.net\r\nFinal-Recipient: rfc822; box123@mail.example.net\r\n"),
			"box123@mail.example.net", "victim+box@example.net", false},
	} {
		rep, err := Parse(strings.NewReader(c.msg))
		if err != nil {
			t.Fatal(err)
		}
		if len(rep.Recipients) != 1 {
			t.Fatalf("%s: recipients = %+v", c.name, rep.Recipients)
		}
		r := rep.Recipients[0]
		if r.Address != c.final || !r.Literal || r.OriginalAddress != c.orig || r.OriginalLiteral != c.origLiteral {
			t.Errorf("%s: recipient = %+v; want %s (literal) and %s (literal %v)", c.name, r, c.final, c.orig, c.origLiteral)
		}
	}
}

// TestReturnedToNeverLiteral checks that an address taken from the
// returned message's To (no recipient named anywhere in the report) is
// never literal.
func TestReturnedToNeverLiteral(t *testing.T) {
	rep, err := Parse(strings.NewReader(string(sample(t, "postfix-report-unavailable.eml"))))
	if err != nil {
		t.Fatal(err)
	}
	if rep.Format != "returned-to" || len(rep.Recipients) != 1 || rep.Recipients[0].Literal {
		t.Errorf("format %q, recipients %+v; want one returned-to recipient, not literal", rep.Format, rep.Recipients)
	}
}

// TestFreeTextLiteral checks that the recipients the free-text samples
// name on a line of their own, or in a sentence, are literal.
func TestFreeTextLiteral(t *testing.T) {
	for _, name := range []string{"exchange55-smtpsvc-two-rcpts.eml", "lotusnotes-userunknown.eml", "groupwise-undeliverable.eml",
		"gateway-homemade-wording.eml", "sendmail-aol-fatal-errors.eml", "gateway-several-on-one-line.eml", "oneline-userunknown.eml", "listserv-returned-from.eml"} {
		rep, err := Parse(strings.NewReader(string(sample(t, name))))
		if err != nil {
			t.Fatal(err)
		}
		for _, r := range rep.Recipients {
			if !r.Literal {
				t.Errorf("%s: %s not literal", name, r.Address)
			}
		}
	}
}
