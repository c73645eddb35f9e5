package returnpath

import (
	"errors"
	"path/filepath"
	"strings"
	"testing"
)

// FuzzVerify checks that Verify never panics, returns only its sentinel
// errors, and never accepts a tag it did not make: whenever it says yes, the
// tag is one Sign gives for that recipient on a day within MaxAge.
func FuzzVerify(f *testing.F) {
	keys, err := LoadOrCreate(filepath.Join(f.TempDir(), "returnpath.keys"))
	if err != nil {
		f.Fatal(err)
	}
	s := &Signer{Keys: keys}
	signed, err := s.Sign(sender, rcpt, now)
	if err != nil {
		f.Fatal(err)
	}
	old, err := s.Sign(sender, rcpt, now.AddDate(0, 0, -3))
	if err != nil {
		f.Fatal(err)
	}
	for _, seed := range [][2]string{
		{signed, rcpt},
		{strings.ToUpper(signed), "ALICE@example.net"},
		{old, rcpt},
		{signed, "bob@example.net"},
		{sender, rcpt},
		{"notice+" + strings.Repeat("a", TagLen) + "@media.example.org", rcpt},
		{"notice+" + strings.Repeat("7", TagLen) + "@media.example.org", rcpt},
		{`"notice+x"@d`, ""},
		{"+@", "@"},
		{"", ""},
	} {
		f.Add(seed[0], seed[1])
	}

	f.Fuzz(func(t *testing.T, bounceTo, recipient string) {
		err := s.Verify(bounceTo, recipient, now)
		if err != nil {
			if !errors.Is(err, ErrNoTag) && !errors.Is(err, ErrBadTag) &&
				!errors.Is(err, ErrExpired) && !errors.Is(err, ErrUnknownKey) {
				t.Fatalf("Verify(%q, %q) = %v, not one of the sentinel errors", bounceTo, recipient, err)
			}
			return
		}
		_, tag := Split(bounceTo, "+")
		for d := range 9 {
			want, err := s.Sign(sender, recipient, now.AddDate(0, 0, -d))
			if err != nil {
				continue
			}
			if _, wantTag := Split(want, "+"); strings.EqualFold(tag, wantTag) {
				return
			}
		}
		t.Fatalf("Verify(%q, %q) accepted a tag that Sign never made", bounceTo, recipient)
	})
}
