package dsn

import (
	"strings"
	"unicode"
	"unsafe"
)

// A recogniser reads one non-standard bounce format. It returns the
// recipients it found, or none when the message is not in its format.
type recogniser struct {
	name  string
	parse func(m *msg) []Recipient
	// anySender is set for formats that identify themselves beyond
	// doubt (a JSON notification), which are read whoever sent them;
	// the others only read mail that may be a bounce (mayBeBounce).
	anySender bool
}

// recognisers are tried in order after the standard report parts; the first
// that finds recipients wins. Specific formats come before generic ones.
var recognisers = []recogniser{
	{name: "amazonses", parse: parseSES, anySender: true},
	{name: "googlegroups", parse: parseGoogleGroups},
	{name: "rfc3464-inline", parse: parseInlineStatus},
	{name: "yahoo", parse: parseYahoo},
	{name: "qmail", parse: parseQmail},
	{name: "exim", parse: parseExim},
	{name: "sendmail", parse: parseSendmail},
	{name: "exchange", parse: parseExchange},
	{name: "gmail", parse: parseGmail},
	{name: "text", parse: parseGeneric},
}

// recognise decides what kind of message m is and reads its recipients.
func (p *Parser) recognise(m *msg, depth int) *Report {
	rep := &Report{Recipients: []Recipient{}, Truncated: m.truncated}
	max := p.maxRecipients()

	// RFC 3464 / RFC 6533 report: the standard, and the most common.
	for _, b := range m.status {
		// Read without a copy: a status part is a slice of the
		// message or a buffer of its own, neither changed while the
		// message is parsed, and detach copies what the report keeps.
		parseDeliveryStatus(rep, unsafe.String(unsafe.SliceData(b), len(b)), max, m.arena)
	}
	if len(rep.Recipients) > 0 {
		rep.Format = "rfc3464"
		// The text part of some reports says more than their fields
		// (a remote reply that Diagnostic-Code lacks, the address
		// behind a source route).
		mergeText(rep, m)
		return rep
	}

	if isFeedback(m) {
		rep.Format, rep.Kind = "arf", "feedback"
		return rep
	}

	if kind := sesOther(m); kind != "" {
		rep.Format, rep.Kind = "amazonses", kind
		return rep
	}

	// RFC 3834 auto-reply (vacation, out of office).
	if isAutoReply(m) {
		rep.Format, rep.Kind = "rfc3834", "vacation"
		return rep
	}

	gate := mayBeBounce(m)
	for _, r := range recognisers {
		if !gate && !r.anySender {
			continue
		}
		rs := r.parse(m)
		if len(rs) == 0 {
			continue
		}
		if len(rs) > max {
			rs, rep.Truncated = rs[:max], true
		}
		rep.Format, rep.Recipients = r.name, rs
		return rep
	}

	// A report or mail system's bounce that names no recipient anywhere
	// (Postfix's "Delivery report unavailable", V5 Sendmail's bare
	// transcript): the returned message's single To address is the one
	// that failed.
	if r, ok := returnedRecipient(m); ok {
		rep.Format, rep.Recipients = "returned-to", []Recipient{r}
		return rep
	}

	if sub := p.forwarded(m, depth); sub != nil {
		return sub
	}
	return rep
}

// mergeText completes report fields from the human-readable part: the
// remote server's reply when Diagnostic-Code is missing, and the address
// when Final-Recipient holds none (a source route, a bare domain).
func mergeText(rep *Report, m *msg) {
	var text []Recipient
	done := false
	lines := func() []Recipient {
		if !done {
			text, done = recipientLines(m.body(), nil, m.maxRecipients), true
		}
		return text
	}
	var failed []Recipient
	if m.headerOK {
		failed = failedOrder(m)
	}
	for i := range rep.Recipients {
		r := &rep.Recipients[i]
		if !plausibleAddress(r.Address) && !localAddress(r.Address) {
			// Final-Recipient names no address (a file, a pipe, a
			// source route): the report's own header (Exim's
			// X-Failed-Recipients) or text may. Swapped in: shown,
			// never literal.
			switch {
			case len(failed) == len(rep.Recipients):
				r.Address, r.Literal = failed[i].Address, false
			case len(lines()) == len(rep.Recipients):
				r.Address, r.Literal = lines()[i].Address, false
			}
		}
		if r.Diagnostic != "" {
			continue
		}
		for _, t := range lines() {
			if strings.EqualFold(t.Address, r.Address) {
				r.Diagnostic = t.Diagnostic
				break
			}
		}
	}
}

// maxDiagnostic bounds a recipient's diagnostic: a remote reply is one to
// a few lines (RFC 5321 section 4.5.3.1.5 allows 512 bytes a line), and the
// reason is looked for in it phrase by phrase.
const maxDiagnostic = 2048

// finish fills in what the recognisers left out: status inferred from the
// diagnostic, reason, permanence, action, and the report's kind.
func (p *Parser) finish(rep *Report, a *arena) {
	seen := make(map[string]int, len(rep.Recipients))
	out := rep.Recipients[:0]
	// Recipients of one report often share their diagnostic (one
	// sentence naming them all): each distinct one is cleaned and
	// classified once.
	type outcome struct {
		status, action, reason string
		permanent              bool
	}
	diags := map[string]string{}
	done := map[[4]string]outcome{}
	for _, r := range rep.Recipients {
		r.Address = normalizeAddress(r.Address)
		if r.Address == "" {
			continue
		}
		if d, ok := diags[r.Diagnostic]; ok {
			r.Diagnostic = d
		} else {
			d = collapseSpace(r.Diagnostic, a)
			if len(d) > maxDiagnostic {
				d = strings.ToValidUTF8(d[:maxDiagnostic], "")
			}
			diags[r.Diagnostic], r.Diagnostic = d, d
		}
		key := strings.ToLower(r.Address)
		if j, ok := seen[key]; ok {
			// The same recipient named twice: literal if one of
			// the readings was.
			if out[j].Address == r.Address && r.Literal {
				out[j].Literal = true
			}
			continue
		}
		seen[key] = len(out)
		k := [4]string{r.Status, r.Action, r.Reason, r.Diagnostic}
		if o, ok := done[k]; ok {
			r.Status, r.Action, r.Reason, r.Permanent = o.status, o.action, o.reason, o.permanent
		} else {
			completeRecipient(&r, a)
			done[k] = outcome{r.Status, r.Action, r.Reason, r.Permanent}
		}
		out = append(out, r)
	}
	rep.Recipients = out
	if rep.Kind != "" {
		rep.Bounce = false
		return
	}
	delivered := false
	for _, r := range rep.Recipients {
		switch r.Action {
		case "failed", "delayed":
			rep.Bounce = true
		case "delivered", "relayed", "expanded":
			delivered = true
		}
	}
	switch {
	case rep.Bounce:
		rep.Kind = "bounce"
	case delivered:
		rep.Kind = "delivered"
	}
}

// completeRecipient infers status, reason, action and permanence.
func completeRecipient(r *Recipient, a *arena) {
	// The diagnostic is the remote server's own words; its status code is
	// more specific than the one the reporting MTA derived (Sendmail
	// reports 4.4.7 for a "450 4.7.1" reply), so it wins unless it is a
	// generic x.0.0 or of another class.
	if s := lastStatus(r.Diagnostic); s != "" && !genericStatus(s) {
		if r.Status == "" || s[0] == r.Status[0] || r.Status[0] == '2' && r.Action == "failed" {
			r.Status = s
		}
	} else if r.Status == "" && s != "" {
		r.Status = s
	}
	if r.Action == "" {
		switch {
		case strings.HasPrefix(r.Status, "2"):
			r.Action = "delivered"
		case strings.HasPrefix(r.Status, "4"):
			r.Action = "delayed"
		default:
			r.Action = "failed"
		}
	}
	switch r.Action {
	case "delivered", "relayed", "expanded":
		if r.Reason == "" {
			r.Reason = "delivered"
		}
		return
	}
	if r.Reason == "" {
		r.Reason = classify(r.Status, a.lower(r.Diagnostic))
	}
	if r.Status == "" {
		class := "5"
		if code := findReplyCode(r.Diagnostic); code != "" && code[0] == '4' || r.Action == "delayed" {
			class = "4"
		}
		if s, ok := statusForReason[r.Reason]; ok {
			r.Status = class + s[1:]
		} else if class == "4" {
			r.Status = "4.0.0"
		} else {
			r.Status = "5.0.0"
		}
	}
	r.Permanent = r.Status[0] == '5' && r.Action != "delayed"
}

// collapseSpace trims s and turns each run of white space in it into one
// space: strings.Join(strings.Fields(s), " "), made in one pass in the
// arena a (nil: the heap).
func collapseSpace(s string, a *arena) string {
	if singleSpaced(s) {
		return s
	}
	b := a.alloc(len(s))
	n := 0
	word := -1 // where the word being read starts; -1 between words
	for i, c := range s {
		switch space := unicode.IsSpace(c); {
		case space && word >= 0:
			n = appendWord(b, n, s[word:i])
			word = -1
		case !space && word < 0:
			word = i
		}
	}
	if word >= 0 {
		n = appendWord(b, n, s[word:])
	}
	a.shrink(b, n)
	return unsafe.String(unsafe.SliceData(b), n)
}

// appendWord writes w into b at n, after a space unless it is the first
// word, and returns where it ends.
func appendWord(b []byte, n int, w string) int {
	if n > 0 {
		b[n] = ' '
		n++
	}
	return n + copy(b[n:], w)
}

// singleSpaced reports whether s is ASCII with no white space but single
// spaces between words, which collapseSpace leaves as it is.
func singleSpaced(s string) bool {
	for i := 0; i < len(s); i++ {
		switch c := s[i]; {
		case c >= 0x80 || c == '\t' || c == '\n' || c == '\v' || c == '\f' || c == '\r':
			return false
		case c == ' ' && (i == 0 || i == len(s)-1 || s[i+1] == ' '):
			return false
		}
	}
	return true
}
