package returnpath_test

import (
	"errors"
	"fmt"
	"log"
	"os"
	"path/filepath"
	"time"

	"github.com/bouncemilter/bouncemilter/internal/returnpath"
)

func Example() {
	dir, err := os.MkdirTemp("", "registry")
	if err != nil {
		log.Fatal(err)
	}
	defer os.RemoveAll(dir)

	// The key file lives beside the registry; it is made on first use.
	keys, err := returnpath.LoadOrCreate(filepath.Join(dir, "returnpath.keys"))
	if err != nil {
		log.Fatal(err)
	}
	s := &returnpath.Signer{Keys: keys}
	now := time.Now()

	// The milter rewrites the envelope sender of the verification mail.
	from, err := s.Sign("notice@media.example.org", "alice@example.net", now)
	if err != nil {
		log.Fatal(err)
	}
	base, tag := returnpath.Split(from, "+")
	fmt.Println(base, len(tag))

	// A bounce comes back to that address, saying alice failed.
	fmt.Println(s.Verify(from, "alice@example.net", now))

	// A forger names another member, or sends to the plain address.
	err = s.Verify(from, "bob@example.net", now)
	fmt.Println(errors.Is(err, returnpath.ErrBadTag))
	err = s.Verify("notice@media.example.org", "bob@example.net", now)
	fmt.Println(errors.Is(err, returnpath.ErrNoTag))

	// Output:
	// notice@media.example.org 18
	// <nil>
	// true
	// true
}

func ExampleKeyring_Rotate() {
	dir, err := os.MkdirTemp("", "registry")
	if err != nil {
		log.Fatal(err)
	}
	defer os.RemoveAll(dir)
	keys, err := returnpath.LoadOrCreate(filepath.Join(dir, "returnpath.keys"))
	if err != nil {
		log.Fatal(err)
	}
	s := &returnpath.Signer{Keys: keys}
	now := time.Now()
	before, _ := s.Sign("notice@media.example.org", "alice@example.net", now)

	// Mail signed with the old key may still bounce: keep it for as long
	// as its tags live.
	if err := keys.Rotate(now, returnpath.DefaultGrace); err != nil {
		log.Fatal(err)
	}
	fmt.Println(s.Verify(before, "alice@example.net", now))

	// A key that leaked is dropped at once.
	if err := keys.Rotate(now, 0); err != nil {
		log.Fatal(err)
	}
	after, _ := s.Sign("notice@media.example.org", "alice@example.net", now)
	fmt.Println(s.Verify(after, "alice@example.net", now))
	// Output:
	// <nil>
	// <nil>
}
