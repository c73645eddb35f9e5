package dsn

import (
	"bytes"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// Fuzz targets: run briefly in CI with
//
//	go test -run '^$' -fuzz '^FuzzParse$' -fuzztime 30s ./internal/dsn
//
// (and likewise FuzzParseAll, FuzzDeliveryStatus, FuzzRecipientLine). They
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
	})
}

func FuzzParseAll(f *testing.F) {
	addSeeds(f)
	f.Fuzz(func(t *testing.T, b []byte) {
		reports, err := fuzzParser.ParseAll(bytes.NewReader(b))
		if err != nil {
			t.Fatal(err)
		}
		if len(reports) == 0 && len(b) > 0 {
			t.Fatal("no report for non-empty input")
		}
		for _, rep := range reports {
			checkInvariants(t, rep)
		}
	})
}

func FuzzDeliveryStatus(f *testing.F) {
	f.Add([]byte("Reporting-MTA: dns; a.example\n\nFinal-Recipient: rfc822; a@b.example\nAction: failed\nStatus: 5.1.1\n"))
	f.Add([]byte("Original-Recipient: rfc822;a+2Bb@c.example\nFinal-Recipient: utf-8; j\\x{00F6}rg@d.example\nAction: delayed\n"))
	f.Add([]byte("Diagnostic-Code: smtp; 550\nFinal-Recipient: <x@y.example>\n  continued\nStatus: 4.4.7 (x)\n"))
	f.Fuzz(func(t *testing.T, b []byte) {
		var rep Report
		parseDeliveryStatus(&rep, b, 10)
		if len(rep.Recipients) > 10 {
			t.Fatalf("%d recipients, limit 10", len(rep.Recipients))
		}
	})
}

func FuzzRecipientLine(f *testing.F) {
	for _, s := range []string{"<a@b.example>:", "  user@example.com", "554 <x@y.example>... Service unavailable",
		"Recipient: rfc822; a@b.example", "* a@b.c", "<@relay:a@b.example>", `"q l"@x.example`} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		addr, _, ok := recipientLine(s)
		if ok && !strings.Contains(addr, "@") {
			t.Fatalf("recipientLine(%q) = %q without @", s, addr)
		}
		// These must not panic on any string.
		_ = decodeXtext(s)
		_ = decodeUTF8Addr(s)
		_ = findReplyCode(s)
		_ = lastStatus(s)
		_ = classify(findStatus(s), s)
	})
}
