package bounce_test

import (
	"context"
	"fmt"
	"log"
	"net/netip"
	"os"
	"path/filepath"
	"time"

	"github.com/bouncemilter/bouncemilter/internal/bounce"
	"github.com/bouncemilter/bouncemilter/internal/registry"
)

// A bounce that Postfix generated itself, for a verification mail sent to
// an address that does not exist, disables the sign-up and may be
// discarded: the verdict and its actions are in the registry.
func ExampleHandler_Handle() {
	ctx := context.Background()
	now := time.Date(2026, 11, 26, 9, 14, 8, 0, time.UTC)

	dir, err := os.MkdirTemp("", "bounce-example")
	if err != nil {
		log.Fatal(err)
	}
	defer os.RemoveAll(dir)
	db, err := registry.Open(ctx, filepath.Join(dir, "registry.db"))
	if err != nil {
		log.Fatal(err)
	}
	defer db.Close()

	// What sync and the milter recorded before the bounce arrived: the
	// sign-up, and the verification mail leaving.
	err = db.Tx(ctx, func(tx *registry.Tx) error {
		reg := registry.Registration{UserID: 42, Username: "xk7bot", Email: "Xk7bot@example.net", Created: now.Add(-3 * time.Minute)}
		if err := tx.UpsertRegistration(ctx, reg); err != nil {
			return err
		}
		_, err := tx.SetIP(ctx, "xk7bot", "203.0.113.9", "combined")
		return err
	})
	if err != nil {
		log.Fatal(err)
	}
	if err := db.RecordSends(ctx, []registry.Send{{Recipient: "Xk7bot@example.net", Sent: now.Add(-3 * time.Second)}}); err != nil {
		log.Fatal(err)
	}

	h := &bounce.Handler{
		Journal: db,
		Policy:  bounce.DefaultPolicy(),
		Sender:  "notice@media.example.org",
		Now:     func() time.Time { return now },
	}
	msg, err := os.ReadFile("testdata/local-userunknown.eml")
	if err != nil {
		log.Fatal(err)
	}
	env := bounce.Envelope{
		QueueID: "8D3F11A0B5",
		// Postfix's bounce daemon, as non_smtpd_milters see it, and as
		// package filter recognised it.
		Client:     bounce.Client{Host: "localhost", Addr: netip.MustParseAddr("127.0.0.1")},
		Generated:  true,
		Recipients: []string{"notice@media.example.org"},
	}
	out, err := h.Handle(ctx, env, msg)
	if err != nil {
		// Nothing was journalled: deliver the bounce.
		log.Fatal(err)
	}
	fmt.Println(out.Verdict, "discard:", out.Discard)

	acts, err := db.Actions(ctx, 42)
	if err != nil {
		log.Fatal(err)
	}
	for _, a := range acts {
		fmt.Println(a.State, a.Kind, a.Target)
	}
	// Output:
	// acted discard: true
	// pending ban-account 42
	// pending ban-ip 203.0.113.9
}
