package dsn

import (
	"bytes"
	"os"
	"reflect"
	"slices"
	"strings"
	"testing"
	"unsafe"
)

// TestReportStringsAll checks that Report.strings visits every string the
// types of a report hold, so that detach cannot miss a field added later:
// each string field (found by reflection, in the report, a recipient and
// the original) is set to a string of its own, and every one must be
// visited exactly once.
func TestReportStringsAll(t *testing.T) {
	var rep Report
	rep.Recipients = make([]Recipient, 2)
	set := map[unsafe.Pointer]bool{}
	var fill func(v reflect.Value)
	fill = func(v reflect.Value) {
		switch v.Kind() {
		case reflect.String:
			v.SetString(strings.Repeat("x", len(set)+1))
			set[v.Addr().UnsafePointer()] = false
		case reflect.Struct:
			for i := range v.NumField() {
				fill(v.Field(i))
			}
		case reflect.Slice:
			for i := range v.Len() {
				fill(v.Index(i))
			}
		case reflect.Bool, reflect.Int:
		default:
			t.Fatalf("a %v in Report: teach Report.strings and this test about it", v.Kind())
		}
	}
	fill(reflect.ValueOf(&rep).Elem())
	rep.strings(func(s *string) {
		p := unsafe.Pointer(s)
		visited, ok := set[p]
		switch {
		case !ok:
			t.Errorf("Report.strings visits a string that is no field: %q", *s)
		case visited:
			t.Errorf("Report.strings visits %q twice", *s)
		}
		set[p] = true
	})
	for p, visited := range set {
		if !visited {
			t.Errorf("Report.strings misses the field holding %q", *(*string)(p))
		}
	}
}

// TestDetach checks that a detached report holds none of the memory its
// strings were in.
func TestDetach(t *testing.T) {
	src := []byte("bounce rfc3464 mta.example a@b.example c@d.example failed 5.1.1 userunknown no such user mx.example <id@x> f@x t@y subj date")
	s := unsafe.String(&src[0], len(src))
	word := func(i int) string { return strings.Fields(s)[i] }
	rep := Report{Kind: word(0), Format: word(1), ReportingMTA: word(2),
		Recipients: []Recipient{{Address: word(3), OriginalAddress: word(4), Action: word(5), Status: word(6), Reason: word(7), Diagnostic: word(8), RemoteMTA: word(11)}},
		Original:   Original{MessageID: word(12), From: word(13), To: word(14), Subject: word(15), Date: word(16)}}
	rep.detach()
	lo, hi := uintptr(unsafe.Pointer(&src[0])), uintptr(unsafe.Pointer(&src[0]))+uintptr(len(src))
	rep.strings(func(p *string) {
		if a := uintptr(unsafe.Pointer(unsafe.StringData(*p))); *p != "" && a >= lo && a < hi {
			t.Errorf("%q still points into the message", *p)
		}
	})
	for i := range src {
		src[i] = '#'
	}
	if rep.Recipients[0].Address != "a@b.example" || rep.Original.Date != "date" || rep.Kind != "bounce" {
		t.Errorf("detached report changed with the message: %+v", rep)
	}
}

// TestReportsOwnTheirStrings parses every sample and corpus bounce from a
// buffer, then overwrites the buffer and parses other messages, which
// reuse the arena the first parse used: the first report must not change.
// A report that kept a string of the message or of the arena would.
func TestReportsOwnTheirStrings(t *testing.T) {
	files := samplesAndCorpus(t)
	var p Parser
	for i, name := range files {
		var msgs [3][]byte
		for k, f := range []string{name, files[(i+1)%len(files)], files[(i+7)%len(files)]} {
			b, err := os.ReadFile(f)
			if err != nil {
				t.Fatal(err)
			}
			msgs[k] = b
		}
		checkOwnsStrings(t, &p, name, msgs[0], msgs[1:]...)
	}
}

// deepCopy copies a report and every string in it.
func deepCopy(rep *Report) *Report {
	c := *rep
	c.Recipients = slices.Clone(rep.Recipients)
	c.strings(func(s *string) { *s = strings.Clone(*s) })
	return &c
}

// checkOwnsStrings parses b (named what) from a copy, then overwrites the
// copy and parses the others, which reuse the arena: the first report must
// not change.
func checkOwnsStrings(t *testing.T, p *Parser, what string, b []byte, others ...[]byte) {
	t.Helper()
	buf := bytes.Clone(b)
	rep, _ := p.ParseBytes(buf)
	want := deepCopy(rep)
	for i := range buf {
		buf[i] = '#'
	}
	for _, o := range others {
		p.ParseBytes(o)
	}
	if !reflect.DeepEqual(rep, want) {
		t.Errorf("%s: the report changed after its message was overwritten and its arena reused:\n%+v\nwas\n%+v", what, rep, want)
	}
}
