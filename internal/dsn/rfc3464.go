package dsn

import (
	"strings"
)

// This file reads the message/delivery-status body of RFC 3464 section 2
// (and its RFC 6533 section 3 twin, message/global-delivery-status):
//
//	per-message-fields   (Reporting-MTA, Arrival-Date, X-Postfix-Queue-ID, ...)
//	<blank line>
//	per-recipient-fields (Final-Recipient, Action, Status, Diagnostic-Code, ...)
//	[<blank line> per-recipient-fields ...]
//
// The fields use header syntax (RFC 3464 section 2.1: "name: value" lines,
// continued by lines that start with white space). The reading is lenient on
// purpose: real reports miss the blank lines, add junk lines, leave out the
// address type or wrap addresses in angle brackets. go-message's header
// reader stops at the first malformed line, which would lose the rest of the
// report, so the fields are split here.

// maxFieldBytes bounds the value of one field.
const maxFieldBytes = 4096

// field is one "name: value" line, name lowercased.
type field struct {
	name, value string
}

// eachField calls fn with each field of s in turn, a field once its
// continuation lines are read, with an empty field marking each blank line
// (a group boundary), until fn returns false. The fields are substrings of
// s, but for folded values, joined in the arena a (nil: the heap), and
// names not in lower case already.
func eachField(s string, a *arena, fn func(field) bool) {
	var cur field
	have, blank := false, false
	emit := func() bool {
		if have {
			have = false
			if !fn(cur) {
				return false
			}
		}
		if blank {
			blank = false
			return fn(field{})
		}
		return true
	}
	for len(s) > 0 {
		var line string
		if i := strings.IndexByte(s, '\n'); i >= 0 {
			line, s = s[:i], s[i+1:]
		} else {
			line, s = s, ""
		}
		line = strings.TrimRight(line, "\r")
		if len(strings.TrimSpace(line)) == 0 {
			// A blank line ends a group; several count once, and
			// none before the first field.
			if have {
				blank = true
			}
			continue
		}
		if line[0] == ' ' || line[0] == '\t' {
			// Continuation (RFC 5322 section 2.2.3 folding). A
			// field longer than maxFieldBytes is cut: no real one
			// is, and appending without end would be quadratic.
			if have && !blank && len(cur.value) < maxFieldBytes {
				cur.value = a.join(cur.value, " ", strings.TrimSpace(line))
			}
			continue
		}
		i := strings.IndexByte(line, ':')
		if i <= 0 {
			continue
		}
		name := lowerFieldName(strings.TrimSpace(line[:i]))
		if strings.ContainsAny(name, " \t") {
			continue
		}
		if !emit() {
			return
		}
		cur, have = field{name: name, value: strings.TrimSpace(line[i+1:])}, true
	}
	emit()
}

// lowerFieldName is strings.ToLower of a field name, without a copy for
// the names of RFC 3464 and of a header that reports and recognisers read.
func lowerFieldName(name string) string { return knownLower(name, knownFieldNames[:]) }

// knownLower is strings.ToLower(s), without a copy when s is one of the
// lower-case ASCII names, written in any case. Of equal length and equal
// under case folding, s is ASCII too: a rune beyond ASCII takes two bytes
// or more, and an invalid byte folds to nothing in ASCII.
func knownLower(s string, names []string) string {
	for _, k := range names {
		if len(k) == len(s) && strings.EqualFold(k, s) {
			return k
		}
	}
	return strings.ToLower(s)
}

var knownFieldNames = [...]string{"final-recipient", "original-recipient", "action", "status",
	"diagnostic-code", "remote-mta", "reporting-mta", "received-from-mta", "arrival-date",
	"last-attempt-date", "will-retry-until", "original-envelope-id", "dsn-gateway",
	"x-postfix-sender", "x-postfix-queue-id", "x-actual-recipient", "x-original-message-id",
	"from", "to", "subject", "date", "message-id", "return-path", "received", "content-type",
	"mime-version", "content-transfer-encoding", "x-mailer", "reply-to", "sender"}

// parseDeliveryStatus reads one delivery-status body into rep, joining
// folded values in the arena a (nil: the heap).
func parseDeliveryStatus(rep *Report, s string, max int, a *arena) {
	var cur *Recipient
	// hasFinal, hasOrig and hasFields say what the current recipient
	// already holds, to split recipients when blank lines are missing.
	var hasFinal, hasOrig, hasFields bool
	var pending []field
	full := false // max reached: the rest is not read
	start := func() {
		if cur == nil {
			cur = &Recipient{}
			for _, f := range pending {
				applyRecipientField(cur, f)
			}
			pending = pending[:0]
		}
	}
	flush := func() {
		if cur != nil && (cur.Address != "" || cur.OriginalAddress != "") {
			if !plausibleAddress(cur.Address) && !localAddress(cur.Address) {
				// RFC 3464 section 2.3.2 makes Final-Recipient
				// required and an address; some MTAs give only
				// Original-Recipient, a source route
				// ("@relay:user@host"), a pipe or a file.
				switch {
				case plausibleAddress(cur.OriginalAddress):
					cur.Address, cur.Literal, cur.FromOriginal = cur.OriginalAddress, cur.OriginalLiteral, true
				case addressIn(cur.Address) != "" && !strings.HasPrefix(cur.Address, "@"):
					cur.Address, cur.Literal = addressIn(cur.Address), false
				}
			}
			if len(rep.Recipients) < max {
				rep.Recipients = append(rep.Recipients, *cur)
			} else {
				rep.Truncated, full = true, true
			}
		}
		cur, hasFinal, hasOrig, hasFields = nil, false, false, false
	}
	// Reading stops at the first recipient over max: the rest of a
	// huge report costs nothing.
	eachField(s, a, func(f field) bool {
		switch f.name {
		case "":
			flush()
			pending = pending[:0]
			return !full
		case "reporting-mta":
			// Section 2.2.2: mta-name-type ";" mta-name.
			if rep.ReportingMTA == "" {
				rep.ReportingMTA = stripType(f.value)
			}
			return true
		case "original-recipient", "x-actual-recipient":
			// Section 2.3.1. It comes before or just after
			// Final-Recipient; after other fields it starts the next
			// recipient.
			if hasOrig || hasFinal && hasFields {
				flush()
			}
			start()
			hasOrig = true
			if f.name == "original-recipient" || cur.OriginalAddress == "" {
				cur.OriginalAddress = recipientAddress(f.value)
				cur.OriginalLiteral = isLiteral(f.value, cur.OriginalAddress)
			}
			return !full
		case "final-recipient":
			// Section 2.3.2.
			if hasFinal {
				flush()
			}
			start()
			hasFinal = true
			cur.Address = recipientAddress(f.value)
			cur.Literal = isLiteral(f.value, cur.Address)
			return !full
		}
		if cur == nil {
			// A recipient's field before its Final-Recipient
			// (Facebook puts Diagnostic-Code first), or a
			// per-message field we do not need.
			if recipientField(f.name) && len(pending) < 8 {
				pending = append(pending, f)
			}
			return true
		}
		hasFields = true
		applyRecipientField(cur, f)
		return true
	})
	flush()
}

// recipientField reports the per-recipient fields applyRecipientField
// reads.
func recipientField(name string) bool {
	switch name {
	case "action", "status", "remote-mta", "diagnostic-code":
		return true
	}
	return false
}

// applyRecipientField sets the per-recipient field f (RFC 3464 section
// 2.3) on r.
func applyRecipientField(r *Recipient, f field) {
	cur := r
	{
		switch f.name {
		case "action":
			cur.Action = normalizeAction(f.value)
		case "status":
			// Section 2.3.4, an RFC 3463 code.
			cur.Status = findStatus(f.value)
		case "remote-mta":
			// Section 2.3.5.
			cur.RemoteMTA = stripType(f.value)
		case "diagnostic-code":
			// Section 2.3.6: diagnostic-type ";" *text. The type is
			// often "smtp", sometimes "X-Postfix", "X-Unix" or absent.
			if cur.Diagnostic == "" {
				cur.Diagnostic = stripType(f.value)
			}
		}
	}
}

// normalizeAction reads an Action field (RFC 3464 section 2.3.3). Some MTAs
// add a comment ("failed (bad address)") or use words of their own
// ("expired", "failure"), which all mean the message was not delivered.
func normalizeAction(v string) string {
	a := strings.ToLower(strings.TrimSpace(v))
	if i := strings.IndexAny(a, " \t(;"); i >= 0 {
		a = a[:i]
	}
	switch {
	case a == "":
		return ""
	case strings.HasPrefix(a, "delay"):
		return "delayed"
	case strings.HasPrefix(a, "deliver"):
		return "delivered"
	case strings.HasPrefix(a, "relay"):
		return "relayed"
	case strings.HasPrefix(a, "expand"):
		return "expanded"
	}
	return "failed"
}

// stripType removes the "type;" prefix of an RFC 3464 typed field
// (address-type, mta-name-type, diagnostic-type), when there is one.
func stripType(v string) string {
	i := strings.IndexByte(v, ';')
	if i < 0 {
		return strings.TrimSpace(v)
	}
	typ := strings.TrimSpace(v[:i])
	if typ == "" || strings.ContainsAny(typ, " \t<>@\"") {
		return strings.TrimSpace(v)
	}
	return strings.TrimSpace(v[i+1:])
}

// recipientAddress reads the value of Final-Recipient or Original-Recipient
// (RFC 3464 sections 2.3.1 and 2.3.2): address-type ";" generic-address.
// The address type is "rfc822" (RFC 3464), "utf-8" (RFC 6533 section 3.2)
// or missing in broken reports.
func recipientAddress(v string) string {
	typ := ""
	if i := strings.IndexByte(v, ';'); i >= 0 {
		t := strings.TrimSpace(v[:i])
		if t != "" && !strings.ContainsAny(t, " \t<>@\"") {
			typ = strings.ToLower(t)
			v = v[i+1:]
		}
	}
	raw := v
	v = cleanAddress(v)
	if !plausibleAddress(v) {
		// A pipe or file recipient of Exim or Sendmail ("|/usr/bin/prog
		// user@example.com", "/home/user/.forward/user@example.com"):
		// the address inside is the one that failed.
		if a := addressIn(raw[strings.LastIndexByte(raw, '/')+1:]); a != "" {
			v = a
		} else if a := addressIn(raw); a != "" && !strings.ContainsAny(a, "/|") {
			v = a
		}
	}
	switch typ {
	case "utf-8":
		v = decodeUTF8Addr(v)
	default:
		v = decodeXtext(v)
	}
	return normalizeAddress(v)
}

// isLiteral reports whether addr is the value v of a Final-Recipient or
// Original-Recipient field as written: v without its address type, the
// white space around it and one pair of angle brackets, with the domain
// lowercased, and nothing else changed. An address the parser had to dig
// out, decode or trim is not literal: acting on it would act on an address
// that Postfix never tried.
func isLiteral(v, addr string) bool {
	if i := strings.IndexByte(v, ';'); i >= 0 {
		if t := strings.TrimSpace(v[:i]); t != "" && !strings.ContainsAny(t, " \t<>@\"") {
			v = v[i+1:]
		}
	}
	v = strings.TrimSpace(v)
	if strings.HasPrefix(v, "<") && strings.HasSuffix(v, ">") {
		v = strings.TrimSpace(v[1 : len(v)-1])
	}
	return addr != "" && literalForm(addr) && sameAddress(v, addr)
}

// sameAddress reports whether raw, as a report wrote it, is addr after
// nothing but lowercasing the ASCII letters of its domain (and dropping
// the one trailing dot of the root: "example.net." but not "example.net..",
// which is no domain). Unicode case folding is left out on purpose:
// it maps other characters to ASCII ones (the Kelvin sign to "k"), which
// would let one address pass for another.
func sameAddress(raw, addr string) bool {
	raw = strings.TrimSpace(raw)
	i, j := strings.LastIndexByte(raw, '@'), strings.LastIndexByte(addr, '@')
	if i < 0 || j < 0 || raw[:i] != addr[:j] {
		return false
	}
	return asciiLower(strings.TrimSuffix(raw[i+1:], ".")) == addr[j+1:]
}

// localAddress reports an address at a host of the local network
// ("user@mailhub0"): a domain of one label, which RFC 5321 allows between
// hosts that know it. It is the address that failed, though never literal
// (literalForm wants a dotted domain).
func localAddress(s string) bool {
	at := strings.LastIndexByte(s, '@')
	if at <= 0 || at == len(s)-1 || !plausibleAddress(s[:at]+"@x.invalid") {
		return false
	}
	for _, c := range []byte(s[at+1:]) {
		if !isAlnum(c) && c != '-' {
			return false
		}
	}
	return true
}

// cleanAddress picks the address out of "<a@b>", "a@b (comment)",
// "\"Name\" <a@b>" and similar.
func cleanAddress(v string) string {
	v = strings.TrimSpace(v)
	if i := strings.IndexByte(v, '<'); i >= 0 {
		if j := strings.IndexByte(v[i:], '>'); j > 0 {
			inner := strings.TrimSpace(v[i+1 : i+j])
			if inner != "" {
				return inner
			}
		}
	}
	// Drop a trailing comment, keeping quoted local parts that contain
	// spaces.
	if !strings.HasPrefix(v, `"`) {
		if i := strings.IndexAny(v, " \t("); i > 0 {
			v = v[:i]
		}
	}
	return strings.Trim(v, "<>'`,;:.[] \t")
}

// normalizeAddress lowercases the domain (domains are case-insensitive,
// RFC 5321 section 2.4; local parts are not, so they are left alone).
func normalizeAddress(a string) string {
	a = strings.TrimSpace(a)
	i := strings.LastIndexByte(a, '@')
	if i < 0 {
		return a
	}
	return a[:i] + "@" + strings.ToLower(strings.TrimRight(a[i+1:], "."))
}
