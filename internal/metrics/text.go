package metrics

import (
	"bytes"
	"math"
	"slices"
	"sort"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"unicode/utf8"
)

// ContentType is the media type of Prometheus's text exposition format,
// version 0.0.4, which Handler serves.
const ContentType = "text/plain; version=0.0.4; charset=utf-8"

// Metric types of the TYPE line.
const (
	typeCounter   = "counter"
	typeGauge     = "gauge"
	typeHistogram = "histogram"
)

// family is one metric's samples as they are exposed: a HELP and a TYPE
// line, then the samples in order.
type family struct {
	name, help, typ string
	samples         []sample
}

// sample is one line: the family's name plus suffix (_bucket, _sum,
// _count for a histogram), its labels in order, and its value.
type sample struct {
	suffix string
	labels []label
	value  string
}

type label struct{ name, value string }

// gauge is a family of one unlabelled gauge sample.
func gauge(name, help string, v float64) family {
	return family{name: name, help: help, typ: typeGauge, samples: []sample{{value: formatFloat(v)}}}
}

// writeText writes fams in the text format, sorted by name so that two
// scrapes of the same state are the same bytes.
func writeText(b *bytes.Buffer, fams []family) {
	slices.SortStableFunc(fams, func(a, b family) int { return strings.Compare(a.name, b.name) })
	for _, f := range fams {
		b.WriteString("# HELP ")
		b.WriteString(f.name)
		b.WriteByte(' ')
		escape(b, f.help, false)
		b.WriteString("\n# TYPE ")
		b.WriteString(f.name)
		b.WriteByte(' ')
		b.WriteString(f.typ)
		b.WriteByte('\n')
		for _, s := range f.samples {
			b.WriteString(f.name)
			b.WriteString(s.suffix)
			if len(s.labels) > 0 {
				b.WriteByte('{')
				for i, l := range s.labels {
					if i > 0 {
						b.WriteByte(',')
					}
					b.WriteString(l.name)
					b.WriteString(`="`)
					escape(b, l.value, true)
					b.WriteByte('"')
				}
				b.WriteByte('}')
			}
			b.WriteByte(' ')
			b.WriteString(s.value)
			b.WriteByte('\n')
		}
	}
}

// escape writes s escaped as the format asks: backslash and newline in
// HELP text, and also the double quote in a label value. Invalid UTF-8
// (the format is UTF-8) becomes U+FFFD, so that no value can make a
// scrape unreadable.
func escape(b *bytes.Buffer, s string, quote bool) {
	if !utf8.ValidString(s) {
		s = strings.ToValidUTF8(s, "\uFFFD")
	}
	for i := 0; i < len(s); i++ {
		switch c := s[i]; {
		case c == '\\':
			b.WriteString(`\\`)
		case c == '\n':
			b.WriteString(`\n`)
		case c == '"' && quote:
			b.WriteString(`\"`)
		default:
			b.WriteByte(c)
		}
	}
}

// formatFloat writes v as Prometheus's Go client does.
func formatFloat(v float64) string {
	switch {
	case math.IsInf(v, 1):
		return "+Inf"
	case math.IsInf(v, -1):
		return "-Inf"
	case math.IsNaN(v):
		return "NaN"
	}
	return strconv.FormatFloat(v, 'g', -1, 64)
}

// counter is a monotonic count, safe for concurrent use.
type counter struct{ n atomic.Uint64 }

func (c *counter) inc() { c.n.Add(1) }

func (c *counter) family(name, help string) family {
	return family{name: name, help: help, typ: typeCounter, samples: []sample{{value: strconv.FormatUint(c.n.Load(), 10)}}}
}

// counterVec is a counter per set of label values. The sets are few and
// mostly known in advance (New creates them, so that they are exposed as
// 0 before their first count); an unforeseen set is added on first use.
type counterVec struct {
	name, help string
	labels     []string
	mu         sync.RWMutex
	series     map[string]*series
}

type series struct {
	values []string
	counter
}

func newCounterVec(name, help string, labels ...string) *counterVec {
	return &counterVec{name: name, help: help, labels: labels, series: map[string]*series{}}
}

// with returns the counter of the label values, one per label.
func (v *counterVec) with(values ...string) *counter {
	key := strings.Join(values, "\xff")
	v.mu.RLock()
	s := v.series[key]
	v.mu.RUnlock()
	if s != nil {
		return &s.counter
	}
	v.mu.Lock()
	defer v.mu.Unlock()
	if s = v.series[key]; s == nil {
		s = &series{values: slices.Clone(values)}
		v.series[key] = s
	}
	return &s.counter
}

func (v *counterVec) family() family {
	v.mu.RLock()
	list := make([]*series, 0, len(v.series))
	for _, s := range v.series {
		list = append(list, s)
	}
	v.mu.RUnlock()
	slices.SortFunc(list, func(a, b *series) int { return slices.Compare(a.values, b.values) })
	f := family{name: v.name, help: v.help, typ: typeCounter, samples: make([]sample, len(list))}
	for i, s := range list {
		ls := make([]label, len(v.labels))
		for j, name := range v.labels {
			ls[j] = label{name, s.values[j]}
		}
		f.samples[i] = sample{labels: ls, value: strconv.FormatUint(s.n.Load(), 10)}
	}
	return f
}

// histogram counts observations in buckets with the upper bounds given,
// and their sum. Each bucket is counted apart and made cumulative at
// scrape time, so that an observation is one atomic add on its bucket
// plus one on the sum, and _count, which is the sum of the buckets, always
// equals the +Inf bucket.
type histogram struct {
	name, help string
	upper      []float64       // sorted, without +Inf
	counts     []atomic.Uint64 // per bucket; the last is above every bound
	sum        atomic.Uint64   // float64 bits
}

func newHistogram(name, help string, upper []float64) *histogram {
	upper = slices.Clone(upper)
	sort.Float64s(upper)
	return &histogram{name: name, help: help, upper: upper, counts: make([]atomic.Uint64, len(upper)+1)}
}

func (h *histogram) observe(v float64) {
	// The first bound >= v: a bucket counts the values up to and including
	// its bound (le). NaN lands past every bound, in +Inf only.
	h.counts[sort.SearchFloat64s(h.upper, v)].Add(1)
	for {
		old := h.sum.Load()
		if h.sum.CompareAndSwap(old, math.Float64bits(math.Float64frombits(old)+v)) {
			return
		}
	}
}

func (h *histogram) family() family {
	f := family{name: h.name, help: h.help, typ: typeHistogram, samples: make([]sample, 0, len(h.counts)+2)}
	var total uint64
	for i := range h.counts {
		total += h.counts[i].Load()
		le := "+Inf"
		if i < len(h.upper) {
			le = formatFloat(h.upper[i])
		}
		f.samples = append(f.samples, sample{suffix: "_bucket", labels: []label{{"le", le}}, value: strconv.FormatUint(total, 10)})
	}
	f.samples = append(f.samples,
		sample{suffix: "_sum", value: formatFloat(math.Float64frombits(h.sum.Load()))},
		sample{suffix: "_count", value: strconv.FormatUint(total, 10)})
	return f
}
