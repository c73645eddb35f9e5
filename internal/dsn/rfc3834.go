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
	return strings.HasPrefix(auto, "auto-replied") && !daemonFrom(m) && !bounceSubject(m)
}
