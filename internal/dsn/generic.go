package dsn

import (
	"strings"
	"sync"
	"unicode"
)

// This file reads plain-text bounces of any mail system that names each
// failed recipient on a line of its own, followed by the reason; the
// format-specific recognisers (qmail.go, exim.go, ...) use it after finding
// their signature, and it is also the last resort for formats no recogniser
// knows (Courier, OpenSMTPD, MailMarshal, Notes, carriers' gateways):
//
//	qmail:     <user@example.com>:
//	           Remote host said: 550 5.1.1 User unknown
//	Exim:        user@example.com
//	               SMTP error from remote mail server after RCPT TO:<user@example.com>:
//	               host mx.example.com [192.0.2.1]: 550 5.1.1 User unknown
//	Sendmail:  554 <user@example.com>... Service unavailable
//	Labelled:  Recipient: <user@example.com>
//	Bulleted:    * user@example.com
//
// The text is read up to the copy of the returned message. A recipient line
// starts with an address, bare or in angle brackets, maybe after a bullet,
// an SMTP reply code or a short label that speaks of recipients. The lines
// after it, up to the next recipient, are its diagnostic. When no line
// starts with an address, addresses inside sentences that speak of failed
// delivery count ("There was an error delivering your mail to <a@b>.").
// The bounce's own addressee (the original sender) is never a recipient.

// returnedMarkers start the copy of the returned message in plain-text
// bounces; nothing after them describes the failure.
var returnedMarkers = []string{
	"--- below this line is a copy of the message",
	"------ this is a copy of the message",
	"----- original message -----",
	"------ original message",
	"-----original message-----",
	"--- original message follows",
	"original message follows",
	"original message:",
	"original message header",
	"----- the following is a copy of the message",
	"--- the header of the original message",
	"----- the header of the original message",
	"------ the message header",
	"----- unsent message below -----",
	"----- unsent message follows -----",
	"--- unsent message follows",
	"----- original message header -----",
	"content-type: message/rfc822",
	"--- below this line is the original message",
	"--- below are the original headers",
	"---------- forwarded message",
	"----- message text follows -----",
	"------ this is a copy of your message",
	"---- start of returned message",
	"----- returned message follows",
	"--- original message headers",
	"return-path:",
	"received:",
	"x-original-to:",
	"dkim-signature:",
}

// returnedCut returns the offset of the first line of low (lowercased
// text) that starts, after blanks, with a returned-message marker, or
// len(low). One pass over the lines: each marker is tried only where a
// line starts with its first byte.
func returnedCut(low string) int {
	for off := 0; off < len(low); {
		i := off
		for i < len(low) && (low[i] == ' ' || low[i] == '\t') {
			i++
		}
		if i < len(low) && strings.IndexByte(markerFirstBytes, low[i]) >= 0 {
			rest := low[i:]
			for _, mk := range returnedMarkers {
				if strings.HasPrefix(rest, mk) {
					return i
				}
			}
		}
		nl := strings.IndexByte(low[i:], '\n')
		if nl < 0 {
			break
		}
		off = i + nl + 1
	}
	return len(low)
}

// markerFirstBytes are the first bytes of returnedMarkers.
var markerFirstBytes = func() string {
	var b []byte
	for _, mk := range returnedMarkers {
		if strings.IndexByte(string(b), mk[0]) < 0 {
			b = append(b, mk[0])
		}
	}
	return string(b)
}()

// recipientLine returns the address a line names as a failed recipient,
// the rest of the line after it, and whether the address is literal: the
// whole token the line holds there, not cut out of a longer one (a bullet
// or pipe glued to it, a quoted local part). The line starts with the
// address, bare or in angle brackets, maybe after a bullet ("*", "-",
// ">>>") or a short label ("Recipient:", "Unknown user:", "Could not be
// delivered to:").
func recipientLine(line string) (addr, rest string, literal, ok bool) {
	// Only the left end of t moves from here on, so the address's
	// offset in line is len(base)-len(t).
	base := strings.TrimRightFunc(line, unicode.IsSpace)
	t := strings.TrimSpace(base)
	if len(t) < 3 || strings.IndexByte(t, '@') < 0 {
		return "", "", false, false
	}
	t = strings.TrimLeft(t, "*->•+#| \t")
	// Sendmail's transcript: "554 <user@example.com>... Service unavailable".
	if len(t) > 4 && findReplyCode(t[:4]) != "" && t[3] == ' ' {
		t = strings.TrimSpace(t[4:])
		if s := findStatus(t); s != "" && strings.HasPrefix(t, s) {
			t = strings.TrimSpace(t[len(s):])
		}
	}
	if i := strings.IndexByte(t, ':'); i > 0 && t[0] != '<' && !strings.Contains(t[:i], "@") {
		label := strings.ToLower(strings.TrimSpace(t[:i]))
		if !addressLabel(label) {
			return "", "", false, false
		}
		t = strings.TrimSpace(t[i+1:])
		if j := strings.IndexByte(t, ';'); j > 0 && j < 10 && !strings.Contains(t[:j], "@") {
			t = strings.TrimSpace(t[j+1:]) // "rfc822; addr"
		}
	}
	if t == "" {
		return "", "", false, false
	}
	start := len(base) - len(t)
	if t[0] == '<' {
		j := strings.IndexByte(t, '>')
		if j < 0 {
			return "", "", false, false
		}
		addr, rest = t[1:j], t[j+1:]
		start++
	} else {
		j := strings.IndexAny(t, " \t<[(")
		if j < 0 {
			j = len(t)
		}
		addr, rest = t[:j], t[j:]
		addr = strings.TrimRight(addr, ":,;")
		addr = strings.TrimSuffix(addr, "...")
		addr = strings.TrimRight(addr, ".")
		// "name <addr>": the bracketed address is the one
		// (RFC 5322 name-addr), even when the name looks like
		// another address.
		if r := strings.TrimLeft(rest, " \t"); len(r) > 0 && r[0] == '<' && !strings.ContainsAny(t[j-1:j], ",;") {
			if k := strings.IndexByte(r, '>'); k > 0 && plausibleAddress(r[1:k]) {
				start += j + (len(rest) - len(r)) + 1
				addr, rest = r[1:k], r[k+1:]
			}
		}
	}
	end := start + len(addr)
	// An address in quotes as a whole ("a@b.example":, GMX) is read
	// without them; a quote inside is a quoted local part.
	if len(addr) > 2 && (addr[0] == '"' || addr[0] == '\'') && addr[len(addr)-1] == addr[0] {
		addr = addr[1 : len(addr)-1]
	}
	read := addr
	addr = strings.Trim(addr, `"'`)
	if len(addr) > 7 && strings.EqualFold(addr[:7], "mailto:") {
		addr, read = addr[7:], read[7:]
	}
	if !plausibleAddress(addr) {
		return "", "", false, false
	}
	norm := normalizeAddress(addr)
	// The token must end where the address does: "a@b.example.." is
	// no address written whole.
	literal = addr == read && tokenStart(line, start) && tokenEnd(line, end) && literalForm(addr) && sameAddress(addr, norm)
	return norm, strings.TrimLeft(strings.TrimSpace(rest), ":.,;- "), literal, true
}

// tokenStart reports whether an address read at s[i:] starts a token: the
// byte before it could not be part of an address (RFC 5322 atext, a dot,
// a quote, an escape, an "@"). "|victim@example.net" and
// "/victim@example.net" name other addresses than "victim@example.net".
func tokenStart(s string, i int) bool {
	if i <= 0 {
		return true
	}
	c := s[i-1]
	return !isAddrChar(c) && c != '"' && c != '\\' && c != '@'
}

// tokenEnd reports whether an address read up to s[:i] ends its token:
// what follows is no domain character, or a dot that ends a sentence.
func tokenEnd(s string, i int) bool {
	if i >= len(s) {
		return true
	}
	switch c := s[i]; {
	case c == '.':
		return i+1 >= len(s) || !isDomainChar(s[i+1])
	case c == '"' || c == '\\' || c == '@':
		return false
	default:
		return !isDomainChar(c)
	}
}

// literalForm reports whether an address may be literal at all: one with
// a quoted or escaped local part ("victim@example.net"@evil.example) is
// never acted on, whatever the report wrote.
func literalForm(a string) bool {
	return plausibleAddress(a) && !strings.ContainsAny(a, "\"\\")
}

// addressLabel reports whether a label before a colon introduces a failed
// recipient. Header names of a quoted message (To:, From:) do not: they
// name the original sender and recipients, not the failures.
func addressLabel(label string) bool {
	if len(label) > 40 || strings.Count(label, " ") > 5 {
		return false
	}
	if messageField(label) {
		return false
	}
	if strings.HasPrefix(label, "x-") {
		return strings.Contains(label, "recipient")
	}
	for _, w := range []string{"recipient", "user", "mailbox", "rcpt", "deliver", "account", "failed", "error",
		"unknown", "invalid", "destinat", "empfänger", "destinataire"} {
		if strings.Contains(label, w) {
			return true
		}
	}
	return false
}

// messageField reports the names of header fields of a message (lowercase):
// quoted from the returned message, they name its sender and recipients,
// never the failures.
func messageField(name string) bool {
	switch name {
	case "to", "from", "cc", "bcc", "reply-to", "sender", "return-path", "subject", "date", "sent", "message-id",
		"received", "envelope-from", "delivered-to", "x-original-to", "in-reply-to", "references", "errors-to":
		return true
	}
	return false
}

// plausibleAddress reports whether s looks like local@domain.tld.
func plausibleAddress(s string) bool {
	at := strings.LastIndexByte(s, '@')
	if at <= 0 || at == len(s)-1 {
		return false
	}
	local, domain := s[:at], s[at+1:]
	if local[0] == '/' || local[0] == '|' || local[0] == '@' {
		return false // a file, a pipe, a source route
	}
	if strings.IndexByte(domain, '.') <= 0 || strings.HasSuffix(domain, ".") {
		return false
	}
	for i := 0; i < len(domain); i++ {
		if !isDomainChar(domain[i]) && domain[i] != '[' && domain[i] != ']' && domain[i] != ':' {
			return false
		}
	}
	if len(local) > 2 && local[0] == '"' && local[len(local)-1] == '"' {
		return true // a quoted local part (RFC 5321 section 4.1.2) may hold anything
	}
	for i := 0; i < len(local); i++ {
		c := local[i]
		if c <= ' ' || c == '<' || c == '>' || c == '(' || c == ')' || c == ',' || c == ';' {
			return false
		}
	}
	return true
}

// excluded returns the addresses of the bounce's own header (its sender and
// the original sender it is addressed to), which the text mentions but which
// never failed.
func excluded(m *msg) map[string]bool {
	// Several recognisers ask; the header is read once, and the set
	// is only read after.
	if m.excluded == nil {
		m.excluded = readExcluded(m)
	}
	return m.excluded
}

func readExcluded(m *msg) map[string]bool {
	ex := map[string]bool{}
	if !m.headerOK {
		return ex
	}
	// X-Original-To is left out: some agents (DragonFly's dma) put the
	// failed recipient there.
	for _, k := range []string{"To", "From", "Reply-To", "Sender", "Delivered-To", "Return-Path", "Errors-To"} {
		for v := range m.header.values(k) {
			for part := range strings.SplitSeq(v, ",") {
				if a := addressIn(part); a != "" {
					ex[strings.ToLower(a)] = true
				}
			}
		}
	}
	return ex
}

// isDaemonAddress reports addresses of mail systems (postmaster@,
// mailer-daemon@), which a bounce names as contacts, not as failures.
func isDaemonAddress(a string) bool {
	l := strings.ToLower(a)
	return strings.HasPrefix(l, "postmaster@") || strings.HasPrefix(l, "mailer-daemon@") ||
		strings.HasPrefix(l, "abuse@") || strings.HasPrefix(l, "hostmaster@")
}

// parseGeneric is the recogniser for the line-per-recipient layout.
func parseGeneric(m *msg) []Recipient {
	failed := failedRecipientsHeader(m)
	strong := len(failed) > 0 || looksLikeBounce(m)
	if !strong && !bounceSubject(m) {
		return nil
	}
	text := m.body()
	ex := excluded(m)
	rs := recipientLines(text, ex, m.maxRecipients)
	if len(rs) == 0 {
		rs = recipientSentences(text, ex, m.maxRecipients)
	}
	if len(rs) == 0 && len(failed) > 0 {
		// Exim's X-Failed-Recipients names them when the text
		// does not.
		for _, r := range failedOrder(m) {
			r.Diagnostic = firstDiagnostic(text)
			rs = append(rs, r)
		}
	}
	if !strong {
		// Only the Subject says "bounce" (a forwarded bounce, an odd
		// sender): believe it only when a mail server's reply is there.
		keep := rs[:0]
		for _, r := range rs {
			if findStatus(r.Diagnostic) != "" || findReplyCode(r.Diagnostic) != "" {
				keep = append(keep, r)
			}
		}
		rs = keep
	}
	markDelayed(m, rs, text)
	return rs
}

// textAfter returns m's text from the first of the signatures on (matched
// case-insensitively) up to the returned message, and whether one occurs.
func textAfter(m *msg, signatures []string) (string, bool) {
	low := m.lower()
	for _, sig := range signatures {
		if i := m.signatureAt(sig); i >= 0 {
			return m.text[i : i+returnedCut(low[i:])], true
		}
	}
	return "", false
}

// signatureAt returns where the signature first occurs in the top of the
// lowered text (signatureWindow), or -1. A mail system's own words come
// first, so that a long text is not scanned far; and the signatures of
// every recogniser are found in one pass over it, once a message, instead
// of one search per signature per recogniser.
func (m *msg) signatureAt(sig string) int {
	t := signatureIndex()
	id, ok := t.ids[sig]
	if !ok {
		// Not among the signatures the recognisers pass: looked for
		// on its own.
		top := m.lower()[:min(len(m.lower()), signatureWindow)]
		return strings.Index(top, sig)
	}
	if m.sigPos == nil {
		m.sigPos = t.firstPositions(m.lower()[:min(len(m.lower()), signatureWindow)])
	}
	return m.sigPos[id]
}

// signatureLists are the signatures of the plain-text recognisers.
var signatureLists = [][]string{exchangeSignatures, eximSignatures, gmailSignatures, qmailSignatures,
	sendmailSignatures, yahooSignatures}

// signatureTable indexes every signature of signatureLists: by its first
// byte, and the pairs of bytes they start with (see phraseTable).
type signatureTable struct {
	phraseTable
	ids map[string]int
}

var signatureIndex = sync.OnceValue(func() *signatureTable {
	t := &signatureTable{ids: map[string]int{}}
	for _, list := range signatureLists {
		for _, sig := range list {
			if _, ok := t.ids[sig]; !ok && sig != "" {
				t.add(sig, len(t.ids))
				t.ids[sig] = len(t.ids)
			}
		}
	}
	return t
})

// firstPositions returns, for each signature by id, where it first occurs
// in low, or -1.
func (t *signatureTable) firstPositions(low string) []int {
	pos := make([]int, len(t.ids))
	for i := range pos {
		pos[i] = -1
	}
	for i := 0; i < len(low); i++ {
		if i+1 < len(low) && !t.bigram(low[i], low[i+1]) {
			continue
		}
		for _, r := range t.first[low[i]] {
			if pos[r.group] < 0 && strings.HasPrefix(low[i:], r.phrase) {
				pos[r.group] = i
			}
		}
	}
	return pos
}

// signatureWindow is how far into the text signatures are looked for.
const signatureWindow = 32 << 10

// signedRecipients is what the recognisers of one MTA's plain-text format
// share: find its signature, then read the recipient lines that follow, up
// to the returned message.
func signedRecipients(m *msg, signatures []string) []Recipient {
	t, ok := textAfter(m, signatures)
	if !ok {
		return nil
	}
	rs := recipientLines(t, excluded(m), m.maxRecipients)
	markDelayed(m, rs, t)
	return rs
}

// recipientLines finds the lines that start with a recipient and reads the
// diagnostic that follows each: at most max recipients, and one more when
// there are more, which says so (the report is cut and marked truncated).
func recipientLines(text string, ex map[string]bool, max int) []Recipient {
	lines := textLines(text)
	var rs []Recipient
	index := map[string]int{}
	// The line that ends a recipient's diagnostic is read again as the
	// next recipient's: it is read once.
	type lineRead struct {
		addr, rest  string
		literal, ok bool
	}
	memo, memoAt := lineRead{}, -1
	read := func(i int) lineRead {
		if memoAt != i {
			var r lineRead
			r.addr, r.rest, r.literal, r.ok = recipientLine(lines[i])
			memo, memoAt = r, i
		}
		return memo
	}
	// One recipient more than the most a report holds says that there
	// were more (the report is marked truncated); no line after it is
	// read.
	for i := 0; i < len(lines) && len(rs) <= max; i++ {
		lr := read(i)
		addr, rest, literal, ok := lr.addr, lr.rest, lr.literal, lr.ok
		if !ok || isDaemonAddress(addr) && rest != "" || sentBy(lines, i) {
			continue
		}
		// Several recipients may share the line ("a@x, b@y: 550 ...").
		names := []Recipient{{Address: addr, Literal: literal}}
		if more, after := listedAfter(lines[i], addr); len(more) > 0 {
			names, rest = append(names, more...), after
		}
		// The diagnostic runs to the next recipient; past a blank line
		// only while no reply or status code has been seen (Gmail and
		// Exchange put a paragraph between the two).
		diag := []string{capString(rest, maxDiagnostic)}
		size := len(diag[0])
		coded := hasCode(diag[0])
		j := i + 1
		for n := 0; j < len(lines) && n < 16; j++ {
			l := strings.TrimLeft(strings.TrimSpace(lines[j]), "> ")
			if l == "" {
				if coded {
					break
				}
				continue
			}
			if lr := read(j); lr.ok && !strings.EqualFold(lr.addr, addr) {
				break
			}
			if size < maxDiagnostic {
				l = capString(l, maxDiagnostic-size)
				diag = append(diag, l)
				size += len(l) + 1
				coded = coded || hasCode(l)
			}
			n++
		}
		i = j - 1
		d := strings.Join(diag, " ")
		for _, r := range names {
			if k, ok := index[strings.ToLower(r.Address)]; ok {
				// Named again (Sendmail's list, then its
				// transcript): one recipient, with the
				// diagnostic that has a code.
				if !hasCode(rs[k].Diagnostic) && hasCode(d) {
					rs[k].Diagnostic = d
				}
				rs[k].Literal = rs[k].Literal || r.Literal && rs[k].Address == r.Address
				continue
			}
			if len(rs) > max {
				break
			}
			index[strings.ToLower(r.Address)] = len(rs)
			r.Diagnostic = d
			rs = append(rs, r)
		}
	}
	// A recipient line that names the bounce's own addressee is the
	// original sender quoted, unless nothing else was found.
	keep := rs[:0]
	for _, r := range rs {
		if !ex[strings.ToLower(r.Address)] {
			keep = append(keep, r)
		}
	}
	if len(keep) > 0 {
		return keep
	}
	return rs
}

// listedAfter returns the addresses that follow addr on line in a list
// ("a@x, <b@y>; c@z"), each read as nextAddress reads it, and the text
// after the list.
func listedAfter(line, addr string) ([]Recipient, string) {
	low := asciiLower(line)
	p := strings.Index(low, asciiLower(addr))
	if p < 0 {
		return nil, ""
	}
	off := p + len(addr)
	var more []Recipient
	for len(more) < DefaultMaxRecipients {
		q := off
		for q < len(line) && line[q] == '>' {
			q++
		}
		if q >= len(line) || line[q] != ',' && line[q] != ';' {
			break
		}
		for q < len(line) && strings.IndexByte(" \t,;<", line[q]) >= 0 {
			q++
		}
		a, literal, next := nextAddress(line, q)
		if a == "" || !strings.HasPrefix(low[q:], asciiLower(a)) {
			break
		}
		more = append(more, Recipient{Address: a, Literal: literal})
		off = next
	}
	if len(more) == 0 {
		return nil, ""
	}
	return more, strings.TrimLeft(strings.TrimSpace(line[off:]), ">:.,;- ")
}

// hasCode reports whether s holds an SMTP reply code or a status code.
func hasCode(s string) bool {
	return findStatus(s) != "" || findReplyCode(s) != ""
}

// sentBy reports whether the line before line i (skipping blank lines)
// introduces the sender, as in Exim's "A message sent by\n\n  <a@b>\n\n
// could not be delivered".
func sentBy(lines []string, i int) bool {
	for j := i - 1; j >= 0 && j >= i-3; j-- {
		l := strings.ToLower(strings.TrimSpace(lines[j]))
		if l == "" {
			continue
		}
		// "to the address" (no colon) ends an instruction: "send
		// mail ... to the address <list-request address>".
		return strings.HasSuffix(l, "sent by") || strings.HasSuffix(l, "from") || strings.HasSuffix(l, "from:") ||
			strings.HasSuffix(l, "to the address")
	}
	return false
}

// sentenceWords mark a line of prose that names a failed recipient inside
// a sentence: "There was an error delivering your mail to <a@b>.",
// "undeliverable to a@b", "RCPT TO:<a@b>".
var sentenceWords = []string{"deliver", "rcpt to", "recipient", "failed", "error", "rejected", "not a member",
	"mailing list", "could not", "unable", "unknown", "invalid", "not reachable"}

// recipientSentences finds recipients named inside sentences.
func recipientSentences(text string, ex map[string]bool, max int) []Recipient {
	lines := textLines(text)
	// nextCode[i] is the first line at or after i with a reply or status
	// code, computed once so that many candidate lines stay linear.
	nextCode := make([]int, len(lines)+1)
	nextCode[len(lines)] = -1
	for i := len(lines) - 1; i >= 0; i-- {
		nextCode[i] = nextCode[i+1]
		if hasCode(lines[i]) {
			nextCode[i] = i
		}
	}
	var rs []Recipient
	seen := map[string]bool{}
	// One diagnostic per line, shared by the addresses on it: a line
	// packed with addresses must not cost a copy of itself per address.
	diagLine, diag := -1, ""
	for i, l := range lines {
		if strings.IndexByte(l, '@') < 0 {
			continue
		}
		// A header line of the returned message, quoted without a
		// marker before it: its addresses did not fail.
		if t := strings.TrimLeft(l, " \t>"); isHeaderLine(t) && messageField(strings.ToLower(t[:strings.IndexByte(t, ':')])) {
			continue
		}
		hit := false
		for _, w := range sentenceWords {
			if containsFold(l, w) || i > 0 && containsFold(lines[i-1], w) {
				hit = true
				break
			}
		}
		if !hit {
			continue
		}
		for off := 0; ; {
			a, literal, next := nextAddress(l, off)
			if a == "" {
				break
			}
			off = next
			k := strings.ToLower(a)
			if ex[k] || seen[k] || isDaemonAddress(a) && !bracketed(l, next-len(a), next) || contactBefore(l, next-len(a)) {
				continue
			}
			seen[k] = true
			if diagLine != i {
				diagLine, diag = i, sentenceDiagnostic(lines, i, nextCode)
			}
			rs = append(rs, Recipient{Address: a, Literal: literal, Diagnostic: diag})
			if len(rs) > max {
				return rs // one more than a report holds: truncated
			}
		}
	}
	return rs
}

// sentenceDiagnostic returns the line at i with the following lines up to
// a blank one, and the first line with a reply code after it when those
// have none.
func sentenceDiagnostic(lines []string, i int, nextCode []int) string {
	var b []string
	size := 0
	for j := i; j < len(lines) && j < i+8 && size < maxDiagnostic; j++ {
		l := strings.TrimSpace(lines[j])
		if l == "" && j > i {
			break
		}
		l = capString(l, maxDiagnostic-size)
		b = append(b, l)
		size += len(l) + 1
	}
	d := strings.Join(b, " ")
	switch {
	case hasCode(d):
	case nextCode[i] >= 0:
		d += " " + capString(strings.TrimSpace(lines[nextCode[i]]), maxDiagnostic)
	default:
		// No code anywhere: the reason is in words, often in the
		// paragraph that follows ("Possible causes: ...").
		d += " " + nextParagraph(lines, i+len(b))
	}
	return d
}

// nextParagraph returns the lines of the paragraph that starts after
// lines[i:] (blank lines skipped), joined and capped.
func nextParagraph(lines []string, i int) string {
	for i < len(lines) && strings.TrimSpace(lines[i]) == "" {
		i++
	}
	var b []string
	size := 0
	for ; i < len(lines) && len(b) < 6 && size < maxDiagnostic; i++ {
		l := strings.TrimSpace(lines[i])
		if l == "" {
			break
		}
		l = capString(l, maxDiagnostic-size)
		b = append(b, l)
		size += len(l) + 1
	}
	return strings.Join(b, " ")
}

// capString cuts s to at most n bytes.
func capString(s string, n int) string {
	if len(s) > n {
		return s[:max(n, 0)]
	}
	return s
}

// containsFold reports whether s contains the lowercase ASCII word w in
// any case, without lowercasing s.
func containsFold(s, w string) bool {
	for off := 0; off+len(w) <= len(s); {
		i := indexFoldByte(s[off:], w[0])
		if i < 0 {
			return false
		}
		off += i
		if off+len(w) <= len(s) && strings.EqualFold(s[off:off+len(w)], w) {
			return true
		}
		off++
	}
	return false
}

// indexFoldByte returns the first index of the lowercase ASCII byte c, in
// either case, in s.
func indexFoldByte(s string, c byte) int {
	if 'a' <= c && c <= 'z' {
		i, j := strings.IndexByte(s, c), strings.IndexByte(s, c-'a'+'A')
		if i < 0 || j >= 0 && j < i {
			return j
		}
		return i
	}
	return strings.IndexByte(s, c)
}

// contactBefore reports whether the words before s[i] offer the address
// as a contact ("For further assistance, please contact <a@b>"), not as
// a failure.
func contactBefore(s string, i int) bool {
	before := s[:max(i, 0)]
	return containsFold(before, "contact") || containsFold(before, "assistance") || containsFold(before, "questions")
}

// bracketed reports whether s[i:j] is in angle brackets.
func bracketed(s string, i, j int) bool {
	return i > 0 && j < len(s) && s[i-1] == '<' && s[j] == '>'
}

// nextAddress returns the first plausible address in s[off:], whether it
// is literal (the whole token, see tokenStart and tokenEnd), and the offset
// after it.
func nextAddress(s string, off int) (addr string, literal bool, next int) {
	for off < len(s) {
		at := strings.IndexByte(s[off:], '@')
		if at < 0 {
			break
		}
		at += off
		start, end := addressAround(s, at)
		start = max(start, off)
		raw := s[start:end]
		a := strings.TrimLeft(strings.TrimRight(raw, ".-"), ".-")
		if plausibleAddress(a) && !strings.HasPrefix(a, "@") {
			norm := normalizeAddress(a)
			lit := strings.TrimRight(raw, ".") == a && tokenStart(s, start) && tokenEnd(s, start+len(a)) &&
				literalForm(a) && sameAddress(a, norm)
			return norm, lit, end
		}
		off = at + 1
	}
	return "", false, len(s)
}

// failedRecipientsHeader reads Exim's X-Failed-Recipients header.
func failedRecipientsHeader(m *msg) map[string]bool {
	if !m.headerOK {
		return nil
	}
	var set map[string]bool
	for _, r := range failedOrder(m) {
		if set == nil {
			set = map[string]bool{}
		}
		set[strings.ToLower(r.Address)] = true
	}
	return set
}

// failedOrder returns the addresses of X-Failed-Recipients in order, each
// literal when it is the whole of its comma-separated item.
func failedOrder(m *msg) []Recipient {
	// Several recognisers ask; the header is read once.
	if !m.failedDone {
		m.failed, m.failedDone = readFailedOrder(m), true
	}
	return m.failed
}

func readFailedOrder(m *msg) []Recipient {
	var out []Recipient
	for v := range m.header.values("X-Failed-Recipients") {
		for part := range strings.SplitSeq(v, ",") {
			if len(out) > m.maxRecipients {
				return out // one more than a report holds: truncated
			}
			if a := addressIn(part); a != "" {
				out = append(out, Recipient{Address: a, Literal: isLiteral(part, a)})
			}
		}
	}
	return out
}

// firstDiagnostic returns the first line of the text that carries an SMTP
// reply or status code, for recipients the text names nowhere else.
func firstDiagnostic(text string) string {
	for _, l := range textLines(text) {
		if findStatus(l) != "" || findReplyCode(l) != "" {
			return strings.TrimSpace(l)
		}
	}
	return ""
}

// delayPhrases are how warnings say that delivery goes on: a report in
// these words is a delay, never a failure.
var delayPhrases = []string{"will be retried", "still trying", "this is a warning", "will keep trying", "keep trying to deliver",
	"has not yet been delivered", "not been delivered yet", "has been delayed", "is delayed", "delivery attempts will continue",
	"will continue to try", "will try again", "will retry", "no action is required on your part",
	"you do not need to resend", "you don't need to resend", "warning message only", "still in the queue",
	"temporarily deferred", "delivery delayed", "delayed mail"}

// delayIndex finds any of delayPhrases (one group) in one pass.
var delayIndex = sync.OnceValue(func() *phraseTable { return newPhraseTable(delayPhrases) })

// markDelayed sets the action of text-only recipients: a warning that
// delivery is still being tried is "delayed", anything else "failed".
func markDelayed(m *msg, rs []Recipient, text string) {
	low := m.lowerOf(text)
	delayed := delayIndex().firstGroup(low) == 0 ||
		strings.Contains(low, "is a temporary error") && !strings.Contains(low, "permanent")
	for i := range rs {
		if rs[i].Action != "" {
			continue
		}
		if delayed {
			rs[i].Action = "delayed"
		} else {
			rs[i].Action = "failed"
		}
	}
}
