package dsnfiles

import (
	"context"
	"os"
	"path/filepath"
	"testing"

	"github.com/bouncemilter/bouncemilter/internal/dsn"
)

// BenchmarkCorpus parses the shared corpus of real bounces (when it is
// there, beside the repository) the way "bouncemilter parse" does, and
// reports messages per second of wall time.
func BenchmarkCorpus(b *testing.B) {
	dir := os.Getenv("BOUNCEMILTER_CORPUS")
	if dir == "" {
		dir = filepath.Join("..", "..", "..", "shared", "corpus", "sisimai")
	}
	names, _ := filepath.Glob(filepath.Join(dir, "eml", "*"))
	if len(names) == 0 {
		b.Skipf("no corpus at %s", dir)
	}
	p := &dsn.Parser{}
	b.ReportAllocs()
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		ParseFiles(context.Background(), p, names, 0, func(Result) error { return nil })
	}
	b.ReportMetric(float64(b.N*len(names))/b.Elapsed().Seconds(), "msgs/s")
}
