package dsn_test

import (
	"fmt"
	"log"
	"os"

	"github.com/bouncemilter/bouncemilter/internal/dsn"
)

func ExampleParse() {
	f, err := os.Open("../../testdata/dsn/postfix-userunknown.eml")
	if err != nil {
		log.Fatal(err)
	}
	defer f.Close()

	rep, err := dsn.Parse(f)
	if err != nil {
		log.Fatal(err)
	}
	fmt.Println("bounce:", rep.Bounce)
	for _, r := range rep.Recipients {
		fmt.Println(r.Address, r.Action, r.Status, r.Reason, r.Permanent)
	}
	fmt.Println("answers:", rep.Original.Subject)
	// Output:
	// bounce: true
	// NoSuchUser@example.net failed 5.1.1 userunknown true
	// answers: GNU MediaGoblin - Verify your email!
}

func ExampleParser_ParseAll() {
	f, err := os.Open("../../testdata/dsn/postfix-userunknown.eml")
	if err != nil {
		log.Fatal(err)
	}
	defer f.Close()

	// A milter holds each message to a smaller size than the default.
	p := &dsn.Parser{MaxBytes: 1 << 20, MaxRecipients: 100}
	reports, err := p.ParseAll(f)
	if err != nil {
		log.Fatal(err)
	}
	fmt.Println(len(reports), reports[0].Format)
	// Output:
	// 1 rfc3464
}
