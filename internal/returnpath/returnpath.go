// Package returnpath signs the envelope sender of the mail an instance sends,
// so that a bounce can be told from a forgery.
//
// # The threat
//
// A bounce is a message anyone can send with MAIL FROM:<>. Without a way to
// tell an answer to our own mail from an invented one, anybody who knows a
// member's address could send a fake "user unknown" report naming it, and the
// member would lose their account and their IP address would be banned.
//
// # What the package does
//
// The Signer rewrites an envelope sender such as notice@media.example.org to
// notice+TAG@media.example.org. Postfix, with recipient_delimiter = +,
// delivers mail for that address to notice, so nothing else has to change.
// Remote servers send their bounces to the envelope sender (RFC 5321 section
// 4.5.5, RFC 3464 section 2), so a real bounce comes back to the signed
// address; a forger who never saw our mail cannot make a valid TAG.
//
// TAG is a key id, the day (days since the Unix epoch, in UTC) and an
// HMAC-SHA256 truncated to 64 bits over the key id, the day and the
// recipient address, its domain's ASCII letters lowercased:
//
//   - The recipient is in the MAC so that a tag seen on one message (say, mail
//     the forger had us send to themselves) cannot be replayed to make a
//     bounce for somebody else's address. Its local part is signed exactly
//     as written: a tag for xk7bot@ must not verify for Xk7bot@, another
//     mailbox where case matters, nor Unicode lowercasing turn vİctim@ or
//     a Kelvin-sign K into an ASCII victim@.
//   - The day is in the MAC so that a tag that has leaked stops working after
//     MaxAge, and so that old tags need not be remembered. A day rather than a
//     timestamp keeps the address the same for a recipient all day long and
//     keeps the tag short.
//   - The key id lets a key be rotated while tags made with the old key are
//     still accepted for a while (see Keyring.Rotate).
//
// The tag is 18 characters of lowercase base32 (RFC 4648 section 6, without
// padding): letters and digits only, valid in an unquoted local part (RFC
// 5321 section 4.1.2), and read case-insensitively, because some servers
// fold the case of the whole address they bounce to.
//
// Verify checks a tag in constant time, and tells apart a missing tag
// (ErrNoTag), a forged or damaged one (ErrBadTag), a genuine but old one
// (ErrExpired) and one made with a key that was dropped or never existed
// (ErrUnknownKey).
//
// # What it does not do
//
// It does not decide whether a bounce should lead to any action, and does
// not parse bounces: a valid tag only proves that the bounce answers mail we
// sent to that recipient recently. It cannot vouch for mail that reached the
// Internet without passing through the milter (another relay, a sender left
// unrewritten): the bounces of such mail carry no tag, and the caller tells
// them apart by other means. It does not sign mail with a quoted local part,
// and it signs for one recipient: the caller must not sign a message with
// several recipients, since one envelope sender serves them all. It does not
// normalise internationalised domain names: the A-label and U-label forms of
// a domain are different recipients.
package returnpath

import (
	"crypto/hmac"
	"crypto/sha256"
	"encoding/base32"
	"encoding/binary"
	"errors"
	"fmt"
	"strings"
	"time"
)

// Errors that Verify returns, wrapped with detail; compare with errors.Is.
// Every one of them means the bounce is not authentic.
var (
	// ErrNoTag: the bounce address carries no tag.
	ErrNoTag = errors.New("returnpath: no tag")
	// ErrBadTag: the tag is malformed, does not match the recipient, or is
	// dated in the future. This is what a forgery looks like.
	ErrBadTag = errors.New("returnpath: bad tag")
	// ErrExpired: the tag is genuine but older than MaxAge.
	ErrExpired = errors.New("returnpath: tag expired")
	// ErrUnknownKey: the tag names a key that is not in the keyring, or no
	// longer accepted after a rotation.
	ErrUnknownKey = errors.New("returnpath: unknown key")
)

// ErrUnsignable is returned by Sign, with the sender unchanged, for an
// address it cannot sign (null sender, no domain, quoted local part, local
// part too long). The caller can ignore it and send the mail as it is.
var ErrUnsignable = errors.New("returnpath: address cannot be signed")

const (
	// DefaultMaxAge is how long a tag is accepted when Signer.MaxAge is
	// zero. It is longer than Postfix's maximal_queue_lifetime (5 days), so
	// the bounce for mail that sat in the queue until it expired still
	// verifies.
	DefaultMaxAge = 7 * 24 * time.Hour

	// DefaultGrace is how long a key stays accepted after Keyring.Rotate
	// replaced it, when the signer uses DefaultMaxAge: as long as the last
	// tag made with it may live.
	DefaultGrace = DefaultMaxAge + 24*time.Hour

	// DefaultDelimiter is Postfix's usual recipient_delimiter.
	DefaultDelimiter = "+"

	// TagLen is the length of a tag: 18 characters.
	TagLen = (rawLen*8 + 4) / 5
)

const (
	day = 24 * time.Hour

	// maxSkew is how far in the future a tag's day may begin, for clocks of
	// machines that share a key file and disagree a little.
	maxSkew = time.Hour

	// A tag is the key id (1 byte), the low 16 bits of the day (2 bytes)
	// and the MAC (8 bytes, 64 bits): 11 bytes, 18 base32 characters.
	macLen = 8
	rawLen = 1 + 2 + macLen

	// maxLocalPart is the limit of RFC 5321 section 4.5.3.1.1.
	maxLocalPart = 64
)

// encoding is lowercase base32: case-insensitive once lowercased, and only
// letters and digits, which any local part may hold unquoted.
var encoding = base32.NewEncoding("abcdefghijklmnopqrstuvwxyz234567").WithPadding(base32.NoPadding)

// Signer signs and verifies envelope senders. It is safe for concurrent use
// as long as its fields are not changed.
type Signer struct {
	// Keys holds the secret keys; required.
	Keys *Keyring
	// MaxAge is how long after the end of the day it was made a tag is
	// accepted; DefaultMaxAge if zero. Keep Keyring.Rotate's grace at least
	// MaxAge + 24h, or rotation cuts the life of recent tags short.
	MaxAge time.Duration
	// Delimiter separates the tag from the local part: Postfix's
	// recipient_delimiter (or one of its characters); DefaultDelimiter if
	// empty.
	Delimiter string
}

func (s *Signer) maxAge() time.Duration {
	if s.MaxAge <= 0 {
		return DefaultMaxAge
	}
	return s.MaxAge
}

func (s *Signer) delimiter() (string, error) {
	d := s.Delimiter
	if d == "" {
		return DefaultDelimiter, nil
	}
	// The delimiter must not occur in a tag, or Split would cut the tag.
	for _, c := range d {
		if c <= ' ' || c == '@' || c == '"' || c == '\\' || c > '~' ||
			'a' <= c && c <= 'z' || 'A' <= c && c <= 'Z' || '0' <= c && c <= '9' {
			return "", fmt.Errorf("returnpath: invalid delimiter %q", d)
		}
	}
	return d, nil
}

// Sign returns sender with a tag for recipient made at now:
// "notice@d" becomes "notice+TAG@d". A sender whose local part already holds
// the delimiter keeps it: "notice+x@d" becomes "notice+x+TAG@d", and Split
// takes the last one off.
//
// When sender cannot be signed, Sign returns it unchanged with an error
// wrapping ErrUnsignable; the caller may send the mail unsigned.
func (s *Signer) Sign(sender, recipient string, now time.Time) (string, error) {
	delim, err := s.delimiter()
	if err != nil {
		return sender, err
	}
	local, domain, ok := splitAddr(sender)
	if !ok {
		return sender, fmt.Errorf("sign %q: %w", sender, ErrUnsignable)
	}
	rcpt := normalize(recipient)
	if rcpt == "" {
		return sender, fmt.Errorf("sign %q: empty recipient", sender)
	}
	k, err := s.Keys.current()
	if err != nil {
		return sender, fmt.Errorf("sign %q: %w", sender, err)
	}
	d := dayOf(now)
	var raw [rawLen]byte
	raw[0] = k.id
	binary.BigEndian.PutUint16(raw[1:3], uint16(d))
	copy(raw[3:], mac(k.secret, k.id, d, rcpt))
	signed := local + delim + encoding.EncodeToString(raw[:])
	if len(signed) > maxLocalPart {
		return sender, fmt.Errorf("sign %q: local part would exceed %d octets: %w", sender, maxLocalPart, ErrUnsignable)
	}
	return signed + "@" + domain, nil
}

// Verify reports whether bounceAddr, the address a bounce was sent to,
// carries a valid tag for failedRecipient, the address the bounce says
// could not be reached, at time now. It returns nil if the bounce is
// authentic, or an error wrapping ErrNoTag, ErrBadTag, ErrExpired or
// ErrUnknownKey.
//
// Verify does not check the part of bounceAddr before the tag; the caller
// compares the base that Split returns with the sender it signs.
func (s *Signer) Verify(bounceAddr, failedRecipient string, now time.Time) error {
	delim, err := s.delimiter()
	if err != nil {
		return err
	}
	_, tag := Split(bounceAddr, delim)
	if tag == "" {
		return fmt.Errorf("verify %q: %w", bounceAddr, ErrNoTag)
	}
	raw, ok := decodeTag(tag)
	if !ok {
		return fmt.Errorf("verify %q: malformed tag: %w", bounceAddr, ErrBadTag)
	}
	id := raw[0]
	k, ok := s.Keys.lookup(id, now)
	if !ok {
		return fmt.Errorf("verify %q: key %d: %w", bounceAddr, id, ErrUnknownKey)
	}
	// The tag holds the low 16 bits of the day; the day meant is the one
	// nearest to today, which is exact for 89 years either way.
	today := dayOf(now)
	d := today - int64(int16(uint16(today)-binary.BigEndian.Uint16(raw[1:3])))
	// The MAC is checked before the date, so that ErrExpired is only ever
	// said of a tag we made: a late genuine bounce, worth telling the admin
	// about, not a forgery.
	if !hmac.Equal(raw[3:], mac(k.secret, id, d, normalize(failedRecipient))) {
		return fmt.Errorf("verify %q for %q: %w", bounceAddr, failedRecipient, ErrBadTag)
	}
	start := time.Unix(d*int64(day/time.Second), 0)
	if start.After(now.Add(maxSkew)) {
		return fmt.Errorf("verify %q: dated %s, in the future: %w", bounceAddr, start.UTC().Format(time.DateOnly), ErrBadTag)
	}
	if !now.Before(start.Add(day + s.maxAge())) {
		return fmt.Errorf("verify %q: dated %s: %w", bounceAddr, start.UTC().Format(time.DateOnly), ErrExpired)
	}
	return nil
}

// VerifySender is Verify that also requires the address without its tag
// to be sender (compared without regard to case, as some servers fold the
// case of the address they bounce to): a tag is only ever made on the
// sender's address, so a valid tag on any other base was copied there.
func (s *Signer) VerifySender(sender, bounceAddr, failedRecipient string, now time.Time) error {
	delim, err := s.delimiter()
	if err != nil {
		return err
	}
	if base, _ := Split(bounceAddr, delim); lowerASCII(normalize(base)) != lowerASCII(normalize(sender)) || sender == "" {
		return fmt.Errorf("verify %q: not a tag on %q: %w", bounceAddr, sender, ErrBadTag)
	}
	return s.Verify(bounceAddr, failedRecipient, now)
}

// Split returns addr without its tag, and the tag: the text after the last
// delimiter in the local part. Split("notice+abc@d", "+") is ("notice@d",
// "abc"). An address without the delimiter, or with a quoted local part, is
// returned whole with an empty tag. Split does not check the tag.
func Split(addr, delimiter string) (base, tag string) {
	local, domain, ok := splitAddr(addr)
	if !ok || delimiter == "" {
		return addr, ""
	}
	i := strings.LastIndex(local, delimiter)
	if i < 0 {
		return addr, ""
	}
	return local[:i] + "@" + domain, local[i+len(delimiter):]
}

// splitAddr splits an address at its last "@". It refuses what it should not
// sign: no "@", an empty part, a quoted local part (RFC 5321 section 4.1.2
// Quoted-string), an "@" in the local part, or spaces and controls.
func splitAddr(addr string) (local, domain string, ok bool) {
	i := strings.LastIndexByte(addr, '@')
	if i <= 0 || i == len(addr)-1 {
		return "", "", false
	}
	local, domain = addr[:i], addr[i+1:]
	if strings.ContainsAny(local, "\"\\@") {
		return "", "", false
	}
	for _, c := range addr {
		if c <= ' ' || c == 0x7f {
			return "", "", false
		}
	}
	return local, domain, true
}

// normalize returns the form of a recipient address that is signed: without
// surrounding space and angle brackets, the domain's ASCII letters
// lowercased (RFC 5321 section 2.4: a domain's case carries no meaning),
// the local part as it is. The milter acts only on a sign-up with exactly
// the address a bounce names (bounce.decide), so a bounce from a server
// that changed the local part's case could not have acted anyway.
func normalize(addr string) string {
	addr = strings.TrimSpace(addr)
	if len(addr) >= 2 && addr[0] == '<' && addr[len(addr)-1] == '>' {
		addr = addr[1 : len(addr)-1]
	}
	at := strings.LastIndexByte(addr, '@')
	return addr[:at+1] + lowerASCII(addr[at+1:])
}

// lowerASCII lowercases A to Z only: Unicode lowercasing maps some other
// letters onto ASCII ones (the Kelvin sign onto k, İ onto i).
func lowerASCII(s string) string {
	return strings.Map(func(r rune) rune {
		if 'A' <= r && r <= 'Z' {
			return r + 'a' - 'A'
		}
		return r
	}, s)
}

// decodeTag decodes a tag of exactly TagLen characters, in either case.
// Unused trailing bits must be zero, so that each MAC has one spelling.
func decodeTag(tag string) ([rawLen]byte, bool) {
	var raw [rawLen]byte
	if len(tag) != TagLen {
		return raw, false
	}
	tag = strings.ToLower(tag)
	n, err := encoding.Decode(raw[:], []byte(tag))
	if err != nil || n != rawLen || encoding.EncodeToString(raw[:]) != tag {
		return raw, false
	}
	return raw, true
}

// dayOf returns the days since the Unix epoch of t, in UTC.
func dayOf(t time.Time) int64 {
	s := t.Unix()
	d := s / int64(day/time.Second)
	if s < 0 && s%int64(day/time.Second) != 0 {
		d--
	}
	return d
}

// mac is HMAC-SHA256(secret, id || day || recipient) truncated to macLen.
// id and day have fixed lengths, so the input is unambiguous.
func mac(secret []byte, id byte, d int64, rcpt string) []byte {
	var hdr [9]byte
	hdr[0] = id
	binary.BigEndian.PutUint64(hdr[1:], uint64(d))
	h := hmac.New(sha256.New, secret)
	h.Write(hdr[:])
	h.Write([]byte(rcpt))
	return h.Sum(nil)[:macLen]
}
