package dsn

import (
	"mime/quotedprintable"
	"strings"
	"testing"
)

func TestRecipientAddress(t *testing.T) {
	for _, c := range []struct{ in, want string }{
		{"rfc822; user@example.com", "user@example.com"},
		{"RFC822;User@Example.COM", "User@example.com"},
		{"rfc822;<user@example.com>", "user@example.com"},
		{"rfc822; <user@example.com> (comment)", "user@example.com"},
		{"user@example.com", "user@example.com"},
		{"<user@example.com>", "user@example.com"},
		{`rfc822; "john doe"@example.com`, `"john doe"@example.com`},
		{"rfc822; user+2Btag@example.com", "user+tag@example.com"},       // RFC 3461 section 4 xtext
		{"rfc822; a+3Db@example.com", "a=b@example.com"},                 // xtext "="
		{"rfc822; user+tag@example.com", "user+tag@example.com"},         // a plain "+" stays
		{"rfc822; user+AB@example.com", "user+AB@example.com"},           // not an escape xtext needs
		{"utf-8; j\\x{00F6}rg@example.com", "jörg@example.com"},          // RFC 6533 section 3
		{"utf-8; jörg@Example.COM", "jörg@example.com"},                  // raw UTF-8
		{"rfc822;|/usr/bin/prog user@example.com", "user@example.com"},   // Exim pipe
		{"rfc822;/home/u/.forward/user@example.com", "user@example.com"}, // file
	} {
		if got := recipientAddress(c.in); got != c.want {
			t.Errorf("recipientAddress(%q) = %q, want %q", c.in, got, c.want)
		}
	}
}

func TestDeliveryStatusFields(t *testing.T) {
	for _, c := range []struct {
		name string
		in   string
		want []Recipient
	}{
		{
			name: "no blank lines between recipients",
			in: "Reporting-MTA: dns; mx.example.org\nFinal-Recipient: rfc822; a@example.com\nAction: failed\nStatus: 5.1.1\n" +
				"Final-Recipient: rfc822; b@example.com\nAction: delayed\nStatus: 4.4.1\n",
			want: []Recipient{{Address: "a@example.com", Literal: true, Action: "failed", Status: "5.1.1"}, {Address: "b@example.com", Literal: true, Action: "delayed", Status: "4.4.1"}},
		},
		{
			name: "Original-Recipient first, then Final-Recipient",
			in:   "Original-Recipient: rfc822;a@example.com\nFinal-Recipient: rfc822;b@example.com\nAction: failed\n\nOriginal-Recipient: rfc822;c@example.com\nFinal-Recipient: rfc822;d@example.com\nAction: failed\n",
			want: []Recipient{{Address: "b@example.com", OriginalAddress: "a@example.com", Literal: true, OriginalLiteral: true, Action: "failed"}, {Address: "d@example.com", OriginalAddress: "c@example.com", Literal: true, OriginalLiteral: true, Action: "failed"}},
		},
		{
			name: "fields before Final-Recipient, folded diagnostic, CRLF",
			in:   "Diagnostic-Code: smtp; 550 5.1.1 user\r\n  unknown\r\nStatus: 5.1.1\r\nFinal-Recipient: rfc822; a@example.com\r\nAction: failed\r\n",
			want: []Recipient{{Address: "a@example.com", Literal: true, Action: "failed", Status: "5.1.1", Diagnostic: "550 5.1.1 user unknown"}},
		},
		{
			name: "source route falls back to Original-Recipient",
			in:   "Original-Recipient: rfc822;user@example.net\nFinal-Recipient: rfc822;@relay.example.net:user@server\nAction: failed\nStatus: 5.2.0 (transmission failure)\n",
			want: []Recipient{{Address: "user@example.net", OriginalAddress: "user@example.net", Literal: true, OriginalLiteral: true, FromOriginal: true, Action: "failed", Status: "5.2.0"}},
		},
		{
			name: "no Final-Recipient: Original-Recipient shown",
			in:   "Original-Recipient: rfc822;user@example.net\nAction: failed\nStatus: 5.1.1\n",
			want: []Recipient{{Address: "user@example.net", OriginalAddress: "user@example.net", Literal: true, OriginalLiteral: true, FromOriginal: true, Action: "failed", Status: "5.1.1"}},
		},
		{
			name: "odd Action words",
			in:   "Final-Recipient: rfc822; a@example.com\nAction: expired\n\nFinal-Recipient: rfc822; b@example.com\nAction: Failed (bad mailbox)\n",
			want: []Recipient{{Address: "a@example.com", Literal: true, Action: "failed"}, {Address: "b@example.com", Literal: true, Action: "failed"}},
		},
		{
			name: "junk lines are skipped",
			in:   "this is not a field\nFinal-Recipient: rfc822; a@example.com\n: empty name\nAction: failed\n",
			want: []Recipient{{Address: "a@example.com", Literal: true, Action: "failed"}},
		},
		{
			name: "a look-alike path is shown but not literal",
			in:   "Final-Recipient: rfc822; /victim@example.net\nAction: failed\nStatus: 5.1.1\n",
			want: []Recipient{{Address: "victim@example.net", Action: "failed", Status: "5.1.1"}},
		},
		{
			name: "an xtext-decoded address is not literal",
			in:   "Final-Recipient: rfc822; victim+2B@example.net\nAction: failed\n",
			want: []Recipient{{Address: "victim+@example.net", Action: "failed"}},
		},
	} {
		t.Run(c.name, func(t *testing.T) {
			var rep Report
			parseDeliveryStatus(&rep, c.in, 10, nil)
			if len(rep.Recipients) != len(c.want) {
				t.Fatalf("got %+v, want %+v", rep.Recipients, c.want)
			}
			for i, g := range rep.Recipients {
				if g != c.want[i] {
					t.Errorf("recipient %d = %+v, want %+v", i, g, c.want[i])
				}
			}
		})
	}
}

// TestQuotedPrintableStatus checks a delivery-status part sent
// quoted-printable, as some Exchange servers do.
func TestQuotedPrintableStatus(t *testing.T) {
	var qp strings.Builder
	w := quotedprintable.NewWriter(&qp)
	w.Write([]byte("Reporting-MTA: dns; mx.example.org\r\n\r\nFinal-Recipient: rfc822; very-long-local-part-that-needs-a-soft-line-break-in-qp@example.com\r\nAction: failed\r\nStatus: 5.1.1\r\n"))
	w.Close()
	msg := "From: MAILER-DAEMON@mx.example.org\r\nContent-Type: multipart/report; report-type=delivery-status; boundary=b\r\n\r\n" +
		"--b\r\nContent-Type: message/delivery-status\r\nContent-Transfer-Encoding: quoted-printable\r\n\r\n" + qp.String() + "\r\n--b--\r\n"
	rep, err := Parse(strings.NewReader(msg))
	if err != nil {
		t.Fatal(err)
	}
	if len(rep.Recipients) != 1 || rep.Recipients[0].Address != "very-long-local-part-that-needs-a-soft-line-break-in-qp@example.com" {
		t.Errorf("recipients = %+v", rep.Recipients)
	}
}
