package bounce

import (
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/bouncemilter/bouncemilter/internal/registry"
	"github.com/bouncemilter/bouncemilter/internal/returnpath"
)

func signer(t *testing.T) *returnpath.Signer {
	t.Helper()
	keys, err := returnpath.LoadOrCreate(filepath.Join(t.TempDir(), "returnpath.keys"))
	if err != nil {
		t.Fatal(err)
	}
	return &returnpath.Signer{Keys: keys, Delimiter: "+"}
}

func sign(t *testing.T, s *returnpath.Signer, rcpt string, when time.Time) string {
	t.Helper()
	addr, err := s.Sign(testSender, rcpt, when)
	if err != nil {
		t.Fatal(err)
	}
	return addr
}

// With package returnpath's signer: a bounce over SMTP acts only when it
// is addressed to a valid, unexpired tag made for the failed address
// (issue 5). Every forgery is suspect, and changes nothing.
func TestHandleSignedReturnPath(t *testing.T) {
	s := signer(t)
	genuine := sign(t, s, botAddr, testNow.Add(-time.Minute))
	// One character in the middle of the tag changed, still in the tag's
	// alphabet (the last one may carry only padding bits).
	tampered := []byte(genuine)
	i := strings.IndexByte(genuine, '@') - 5
	if tampered[i] == 'a' {
		tampered[i] = 'b'
	} else {
		tampered[i] = 'a'
	}
	tests := []struct {
		name    string
		to      string
		verdict registry.Verdict
	}{
		{"genuine", genuine, registry.VerdictActed},
		{"genuine, in capitals", strings.ToUpper(genuine), registry.VerdictActed},
		{"no tag", testSender, registry.VerdictSuspect},
		{"tampered tag", string(tampered), registry.VerdictSuspect},
		{"tag for another address", sign(t, s, "someone@example.net", testNow.Add(-time.Minute)), registry.VerdictSuspect},
		{"expired tag", sign(t, s, botAddr, testNow.Add(-10*24*time.Hour)), registry.VerdictSuspect},
		{"tag from another key", sign(t, signer(t), botAddr, testNow.Add(-time.Minute)), registry.VerdictSuspect},
		{"garbage tag", "notice+!!!!@media.example.org", registry.VerdictSuspect},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			db := openRegistry(t)
			signUp(t, db, bot())
			// No send recorded: the tag alone must carry the proof.
			h := newHandler(db)
			h.Tags = s
			out, err := h.Handle(t.Context(), Envelope{QueueID: "2B7A41A0C1", Client: smtpClient, Recipients: []string{tt.to}}, fixture(t, "local-userunknown.eml"))
			if err != nil {
				t.Fatal(err)
			}
			if out.Verdict != tt.verdict {
				t.Errorf("bounce to %s: verdict %s, want %s (%s)", tt.to, out.Verdict, tt.verdict, out.Detail)
			}
			acts, err := db.Actions(t.Context(), 42)
			if err != nil {
				t.Fatal(err)
			}
			if acted := tt.verdict == registry.VerdictActed; acted != (len(acts) == 2) || out.Discard != acted {
				t.Errorf("bounce to %s: discard %v, actions %q", tt.to, out.Discard, kinds(acts))
			}
		})
	}
}
