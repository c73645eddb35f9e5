package dsn

import (
	"bytes"
	"errors"
	"reflect"
	"strings"
	"testing"
)

// These tests hold every limit that cuts a message short to whole lines:
// an address the limit falls in ("alice@example.co" of
// "alice@example.com") must not be reported, least of all as literal,
// which the milter acts on. Each message has alice@example.com where a
// limit cuts it, and (in the reports) bob@example.com before it, which
// must still be found.

const (
	cutAddr = "alice@example.com"
	cutPart = "alice@example.co"
)

// cutDSN is a multipart report whose delivery-status part is status.
func cutDSN(status string) string {
	return "From: MAILER-DAEMON@mx.example.org\r\nTo: sender@example.org\r\nSubject: Undelivered Mail Returned to Sender\r\n" +
		"MIME-Version: 1.0\r\nContent-Type: multipart/report; report-type=delivery-status; boundary=\"B\"\r\n\r\n" +
		"--B\r\nContent-Type: text/plain\r\n\r\nThe mail could not be delivered.\r\n\r\n" +
		"--B\r\nContent-Type: message/delivery-status\r\n\r\n" + status + "\r\n--B--\r\n"
}

const cutStatusBob = "Final-Recipient: rfc822; bob@example.com\r\nAction: failed\r\nStatus: 5.1.1\r\n\r\n"

const cutStatusAlice = "Final-Recipient: rfc822; alice@example.com\r\nAction: failed\r\nStatus: 5.1.1\r\n"

// padded returns head + padding + tail, the padding (whole lines of
// text, the last one made to measure, each ending in nl) chosen so that
// the first occurrence of mark in tail ends at offset n.
func padded(t *testing.T, head, tail, mark, nl string, n int) string {
	t.Helper()
	k := strings.Index(tail, mark)
	if k < 0 {
		t.Fatalf("%q not in %q", mark, tail)
	}
	size := n - len(head) - k - len(mark)
	line := "Some explanatory text that mail servers write here and there." + nl
	if size < len(nl)+1 {
		t.Fatalf("no room for padding: %d bytes", size)
	}
	pad := strings.Repeat(line, (size-len(nl)-1)/len(line))
	pad += strings.Repeat("y", size-len(pad)-len(nl)) + nl
	return head + pad + tail
}

// utf16le encodes ASCII s as UTF-16LE.
func utf16le(s string) string {
	u := make([]byte, 0, 2*len(s))
	for i := 0; i < len(s); i++ {
		u = append(u, s[i], 0)
	}
	return string(u)
}

func TestCutNeverLiteral(t *testing.T) {
	statusHead := "Reporting-MTA: dns; mx.example.org\r\n\r\n" + cutStatusBob
	postfixHead := "From: MAILER-DAEMON@mx.example.org\nTo: sender@example.org\nSubject: Undelivered Mail Returned to Sender\n\n"
	postfixText := "This is the mail system at host mx.example.org.\n\nI'm sorry to have to inform you that your message could not\n" +
		"be delivered to one or more recipients.\n\n"
	postfixTail := "Delivery to the following recipient failed permanently:\n\n     alice@example.com\n\n550 5.1.1 User unknown\n"
	eximHead := "From: MAILER-DAEMON@mx.example.org\nTo: sender@example.org\nSubject: Mail delivery failed: returning message to sender\n"
	eximText := "This message was created automatically by mail delivery software.\n\nA message that you sent could not be delivered to one or more of its\n" +
		"recipients. This is a permanent error. The following address(es) failed:\n\n"
	eximTail := "  alice@example.com\n    550 5.1.1 user unknown\n"

	// MaxBytes falls in alice's address, in her Final-Recipient field.
	whole := cutDSN(statusHead + cutStatusAlice)
	maxBytes := int64(strings.Index(whole, cutPart) + len(cutPart))

	// maxStatusBytes falls in alice's address, or right after her
	// Final-Recipient field, which a continuation line (cut off) makes
	// no literal address.
	statusCut := cutDSN(padded(t, "Reporting-MTA: dns; mx.example.org\r\nX-Note: ", "\r\n\r\n"+cutStatusBob+cutStatusAlice, cutPart, "\r\n", maxStatusBytes))
	folded := "Final-Recipient: rfc822; alice@example.com\r\n (forwarded)\r\nAction: failed\r\nStatus: 5.1.1\r\n"
	foldCut := cutDSN(padded(t, "Reporting-MTA: dns; mx.example.org\r\nX-Note: ", "\r\n\r\n"+cutStatusBob+folded, cutAddr+"\r\n", "\r\n", maxStatusBytes))

	// maxTextBytes falls in alice's address in the text, plain, HTML,
	// or in UTF-16LE, where it cuts the encoded bytes: a text part is
	// read to maxTextBytes+1 bytes and one more, to tell that it is cut.
	textCut := postfixHead + padded(t, postfixText, postfixTail, cutPart, "\n", maxTextBytes)
	eximCut := eximHead + "\n" + padded(t, eximText, eximTail, cutPart, "\n", maxTextBytes)
	eximFailed := eximHead + "X-Failed-Recipients: alice@example.com\n\n" + padded(t, eximText, eximTail, cutPart, "\n", maxTextBytes)
	htmlTail := "<p>Delivery to the following recipient failed permanently:</p>\n<p>\n     alice@example.com\n</p><p>550 5.1.1 User unknown</p>\n"
	htmlCut := strings.Replace(postfixHead, "\n\n", "\nContent-Type: text/html\n\n", 1) +
		padded(t, "<html><body>\n", htmlTail, cutPart, "\n", maxTextBytes+1)
	utf16Cut := strings.Replace(eximHead, "Subject:", "Content-Type: text/plain; charset=utf-16le\nContent-Transfer-Encoding: binary\nSubject:", 1) + "\n" +
		utf16le(padded(t, eximText, eximTail, cutPart, "\n", (maxTextBytes+2)/2))

	type reader func(p *Parser, msg string) ([]*Report, error)
	parse := func(p *Parser, msg string) ([]*Report, error) {
		rep, err := p.Parse(strings.NewReader(msg))
		return []*Report{rep}, err
	}
	parseBytes := func(p *Parser, msg string) ([]*Report, error) {
		rep, err := p.ParseBytes([]byte(msg))
		return []*Report{rep}, err
	}
	parseAll := func(p *Parser, msg string) ([]*Report, error) { return p.ParseAll(strings.NewReader(msg)) }
	parseAllBytes := func(p *Parser, msg string) ([]*Report, error) { return p.ParseAllBytes([]byte(msg)) }

	for _, c := range []struct {
		name   string
		p      Parser
		msg    string
		read   reader
		tooBig bool
		// want are addresses that must be found; alice is
		// cutAddr's literal state when the message names her
		// elsewhere whole (no more than that may be read).
		want  []string
		alice bool
	}{
		{name: "MaxBytes, Parse", p: Parser{MaxBytes: maxBytes}, msg: whole, read: parse, tooBig: true, want: []string{"bob@example.com"}},
		{name: "MaxBytes, ParseBytes", p: Parser{MaxBytes: maxBytes}, msg: whole, read: parseBytes, tooBig: true, want: []string{"bob@example.com"}},
		{name: "MaxBytes, ParseAll", p: Parser{MaxBytes: maxBytes}, msg: whole, read: parseAll, want: []string{"bob@example.com"}},
		{name: "MaxBytes, ParseAllBytes", p: Parser{MaxBytes: maxBytes}, msg: whole, read: parseAllBytes, want: []string{"bob@example.com"}},
		{name: "status part in an address", msg: statusCut, read: parse, want: []string{"bob@example.com"}},
		{name: "status part before a continuation line", msg: foldCut, read: parse, want: []string{"bob@example.com"}},
		{name: "plain text", msg: textCut, read: parse},
		{name: "Exim text", msg: eximCut, read: parse},
		{name: "Exim text, X-Failed-Recipients", msg: eximFailed, read: parse, want: []string{cutAddr}, alice: true},
		{name: "HTML text", msg: htmlCut, read: parse},
		{name: "UTF-16LE text", msg: utf16Cut, read: parse},
	} {
		t.Run(c.name, func(t *testing.T) {
			reports, err := c.read(&c.p, c.msg)
			if c.tooBig != errors.Is(err, ErrTooLarge) || err != nil && !c.tooBig {
				t.Fatalf("err = %v, want ErrTooLarge: %v", err, c.tooBig)
			}
			if len(reports) != 1 {
				t.Fatalf("%d reports, want 1", len(reports))
			}
			rep := reports[0]
			found := map[string]bool{}
			for _, r := range rep.Recipients {
				found[r.Address] = true
				for _, a := range []struct {
					addr    string
					literal bool
				}{{r.Address, r.Literal}, {r.OriginalAddress, r.OriginalLiteral}} {
					if strings.HasPrefix(a.addr, "alice@") && a.addr != cutAddr {
						t.Errorf("cut address %q reported (literal %v), format %s", a.addr, a.literal, rep.Format)
					}
					if a.addr == cutAddr && a.literal && !c.alice {
						t.Errorf("%q reported literal from a cut field, format %s", a.addr, rep.Format)
					}
				}
			}
			for _, a := range c.want {
				if !found[a] {
					t.Errorf("%s not found in %+v", a, rep.Recipients)
				}
			}
		})
	}
}

// TestParseAllLineInPieces: a line longer than ParseAll's 4 KiB buffer
// comes in pieces; when a later piece goes over MaxBytes, the whole line
// is dropped, as ParseAllBytes drops it, not only the pieces over.
func TestParseAllLineInPieces(t *testing.T) {
	head := strings.ReplaceAll(cutDSN("Reporting-MTA: dns; mx.example.org\r\n\r\n"+cutStatusBob), "\r\n", "\n")
	head = strings.TrimSuffix(head, "\n--B--\n")
	for _, n := range []int{4096, 4096 + 100, 3 * 4096} {
		long := "Final-Recipient: rfc822;" + strings.Repeat(" ", n-len("Final-Recipient: rfc822;")-len(cutPart)) + cutAddr + "\n"
		msg := head + long + "Action: failed\nStatus: 5.1.1\n\n--B--\n"
		mbox := "From a@b Mon Jan  1 00:00:00 2024\n" + msg
		p := Parser{MaxBytes: int64(strings.Index(msg, cutPart) + len(cutPart))}
		stream, err := p.ParseAll(strings.NewReader(mbox))
		if err != nil {
			t.Fatal(err)
		}
		inPlace, err := p.ParseAllBytes([]byte(mbox))
		if err != nil {
			t.Fatal(err)
		}
		if !reflect.DeepEqual(stream, inPlace) {
			t.Errorf("%d-byte line: ParseAll:\n%+v\nParseAllBytes:\n%+v", n, stream[0], inPlace[0])
		}
		if len(stream) != 1 || !stream[0].Truncated {
			t.Fatalf("%d-byte line: %d reports, want 1, truncated", n, len(stream))
		}
		for _, r := range stream[0].Recipients {
			if strings.HasPrefix(r.Address, "alice@") {
				t.Errorf("%d-byte line: %q reported (literal %v) from a cut line", n, r.Address, r.Literal)
			}
		}
	}
}

// TestCutToField checks where a cut delivery-status part is cut back to:
// the start of its last field, continuation lines and all.
func TestCutToField(t *testing.T) {
	for _, c := range []struct{ in, want string }{
		{"", ""},
		{"Action: fail", ""},
		{"A: 1\nB: 2", "A: 1\n"},
		{"A: 1\nB: 2\n", "A: 1\n"},
		{"A: 1\r\nB: 2\r\n fold\r\n\tfold", "A: 1\r\n"},
		{"A: 1\n\nB: 2\n", "A: 1\n\n"},
		{"A: 1\n\n", "A: 1\n"},
		{" fold\n fold\n", ""},
	} {
		if got := string(cutToField([]byte(c.in))); got != c.want {
			t.Errorf("cutToField(%q) = %q, want %q", c.in, got, c.want)
		}
	}
	if got := cutToLine([]byte("a\r\nb")); !bytes.Equal(got, []byte("a\r\n")) {
		t.Errorf("cutToLine = %q", got)
	}
}
