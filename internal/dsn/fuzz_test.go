package dsn

import (
	"bytes"
	"fmt"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
)

// Fuzz targets: run briefly in CI with
//
//	go test -run '^$' -fuzz '^FuzzParse$' -fuzztime 30s ./internal/dsn
//
// (and likewise FuzzParseAll, FuzzDeliveryStatus, FuzzRecipientLine,
// FuzzLiteral). They
// check that nothing panics and that the invariants of a report hold.

func addSeeds(f *testing.F) {
	files, _ := filepath.Glob(filepath.Join("..", "..", "testdata", "dsn", "*"))
	for _, name := range files {
		b, err := os.ReadFile(name)
		if err != nil {
			f.Fatal(err)
		}
		f.Add(b)
	}
}

// fuzzLimits keeps each run small, so the fuzzer explores rather than
// reads large inputs.
var fuzzParser = &Parser{MaxBytes: 256 << 10, MaxRecipients: 50, MaxDepth: 8, MaxParts: 50}

func checkInvariants(t *testing.T, rep *Report) {
	t.Helper()
	if rep == nil {
		t.Fatal("nil report")
	}
	if len(rep.Recipients) > fuzzParser.MaxRecipients {
		t.Fatalf("%d recipients, limit %d", len(rep.Recipients), fuzzParser.MaxRecipients)
	}
	bounce := false
	for _, r := range rep.Recipients {
		if r.Address == "" {
			t.Fatal("recipient without address")
		}
		if r.Action == "failed" || r.Action == "delayed" {
			bounce = true
		}
		if r.Status != "" && findStatus(r.Status) != r.Status && r.Status[1:] != ".0.0" {
			t.Fatalf("status %q is not an RFC 3463 code", r.Status)
		}
		if r.Permanent && !strings.HasPrefix(r.Status, "5") {
			t.Fatalf("permanent with status %q", r.Status)
		}
	}
	if rep.Bounce != bounce && rep.Kind == "bounce" {
		t.Fatalf("bounce = %v, but failed/delayed recipients: %v", rep.Bounce, bounce)
	}
}

func FuzzParse(f *testing.F) {
	addSeeds(f)
	f.Fuzz(func(t *testing.T, b []byte) {
		rep, err := fuzzParser.Parse(bytes.NewReader(b))
		if err != nil && int64(len(b)) <= fuzzParser.MaxBytes {
			t.Fatalf("error on %d bytes: %v", len(b), err)
		}
		checkInvariants(t, rep)
		checkOwnsStrings(t, fuzzParser, "input", b, ownsStringsOther)
	})
}

// ownsStringsOther is the message FuzzParse parses after each input, into
// the arena the input's parse used.
var ownsStringsOther = []byte("From: MAILER-DAEMON@mx.example\nSubject: Undelivered Mail Returned to Sender\n\n" +
	"<nobody@example.org>: host mx.example.org said: 550 5.1.1 User unknown\n")

func FuzzHTMLText(f *testing.F) {
	for _, s := range []string{"<p>a&amp;lt;b</p>", "x<lİ>y\r\n", "&nbsp;<BR>&#64;&quot;", "<d\xc4\xb0v>"} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		want := capText(stripTags(string(b)))
		if got := htmlText(b, nil); got != want {
			t.Fatalf("htmlText(%q) = %q, want %q", b, got, want)
		}
	})
}

// fuzzCutParsers hold messages to a MaxBytes that most inputs exceed, so
// that FuzzParseAll compares where the two readers cut a message short:
// within the first 4 KiB piece of a stream's line, and past it.
var fuzzCutParsers = []*Parser{
	{MaxBytes: 300, MaxRecipients: 50, MaxDepth: 8, MaxParts: 50},
	{MaxBytes: 6000, MaxRecipients: 50, MaxDepth: 8, MaxParts: 50},
}

func FuzzParseAll(f *testing.F) {
	addSeeds(f)
	f.Fuzz(func(t *testing.T, b []byte) {
		for i, p := range append([]*Parser{fuzzParser}, fuzzCutParsers...) {
			if i > 0 && int64(len(b)) <= p.MaxBytes {
				continue // nothing to cut: read as fuzzParser reads it
			}
			reports, err := p.ParseAll(bytes.NewReader(b))
			if err != nil {
				t.Fatal(err)
			}
			if len(reports) == 0 && len(b) > 0 {
				t.Fatal("no report for non-empty input")
			}
			for _, rep := range reports {
				checkInvariants(t, rep)
			}
			// Read in place, an mbox splits, and cuts a message at
			// MaxBytes, as it does read from a stream (whose buffer
			// returns a line longer than 4 KiB in pieces).
			if !bytes.Contains(b, []byte("\r")) {
				inPlace, err := p.ParseAllBytes(b)
				if err != nil {
					t.Fatal(err)
				}
				if !reflect.DeepEqual(inPlace, reports) {
					t.Errorf("MaxBytes %d: ParseAllBytes:\n%+v\nParseAll:\n%+v", p.MaxBytes, inPlace, reports)
				}
			}
		}
	})
}

func hasLongLine(b []byte, n int) bool {
	for _, l := range bytes.Split(b, []byte("\n")) {
		if len(l) >= n {
			return true
		}
	}
	return false
}

func FuzzDeliveryStatus(f *testing.F) {
	f.Add([]byte("Reporting-MTA: dns; a.example\n\nFinal-Recipient: rfc822; a@b.example\nAction: failed\nStatus: 5.1.1\n"))
	f.Add([]byte("Original-Recipient: rfc822;a+2Bb@c.example\nFinal-Recipient: utf-8; j\\x{00F6}rg@d.example\nAction: delayed\n"))
	f.Add([]byte("Diagnostic-Code: smtp; 550\nFinal-Recipient: <x@y.example>\n  continued\nStatus: 4.4.7 (x)\n"))
	f.Fuzz(func(t *testing.T, b []byte) {
		var rep Report
		parseDeliveryStatus(&rep, string(b), 10, nil)
		if len(rep.Recipients) > 10 {
			t.Fatalf("%d recipients, limit 10", len(rep.Recipients))
		}
	})
}

func FuzzRecipientLine(f *testing.F) {
	for _, s := range []string{"<a@b.example>:", "  user@example.com", "554 <x@y.example>... Service unavailable",
		"Recipient: rfc822; a@b.example", "* a@b.c", "<@relay:a@b.example>", `"q l"@x.example`,
		" 550\t5.1.1 \u00a0unknown\u2003 user\r\n", "\xff \x85x\u0085y"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		addr, _, _, ok := recipientLine(s)
		if ok && !strings.Contains(addr, "@") {
			t.Fatalf("recipientLine(%q) = %q without @", s, addr)
		}
		// These must not panic on any string.
		_ = decodeXtext(s)
		_ = decodeUTF8Addr(s)
		_ = findReplyCode(s)
		_ = lastStatus(s)
		_ = classify(findStatus(s), asciiLower(s))
		// collapseSpace's one pass, in an arena, is what Fields and
		// Join make.
		a := getArena()
		defer putArena(a)
		if got, want := collapseSpace(s, a), strings.Join(strings.Fields(s), " "); got != want {
			t.Fatalf("collapseSpace(%q) = %q, want %q", s, got, want)
		}
	})
}

// FuzzLiteral checks the rule of Recipient.Literal on any input: a
// recipient marked literal is, for a report with a delivery-status part
// (or its fields in the text), exactly the value of one of its
// Final-Recipient or Original-Recipient fields; for any other format, a
// whole token of the message's text or header, character for character
// but the ASCII case of the domain. Nothing derived, decoded or cleaned may
// pass for literal.
func FuzzLiteral(f *testing.F) {
	addSeeds(f)
	for _, tpl := range []string{dsnTemplate, qmailTemplate, eximTemplate, sentenceTemplate, failedHeaderTemplate} {
		for _, a := range []string{"victim@example.net", "/victim@example.net", "|victim@example.net", `"victim@example.net"@evil.example`,
			"victim+2Bbox@example.net", "kate@\u212Amail.example", "x@victim@example.net", "Final-Recipient: rfc822; victim@example.net\r\n"} {
			f.Add([]byte(fmt.Sprintf(tpl, a)))
		}
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		rep, _ := fuzzParser.Parse(bytes.NewReader(b))
		if rep == nil {
			return
		}
		for _, r := range rep.Recipients {
			if r.Literal && !literalSourced(b, r.Address) {
				t.Fatalf("%q marked literal (format %s) but not written so in the message", r.Address, rep.Format)
			}
			if r.OriginalLiteral && !literalSourced(b, r.OriginalAddress) {
				t.Fatalf("original %q marked literal but not written so in the message", r.OriginalAddress)
			}
		}
	})
}

// literalSourced reports whether addr is written literally in the message
// b or in a message attached to it: as a recipient field's value, or as a
// whole token of a text, a status part or the raw bytes.
func literalSourced(b []byte, addr string) bool {
	if !literalForm(addr) {
		return false
	}
	var hay []string
	budget, scan := int64(1<<40), int64(1<<40)
	m := fuzzParser.read(skipFromLine(b), &budget, &scan, nil)
	hay = append(hay, string(b))
	for depth := 0; m != nil && depth <= fuzzParser.MaxDepth; depth++ {
		hay = append(hay, m.text)
		for _, s := range m.status {
			hay = append(hay, string(s))
		}
		if len(m.returnedRaw) == 0 {
			break
		}
		hay = append(hay, string(m.returnedRaw))
		m = fuzzParser.read(skipFromLine(m.returnedRaw), &budget, &scan, nil)
	}
	for _, h := range hay {
		for _, fl := range statusFields([]byte(h)) {
			switch fl.name {
			case "final-recipient", "original-recipient", "x-actual-recipient":
				if isLiteral(fl.value, addr) {
					return true
				}
			}
		}
		if wholeToken(h, addr) {
			return true
		}
	}
	return false
}

// statusFields splits a delivery-status body into fields (see eachField).
func statusFields(b []byte) []field {
	var fs []field
	eachField(string(b), nil, func(f field) bool {
		fs = append(fs, f)
		return true
	})
	return fs
}

// wholeToken reports whether addr occurs in s as a whole token.
func wholeToken(s, addr string) bool {
	low, la := asciiLower(s), asciiLower(addr)
	for off := 0; ; {
		i := strings.Index(low[off:], la)
		if i < 0 {
			return false
		}
		i += off
		if sameAddress(s[i:i+len(addr)], addr) && (tokenStart(s, i) && tokenEnd(s, i+len(addr)) || quotedString(s, i, i+len(addr))) {
			return true
		}
		off = i + 1
	}
}

// quotedString reports whether s[i:j] is quoted as a whole: a JSON string,
// maybe inside another one (Amazon SES's notification in its SNS
// envelope), or an address in quotes (GMX's "a@b.example":).
func quotedString(s string, i, j int) bool {
	return i > 0 && s[i-1] == '"' && (strings.HasPrefix(s[j:], `"`) || strings.HasPrefix(s[j:], `\"`))
}
