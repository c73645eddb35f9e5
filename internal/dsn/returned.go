package dsn

import (
	"strings"
)

// This file reads the message a bounce returns (RFC 3464 section 2.1 and
// RFC 6522 section 3: the optional third part, message/rfc822 or
// text/rfc822-headers; RFC 6533 section 6: message/global and
// message/global-headers), or its header quoted in a plain-text bounce
// after a marker such as "--- Below this line is a copy of the message.".
// Its Message-ID, From, To and Subject let the caller check that a bounce
// answers mail it sent.

// original returns the returned message's header fields.
func (m *msg) original() Original {
	if m.forwarded != nil {
		return m.forwarded.original()
	}
	h := m.returned
	if h == nil {
		h = m.quotedHeader()
	}
	if h == nil {
		return Original{}
	}
	return headerOriginal(h)
}

func headerOriginal(h *header) Original {
	text := func(k string) string {
		v, err := h.Text(k)
		if err != nil || v == "" {
			v = h.Get(k)
		}
		return strings.TrimSpace(v)
	}
	return Original{
		MessageID: text("Message-Id"),
		From:      text("From"),
		To:        text("To"),
		Subject:   text("Subject"),
		Date:      text("Date"),
	}
}

// quotedHeader finds the header of the returned message when it is quoted
// in the text rather than attached (qmail, Exim, Sendmail without MIME),
// once per message.
func (m *msg) quotedHeader() *header {
	if !m.quotedDone {
		m.quoted, m.quotedDone = m.findQuotedHeader(), true
	}
	return m.quoted
}

func (m *msg) findQuotedHeader() *header {
	cut := len(m.body())
	if cut >= len(m.text) {
		return nil
	}
	rest := m.text[cut:]
	// Skip the marker line itself unless it is already a header field
	// ("Return-Path:", "Received:").
	if i := strings.IndexByte(rest, '\n'); i >= 0 && !isHeaderLine(rest[:i]) {
		rest = rest[i+1:]
	}
	rest = strings.TrimLeft(rest, "\n \t")
	// Quoted headers end at the first blank line; lines that are not
	// fields (quoting marks, junk) are dropped on the way.
	var stack [32]field
	fs := stack[:0]
	eachField(headerBlock(rest), m.arena, func(f field) bool {
		if f.name == "" {
			return false
		}
		fs = append(fs, f)
		return true
	})
	if len(fs) == 0 {
		return nil
	}
	h := header{fields: m.arena.headerFields(len(fs))}
	for i, f := range fs {
		h.fields[i] = headerField{name: f.name, value: f.value}
	}
	return &h
}

// headerBlock returns s up to its first blank line.
func headerBlock(s string) string {
	if i := strings.Index(s, "\n\n"); i >= 0 {
		return s[:i]
	}
	return s
}

// isHeaderLine reports whether l looks like "Name: value".
func isHeaderLine(l string) bool {
	i := strings.IndexByte(l, ':')
	return i > 0 && !strings.ContainsAny(l[:i], " \t")
}

// returnedRecipient is the last resort for bounces whose text names no
// recipient: it believes the returned message's To field, but only for a
// delivery-status report or for mail from a mail system with a bounce's
// subject, and only when To holds a single address.
func returnedRecipient(m *msg) (Recipient, bool) {
	if !m.headerOK || !(m.reportType == "delivery-status" || daemonFrom(m) && bounceSubject(m)) {
		return Recipient{}, false
	}
	h := m.returned
	if h == nil {
		h = m.quotedHeader()
	}
	if h == nil {
		return Recipient{}, false
	}
	to := h.Get("To")
	if strings.Count(to, "@") != 1 {
		return Recipient{}, false
	}
	addr := addressIn(to)
	text := m.body()
	diag := firstDiagnostic(text)
	// A delivery-status report is evidence enough; other mail must say
	// why in words this package knows.
	if addr == "" || diag == "" && m.reportType != "delivery-status" && classify("", m.lowerOf(text)) == "onhold" {
		return Recipient{}, false
	}
	if diag == "" {
		diag = strings.TrimSpace(firstParagraph(text))
	}
	rs := []Recipient{{Address: addr, Diagnostic: diag}}
	markDelayed(m, rs, text)
	return rs[0], true
}
