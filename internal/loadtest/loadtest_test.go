package loadtest

import (
	"bytes"
	"net"
	"os"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/emersion/go-milter"

	"github.com/bouncemilter/bouncemilter/internal/dsn"
)

func TestParseMessage(t *testing.T) {
	for _, tc := range []struct {
		name   string
		raw    string
		header []Field
		body   string
		err    bool
	}{
		{"lf", "A: 1\nB:2\n\nbody\nend\n", []Field{{"A", "1"}, {"B", "2"}}, "body\r\nend\r\n", false},
		{"crlf", "A: 1\r\n\r\nbody\r\n", []Field{{"A", "1"}}, "body\r\n", false},
		{"folded", "A: 1\n\t2\nB: 3\n\nx", []Field{{"A", "1\n\t2"}, {"B", "3"}}, "x", false},
		{"no body", "A: 1\n", nil, "", true},
		{"continuation first", " x\n\nbody", nil, "", true},
		{"no colon", "A 1\n\nbody", nil, "", true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			h, b, err := ParseMessage([]byte(tc.raw))
			if (err != nil) != tc.err {
				t.Fatalf("err = %v, want error %v", err, tc.err)
			}
			if tc.err {
				return
			}
			if !reflect.DeepEqual(h, tc.header) || string(b) != tc.body {
				t.Errorf("got %q %q, want %q %q", h, b, tc.header, tc.body)
			}
		})
	}
}

// The bounce is what Postfix writes: a report that says the address does
// not exist.
func TestBounceIsAPostfixReport(t *testing.T) {
	m := Bounce("notice@media.example.org", "notice+tag@media.example.org", "bot@nowhere.example", "1A2B3C4D5E")
	if m.From != "" || m.QueueID != "1A2B3C4D5E" || !reflect.DeepEqual(m.Rcpts, []string{"notice+tag@media.example.org"}) {
		t.Fatalf("envelope %q %q %q", m.From, m.Rcpts, m.QueueID)
	}
	var raw bytes.Buffer
	for _, f := range m.Header {
		raw.WriteString(f.Name + ": " + strings.ReplaceAll(f.Value, "\n", "\r\n") + "\r\n")
	}
	raw.WriteString("\r\n")
	raw.Write(m.Body)
	rep, err := dsn.Parse(&raw)
	if err != nil {
		t.Fatal(err)
	}
	if !rep.Bounce || len(rep.Recipients) != 1 {
		t.Fatalf("report %+v", rep)
	}
	if r := rep.Recipients[0]; r.Address != "bot@nowhere.example" || r.Action != "failed" || r.Status != "5.1.1" {
		t.Errorf("recipient %+v", r)
	}
}

func TestPercentile(t *testing.T) {
	ms := func(ns ...int) []time.Duration {
		var ds []time.Duration
		for _, n := range ns {
			ds = append(ds, time.Duration(n)*time.Millisecond)
		}
		return ds
	}
	for _, tc := range []struct {
		ds   []time.Duration
		p    float64
		want time.Duration
	}{
		{nil, 50, 0},
		{ms(7), 99, 7 * time.Millisecond},
		{ms(5, 1, 4, 2, 3), 50, 3 * time.Millisecond},
		{ms(5, 1, 4, 2, 3), 100, 5 * time.Millisecond},
		{ms(1, 2, 3, 4, 5, 6, 7, 8, 9, 10), 90, 9 * time.Millisecond},
		{ms(1, 2, 3, 4, 5, 6, 7, 8, 9, 10), 99, 10 * time.Millisecond},
	} {
		if got := Percentile(tc.ds, tc.p); got != tc.want {
			t.Errorf("Percentile(%v, %v) = %v, want %v", tc.ds, tc.p, got, tc.want)
		}
	}
}

func TestPeakRSS(t *testing.T) {
	rss, err := PeakRSS(os.Getpid())
	if _, statErr := os.Stat("/proc/self/status"); statErr != nil {
		t.Skip("no /proc")
	}
	if err != nil || rss < 1<<20 {
		t.Errorf("PeakRSS = %d, %v", rss, err)
	}
}

func TestCPUTime(t *testing.T) {
	if _, err := os.Stat("/proc/self/stat"); err != nil {
		t.Skip("no /proc")
	}
	before, err := CPUTime(os.Getpid())
	if err != nil {
		t.Fatal(err)
	}
	for start := time.Now(); time.Since(start) < 50*time.Millisecond; {
	}
	after, err := CPUTime(os.Getpid())
	if err != nil || after < before+20*time.Millisecond {
		t.Errorf("CPUTime went from %v to %v (%v) after 50 ms of work", before, after, err)
	}
}

// stopAt answers "continue" until its stage, then accepts or discards.
type stopAt struct {
	milter.NoOpMilter
	stage string
	seen  *[]string
}

func (s stopAt) answer(stage string) (milter.Response, error) {
	*s.seen = append(*s.seen, stage)
	if stage == s.stage {
		return milter.RespDiscard, nil
	}
	return milter.RespContinue, nil
}

func (s stopAt) MailFrom(string, *milter.Modifier) (milter.Response, error) { return s.answer("mail") }
func (s stopAt) Header(name, _ string, m *milter.Modifier) (milter.Response, error) {
	if q := m.Macros["i"]; q != "Q1" {
		*s.seen = append(*s.seen, "no queue id")
	}
	return s.answer("header")
}
func (s stopAt) Body(m *milter.Modifier) (milter.Response, error) {
	if m.Macros["i"] != "Q1" {
		*s.seen = append(*s.seen, "no queue id at eob")
	}
	return s.answer("eob")
}

func TestSend(t *testing.T) {
	for _, stage := range []string{"mail", "header", "eob"} {
		t.Run(stage, func(t *testing.T) {
			var seen []string
			ln, err := net.Listen("tcp", "127.0.0.1:0")
			if err != nil {
				t.Fatal(err)
			}
			srv := &milter.Server{NewMilter: func() milter.Milter { return stopAt{stage: stage, seen: &seen} }}
			go srv.Serve(ln)
			defer srv.Close()

			c, err := Dial("tcp", ln.Addr().String(), Remote, 5*time.Second)
			if err != nil {
				t.Fatal(err)
			}
			defer c.Close()
			m := Ordinary("a@example.com", "b@example.org", "Q1")
			m.Header = m.Header[:1]
			res, err := c.Send(m)
			if err != nil {
				t.Fatal(err)
			}
			if res.Stage != stage || res.Code != milter.ActDiscard || res.Latency <= 0 || res.Total < res.Latency {
				t.Errorf("result %+v", res)
			}
			if seen[len(seen)-1] != stage || strings.Contains(strings.Join(seen, ","), "no queue id") {
				t.Errorf("the milter saw %q", seen)
			}
		})
	}
}
