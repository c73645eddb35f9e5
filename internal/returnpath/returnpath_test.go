package returnpath

import (
	"encoding/binary"
	"errors"
	"path/filepath"
	"regexp"
	"strings"
	"sync"
	"testing"
	"time"
)

const (
	sender = "notice@media.example.org"
	rcpt   = "alice@example.net"
)

// now is noon of a fixed day; tests move around it.
var now = time.Date(2026, 11, 26, 12, 0, 0, 0, time.UTC)

func newKeyring(t testing.TB) *Keyring {
	t.Helper()
	k, err := LoadOrCreate(filepath.Join(t.TempDir(), "returnpath.keys"))
	if err != nil {
		t.Fatal(err)
	}
	return k
}

func newSigner(t testing.TB) *Signer {
	return &Signer{Keys: newKeyring(t)}
}

func mustSign(t testing.TB, s *Signer, from, to string, at time.Time) string {
	t.Helper()
	addr, err := s.Sign(from, to, at)
	if err != nil {
		t.Fatalf("Sign(%q, %q): %v", from, to, err)
	}
	return addr
}

var tagRE = regexp.MustCompile(`^notice\+[a-z2-7]{18}@media\.example\.org$`)

func TestSignShape(t *testing.T) {
	s := newSigner(t)
	addr := mustSign(t, s, sender, rcpt, now)
	if !tagRE.MatchString(addr) {
		t.Fatalf("Sign = %q, want notice+<18 lowercase base32>@media.example.org", addr)
	}
	// Stable for the day, so that one recipient sees one address.
	if again := mustSign(t, s, sender, rcpt, now.Add(11*time.Hour)); again != addr {
		t.Errorf("same day: %q, then %q", addr, again)
	}
	if next := mustSign(t, s, sender, rcpt, now.Add(12*time.Hour)); next == addr {
		t.Errorf("next day: same address %q", next)
	}
	if other := mustSign(t, s, sender, "bob@example.net", now); other == addr {
		t.Errorf("other recipient: same address %q", other)
	}
}

func TestVerify(t *testing.T) {
	s := newSigner(t)
	other := newSigner(t) // same key id, other secret
	signed := mustSign(t, s, sender, rcpt, now)
	base, tag := Split(signed, "+")
	if base != sender {
		t.Fatalf("Split base = %q, want %q", base, sender)
	}
	// A genuine MAC under a key id that is not in the keyring.
	k, _ := s.Keys.current()
	var raw [rawLen]byte
	raw[0] = k.id + 7
	binary.BigEndian.PutUint16(raw[1:3], uint16(dayOf(now)))
	copy(raw[3:], mac(k.secret, raw[0], dayOf(now), rcpt))
	unknownKey := "notice+" + encoding.EncodeToString(raw[:]) + "@media.example.org"
	// One character changed: one inside the MAC, so the tag still decodes.
	flip := []byte(tag)
	flip[10] = map[bool]byte{true: 'b', false: 'a'}[flip[10] == 'a']
	wrongTag := "notice+" + string(flip) + "@media.example.org"

	dayStart := now.Truncate(24 * time.Hour)
	lastValid := dayStart.Add(24*time.Hour + DefaultMaxAge - time.Second)

	tests := []struct {
		name      string
		bounceTo  string
		recipient string
		at        time.Time
		want      error
	}{
		{"valid", signed, rcpt, now, nil},
		{"valid, recipient in brackets", signed, " <" + rcpt + "> ", now, nil},
		{"case-folded address", strings.ToUpper(signed), rcpt, now, nil},
		{"recipient's domain in another case", signed, "alice@EXAMPLE.NET", now, nil},
		// The local part is signed exactly: another case, or a letter
		// that Unicode lowercasing turns into ASCII, is another mailbox.
		{"recipient's local part in another case", signed, "Alice@example.net", now, ErrBadTag},
		{"Kelvin sign for k", mustSign(t, s, sender, "\u212ae@example.net", now), "ke@example.net", now, ErrBadTag},
		{"capital dotted I for i", mustSign(t, s, sender, "v\u0130ctim@example.net", now), "victim@example.net", now, ErrBadTag},
		{"last second of MaxAge", signed, rcpt, lastValid, nil},
		{"expired", signed, rcpt, lastValid.Add(time.Second), ErrExpired},
		{"long expired", signed, rcpt, now.AddDate(1, 0, 0), ErrExpired},
		{"no tag", sender, rcpt, now, ErrNoTag},
		{"empty tag", "notice+@media.example.org", rcpt, now, ErrNoTag},
		{"null sender", "", rcpt, now, ErrNoTag},
		{"quoted local part", `"notice+` + tag + `"@media.example.org`, rcpt, now, ErrNoTag},
		{"wrong tag", wrongTag, rcpt, now, ErrBadTag},
		{"short tag", "notice+abcdef@media.example.org", rcpt, now, ErrBadTag},
		{"tag with bad characters", "notice+" + strings.Repeat("1", TagLen) + "@media.example.org", rcpt, now, ErrBadTag},
		{"tag truncated", signed[:len("notice+")+TagLen-1] + "@media.example.org", rcpt, now, ErrBadTag},
		{"tag for another address", signed, "bob@example.net", now, ErrBadTag},
		{"tag for another domain", signed, "alice@example.org", now, ErrBadTag},
		{"tag under another secret", mustSign(t, other, sender, rcpt, now), rcpt, now, ErrBadTag},
		{"from the future", mustSign(t, s, sender, rcpt, now.Add(48*time.Hour)), rcpt, now, ErrBadTag},
		{"tomorrow, within clock skew", mustSign(t, s, sender, rcpt, dayStart.Add(24*time.Hour)), rcpt, dayStart.Add(24*time.Hour - 30*time.Minute), nil},
		{"unknown key", unknownKey, rcpt, now, ErrUnknownKey},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			err := s.Verify(tc.bounceTo, tc.recipient, tc.at)
			if tc.want == nil && err != nil || !errors.Is(err, tc.want) {
				t.Errorf("Verify(%q, %q) = %v, want %v", tc.bounceTo, tc.recipient, err, tc.want)
			}
		})
	}
}

func TestSignUnsignable(t *testing.T) {
	s := newSigner(t)
	tests := []struct {
		name, sender string
	}{
		{"null sender", ""},
		{"no domain", "notice"},
		{"empty local part", "@media.example.org"},
		{"empty domain", "notice@"},
		{"quoted local part", `"notice board"@media.example.org`},
		{"quoted pair", `notice\@x@media.example.org`},
		{"space", "notice @media.example.org"},
		{"local part too long", strings.Repeat("n", 64-TagLen) + "@media.example.org"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			got, err := s.Sign(tc.sender, rcpt, now)
			if !errors.Is(err, ErrUnsignable) {
				t.Errorf("Sign(%q) error = %v, want ErrUnsignable", tc.sender, err)
			}
			if got != tc.sender {
				t.Errorf("Sign(%q) = %q, want the sender unchanged", tc.sender, got)
			}
		})
	}
	// Just within the limit of RFC 5321 section 4.5.3.1.1.
	long := strings.Repeat("n", 64-TagLen-1) + "@media.example.org"
	if _, err := s.Sign(long, rcpt, now); err != nil {
		t.Errorf("Sign(64-octet local part): %v", err)
	}
	if got, err := s.Sign(sender, " ", now); err == nil || got != sender {
		t.Errorf("Sign with empty recipient = %q, %v; want sender and an error", got, err)
	}
}

func TestDelimiter(t *testing.T) {
	keys := newKeyring(t)
	tests := []struct {
		name, delim, sender, wantBase string
	}{
		{"default", "", sender, sender},
		{"sender already has the delimiter", "+", "notice+mg@media.example.org", "notice+mg@media.example.org"},
		{"dash", "-", "notice@media.example.org", "notice@media.example.org"},
		{"dash and a dash in the sender", "-", "no-reply@media.example.org", "no-reply@media.example.org"},
		{"two characters", "--", "notice@media.example.org", "notice@media.example.org"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			s := &Signer{Keys: keys, Delimiter: tc.delim}
			addr := mustSign(t, s, tc.sender, rcpt, now)
			d := tc.delim
			if d == "" {
				d = DefaultDelimiter
			}
			base, tag := Split(addr, d)
			if base != tc.wantBase || len(tag) != TagLen {
				t.Errorf("Split(%q) = %q, %q; want %q and a tag", addr, base, tag, tc.wantBase)
			}
			if err := s.Verify(addr, rcpt, now); err != nil {
				t.Errorf("Verify(%q): %v", addr, err)
			}
		})
	}
	for _, bad := range []string{"a", "Z", "7", "@", `"`, " ", "+\n"} {
		s := &Signer{Keys: keys, Delimiter: bad}
		if got, err := s.Sign(sender, rcpt, now); err == nil || got != sender {
			t.Errorf("Sign with delimiter %q = %q, %v; want an error", bad, got, err)
		}
		if err := s.Verify(sender, rcpt, now); err == nil {
			t.Errorf("Verify with delimiter %q: no error", bad)
		}
	}
}

func TestSplit(t *testing.T) {
	tests := []struct {
		addr, delim, base, tag string
	}{
		{"notice+abc@d", "+", "notice@d", "abc"},
		{"notice+x+abc@d", "+", "notice+x@d", "abc"},
		{"notice@d", "+", "notice@d", ""},
		{"notice+@d", "+", "notice@d", ""},
		{"notice+abc@d", "", "notice+abc@d", ""},
		{"notice+abc", "+", "notice+abc", ""},
		{`"notice+abc"@d`, "+", `"notice+abc"@d`, ""},
		{"a+b@c@d", "+", "a+b@c@d", ""},
		{"", "+", "", ""},
		{"no-reply-abc@d", "-", "no-reply@d", "abc"},
	}
	for _, tc := range tests {
		base, tag := Split(tc.addr, tc.delim)
		if base != tc.base || tag != tc.tag {
			t.Errorf("Split(%q, %q) = %q, %q; want %q, %q", tc.addr, tc.delim, base, tag, tc.base, tc.tag)
		}
	}
}

func TestMaxAge(t *testing.T) {
	s := newSigner(t)
	s.MaxAge = 2 * time.Hour
	addr := mustSign(t, s, sender, rcpt, now)
	end := now.Truncate(24 * time.Hour).Add(26 * time.Hour)
	if err := s.Verify(addr, rcpt, end.Add(-time.Second)); err != nil {
		t.Errorf("just before MaxAge: %v", err)
	}
	if err := s.Verify(addr, rcpt, end); !errors.Is(err, ErrExpired) {
		t.Errorf("at MaxAge: %v, want ErrExpired", err)
	}
}

func TestDayOf(t *testing.T) {
	tests := []struct {
		t    time.Time
		want int64
	}{
		{time.Unix(0, 0), 0},
		{time.Unix(86399, 0), 0},
		{time.Unix(86400, 0), 1},
		{time.Unix(-1, 0), -1},
		{time.Unix(-86400, 0), -1},
		{time.Date(2026, 11, 26, 23, 59, 59, 0, time.FixedZone("", -5*3600)), 20784},
	}
	for _, tc := range tests {
		if got := dayOf(tc.t); got != tc.want {
			t.Errorf("dayOf(%v) = %d, want %d", tc.t, got, tc.want)
		}
	}
}

// TestDayWraps checks that the 16-bit day in the tag is read as the day
// nearest to now, on both sides of a wrap of the counter.
func TestDayWraps(t *testing.T) {
	s := newSigner(t)
	wrap := time.Unix(65536*86400, 0) // 2149-06-07, day 65536, stored as 0
	for _, signed := range []time.Time{wrap.Add(-time.Hour), wrap.Add(time.Hour)} {
		addr := mustSign(t, s, sender, rcpt, signed)
		for _, later := range []time.Duration{0, 2 * time.Hour, 3 * 24 * time.Hour} {
			if err := s.Verify(addr, rcpt, signed.Add(later)); err != nil {
				t.Errorf("signed %v, verified %v later: %v", signed, later, err)
			}
		}
	}
}

// TestConcurrent signs and verifies from many goroutines while the key is
// rotated; run with -race.
func TestConcurrent(t *testing.T) {
	s := newSigner(t)
	var wg sync.WaitGroup
	for g := range 8 {
		wg.Go(func() {
			for i := range 200 {
				to := "user" + string(rune('a'+g)) + string(rune('a'+i%26)) + "@example.net"
				addr, err := s.Sign(sender, to, now)
				if err != nil {
					t.Error(err)
					return
				}
				if err := s.Verify(addr, to, now); err != nil {
					t.Errorf("Verify(%q): %v", addr, err)
					return
				}
				if err := s.Verify(addr, "other@example.net", now); !errors.Is(err, ErrBadTag) {
					t.Errorf("Verify(%q) for another address = %v, want ErrBadTag", addr, err)
					return
				}
			}
		})
	}
	wg.Go(func() {
		for range 5 {
			if err := s.Keys.Rotate(now, DefaultGrace); err != nil {
				t.Error(err)
				return
			}
		}
	})
	wg.Wait()
}

func BenchmarkSign(b *testing.B) {
	s := newSigner(b)
	b.ReportAllocs()
	for b.Loop() {
		if _, err := s.Sign(sender, rcpt, now); err != nil {
			b.Fatal(err)
		}
	}
}

func BenchmarkVerify(b *testing.B) {
	s := newSigner(b)
	addr := mustSign(b, s, sender, rcpt, now)
	b.ReportAllocs()
	for b.Loop() {
		if err := s.Verify(addr, rcpt, now); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkVerifyForged is the cost of a flood of forged bounces.
func BenchmarkVerifyForged(b *testing.B) {
	s := newSigner(b)
	addr := mustSign(b, s, sender, rcpt, now)
	b.ReportAllocs()
	for b.Loop() {
		if err := s.Verify(addr, "bob@example.net", now); err == nil {
			b.Fatal("forged tag accepted")
		}
	}
}

func TestRewrite(t *testing.T) {
	keys, err := LoadOrCreate(filepath.Join(t.TempDir(), "keys"))
	if err != nil {
		t.Fatal(err)
	}
	s := &Signer{Keys: keys}
	now := time.Date(2026, 11, 26, 12, 0, 0, 0, time.UTC)
	got := s.Rewrite("notice@media.example.org", []string{"bot@nowhere.example"}, now)
	if err := s.Verify(got, "bot@nowhere.example", now); err != nil {
		t.Fatalf("Rewrite gave %q, which does not verify: %v", got, err)
	}
	for _, rcpts := range [][]string{nil, {"a@x", "b@x"}} {
		if got := s.Rewrite("notice@media.example.org", rcpts, now); got != "" {
			t.Errorf("Rewrite to %q = %q; want unchanged", rcpts, got)
		}
	}
	if got := s.Rewrite(`"odd local"@media.example.org`, []string{"a@x"}, now); got != "" {
		t.Errorf("Rewrite of an unsignable sender = %q", got)
	}
}

// A valid tag only counts on the sender's own address: copied onto another
// local part or domain, it proves nothing.
func TestVerifySender(t *testing.T) {
	s := newSigner(t)
	now := time.Date(2026, 11, 26, 9, 14, 8, 0, time.UTC)
	good := mustSign(t, s, "notice@media.example.org", "bot@example.net", now)
	_, tag := Split(good, "+")
	tests := []struct {
		sender, addr string
		ok           bool
	}{
		{"notice@media.example.org", good, true},
		{"notice@media.example.org", strings.ToUpper(good), true},
		{"NOTICE@Media.Example.org", good, true},
		{"notice@media.example.org", "other+" + tag + "@media.example.org", false},
		{"notice@media.example.org", "notice+" + tag + "@evil.example", false},
		{"notice@media.example.org", "notice+x+" + tag + "@media.example.org", false},
		{"", good, false},
	}
	for _, tt := range tests {
		err := s.VerifySender(tt.sender, tt.addr, "bot@example.net", now)
		if (err == nil) != tt.ok {
			t.Errorf("VerifySender(%q, %q) = %v, want ok %v", tt.sender, tt.addr, err, tt.ok)
		}
		if err != nil && !errors.Is(err, ErrBadTag) {
			t.Errorf("VerifySender(%q, %q) = %v, want ErrBadTag", tt.sender, tt.addr, err)
		}
	}
}
