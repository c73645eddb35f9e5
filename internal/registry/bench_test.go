package registry

import (
	"context"
	"path/filepath"
	"testing"
)

// BenchmarkRecordBounce measures journalling one bounce with one action,
// durably, from many goroutines at once, as the milter's sessions do.
func BenchmarkRecordBounce(b *testing.B) {
	ctx := context.Background()
	db, err := Open(ctx, filepath.Join(b.TempDir(), "r.db"))
	if err != nil {
		b.Fatal(err)
	}
	defer db.Close()
	b.SetParallelism(25) // 50 sessions on 2 cores
	b.ResetTimer()
	b.RunParallel(func(pb *testing.PB) {
		for pb.Next() {
			_, err := db.RecordBounce(ctx, Bounce{Received: t0, QueueID: "Q", Verdict: VerdictActed, Report: `{"bounce":true}`, Headers: "From: x\r\n"},
				[]Action{{UserID: 1, Kind: BanAccount, Target: "1", Reason: "r"}})
			if err != nil {
				b.Fatal(err)
			}
		}
	})
}
