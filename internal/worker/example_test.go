package worker_test

import (
	"context"
	"fmt"
	"log"
	"net/netip"
	"os"
	"path/filepath"
	"time"

	"github.com/bouncemilter/bouncemilter/internal/registry"
	"github.com/bouncemilter/bouncemilter/internal/worker"
)

// printer stands in for package mediagoblin's accounts and package
// banner's IP bans.
type printer struct{}

func (printer) BanUser(ctx context.Context, id int64, reason string) error {
	fmt.Println("ban user", id)
	return nil
}
func (printer) UnbanUser(ctx context.Context, id int64) error {
	fmt.Println("unban user", id)
	return nil
}
func (printer) Ban(ctx context.Context, ip netip.Addr, reason string) error {
	fmt.Println("ban IP", ip)
	return nil
}
func (printer) Unban(ctx context.Context, ip netip.Addr) error {
	fmt.Println("unban IP", ip)
	return nil
}

// The worker applies what the bounce handler journalled: the account ban
// first, then the sign-up IP's. In serve, Run does this until shutdown and
// the handler's Queued hook calls Wake.
func ExampleWorker_RunOnce() {
	ctx := context.Background()
	dir, err := os.MkdirTemp("", "worker-example")
	if err != nil {
		log.Fatal(err)
	}
	defer os.RemoveAll(dir)
	db, err := registry.Open(ctx, filepath.Join(dir, "registry.db"))
	if err != nil {
		log.Fatal(err)
	}
	defer db.Close()

	now := time.Now()
	_, err = db.RecordBounce(ctx, registry.Bounce{Received: now, Verdict: registry.VerdictActed, Report: "{}"}, []registry.Action{
		{UserID: 42, Kind: registry.BanAccount, Target: registry.UserTarget(42), Reason: "mail to xk7bot@example.net bounced (5.1.1)"},
		{UserID: 42, Kind: registry.BanIP, Target: "203.0.113.9", Reason: "mail to xk7bot@example.net bounced (5.1.1)"},
	})
	if err != nil {
		log.Fatal(err)
	}

	w := worker.New(db, printer{}, printer{}, nil)
	n, err := w.RunOnce(ctx)
	if err != nil {
		log.Fatal(err)
	}
	fmt.Println("applied", n)
	// Output:
	// ban user 42
	// ban IP 203.0.113.9
	// applied 2
}
