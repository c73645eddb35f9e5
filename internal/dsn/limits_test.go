package dsn

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"math/rand"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// These tests prove that hostile input stays bounded: each returns an error
// or a partial report, never panics, and reads no more than the limits
// allow. Their speed is measured in the benchmarks, not here.

// endless is a reader of n bytes of a repeated pattern, without holding them.
type endless struct {
	pattern []byte
	n, off  int64
}

func (e *endless) Read(p []byte) (int, error) {
	if e.off >= e.n {
		return 0, io.EOF
	}
	k := 0
	for k < len(p) && e.off < e.n {
		p[k] = e.pattern[e.off%int64(len(e.pattern))]
		k++
		e.off++
	}
	return k, nil
}

func sample(t testing.TB, name string) []byte {
	t.Helper()
	b, err := os.ReadFile(filepath.Join("..", "..", "testdata", "dsn", name))
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func TestLargeMessage(t *testing.T) {
	// A 50 MB bounce: a real report followed by an endless attachment.
	head := sample(t, "postfix-userunknown.eml")
	head = head[:bytes.LastIndex(head, []byte("--4F1A21C0F2"))]
	body := &endless{pattern: []byte("QUJDREVGR0hJSktMTU5PUFFSU1RVVldYWVo=\n"), n: 50 << 20}
	r := io.MultiReader(bytes.NewReader(head), body)
	p := &Parser{MaxBytes: 1 << 20}
	rep, err := p.Parse(r)
	if !errors.Is(err, ErrTooLarge) {
		t.Fatalf("err = %v, want ErrTooLarge", err)
	}
	if rep == nil || !rep.Bounce || len(rep.Recipients) != 1 || !rep.Truncated {
		t.Fatalf("partial report = %+v, want the one recipient, truncated", rep)
	}
	if body.off > 2<<20 {
		t.Errorf("read %d bytes of the body, want at most about MaxBytes", body.off)
	}
}

func TestManyRecipients(t *testing.T) {
	var b strings.Builder
	b.WriteString("From: MAILER-DAEMON@example.org\r\nContent-Type: multipart/report; report-type=delivery-status; boundary=b\r\n\r\n")
	b.WriteString("--b\r\nContent-Type: message/delivery-status\r\n\r\nReporting-MTA: dns; example.org\r\n\r\n")
	for i := 0; i < 10000; i++ {
		fmt.Fprintf(&b, "Final-Recipient: rfc822; user%d@example.net\r\nAction: failed\r\nStatus: 5.1.1\r\n\r\n", i)
	}
	b.WriteString("--b--\r\n")
	p := &Parser{MaxRecipients: 500}
	rep, err := p.Parse(strings.NewReader(b.String()))
	if err != nil {
		t.Fatal(err)
	}
	if len(rep.Recipients) != 500 || !rep.Truncated {
		t.Errorf("got %d recipients, truncated %v; want 500, true", len(rep.Recipients), rep.Truncated)
	}
	// The default limit.
	rep, err = Parse(strings.NewReader(b.String()))
	if err != nil {
		t.Fatal(err)
	}
	if len(rep.Recipients) != DefaultMaxRecipients {
		t.Errorf("got %d recipients with the defaults, want %d", len(rep.Recipients), DefaultMaxRecipients)
	}
}

func TestDeepNesting(t *testing.T) {
	var b strings.Builder
	b.WriteString("From: MAILER-DAEMON@example.org\r\n")
	for i := 0; i < 100; i++ {
		fmt.Fprintf(&b, "Content-Type: multipart/mixed; boundary=b%d\r\n\r\n--b%d\r\n", i, i)
	}
	b.WriteString("Content-Type: message/delivery-status\r\n\r\nFinal-Recipient: rfc822; deep@example.net\r\nAction: failed\r\nStatus: 5.1.1\r\n")
	for i := 99; i >= 0; i-- {
		fmt.Fprintf(&b, "\r\n--b%d--\r\n", i)
	}
	rep, err := Parse(strings.NewReader(b.String()))
	if err != nil {
		t.Fatal(err)
	}
	// Beyond MaxDepth the MIME walk stops; the fields may still be found
	// by reading the body as text, so only the mark is certain.
	if !rep.Truncated {
		t.Errorf("100-deep report not marked truncated")
	}
	// Within MaxDepth the same structure is read.
	p := &Parser{MaxDepth: 200, MaxParts: 200}
	rep, err = p.Parse(strings.NewReader(b.String()))
	if err != nil {
		t.Fatal(err)
	}
	if len(rep.Recipients) != 1 {
		t.Errorf("with MaxDepth 200: %d recipients, want 1", len(rep.Recipients))
	}
}

func TestManyParts(t *testing.T) {
	var b strings.Builder
	b.WriteString("From: MAILER-DAEMON@example.org\r\nContent-Type: multipart/mixed; boundary=b\r\n\r\n")
	for i := 0; i < 10000; i++ {
		b.WriteString("--b\r\nContent-Type: text/plain\r\n\r\nx\r\n")
	}
	b.WriteString("--b--\r\n")
	rep, err := Parse(strings.NewReader(b.String()))
	if err != nil {
		t.Fatal(err)
	}
	if !rep.Truncated {
		t.Error("10,000 parts: report not marked truncated")
	}
}

func TestJunk(t *testing.T) {
	rng := rand.New(rand.NewSource(1))
	junk := make([]byte, 1<<20)
	rng.Read(junk)
	inputs := map[string][]byte{
		"binary":      junk,
		"empty":       nil,
		"from only":   []byte("From "),
		"header only": []byte("Content-Type: multipart/report; boundary=x\r\n"),
		"nul header":  []byte("Sub\x00ject: x\r\n\r\nbody"),
		"long line":   bytes.Repeat([]byte("a"), 2<<20),
		"many ats":    bytes.Repeat([]byte("@a.b "), 200000),
		"open brackets": append([]byte("From: MAILER-DAEMON@x.example\r\n\r\n"),
			bytes.Repeat([]byte("<a@b.c"), 100000)...),
	}
	// Every sample cut at many points: truncated messages.
	for _, name := range []string{"postfix-userunknown.eml", "qmail-userunknown.eml", "messy-base64-status.eml", "mbox-two.mbox"} {
		b := sample(t, name)
		for cut := 0; cut < len(b); cut += 97 {
			inputs[fmt.Sprintf("%s[:%d]", name, cut)] = b[:cut]
		}
	}
	for name, in := range inputs {
		rep, err := Parse(bytes.NewReader(in))
		if err != nil || rep == nil {
			t.Errorf("%s: Parse = %v, %v; want a report, no error", name, rep, err)
		}
		if _, err := ParseAll(bytes.NewReader(in)); err != nil {
			t.Errorf("%s: ParseAll: %v", name, err)
		}
	}
}

func TestMboxOversizedMessage(t *testing.T) {
	small := sample(t, "qmail-userunknown.eml")
	var b bytes.Buffer
	b.WriteString("From MAILER-DAEMON Thu Nov 26 01:00:00 2026\n")
	b.Write(small)
	b.WriteString("\nFrom MAILER-DAEMON Thu Nov 26 01:00:01 2026\n")
	b.Write(small)
	b.Write(bytes.Repeat([]byte("padding padding padding\n"), 100000))
	b.WriteString("\nFrom MAILER-DAEMON Thu Nov 26 01:00:02 2026\n")
	b.Write(small)
	p := &Parser{MaxBytes: 64 << 10}
	reports, err := p.ParseAll(&b)
	if err != nil {
		t.Fatal(err)
	}
	if len(reports) != 3 {
		t.Fatalf("got %d reports, want 3", len(reports))
	}
	for i, rep := range reports {
		if !rep.Bounce {
			t.Errorf("message %d: not a bounce", i)
		}
		if rep.Truncated != (i == 1) {
			t.Errorf("message %d: truncated = %v", i, rep.Truncated)
		}
	}
}

// A report whose MIME ends without its closing boundary has still been read
// to its end: it is not truncated, so the milter may discard it. One whose
// part header cannot be read has parts left unread: it is.
func TestUnclosedMultipart(t *testing.T) {
	whole := string(sample(t, "postfix-multi-rcpt.eml"))
	last := strings.LastIndex(whole, "\n--")
	if last < 0 {
		t.Fatal("sample has no closing boundary")
	}
	for _, c := range []struct {
		name      string
		msg       string
		truncated bool
	}{
		{"whole", whole, false},
		{"no closing boundary", whole[:last+1], false},
		{"unreadable part header", whole[:last+1] + "--" + boundaryOf(t, whole) + "\nContent-Type text/plain\n\nx\n", true},
	} {
		t.Run(c.name, func(t *testing.T) {
			rep, err := Parse(strings.NewReader(c.msg))
			if err != nil {
				t.Fatal(err)
			}
			if !rep.Bounce || len(rep.Recipients) == 0 {
				t.Fatalf("not read as a bounce: %+v", rep)
			}
			if rep.Truncated != c.truncated {
				t.Errorf("Truncated = %v, want %v", rep.Truncated, c.truncated)
			}
		})
	}
}

func boundaryOf(t *testing.T, msg string) string {
	t.Helper()
	i := strings.Index(msg, `boundary="`)
	if i < 0 {
		t.Fatal("no boundary parameter")
	}
	rest := msg[i+len(`boundary="`):]
	return rest[:strings.IndexByte(rest, '"')]
}

// capText is what capTextBytes does, written plainly: cut to maxTextBytes,
// back to the last line end when that cut, then "\r\n" made "\n".
func capText(s string) string {
	if len(s) > maxTextBytes {
		s = s[:maxTextBytes]
		s = s[:strings.LastIndexByte(s, '\n')+1]
	}
	if strings.IndexByte(s, '\r') >= 0 {
		s = strings.ReplaceAll(s, "\r\n", "\n")
	}
	return s
}

// stripTags is what htmlText does before capText, written plainly.
func stripTags(s string) string {
	var b strings.Builder
	b.Grow(len(s))
	in := false
	for i := 0; i < len(s); i++ {
		c := s[i]
		switch {
		case c == '<':
			in = true
			// Block elements end lines, so that line-oriented
			// recognisers keep working.
			rest := strings.ToLower(s[i+1 : min(len(s), i+4)])
			if strings.HasPrefix(rest, "br") || strings.HasPrefix(rest, "p") || strings.HasPrefix(rest, "/p") ||
				strings.HasPrefix(rest, "div") || strings.HasPrefix(rest, "/di") || strings.HasPrefix(rest, "tr") ||
				strings.HasPrefix(rest, "li") {
				b.WriteByte('\n')
			}
		case c == '>' && in:
			in = false
		case !in:
			b.WriteByte(c)
		}
	}
	r := strings.NewReplacer("&lt;", "<", "&gt;", ">", "&amp;", "&", "&nbsp;", " ", "&quot;", `"`, "&#64;", "@")
	return r.Replace(b.String())
}

// TestHTMLText checks htmlText against stripTags and capText one after the
// other, in an arena and on the heap.
func TestHTMLText(t *testing.T) {
	for _, s := range []string{"", "<p>a</p>", "a<BR>b<br/>c", "&amp;lt; &lt;&gt;&quot;&#64;&nbsp;&", "<lİ>x", "<d\xc4", "a&l<b>t;b",
		"<div\r\n>x\r\n</DIV>", "<<p>>", "&#64", strings.Repeat("&lt;", maxTextBytes), strings.Repeat("a<", maxTextBytes) + "\r\n"} {
		want := capText(stripTags(s))
		for _, a := range []*arena{nil, getArena()} {
			in := []byte(s)
			if got := htmlText(in, a); got != want {
				t.Errorf("htmlText(%.30q...) = %.30q..., want %.30q...", s, got, want)
			}
			if string(in) != s {
				t.Errorf("htmlText changed its input %.30q...", s)
			}
		}
	}
}

// TestCapTextBytes checks that the one-copy form of capText gives the same
// text, also where the cut falls inside a line end, with the copy in an
// arena, on the heap (no arena), or on the heap because the arena is full,
// and that it leaves its input as it was.
func TestCapTextBytes(t *testing.T) {
	long := strings.Repeat("a", maxTextBytes-1) + "\r\nb"
	full := &arena{buf: make([]byte, 0, 8)}
	full.alloc(5)
	for _, s := range []string{"", "a\r\nb", "\r\r\n", "a\rb\n\r", "\r\n\r\n", long, long[:maxTextBytes], strings.Repeat("\r\n", maxTextBytes),
		"x\r\n" + strings.Repeat("a", maxTextBytes), long[:maxTextBytes-1] + "\n" + long} {
		for _, a := range []*arena{nil, getArena(), full} {
			in := []byte(s)
			if got, want := capTextBytes(in, a), capText(s); got != want {
				t.Errorf("capTextBytes(%.20q...) = %.20q..., want %.20q...", s, got, want)
			}
			if string(in) != s {
				t.Errorf("capTextBytes changed its input %.20q...", s)
			}
		}
	}
}

// TestScanLimit checks that multipart bodies nested within MaxDepth, but
// each spanning the whole message, are not searched for their boundaries
// level after level without end: the search stops after a few times the
// message's size, the report marked truncated. Three levels, as real
// mail nests them, are read whole.
func TestScanLimit(t *testing.T) {
	nested := func(depth int) string {
		var b strings.Builder
		b.WriteString("From: MAILER-DAEMON@example.org\r\n")
		for i := 0; i < depth; i++ {
			fmt.Fprintf(&b, "Content-Type: multipart/mixed; boundary=b%d\r\n\r\n--b%d\r\n", i, i)
		}
		b.WriteString("Content-Type: text/plain\r\n\r\n")
		b.WriteString(strings.Repeat("<victim@example.net>: 550 5.1.1 user unknown\r\n", 20000))
		for i := depth - 1; i >= 0; i-- {
			fmt.Fprintf(&b, "\r\n--b%d--\r\n", i)
		}
		return b.String()
	}
	for _, tc := range []struct {
		depth     int
		truncated bool
	}{{3, false}, {9, true}} {
		rep, err := Parse(strings.NewReader(nested(tc.depth)))
		if err != nil {
			t.Fatal(err)
		}
		if rep.Truncated != tc.truncated {
			t.Errorf("%d levels: truncated %v, want %v", tc.depth, rep.Truncated, tc.truncated)
		}
	}
}

// TestManyRecipientLines checks a plain-text bounce that lists more
// recipients than a report holds (MaxRecipients, or its default): the
// first ones are read, the report is marked truncated, and the lines after
// the first one too many are not read at all.
func TestManyRecipientLines(t *testing.T) {
	for _, tc := range []struct {
		max, n    int
		truncated bool
	}{{0, DefaultMaxRecipients, false}, {0, DefaultMaxRecipients + 1, true}, {0, 1000, true},
		{150, 150, false}, {150, 151, true}, {150, 1000, true}, {10, 11, true}} {
		var b strings.Builder
		b.WriteString("From: MAILER-DAEMON@example.org\r\nSubject: failure notice\r\n\r\n" +
			"Hi. This is the qmail-send program at mx.example.org.\r\n" +
			"I'm afraid I wasn't able to deliver your message to the following addresses.\r\n\r\n")
		for i := 0; i < tc.n; i++ {
			fmt.Fprintf(&b, "<u%d@example.net>:\r\n550 5.1.1 user unknown\r\n\r\n", i)
		}
		p := &Parser{MaxRecipients: tc.max}
		rep, err := p.Parse(strings.NewReader(b.String()))
		if err != nil {
			t.Fatal(err)
		}
		if want := min(tc.n, p.maxRecipients()); len(rep.Recipients) != want || rep.Truncated != tc.truncated {
			t.Errorf("MaxRecipients %d, %d listed: %d recipients, truncated %v; want %d, %v", tc.max, tc.n, len(rep.Recipients), rep.Truncated, want, tc.truncated)
		}
	}
}
