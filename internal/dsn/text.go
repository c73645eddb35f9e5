package dsn

import (
	"strings"
)

// This file holds what the plain-text recognisers share: telling whether a
// message comes from a mail system at all, and picking addresses out of
// lines of prose.

// daemonLocalParts are the senders mail systems use for bounces.
var daemonLocalParts = []string{"mailer-daemon", "postmaster", "mail-daemon", "mailerdaemon", "maildaemon",
	"mail.daemon", "mailer_daemon", "double-bounce", "nobody", "root", "mail", "daemon", "no-reply", "noreply",
	"bounce", "bounces", "mdaemon", "smtp", "mailadmin", "mailsystem", "mail-system", "mta", "postoffice",
	"system", "administrator", "admin", "notify", "notification", "post_master", "mail-delivery-system",
	"mail.delivery.system", "sysadmin"}

// fromDaemon reports whether the message comes from a mail system: a null
// Return-Path, or a From whose local part is one of daemonLocalParts or
// names a mailer daemon.
func fromDaemon(m *msg) bool {
	if !m.headerOK {
		return false
	}
	if rp := strings.TrimSpace(m.header.Get("Return-Path")); rp == "<>" || rp == "<MAILER-DAEMON>" {
		return true
	}
	return daemonFrom(m)
}

// daemonFrom reports whether the From field names a mail system.
func daemonFrom(m *msg) bool {
	from := strings.ToLower(m.header.Get("From"))
	if strings.Contains(from, "mailer-daemon") || strings.Contains(from, "postmaster") ||
		strings.Contains(from, "mail delivery") || strings.Contains(from, "mail administrator") {
		return true
	}
	addr := cleanAddress(from)
	local := addr
	if i := strings.LastIndexByte(addr, '@'); i >= 0 {
		local = addr[:i]
	}
	for _, d := range daemonLocalParts {
		if local == d {
			return true
		}
	}
	// List servers answer from LIST-admin, LIST-owner, LIST-bounces
	// (Mailman, fml, ezmlm) or owner-LIST (Majordomo, LISTSERV).
	for _, s := range []string{"-admin", "-owner", "-bounces", "-errors"} {
		if strings.HasSuffix(local, s) && len(local) > len(s) {
			return true
		}
	}
	return strings.HasPrefix(local, "owner-") && len(local) > 6
}

// bounceSubjects are words of the Subject of bounces, in the languages the
// corpus of real bounces showed.
var bounceSubjects = []string{"undeliver", "undelivered", "returned mail", "delivery status notification",
	"delivery failure", "failure notice", "mail delivery failed", "delivery failed", "non remis", "non-remis",
	"unzustellbar", "nicht zustellbar", "delivery notification", "mail system error", "returned to sender",
	"delivery report", "could not be delivered", "bounce", "warning: could not send", "mail failure",
	"nondeliverable", "non-deliverable", "not delivered", "delivery problem", "rejected", "message delivery",
	"unable to deliver", "error sending", "delivery has failed", "message not delivered", "failed delivery",
	"delivery error", "mail could not", "permanent error", "delivery status", "warning: message", "delayed mail",
	"message status", "no se puede entregar", "impossible de remettre", "onbestelbaar", "mail error",
	"not be delivered", "notification", "undeliverable", "error", "failure", "returned", "delayed"}

// bounceSubject reports whether the Subject reads like a bounce.
func bounceSubject(m *msg) bool {
	if !m.headerOK {
		return false
	}
	s, _ := m.header.Text("Subject")
	s = strings.ToLower(s)
	for _, w := range bounceSubjects {
		if strings.Contains(s, w) {
			return true
		}
	}
	return false
}

// looksLikeBounce is the gate for the generic text recognisers: mail from a
// mail system, with a bounce's subject and headers, or in the words mail
// systems use.
func looksLikeBounce(m *msg) bool {
	return fromDaemon(m) || bounceSubject(m) && (m.header.Get("X-Failed-Recipients") != "" || m.header.Get("Auto-Submitted") != "") ||
		daemonWording(m)
}

// daemonPhrases are what mail systems of every kind write, in their own
// wording, when they return a message: found near the top of a text, they
// make it a report whoever sent it (a gateway, a home-made script), to be
// believed only where an address stands next to them.
var daemonPhrases = []string{"could not be delivered", "couldn't be delivered", "was not delivered", "wasn't delivered",
	"were not delivered", "cannot be delivered", "can't be delivered", "undeliverable to", "was undeliverable",
	"did not reach the following", "unable to deliver", "wasn't able to deliver", "was not able to deliver",
	"permanent fatal errors", "delivery has failed", "delivery failed", "delivery to the following",
	"not yet been delivered", "has not been delivered", "could not deliver", "failed to deliver", "returned to sender",
	"non-delivery", "nondelivery", "delivery status notification", "the original message was received at",
	"this report relates to your message"}

// daemonWording reports whether the top of m's text speaks like a mail
// system returning a message.
func daemonWording(m *msg) bool {
	top := m.body()
	top = top[:min(len(top), 4<<10)]
	low := m.lowerOf(top)
	for _, p := range daemonPhrases {
		if strings.Contains(low, p) {
			return true
		}
	}
	return false
}

// isListMail reports mail sent to a list or in bulk (RFC 2369 List-*
// fields, Precedence: bulk or list): newsletters that talk about bounces
// are not bounces.
func isListMail(m *msg) bool {
	if !m.headerOK {
		return false
	}
	if m.header.Get("List-Unsubscribe") != "" || m.header.Get("List-Id") != "" {
		return true
	}
	switch strings.ToLower(strings.TrimSpace(m.header.Get("Precedence"))) {
	case "bulk", "list":
		return true
	}
	return false
}

// mayBeBounce is the gate for all plain-text recognisers: a message that
// neither comes from a mail system nor has a bounce's subject or Exim's
// X-Failed-Recipients is not read as one, nor is list or bulk mail from a
// person.
func mayBeBounce(m *msg) bool {
	if !m.headerOK {
		return true // no header to judge by: the text must speak for itself
	}
	daemon := fromDaemon(m)
	if isListMail(m) && !daemon {
		return false
	}
	return daemon || bounceSubject(m) || m.header.Get("X-Failed-Recipients") != "" || daemonWording(m)
}

// asciiLower is arena.lower with its copy, when one is needed, on the heap.
func asciiLower(s string) string {
	var heap *arena
	return heap.lower(s)
}

// textLines splits the text into lines; "\r\n" was turned into "\n" when
// the text was read.
func textLines(s string) []string {
	return strings.Split(s, "\n")
}

// addressIn returns the first e-mail address in s: a token with an "@"
// between a local part and a dotted domain, without brackets or quotes.
func addressIn(s string) string {
	for {
		at := strings.IndexByte(s, '@')
		if at < 0 {
			return ""
		}
		start, end := addressAround(s, at)
		local := s[start:at]
		domain := strings.TrimRight(s[at+1:end], ".-")
		if local != "" && strings.IndexByte(domain, '.') > 0 {
			local = strings.TrimLeft(local, ".")
			if local != "" {
				return local + "@" + strings.ToLower(domain)
			}
		}
		s = s[at+1:]
	}
}

// addressAround returns the bounds of the address-like token around the
// "@" at s[at]: local-part characters before it, domain characters after.
func addressAround(s string, at int) (start, end int) {
	start = at
	for start > 0 && isAddrChar(s[start-1]) {
		start--
	}
	end = at + 1
	for end < len(s) && isDomainChar(s[end]) {
		end++
	}
	return start, end
}

func isAddrChar(c byte) bool {
	return isAlnum(c) || strings.IndexByte("!#$%&'*+-/=?^_`{|}~.", c) >= 0 || c >= 0x80
}

func isDomainChar(c byte) bool {
	return isAlnum(c) || c == '.' || c == '-' || c >= 0x80
}
