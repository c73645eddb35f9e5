package metrics

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"math"
	"net/http/httptest"
	"regexp"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	dto "github.com/prometheus/client_model/go"
	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"

	"github.com/bouncemilter/bouncemilter/internal/bounce"
	"github.com/bouncemilter/bouncemilter/internal/registry"
)

// source is a Source whose answers the test sets.
type source struct {
	pending int64
	pendErr error
	run     registry.SyncRun
	ran     bool
	lastErr error
}

func (s source) PendingActions(context.Context) (int64, error) { return s.pending, s.pendErr }
func (s source) LastSync(context.Context) (registry.SyncRun, bool, error) {
	return s.run, s.ran, s.lastErr
}

// ownText is the exposition of the bouncemilter_* families alone, which,
// unlike the process's own, a test can know exactly.
func ownText(t *testing.T, m *Metrics) string {
	t.Helper()
	fams, err := m.sourceFamilies(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	var b bytes.Buffer
	writeText(&b, append(fams, m.ownFamilies()...))
	return b.String()
}

// TestExposition pins the whole text of a known state: names, help
// texts, types, labels, sort order, the zeros of the known label values,
// and the histogram's cumulative buckets.
func TestExposition(t *testing.T) {
	m := New(source{pending: 3, run: registry.SyncRun{At: time.Unix(1700000000, 500000000)}, ran: true})
	m.Message(KindBounce)
	m.Message(KindBounce)
	m.Message(KindOther)
	m.bounces.with("acted").inc()
	m.actions.with("ban-ip", ResultFailed).inc()
	m.actions.with("unknown", ResultApplied).inc()
	m.parseErrors.inc()
	for _, v := range []float64{0.0003, 0.0005, 0.002, 0.3, 7} {
		m.decision.observe(v)
	}
	want := `# HELP bouncemilter_action_backlog Actions pending in the journal (waiting for their first attempt or for a retry).
# TYPE bouncemilter_action_backlog gauge
bouncemilter_action_backlog 3
# HELP bouncemilter_actions_total Attempts at actions, by kind (ban-account, ban-ip, unban-account, unban-ip) and result (applied, failed, refused).
# TYPE bouncemilter_actions_total counter
bouncemilter_actions_total{kind="ban-account",result="applied"} 0
bouncemilter_actions_total{kind="ban-account",result="failed"} 0
bouncemilter_actions_total{kind="ban-account",result="refused"} 0
bouncemilter_actions_total{kind="ban-ip",result="applied"} 0
bouncemilter_actions_total{kind="ban-ip",result="failed"} 1
bouncemilter_actions_total{kind="ban-ip",result="refused"} 0
bouncemilter_actions_total{kind="unban-account",result="applied"} 0
bouncemilter_actions_total{kind="unban-account",result="failed"} 0
bouncemilter_actions_total{kind="unban-account",result="refused"} 0
bouncemilter_actions_total{kind="unban-ip",result="applied"} 0
bouncemilter_actions_total{kind="unban-ip",result="failed"} 0
bouncemilter_actions_total{kind="unban-ip",result="refused"} 0
bouncemilter_actions_total{kind="unknown",result="applied"} 1
# HELP bouncemilter_bounces_total Bounces journalled, by verdict (acted, no-match, ineligible, suspect, not-bounce).
# TYPE bouncemilter_bounces_total counter
bouncemilter_bounces_total{verdict="acted"} 1
bouncemilter_bounces_total{verdict="ineligible"} 0
bouncemilter_bounces_total{verdict="no-match"} 0
bouncemilter_bounces_total{verdict="not-bounce"} 0
bouncemilter_bounces_total{verdict="suspect"} 0
# HELP bouncemilter_decision_seconds Time from a complete bounce to its journalled decision: parse, look-up, durable commit.
# TYPE bouncemilter_decision_seconds histogram
bouncemilter_decision_seconds_bucket{le="0.0005"} 2
bouncemilter_decision_seconds_bucket{le="0.001"} 2
bouncemilter_decision_seconds_bucket{le="0.0025"} 3
bouncemilter_decision_seconds_bucket{le="0.005"} 3
bouncemilter_decision_seconds_bucket{le="0.01"} 3
bouncemilter_decision_seconds_bucket{le="0.025"} 3
bouncemilter_decision_seconds_bucket{le="0.05"} 3
bouncemilter_decision_seconds_bucket{le="0.1"} 3
bouncemilter_decision_seconds_bucket{le="0.25"} 3
bouncemilter_decision_seconds_bucket{le="0.5"} 4
bouncemilter_decision_seconds_bucket{le="1"} 4
bouncemilter_decision_seconds_bucket{le="2.5"} 4
bouncemilter_decision_seconds_bucket{le="5"} 4
bouncemilter_decision_seconds_bucket{le="+Inf"} 5
bouncemilter_decision_seconds_sum 7.3028
bouncemilter_decision_seconds_count 5
# HELP bouncemilter_last_sync_timestamp_seconds When the last sync run ended, in Unix seconds; 0 when none was recorded.
# TYPE bouncemilter_last_sync_timestamp_seconds gauge
bouncemilter_last_sync_timestamp_seconds 1.7000000005e+09
# HELP bouncemilter_messages_total Messages the milter saw, by kind: bounce (read and decided), outgoing (MediaGoblin's mail, recorded), other (accepted unread).
# TYPE bouncemilter_messages_total counter
bouncemilter_messages_total{kind="bounce"} 2
bouncemilter_messages_total{kind="other"} 1
bouncemilter_messages_total{kind="outgoing"} 0
# HELP bouncemilter_parse_errors_total Bounces the parser could not read (they are delivered).
# TYPE bouncemilter_parse_errors_total counter
bouncemilter_parse_errors_total 1
`
	if got := ownText(t, m); got != want {
		t.Errorf("exposition:\n%s\nwant:\n%s", got, want)
	}
}

func TestEscape(t *testing.T) {
	for _, tc := range []struct {
		in, label, help string
	}{
		{"plain", "plain", "plain"},
		{`back\slash`, `back\\slash`, `back\\slash`},
		{`say "hi"`, `say \"hi\"`, `say "hi"`},
		{"two\nlines", `two\nlines`, `two\nlines`},
		{"cr\rtab\t", "cr\rtab\t", "cr\rtab\t"},
		{`\n`, `\\n`, `\\n`}, // a backslash and an n, not a newline
		{"bad\xffutf8", "bad\uFFFDutf8", "bad\uFFFDutf8"},
		{"", "", ""},
	} {
		var l, h bytes.Buffer
		escape(&l, tc.in, true)
		escape(&h, tc.in, false)
		if l.String() != tc.label || h.String() != tc.help {
			t.Errorf("escape(%q) = label %q, help %q; want %q, %q", tc.in, l.String(), h.String(), tc.label, tc.help)
		}
	}
	// And through the whole writer, read back by Prometheus's own parser.
	v := newCounterVec("x_total", "a \\ help\nwith \"quotes\"", "l")
	v.with("a\\b\"c\nd").inc()
	var b bytes.Buffer
	writeText(&b, []family{v.family()})
	want := "# HELP x_total a \\\\ help\\nwith \"quotes\"\n# TYPE x_total counter\nx_total{l=\"a\\\\b\\\"c\\nd\"} 1\n"
	if b.String() != want {
		t.Errorf("got %q, want %q", b.String(), want)
	}
	fams := parseProm(t, b.String())
	if got := fams["x_total"].GetHelp(); got != "a \\ help\nwith \"quotes\"" {
		t.Errorf("help read back %q", got)
	}
	if got := fams["x_total"].GetMetric()[0].GetLabel()[0].GetValue(); got != "a\\b\"c\nd" {
		t.Errorf("label read back %q", got)
	}
}

// TestHistogram checks the bucket bounds: a value on a bound counts in
// that bucket (le), every bucket counts those below it, and +Inf and
// _count count everything.
func TestHistogram(t *testing.T) {
	for _, tc := range []struct {
		name    string
		bounds  []float64
		observe []float64
		want    []string // the bucket values, +Inf last
		sum     string
	}{
		{"empty", []float64{1, 2}, nil, []string{"0", "0", "0"}, "0"},
		{"on the bounds", []float64{1, 2}, []float64{1, 2}, []string{"1", "2", "2"}, "3"},
		{"between", []float64{1, 2}, []float64{0.5, 1.5, 2.5}, []string{"1", "2", "3"}, "4.5"},
		{"above all", []float64{1, 2}, []float64{100}, []string{"0", "0", "1"}, "100"},
		{"negative", []float64{1, 2}, []float64{-1}, []string{"1", "1", "1"}, "-1"},
		{"NaN", []float64{1, 2}, []float64{math.NaN()}, []string{"0", "0", "1"}, "NaN"},
		{"unsorted bounds", []float64{2, 1}, []float64{1.5}, []string{"0", "1", "1"}, "1.5"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			h := newHistogram("h_seconds", "h", tc.bounds)
			for _, v := range tc.observe {
				h.observe(v)
			}
			f := h.family()
			var got []string
			for _, s := range f.samples {
				if s.suffix == "_bucket" {
					got = append(got, s.value)
				}
			}
			if !slices.Equal(got, tc.want) {
				t.Errorf("buckets = %v, want %v", got, tc.want)
			}
			last := f.samples[len(f.samples)-3]
			if last.labels[0] != (label{"le", "+Inf"}) {
				t.Errorf("last bucket %v, want le=+Inf", last.labels)
			}
			if s := f.samples[len(f.samples)-2]; s.suffix != "_sum" || s.value != tc.sum {
				t.Errorf("sum = %v, want %s", s, tc.sum)
			}
			if s := f.samples[len(f.samples)-1]; s.suffix != "_count" || s.value != strconv.Itoa(len(tc.observe)) {
				t.Errorf("count = %v, want %d", s, len(tc.observe))
			}
		})
	}
}

// TestConcurrent counts from many goroutines while scraping (run with
// -race): nothing is lost, and a scrape taken during the counting is
// consistent (the +Inf bucket equals _count).
func TestConcurrent(t *testing.T) {
	m := New(nil)
	const workers, each = 8, 1000
	var wg sync.WaitGroup
	stop := make(chan struct{})
	scraped := make(chan error, 1)
	go func() {
		defer close(scraped)
		for {
			select {
			case <-stop:
				return
			default:
			}
			f := m.decision.family()
			if inf, count := f.samples[len(f.samples)-3].value, f.samples[len(f.samples)-1].value; inf != count {
				scraped <- fmt.Errorf("+Inf bucket %s, count %s", inf, count)
				return
			}
			var b bytes.Buffer
			writeText(&b, m.ownFamilies())
		}
	}()
	for i := range workers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for j := range each {
				m.Message(KindBounce)
				m.actions.with(fmt.Sprintf("kind-%d", j%3), ResultApplied).inc()
				m.decision.observe(float64(i) / 1000)
			}
		}()
	}
	wg.Wait()
	close(stop)
	if err := <-scraped; err != nil {
		t.Error(err)
	}
	text := ownText(t, m)
	for _, want := range []string{
		fmt.Sprintf(`bouncemilter_messages_total{kind="bounce"} %d`, workers*each),
		fmt.Sprintf(`bouncemilter_decision_seconds_count %d`, workers*each),
		`bouncemilter_actions_total{kind="kind-0",result="applied"} 2672`, // j%3 == 0 for 334 of 1000
		`bouncemilter_actions_total{kind="kind-2",result="applied"} 2664`,
	} {
		if !strings.Contains(text, want+"\n") {
			t.Errorf("lacks %q", want)
		}
	}
}

// TestSourceError: a gauge the registry cannot answer is left out, and
// logged; everything else is still served.
func TestSourceError(t *testing.T) {
	var logged bytes.Buffer
	log := slog.New(slog.NewTextHandler(&logged, nil))
	for _, tc := range []struct {
		name   string
		src    source
		has    []string
		hasnt  []string
		logged string
	}{
		{"backlog fails", source{pendErr: errors.New("database is locked")},
			[]string{"bouncemilter_last_sync_timestamp_seconds 0"}, []string{"bouncemilter_action_backlog"},
			"bouncemilter_action_backlog: database is locked"},
		{"last sync fails", source{pending: 4, lastErr: errors.New("no such table")},
			[]string{"bouncemilter_action_backlog 4"}, []string{"bouncemilter_last_sync_timestamp_seconds"},
			"bouncemilter_last_sync_timestamp_seconds: no such table"},
		{"both fail", source{pendErr: errors.New("a"), lastErr: errors.New("b")},
			nil, []string{"bouncemilter_action_backlog", "bouncemilter_last_sync_timestamp_seconds"}, "bouncemilter_action_backlog: a"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			logged.Reset()
			m := New(tc.src)
			m.Message(KindOther)
			rec := httptest.NewRecorder()
			m.Handler(log).ServeHTTP(rec, httptest.NewRequest("GET", "/metrics", nil))
			if rec.Code != 200 {
				t.Errorf("status %d", rec.Code)
			}
			body := rec.Body.String()
			checkFormat(t, body)
			for _, want := range append(tc.has, `bouncemilter_messages_total{kind="other"} 1`, "go_goroutines ") {
				if !strings.Contains(body, want) {
					t.Errorf("lacks %q", want)
				}
			}
			for _, no := range tc.hasnt {
				if strings.Contains(body, no) {
					t.Errorf("has %q", no)
				}
			}
			if !strings.Contains(logged.String(), tc.logged) {
				t.Errorf("log %q lacks %q", logged.String(), tc.logged)
			}
		})
	}
}

// TestScrape reads a whole scrape over HTTP, the process's own metrics
// included, with a strict check of the line format and with Prometheus's
// own parser.
func TestScrape(t *testing.T) {
	m := New(source{pending: 1})
	m.WrapHandler(fakeHandler{}).Handle(context.Background(), bounce.Envelope{}, nil)
	rec := httptest.NewRecorder()
	m.Handler(nil).ServeHTTP(rec, httptest.NewRequest("GET", "/metrics", nil))
	if ct := rec.Header().Get("Content-Type"); ct != "text/plain; version=0.0.4; charset=utf-8" {
		t.Errorf("Content-Type %q", ct)
	}
	body := rec.Body.String()
	checkFormat(t, body)
	fams := parseProm(t, body)
	want := map[string]string{
		"bouncemilter_messages_total":   "COUNTER",
		"bouncemilter_decision_seconds": "HISTOGRAM",
		"bouncemilter_action_backlog":   "GAUGE",
		"go_goroutines":                 "GAUGE",
		"go_threads":                    "GAUGE",
		"go_memstats_heap_alloc_bytes":  "GAUGE",
		"go_info":                       "GAUGE",
		"process_cpu_seconds_total":     "COUNTER",
		"process_resident_memory_bytes": "GAUGE",
		"process_virtual_memory_bytes":  "GAUGE",
		"process_start_time_seconds":    "GAUGE",
		"process_open_fds":              "GAUGE",
		"process_max_fds":               "GAUGE",
	}
	for name, typ := range want {
		if strings.HasPrefix(name, "process_") && !hasProc() {
			continue
		}
		f, ok := fams[name]
		if !ok {
			t.Errorf("no %s", name)
			continue
		}
		if f.GetType().String() != typ {
			t.Errorf("%s is %s, want %s", name, f.GetType(), typ)
		}
	}
	if hasProc() {
		value := func(name string) float64 { return fams[name].GetMetric()[0].GetGauge().GetValue() }
		if start := value("process_start_time_seconds"); math.Abs(start-float64(time.Now().Unix())) > 3600 {
			t.Errorf("process_start_time_seconds %v is not within the hour", start)
		}
		if rss := value("process_resident_memory_bytes"); rss < 1<<20 || rss > value("process_virtual_memory_bytes") {
			t.Errorf("resident %v, virtual %v", rss, value("process_virtual_memory_bytes"))
		}
		if n := value("process_open_fds"); n < 3 || n > value("process_max_fds") {
			t.Errorf("open fds %v, max %v", n, value("process_max_fds"))
		}
	}
	if h := fams["bouncemilter_decision_seconds"].GetMetric()[0].GetHistogram(); h.GetSampleCount() != 1 || len(h.GetBucket()) != 14 {
		t.Errorf("histogram read back: %v", h)
	}
}

func hasProc() bool { return runtime.GOOS == "linux" }

func parseProm(t *testing.T, text string) map[string]*dto.MetricFamily {
	t.Helper()
	p := expfmt.NewTextParser(model.LegacyValidation)
	fams, err := p.TextToMetricFamilies(strings.NewReader(text))
	if err != nil {
		t.Fatalf("Prometheus's parser: %v\n%s", err, text)
	}
	return fams
}

var (
	helpLine   = regexp.MustCompile(`^# HELP ([a-zA-Z_:][a-zA-Z0-9_:]*) (?:[^\\\n]|\\[\\n])*$`)
	typeLine   = regexp.MustCompile(`^# TYPE ([a-zA-Z_:][a-zA-Z0-9_:]*) (counter|gauge|histogram|summary|untyped)$`)
	sampleLine = regexp.MustCompile(`^([a-zA-Z_:][a-zA-Z0-9_:]*)(\{[a-zA-Z_][a-zA-Z0-9_]*="(?:[^\\"\n]|\\[\\"n])*"(?:,[a-zA-Z_][a-zA-Z0-9_]*="(?:[^\\"\n]|\\[\\"n])*")*\})? (\S+)$`)
)

// checkFormat checks text line by line against the exposition format, more
// strictly than the format itself: every family has its HELP, then its
// TYPE, then at least one sample, all together, once, in name order, and
// every sample is `name{labels} value` with a value Go can read.
func checkFormat(t *testing.T, text string) {
	t.Helper()
	if !strings.HasSuffix(text, "\n") {
		t.Errorf("does not end with a newline")
	}
	var (
		fam, typ  string
		samples   int
		seen      = map[string]bool{}
		prev      string
		sc        = bufio.NewScanner(strings.NewReader(text))
		n         int
		endFamily = func() {
			if fam != "" && samples == 0 {
				t.Errorf("%s has no samples", fam)
			}
		}
	)
	for sc.Scan() {
		n++
		line := sc.Text()
		if m := helpLine.FindStringSubmatch(line); m != nil {
			endFamily()
			fam, typ, samples = m[1], "", 0
			if seen[fam] {
				t.Errorf("line %d: %s twice", n, fam)
			}
			seen[fam] = true
			if fam < prev {
				t.Errorf("line %d: %s after %s", n, fam, prev)
			}
			prev = fam
			continue
		}
		if m := typeLine.FindStringSubmatch(line); m != nil {
			if m[1] != fam || typ != "" || samples > 0 {
				t.Errorf("line %d: TYPE %s not right after its HELP", n, m[1])
			}
			typ = m[2]
			continue
		}
		m := sampleLine.FindStringSubmatch(line)
		if m == nil {
			t.Errorf("line %d: not a sample: %q", n, line)
			continue
		}
		name := m[1]
		if typ == "histogram" {
			for _, suffix := range []string{"_bucket", "_sum", "_count"} {
				if base, ok := strings.CutSuffix(name, suffix); ok && base == fam {
					name = base
				}
			}
			if strings.HasSuffix(m[1], "_bucket") != strings.Contains(m[2], `le="`) {
				t.Errorf("line %d: le on the wrong line", n)
			}
		}
		if name != fam || typ == "" {
			t.Errorf("line %d: sample of %s without its HELP and TYPE (in %s)", n, m[1], fam)
		}
		if _, err := strconv.ParseFloat(m[3], 64); err != nil {
			t.Errorf("line %d: value %q: %v", n, m[3], err)
		}
		samples++
	}
	endFamily()
}
