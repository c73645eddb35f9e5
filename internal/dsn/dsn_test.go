package dsn

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// want is the expected result of one sample in testdata/dsn.
type want struct {
	bounce     bool
	kind       string
	recipients []Recipient // Address, Action, Status, Reason, Permanent are compared
	original   Original    // compared field by field when set
}

var samples = map[string]want{
	"postfix-userunknown.eml": {
		bounce: true, kind: "bounce",
		recipients: []Recipient{{Address: "NoSuchUser@example.net", Action: "failed", Status: "5.1.1", Reason: "userunknown", Permanent: true,
			Diagnostic: "550 5.1.1 <NoSuchUser@Example.NET>: Recipient address rejected: User unknown"}},
		original: Original{
			MessageID: "<20261126010201.4F1A21C0F2@mail.example.org>",
			From:      "notice@media.example.org",
			To:        "NoSuchUser@Example.NET",
			Subject:   "GNU MediaGoblin - Verify your email!",
			Date:      "Thu, 26 Nov 2026 01:02:01 +0000 (UTC)",
		},
	},
	"postfix-hdrs-only.eml": {
		bounce: true, kind: "bounce",
		recipients: []Recipient{{Address: "NoSuchUser@example.net", Action: "failed", Status: "5.1.1", Reason: "userunknown", Permanent: true}},
		original: Original{
			MessageID: "<20261126010201.4F1A21C0F2@mail.example.org>",
			To:        "NoSuchUser@Example.NET",
			Subject:   "GNU MediaGoblin - Verify your email!",
		},
	},
	"postfix-multi-rcpt.eml": {
		bounce: true, kind: "bounce",
		recipients: []Recipient{
			{Address: "NoSuchUser@example.net", Action: "failed", Status: "5.1.1", Reason: "userunknown", Permanent: true},
			{Address: "full@example.com", Action: "failed", Status: "5.2.2", Reason: "mailboxfull", Permanent: true},
			{Address: "bot@no-such-domain.example", Action: "failed", Status: "5.4.4", Reason: "hostunknown", Permanent: true},
		},
		original: Original{Subject: "GNU MediaGoblin - Verify your email!"},
	},
	"postfix-delayed.eml": {
		bounce: true, kind: "bounce",
		recipients: []Recipient{{Address: "slow@example.net", Action: "delayed", Status: "4.4.1", Reason: "networkerror", Permanent: false}},
		original:   Original{To: "slow@example.net", Subject: "GNU MediaGoblin - Verify your email!"},
	},
}

func TestSamples(t *testing.T) {
	for name, w := range samples {
		t.Run(name, func(t *testing.T) {
			f, err := os.Open(filepath.Join("..", "..", "testdata", "dsn", name))
			if err != nil {
				t.Fatal(err)
			}
			defer f.Close()
			rep, err := Parse(f)
			if err != nil {
				t.Fatalf("Parse: %v", err)
			}
			checkReport(t, rep, w)
		})
	}
}

func checkReport(t *testing.T, rep *Report, w want) {
	t.Helper()
	if rep.Bounce != w.bounce || rep.Kind != w.kind {
		t.Errorf("bounce, kind = %v, %q; want %v, %q (format %q)", rep.Bounce, rep.Kind, w.bounce, w.kind, rep.Format)
	}
	if len(rep.Recipients) != len(w.recipients) {
		t.Fatalf("got %d recipients %+v; want %d", len(rep.Recipients), rep.Recipients, len(w.recipients))
	}
	for i, g := range rep.Recipients {
		e := w.recipients[i]
		if g.Address != e.Address || g.Action != e.Action || g.Status != e.Status || g.Reason != e.Reason || g.Permanent != e.Permanent {
			t.Errorf("recipient %d = %s %s %s %s %v; want %s %s %s %s %v", i,
				g.Address, g.Action, g.Status, g.Reason, g.Permanent,
				e.Address, e.Action, e.Status, e.Reason, e.Permanent)
		}
		if e.Diagnostic != "" && g.Diagnostic != e.Diagnostic {
			t.Errorf("recipient %d diagnostic = %q; want %q", i, g.Diagnostic, e.Diagnostic)
		}
	}
	o, e := rep.Original, w.original
	for _, c := range []struct{ name, got, want string }{
		{"Message-ID", o.MessageID, e.MessageID}, {"From", o.From, e.From}, {"To", o.To, e.To},
		{"Subject", o.Subject, e.Subject}, {"Date", o.Date, e.Date},
	} {
		if c.want != "" && c.got != c.want {
			t.Errorf("original %s = %q; want %q", c.name, c.got, c.want)
		}
	}
}

// TestCRLF checks that a message with CRLF line ends reads the same as
// with LF.
func TestCRLF(t *testing.T) {
	b, err := os.ReadFile(filepath.Join("..", "..", "testdata", "dsn", "postfix-multi-rcpt.eml"))
	if err != nil {
		t.Fatal(err)
	}
	crlf := strings.ReplaceAll(string(b), "\n", "\r\n")
	rep, err := Parse(strings.NewReader(crlf))
	if err != nil {
		t.Fatal(err)
	}
	checkReport(t, rep, samples["postfix-multi-rcpt.eml"])
}
