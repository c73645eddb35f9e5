package dsn

import (
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
)

func TestFindStatus(t *testing.T) {
	for _, c := range []struct{ in, want string }{
		{"550 5.1.1 <a@b>: User unknown", "5.1.1"},
		{"Status: 4.4.7 (delivery expired)", "4.4.7"},
		{"(#5.1.1)", "5.1.1"},
		{"5.4.316 Message expired", "5.4.316"},
		{"version 8.13.1/8.13.1", ""}, // not a status
		{"host 192.0.2.1 said", ""},   // an IP address
		{"15.1.1 is not a code", ""},
		{"", ""},
	} {
		if got := findStatus(c.in); got != c.want {
			t.Errorf("findStatus(%q) = %q, want %q", c.in, got, c.want)
		}
	}
}

func TestFindReplyCode(t *testing.T) {
	for _, c := range []struct{ in, want string }{
		{"550 5.1.1 User unknown", "550"},
		{"said: 550-5.1.1 The email account", "550"},
		{"port 2525 refused", ""},
		{"1550 x", ""},
	} {
		if got := findReplyCode(c.in); got != c.want {
			t.Errorf("findReplyCode(%q) = %q, want %q", c.in, got, c.want)
		}
	}
}

func TestClassify(t *testing.T) {
	for _, c := range []struct{ status, diag, want string }{
		{"5.1.1", "550 5.1.1 <a@b>: Recipient address rejected: User unknown", "userunknown"},
		{"5.0.0", "550 Unknown user a@example.com", "userunknown"},
		{"5.1.2", "Host or domain name not found", "hostunknown"},
		{"5.4.4", "Host or domain name not found. Name service error for name=x type=MX: Host not found", "hostunknown"},
		{"5.4.4", "Name service error: Malformed or unexpected name server reply", "networkerror"},
		{"5.2.2", "552 5.2.2 Mailbox full", "mailboxfull"},
		{"5.1.8", "501 5.1.8 Sender address rejected: Domain not found", "rejected"},
		{"5.0.0", "553 sender address rejected after MAIL FROM", "rejected"},
		{"5.1.10", "550 5.1.10 RESOLVER.ADR.RecipientNotFound", "userunknown"},
		{"5.1.10", "556 5.1.10 Recipient address has null MX", "hostunknown"},
		{"5.0.0", "SMTP error from remote mail server after end of data: 550 User unknown", "filtered"},
		{"5.7.1", "554 5.7.1 Service unavailable; Client host blocked using zen.spamhaus.org", "blocked"},
		{"4.4.7", "Message expired", "expired"},
		{"5.3.4", "552 5.3.4 Message size exceeds fixed limit", "mesgtoolarge"},
		{"", "", "undefined"},
	} {
		if got := classify(c.status, asciiLower(c.diag)); got != c.want {
			t.Errorf("classify(%q, %q) = %q, want %q", c.status, c.diag, got, c.want)
		}
	}
}

// naivePhraseGroup looks for each phrase in turn.
func naivePhraseGroup(d string) int {
	for i, rp := range reasonPhrases {
		for _, p := range rp.phrases {
			if strings.Contains(d, p) {
				return i
			}
		}
	}
	return -1
}

func FuzzFirstPhraseGroup(f *testing.F) {
	f.Add("550 5.1.1 user unknown")
	f.Add("mailbox full")
	f.Add("delivery attempts will continue")
	f.Fuzz(func(t *testing.T, d string) {
		if got, want := firstPhraseGroup(d), naivePhraseGroup(d); got != want {
			t.Errorf("firstPhraseGroup(%q) = %d, want %d", d, got, want)
		}
		checkDelayIndex(t, d)
	})
}

// checkDelayIndex checks delayIndex against looking for each of
// delayPhrases in turn.
func checkDelayIndex(t *testing.T, d string) {
	t.Helper()
	want := slices.ContainsFunc(delayPhrases, func(p string) bool { return strings.Contains(d, p) })
	if got := delayIndex().firstGroup(d) == 0; got != want {
		t.Errorf("delayIndex finds a phrase in %q: %v, want %v", d, got, want)
	}
}

// TestFirstPhraseGroup checks the one-pass search against looking for each
// phrase in turn, over every phrase in and around other text, and over the
// diagnostics of the samples' reports.
func TestFirstPhraseGroup(t *testing.T) {
	inputs := []string{"", "x", "550 5.1.1 <a@b>: recipient address rejected: user unknown in local recipient table"}
	for _, rp := range reasonPhrases {
		for _, p := range rp.phrases {
			if p == "" {
				t.Fatalf("empty phrase in %s", rp.reason)
			}
			inputs = append(inputs, p, "550 "+p+" here", p[:len(p)-1], "mailbox full; "+p)
		}
	}
	files, _ := filepath.Glob(filepath.Join("..", "..", "testdata", "dsn", "*"))
	for _, f := range files {
		b, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		reps, _ := new(Parser).ParseAllBytes(b)
		for _, rep := range reps {
			for _, r := range rep.Recipients {
				inputs = append(inputs, strings.ToLower(r.Diagnostic))
			}
		}
	}
	for _, p := range delayPhrases {
		inputs = append(inputs, p, "we "+p+" later", p[:len(p)-1], "x"+p[1:])
	}
	for _, d := range inputs {
		if got, want := firstPhraseGroup(d), naivePhraseGroup(d); got != want {
			t.Errorf("firstPhraseGroup(%q) = %d, want %d", d, got, want)
		}
		checkDelayIndex(t, d)
	}
}

func FuzzASCIILower(f *testing.F) {
	f.Add("Final-Recipient: RFC822; A@B.Example")
	f.Add("already lower")
	f.Add("\xffÄBC")
	f.Fuzz(func(t *testing.T, s string) {
		want := []byte(s)
		for i, c := range want {
			if 'A' <= c && c <= 'Z' {
				want[i] = c + 'a' - 'A'
			}
		}
		if got := asciiLower(s); got != string(want) {
			t.Errorf("asciiLower(%q) = %q, want %q", s, got, want)
		}
	})
}

// TestLowerOf checks that a part of the text is lowered from the text's
// lowered copy, and anything else on its own.
func TestLowerOf(t *testing.T) {
	whole := "Delivery to <Victim@Example.NET> FAILED\nPermanently"
	// The text may itself be part of a longer string: a string that
	// starts within it but runs past its end is lowered on its own.
	m := &msg{text: whole[:len(whole)-5]}
	for _, s := range []string{m.text, m.text[:8], m.text[13:31], m.text[len(m.text)-3:], "", "Other TEXT", strings.Clone(m.text[13:31]), whole[13:], whole[1:]} {
		if got, want := m.lowerOf(s), asciiLower(s); got != want {
			t.Errorf("lowerOf(%q) = %q, want %q", s, got, want)
		}
	}
}

// FuzzSignatureAt holds the one-pass search for the recognisers'
// signatures to looking for each in turn.
func FuzzSignatureAt(f *testing.F) {
	for _, list := range signatureLists {
		for _, sig := range list {
			f.Add("Hello\n" + strings.ToUpper(sig[:len(sig)/2]) + sig[len(sig)/2:] + "\nrest")
		}
	}
	f.Fuzz(func(t *testing.T, text string) {
		m := &msg{text: text}
		low := asciiLower(text)
		top := low[:min(len(low), signatureWindow)]
		for _, list := range signatureLists {
			for _, sig := range list {
				if got, want := m.signatureAt(sig), strings.Index(top, sig); got != want {
					t.Errorf("signatureAt(%q) = %d, want %d", sig, got, want)
				}
			}
		}
	})
}

// TestSignaturesLowerCase checks that every signature can match: they are
// looked for in the lowered text.
func TestSignaturesLowerCase(t *testing.T) {
	for _, list := range signatureLists {
		for _, sig := range list {
			if sig == "" || asciiLower(sig) != sig {
				t.Errorf("signature %q is empty or not in lower case", sig)
			}
		}
	}
}
