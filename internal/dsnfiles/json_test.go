package dsnfiles

import (
	"bytes"
	"encoding/binary"
	"encoding/json"
	"os"
	"path/filepath"
	"reflect"
	"slices"
	"strings"
	"testing"

	"github.com/bouncemilter/bouncemilter/internal/dsn"
	"github.com/bouncemilter/bouncemilter/internal/testenv"
)

// stdJSON is the line encoding/json writes for r, the way "bouncemilter
// parse --json" printed it before AppendJSON.
func stdJSON(t testing.TB, r *Result) []byte {
	t.Helper()
	var buf bytes.Buffer
	enc := json.NewEncoder(&buf)
	enc.SetEscapeHTML(false)
	if err := enc.Encode(r); err != nil {
		t.Fatal(err)
	}
	return buf.Bytes()
}

func checkJSON(t testing.TB, r *Result) {
	t.Helper()
	want := stdJSON(t, r)
	got := append(r.AppendJSON(nil), '\n')
	if !bytes.Equal(got, want) {
		t.Fatalf("AppendJSON differs from encoding/json for %#v\n got %q\nwant %q", r, got, want)
	}
}

// corpusFiles returns the messages of the shared corpus of real bounces,
// beside the repository (or in BOUNCEMILTER_CORPUS), skipping the test when
// it is absent (failing under CI=true).
func corpusFiles(tb testing.TB) []string {
	tb.Helper()
	dir := os.Getenv("BOUNCEMILTER_CORPUS")
	if dir == "" {
		dir = filepath.Join(testenv.RepoRoot(tb), "..", "shared", "corpus", "sisimai")
	}
	names, _ := filepath.Glob(filepath.Join(dir, "eml", "*"))
	testenv.Require(tb, len(names) > 0, "no corpus of bounces at "+dir+" (set BOUNCEMILTER_CORPUS)")
	return names
}

// TestJSONCorpus checks AppendJSON against encoding/json on what every
// message of the shared corpus reports, and on the samples of testdata.
func TestJSONCorpus(t *testing.T) {
	samples, _ := filepath.Glob(filepath.Join("..", "..", "testdata", "dsn", "*.eml"))
	names := append(corpusFiles(t), samples...)
	p := &dsn.Parser{MaxBytes: dsn.DefaultMaxBytes}
	for _, name := range names {
		r := ParseFile(p, name)
		checkJSON(t, &r)
	}
}

// TestJSONStrings checks the escaping of strings that encoding/json
// treats specially.
func TestJSONStrings(t *testing.T) {
	for _, s := range []string{
		"", "plain", `"quoted" \back\slash/`, "<a href='x'>&amp;</a>",
		"\x00\x01\b\t\n\v\f\r\x1b\x1f\x7f", "héllo wörld ✓ 𝄞",
		"bad \xff byte", "\xc3", "\xed\xa0\x80 surrogate", "\xf4\x90\x80\x80 too high",
		"line\u2028sep\u2029par", "\u2027\u202a", "\ufffd",
	} {
		r := &Result{File: s, Kind: s, Format: s, Error: s, Recipients: []dsn.Recipient{{
			Address: s, OriginalAddress: s, Action: s, Status: s, Reason: s, Diagnostic: s, RemoteMTA: s,
		}}, Original: &dsn.Original{MessageID: s, From: s, To: s, Subject: s, Date: s}}
		checkJSON(t, r)
	}
}

// TestJSONOmit checks the omitted and null fields: zero values, nil and
// empty recipients, an empty and a partly filled original.
func TestJSONOmit(t *testing.T) {
	for _, r := range []*Result{
		{},
		{Recipients: []dsn.Recipient{}},
		{Recipients: []dsn.Recipient{{}, {}}, Original: &dsn.Original{}},
		{Original: &dsn.Original{To: "x"}},
		{Original: &dsn.Original{Subject: "s", Date: "d"}},
		{Messages: -3, Truncated: true},
		{Messages: 1 << 40},
	} {
		checkJSON(t, r)
	}
}

// TestJSONFields fails when a field is added to (or renamed in) Result,
// dsn.Recipient or dsn.Original without AppendJSON writing it: it fills
// every field through reflection and compares the names of the JSON
// fields AppendJSON writes with those of the struct tags, and the bytes
// with encoding/json.
func TestJSONFields(t *testing.T) {
	var r Result
	fill(t, reflect.ValueOf(&r).Elem())
	checkJSON(t, &r)
	var got map[string]any
	if err := json.Unmarshal(r.AppendJSON(nil), &got); err != nil {
		t.Fatal(err)
	}
	sameNames(t, "Result", got, reflect.TypeFor[Result]())
	sameNames(t, "dsn.Recipient", got["recipients"].([]any)[0].(map[string]any), reflect.TypeFor[dsn.Recipient]())
	sameNames(t, "dsn.Original", got["original"].(map[string]any), reflect.TypeFor[dsn.Original]())
}

// fill sets every field of the struct v to a value that is not zero.
func fill(t *testing.T, v reflect.Value) {
	switch v.Kind() {
	case reflect.String:
		v.SetString("x " + v.Type().Name())
	case reflect.Bool:
		v.SetBool(true)
	case reflect.Int, reflect.Int64, reflect.Int32:
		v.SetInt(7)
	case reflect.Pointer:
		v.Set(reflect.New(v.Type().Elem()))
		fill(t, v.Elem())
	case reflect.Slice:
		v.Set(reflect.MakeSlice(v.Type(), 1, 1))
		fill(t, v.Index(0))
	case reflect.Struct:
		for i := range v.NumField() {
			fill(t, v.Field(i))
		}
	default:
		t.Fatalf("fill: field of kind %s: teach AppendJSON and this test about it", v.Kind())
	}
}

// sameNames compares the keys of the object AppendJSON wrote for a value
// of type typ with the JSON names of typ's fields.
func sameNames(t *testing.T, what string, obj map[string]any, typ reflect.Type) {
	t.Helper()
	var want []string
	for i := range typ.NumField() {
		f := typ.Field(i)
		name, _, _ := strings.Cut(f.Tag.Get("json"), ",")
		if name == "-" || !f.IsExported() {
			continue
		}
		if name == "" {
			name = f.Name
		}
		want = append(want, name)
	}
	var got []string
	for k := range obj {
		got = append(got, k)
	}
	slices.Sort(want)
	slices.Sort(got)
	if !slices.Equal(got, want) {
		t.Errorf("%s: AppendJSON writes the fields %q, the struct has %q", what, got, want)
	}
}

// FuzzAppendJSON compares AppendJSON with encoding/json on results whose
// every string, flag and count comes from the fuzzer.
func FuzzAppendJSON(f *testing.F) {
	f.Add([]byte("\x04a\"b\\\x01\x03\x02<>\x03\xff\xfe\x00\x02\x01\x05\x03\xe2\x80\xa8\x01\n\x02\xc3(\x00"))
	f.Add([]byte("\x10bounce@example.org\x01\x06bounce\x07rfc3464\x03\x11user@example.org\x00\x01\x00\x06failed\x055.1.1\x0buserunknown\x01\x0a550 5.1.1\x00\x01\x03<a>"))
	f.Fuzz(func(t *testing.T, data []byte) {
		in := fuzzInput(data)
		r := &Result{File: in.str(), Bounce: in.flag(), Kind: in.str(), Format: in.str()}
		if n := in.byte() % 5; n < 4 {
			r.Recipients = make([]dsn.Recipient, n)
			for i := range r.Recipients {
				r.Recipients[i] = dsn.Recipient{
					Address: in.str(), OriginalAddress: in.str(), Literal: in.flag(), OriginalLiteral: in.flag(),
					Action: in.str(), Status: in.str(), Reason: in.str(), Permanent: in.flag(),
					Diagnostic: in.str(), RemoteMTA: in.str(),
				}
			}
		}
		if in.flag() {
			r.Original = &dsn.Original{MessageID: in.str(), From: in.str(), To: in.str(), Subject: in.str(), Date: in.str()}
		}
		r.Messages = in.int()
		r.Truncated = in.flag()
		r.Error = in.str()
		checkJSON(t, r)
	})
}

// fuzzInput hands out the fuzzer's bytes as the values of fields: a
// string is a length byte and that many bytes.
type fuzzInput []byte

func (in *fuzzInput) byte() byte {
	if len(*in) == 0 {
		return 0
	}
	c := (*in)[0]
	*in = (*in)[1:]
	return c
}

func (in *fuzzInput) flag() bool { return in.byte()&1 == 1 }

func (in *fuzzInput) str() string {
	n := min(int(in.byte()), len(*in))
	s := string((*in)[:n])
	*in = (*in)[n:]
	return s
}

func (in *fuzzInput) int() int {
	var b [8]byte
	copy(b[:], in.str())
	return int(int64(binary.LittleEndian.Uint64(b[:])))
}

// BenchmarkJSON encodes what the corpus reports, with AppendJSON and with
// encoding/json, a line per file.
func BenchmarkJSON(b *testing.B) {
	p := &dsn.Parser{MaxBytes: dsn.DefaultMaxBytes}
	var results []Result
	for _, name := range corpusFiles(b) {
		results = append(results, ParseFile(p, name))
	}
	b.Run("AppendJSON", func(b *testing.B) {
		b.ReportAllocs()
		var line []byte
		for b.Loop() {
			for i := range results {
				line = append(results[i].AppendJSON(line[:0]), '\n')
			}
		}
	})
	b.Run("encoding/json", func(b *testing.B) {
		b.ReportAllocs()
		var buf bytes.Buffer
		enc := json.NewEncoder(&buf)
		enc.SetEscapeHTML(false)
		for b.Loop() {
			for i := range results {
				buf.Reset()
				enc.Encode(&results[i])
			}
		}
	})
}
