package dsn

// This file reads bounces that arrive inside another message: a bounce
// that someone forwarded as an attachment (message/rfc822, RFC 2046
// section 5.2.1), or a bounce that was itself returned by a second mail
// system. The attached message is parsed like any other, one level deeper
// (within Parser.MaxDepth); what it reports is the report, and the message
// it returned is the original. A bounce forwarded inline, quoted with ">",
// is read by the plain-text recognisers, which skip the quoting.

// forwarded returns the report of the bounce attached to m, or nil when
// there is none.
func (p *Parser) forwarded(m *msg, depth int) *Report {
	if len(m.returnedRaw) == 0 || depth >= p.maxDepth() || *m.budget <= 0 {
		return nil
	}
	inner := p.read(skipFromLine(m.returnedRaw), m.budget, m.scan, m.arena)
	sub := p.recognise(inner, depth+1)
	if len(sub.Recipients) == 0 {
		return nil
	}
	m.forwarded = inner
	sub.Format = "forwarded/" + sub.Format
	return sub
}
