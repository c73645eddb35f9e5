package dsn

import "strings"

// This file recognises automatic responses (RFC 3834): vacation notices and
// out-of-office replies. They answer a message but report no delivery
// failure, so they are never bounces.

// isAutoReply reports whether m is an automatic reply rather than a
// delivery report. RFC 3834 section 5 defines Auto-Submitted:
// auto-replied; bounces carry it too (Postfix sets it), so it counts only
// when the message does not look like a bounce. Older responders use
// X-Autoreply, X-Autorespond or Precedence: auto_reply.
func isAutoReply(m *msg) bool {
	if !m.headerOK {
		return false
	}
	h := &m.header
	if h.Get("X-Autoreply") != "" || h.Get("X-Autorespond") != "" || h.Get("X-Autoresponder") != "" {
		return true
	}
	if strings.EqualFold(strings.TrimSpace(h.Get("Precedence")), "auto_reply") {
		return true
	}
	subject, _ := h.Text("Subject")
	s := strings.ToLower(subject)
	for _, p := range []string{"auto:", "automatic reply", "autoreply", "auto-reply", "auto reply", "out of office",
		"out of the office", "vacation", "abwesenheit", "absence"} {
		if strings.Contains(s, p) && !strings.Contains(s, "undeliver") {
			return true
		}
	}
	auto := strings.ToLower(h.Get("Auto-Submitted"))
	if strings.HasPrefix(auto, "auto-replied") && !daemonFrom(m) && !bounceSubject(m) {
		return true
	}
	// A person's responder that sets none of the fields above
	// (vacation(1) sets only Precedence, or nothing): its own words.
	// Failure-like words in it ("will not be delivered", "rejected")
	// do not make it a bounce.
	return !fromDaemon(m) && (strings.Contains(strings.ToLower(h.Get("X-Mailer")), "vacation") || awayWording(m))
}

// awayPhrases are how people say they are away.
var awayPhrases = []string{"i am on vacation", "i'm on vacation", "i am out of the office", "i'm out of the office",
	"i am currently out", "i'm currently out", "i am away", "i'm away", "i will be out of the office", "out of office",
	"on annual leave", "on parental leave", "on maternity leave", "i am on leave", "i'm on leave",
	"limited access to e-mail", "limited access to email", "i will be back", "i will return", "back in the office"}

// awayWording reports whether the first lines of m's text say that
// someone is away.
func awayWording(m *msg) bool {
	top := m.text[:min(len(m.text), 1<<10)]
	low := m.lowerOf(top)
	for _, p := range awayPhrases {
		if strings.Contains(low, p) {
			return true
		}
	}
	return false
}
