package dsn

import (
	"bytes"
	"io"
	"os"
	"path/filepath"
	"testing"
)

// Benchmarks report messages per second ("msgs/s") and bytes allocated per
// message ("B/op", with the message size as "msgbytes" to compare with).
// Target on one core (-cpu 1): at least 10,000 typical bounces per second,
// and allocation a small multiple of the message size.

func loadDir(tb testing.TB, pattern string) [][]byte {
	tb.Helper()
	files, err := filepath.Glob(pattern)
	if err != nil {
		tb.Fatal(err)
	}
	var msgs [][]byte
	for _, f := range files {
		b, err := os.ReadFile(f)
		if err != nil {
			tb.Fatal(err)
		}
		msgs = append(msgs, b)
	}
	if len(msgs) == 0 {
		tb.Skipf("no files match %s", pattern)
	}
	return msgs
}

func benchMessages(b *testing.B, msgs [][]byte) {
	total := 0
	for _, m := range msgs {
		total += len(m)
	}
	b.ReportAllocs()
	b.SetBytes(int64(total / len(msgs)))
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		if _, err := ParseAll(bytes.NewReader(msgs[i%len(msgs)])); err != nil {
			b.Fatal(err)
		}
	}
	b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "msgs/s")
	b.ReportMetric(float64(total/len(msgs)), "msgbytes")
}

// BenchmarkPostfix is the typical case: Postfix's own bounce.
func BenchmarkPostfix(b *testing.B) {
	benchMessages(b, loadDir(b, filepath.Join("..", "..", "testdata", "dsn", "postfix-userunknown.eml")))
}

// BenchmarkPostfixReturned is Postfix's bounce with the most of the
// original it returns by default (bounce_size_limit = 50000 bytes), to
// compare allocation with a larger message.
func BenchmarkPostfixReturned(b *testing.B) {
	msg := sample(b, "postfix-userunknown.eml")
	end := bytes.LastIndex(msg, []byte("\n--4F1A21C0F2"))
	body := bytes.Repeat([]byte("SGkgbm9zdWNodXNlciwKClRvIGFjdGl2YXRlIHlvdXIgR05VIE1lZGlhR29ibGluIGFjY291bnQs\n"), 50000/77)
	big := append(append(append([]byte{}, msg[:end]...), body...), msg[end:]...)
	benchMessages(b, [][]byte{big})
}

// BenchmarkSamples runs over every sample in testdata/dsn.
func BenchmarkSamples(b *testing.B) {
	benchMessages(b, loadDir(b, filepath.Join("..", "..", "testdata", "dsn", "*")))
}

// BenchmarkCorpus runs over the real-world corpus when it is there.
func BenchmarkCorpus(b *testing.B) {
	dir := os.Getenv("BOUNCEMILTER_CORPUS")
	if dir == "" {
		dir = filepath.Join("..", "..", "..", "shared", "corpus", "sisimai")
	}
	benchMessages(b, loadDir(b, filepath.Join(dir, "eml", "*")))
}

// BenchmarkLarge reads a 50 MB message with the default limits: the cost
// is bounded by MaxBytes, not by the message.
func BenchmarkLarge(b *testing.B) {
	head := sample(b, "postfix-userunknown.eml")
	b.ReportAllocs()
	for i := 0; i < b.N; i++ {
		r := io.MultiReader(bytes.NewReader(head), &endless{pattern: []byte("junk junk junk\n"), n: 50 << 20})
		if rep, _ := Parse(r); rep == nil {
			b.Fatal("no report")
		}
	}
}
