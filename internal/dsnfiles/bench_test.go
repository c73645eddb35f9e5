package dsnfiles

import (
	"context"
	"testing"

	"github.com/bouncemilter/bouncemilter/internal/dsn"
)

// BenchmarkCorpus parses the shared corpus of real bounces (when it is
// there, beside the repository) the way "bouncemilter parse" does, and
// reports messages per second of wall time.
func BenchmarkCorpus(b *testing.B) {
	names := corpusFiles(b)
	p := &dsn.Parser{}
	b.ReportAllocs()
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		ParseFiles(context.Background(), p, names, 0, func(Result) error { return nil })
	}
	b.ReportMetric(float64(b.N*len(names))/b.Elapsed().Seconds(), "msgs/s")
}
