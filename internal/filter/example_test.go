package filter_test

import (
	"context"
	"fmt"
	"log"
	"log/slog"
	"time"

	"github.com/emersion/go-milter"

	"github.com/bouncemilter/bouncemilter/internal/bounce"
	"github.com/bouncemilter/bouncemilter/internal/filter"
)

// keep is a Handler that delivers every bounce; serve wires a
// bounce.Handler here.
type keep struct{}

func (keep) Handle(ctx context.Context, env bounce.Envelope, msg []byte) (bounce.Outcome, error) {
	return bounce.Outcome{Verdict: "no-match"}, nil
}

// Serve the milter on a socket Postfix's smtpd_milters names, and stop it
// with the context. Mail that is not a bounce is accepted at MAIL FROM,
// before its content is sent.
func ExampleFilter_Serve() {
	f, err := filter.New(filter.Config{Sender: "notice@media.example.org", Delimiter: "+"}, keep{}, nil, nil, slog.Default())
	if err != nil {
		log.Fatal(err)
	}
	ln, err := filter.Listen("inet:127.0.0.1:0", filter.Socket{})
	if err != nil {
		log.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- f.Serve(ctx, ln, 30*time.Second) }()

	// Play Postfix. go-milter's server speaks protocol version 2: ask only
	// for the actions of that version.
	c := milter.NewClientWithOptions("tcp", ln.Addr().String(), milter.ClientOptions{
		ActionMask: milter.OptAddHeader | milter.OptChangeBody | milter.OptAddRcpt |
			milter.OptRemoveRcpt | milter.OptChangeHeader | milter.OptQuarantine,
	})
	s, err := c.Session()
	if err != nil {
		log.Fatal(err)
	}
	if _, err := s.Conn("mx1.example.net", milter.FamilyInet, 41234, "192.0.2.25"); err != nil {
		log.Fatal(err)
	}
	act, err := s.Mail("alice@example.com", nil)
	if err != nil {
		log.Fatal(err)
	}
	fmt.Printf("MAIL FROM:<alice@example.com> → %c\n", act.Code)
	s.Close()

	cancel()
	fmt.Println("Serve:", <-done)
	// Output:
	// MAIL FROM:<alice@example.com> → a
	// Serve: <nil>
}
