package feed

import (
	"crypto/rand"
	"errors"
	"fmt"
	"os"
	"strings"
	"time"

	"aead.dev/minisign"
)

// Keygen makes a new Ed25519 key pair in minisign's format: path holds the
// secret key, unencrypted (a service signs unattended) and readable by its
// owner only, path.pub the public key. It refuses to replace a key.
func Keygen(path string) (minisign.PublicKey, error) {
	pub, priv, err := minisign.GenerateKey(rand.Reader)
	if err != nil {
		return pub, fmt.Errorf("feed keygen: %w", err)
	}
	privText, err := priv.MarshalText()
	if err != nil {
		return pub, fmt.Errorf("feed keygen: %w", err)
	}
	pubText, err := pub.MarshalText()
	if err != nil {
		return pub, fmt.Errorf("feed keygen: %w", err)
	}
	if err := writeNew(path, privText, 0o600); err != nil {
		return pub, fmt.Errorf("feed keygen: %w", err)
	}
	if err := writeNew(path+".pub", pubText, 0o644); err != nil {
		os.Remove(path)
		return pub, fmt.Errorf("feed keygen: %w", err)
	}
	return pub, nil
}

func writeNew(path string, data []byte, mode os.FileMode) error {
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_CREATE|os.O_EXCL, mode)
	if err != nil {
		return err
	}
	if _, err := f.Write(data); err != nil {
		f.Close()
		os.Remove(path)
		return err
	}
	if err := f.Sync(); err != nil {
		f.Close()
		os.Remove(path)
		return err
	}
	return f.Close()
}

// LoadKey reads a secret key written by Keygen (or by `minisign -G -W`).
func LoadKey(path string) (minisign.PrivateKey, error) {
	var key minisign.PrivateKey
	text, err := os.ReadFile(path)
	if err != nil {
		return key, fmt.Errorf("read signing key: %w", err)
	}
	if minisign.IsEncrypted(text) {
		return key, fmt.Errorf("read signing key %s: it is encrypted; a service signs unattended, so make one with `bouncemilter feed keygen`", path)
	}
	if err := key.UnmarshalText(text); err != nil {
		return key, fmt.Errorf("read signing key %s: %w", path, err)
	}
	return key, nil
}

// ParsePublicKey reads a public key: the base64 line of a minisign public
// key file, or the whole file.
func ParsePublicKey(s string) (minisign.PublicKey, error) {
	var key minisign.PublicKey
	s = strings.TrimSpace(s)
	if i := strings.LastIndexByte(s, '\n'); i >= 0 {
		s = strings.TrimSpace(s[i+1:])
	}
	if err := key.UnmarshalText([]byte(s)); err != nil {
		return key, fmt.Errorf("public key %q: %w", s, err)
	}
	return key, nil
}

// trustedComment is what the signature's trusted comment says: the feed's
// name and time, signed with the feed, so that the signature alone tells
// whose feed of when it is.
func trustedComment(name string, made time.Time) string {
	return fmt.Sprintf("bouncemilter-feed name=%s made=%s", name, made.UTC().Format(time.RFC3339))
}

// Sign returns the detached signature of data, a feed.json of name made
// at made.
func Sign(key minisign.PrivateKey, data []byte, name string, made time.Time) []byte {
	return minisign.SignWithComments(key, data, trustedComment(name, made), "signature from bouncemilter feed export")
}

// ErrSignature wraps every reason a signature is refused.
var ErrSignature = errors.New("bad feed signature")

// Verify checks that sig is pub's signature of data, that data is a good
// feed, and that the signature's trusted comment names the same feed.
func Verify(pub minisign.PublicKey, data, sig []byte) (*Feed, error) {
	var s minisign.Signature
	if err := s.UnmarshalText(sig); err != nil {
		return nil, fmt.Errorf("%w: %v", ErrSignature, err)
	}
	if !minisign.Verify(pub, data, sig) {
		return nil, fmt.Errorf("%w: it does not verify with the peer's public key", ErrSignature)
	}
	f, err := Parse(data)
	if err != nil {
		return nil, err
	}
	if want := trustedComment(f.Name, f.Made); s.TrustedComment != want {
		return nil, fmt.Errorf("%w: trusted comment %q does not match the feed (%q)", ErrSignature, s.TrustedComment, want)
	}
	return f, nil
}
