package dsn

import (
	"io"
	"os"
	"reflect"
	"slices"
	"strings"
	"testing"
	"testing/iotest"
)

// TestUnreadFields checks that leaving out the header fields unreadField
// names changes no report: over every sample, and the corpus of real
// bounces when it is there. The samples must hold such fields, or the test
// proves nothing.
func TestUnreadFields(t *testing.T) {
	files := samplesAndCorpus(t)
	var skipping, keeping Parser
	keeping.keepUnread = true
	left := 0
	for _, f := range files {
		b, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		if h, _, err := readHeader(skipFromLine(b), true, nil); err == nil && slices.ContainsFunc(h.fields, func(f headerField) bool { return unreadField([]byte(f.name)) }) {
			left++
		}
		got, gotErr := skipping.ParseAllBytes(b)
		want, wantErr := keeping.ParseAllBytes(b)
		if !reflect.DeepEqual(got, want) || (gotErr == nil) != (wantErr == nil) {
			t.Errorf("%s: without the unread fields\n%+v, %v\nwith them\n%+v, %v", f, got, gotErr, want, wantErr)
		}
	}
	if left == 0 {
		t.Errorf("no sample has a field to leave out")
	}
	t.Logf("%d of %d messages had fields left out", left, len(files))
}

// TestUnreadField checks which fields are left out: never one that a
// recogniser or go-message reads, nor one go-message would refuse.
func TestUnreadField(t *testing.T) {
	for _, tc := range []struct {
		line string
		want bool
	}{
		{"Received: from a by b\r\n", true},
		{"RECEIVED : from a\n", true},
		{"DKIM-Signature: v=1\n", true},
		{"ARC-Seal: i=1\n", true},
		{"X-MS-Exchange-Organization-SCL: 1\n", true},
		{"X-Microsoft-Antispam: BCL:0\n", true},
		{"Received x: from a\n", false}, // go-message refuses the name
		{"Received\n", false},
		{": x\n", false},
		{"X-Received-By: x\n", false},
		{"Content-Type: text/plain\n", false},
		{"X-Failed-Recipients: a@example.org\n", false},
		{"From: a@example.org\n", false},
		{"Return-Path: <>\n", false},
		{"Auto-Submitted: auto-replied\n", false},
		{"Subject: Undelivered Mail\n", false},
	} {
		name, _, _ := strings.Cut(tc.line, ":")
		n := trimBlanks([]byte(name))
		if got := unreadField(n) && validFieldName(n); got != tc.want {
			t.Errorf("unreadField(%q) = %v, want %v", tc.line, got, tc.want)
		}
	}
}

// TestReadHeaderBlock checks that the header of a returned message read
// from its part stops at the blank line, and fails where message.Read
// fails: on a read error before the blank line (a part cut short, without
// its closing boundary) and past go-message's bound, not at a plain end.
func TestReadHeaderBlock(t *testing.T) {
	big := "Subject: x\r\n" + strings.Repeat("X-Pad: "+strings.Repeat("y", 100)+"\r\n", maxEntityHeaderBytes/100)
	for _, tc := range []struct {
		name    string
		r       io.Reader
		want    string
		wantErr bool
	}{
		{"blank line", strings.NewReader("To: a\r\nSubject: b\r\n\r\nbody\r\n"), "To: a\r\nSubject: b\r\n\r\n", false},
		{"LF", strings.NewReader("To: a\n\nbody\n"), "To: a\n\n", false},
		{"end", strings.NewReader("To: a\n"), "To: a\n", false},
		{"cut short", io.MultiReader(strings.NewReader("To: a\n"), iotest.ErrReader(io.ErrUnexpectedEOF)), "To: a\n", true},
		{"too large", strings.NewReader(big + "\r\n"), big[:maxEntityHeaderBytes], true},
		{"long line", strings.NewReader("X: " + strings.Repeat("z", 5000) + "\n\nbody"), "X: " + strings.Repeat("z", 5000) + "\n\n", false},
	} {
		var scratch []byte
		got, err := readHeaderBlock(tc.r, &scratch)
		if string(got) != tc.want || (err != nil) != tc.wantErr {
			t.Errorf("%s: got %.40q (%d bytes), %v; want %.40q (%d bytes), error %v", tc.name, got, len(got), err, tc.want, len(tc.want), tc.wantErr)
		}
	}
}
