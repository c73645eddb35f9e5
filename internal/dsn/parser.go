package dsn

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"io"
	"strings"
	"sync"
	"unsafe"
)

// ErrTooLarge is returned, together with the report of what was read up to
// that point, when a message is larger than Parser.MaxBytes.
var ErrTooLarge = errors.New("dsn: message too large")

// ErrInternal reports a bug of this package met while reading a message;
// the caller should treat the message as if it were not a bounce.
var ErrInternal = errors.New("dsn: internal error")

// Default limits, chosen for a milter that reads one bounce at a time:
// Postfix returns at most bounce_size_limit (50 000) bytes of the original
// message, so real bounces are far below these. A bounce reports the
// recipients of one message that failed at one server; MediaGoblin's mail
// has one.
const (
	DefaultMaxBytes      = 10 << 20
	DefaultMaxRecipients = 100
	DefaultMaxDepth      = 10
	DefaultMaxParts      = 100
)

// maxTextBytes bounds how much human-readable text the plain-text
// recognisers look at: the explanation a mail server writes is at the top.
const maxTextBytes = 32 << 10

// maxStatusBytes bounds one delivery-status part (or returned header):
// DefaultMaxRecipients recipients of a few fields each fit in far less.
const maxStatusBytes = 1 << 20

// Parser reads bounces within limits. The zero value uses the defaults.
// A Parser has no mutable state and may be used by many goroutines.
type Parser struct {
	// MaxBytes is how many bytes of one message are read; the rest is
	// skipped and ErrTooLarge returned with what was found.
	MaxBytes int64
	// MaxRecipients caps the recipients of one report; more are dropped
	// and the report marked Truncated.
	MaxRecipients int
	// MaxDepth caps how deep MIME parts and attached messages are followed.
	MaxDepth int
	// MaxParts caps how many MIME parts of one message are looked at.
	MaxParts int

	// keepUnread makes the header reader keep the fields unreadField
	// names, for the test that leaving them out changes no report.
	keepUnread bool
}

func (p *Parser) maxBytes() int64 {
	if p == nil || p.MaxBytes <= 0 {
		return DefaultMaxBytes
	}
	return p.MaxBytes
}

func (p *Parser) maxRecipients() int {
	if p == nil || p.MaxRecipients <= 0 {
		return DefaultMaxRecipients
	}
	return p.MaxRecipients
}

func (p *Parser) maxDepth() int {
	if p == nil || p.MaxDepth <= 0 {
		return DefaultMaxDepth
	}
	return p.MaxDepth
}

func (p *Parser) maxParts() int {
	if p == nil || p.MaxParts <= 0 {
		return DefaultMaxParts
	}
	return p.MaxParts
}

// Parse reads one message with the default limits. See Parser.Parse.
func Parse(r io.Reader) (*Report, error) {
	var p Parser
	return p.Parse(r)
}

// ParseAll reads one message, or several in mbox form, with the default
// limits. See Parser.ParseAll.
func ParseAll(r io.Reader) ([]*Report, error) {
	var p Parser
	return p.ParseAll(r)
}

// Parse reads one message from r and says what it reports. A leading mbox
// "From " line is skipped. A message that is not a bounce is not an error:
// its report has Bounce false. The error is non-nil only when r fails, when
// the message exceeds MaxBytes (ErrTooLarge: the report of what was read is
// returned too) or on ErrInternal.
func (p *Parser) Parse(r io.Reader) (*Report, error) {
	b, err := readAll(r, p.maxBytes()+1)
	if err != nil {
		return nil, fmt.Errorf("read message: %w", err)
	}
	return p.ParseBytes(b)
}

// ParseBytes is Parse of a message already in memory, which it reads
// without copying and does not change.
func (p *Parser) ParseBytes(b []byte) (*Report, error) {
	limit := p.maxBytes()
	var tooLarge error
	if int64(len(b)) > limit {
		// Whole lines only, as ParseAll keeps them: an address the
		// limit cut ("alice@example.co") must not be read as one.
		b = cutToLine(b[:limit])
		tooLarge = fmt.Errorf("message larger than %d bytes: %w", limit, ErrTooLarge)
	}
	rep, err := p.parseBytes(skipFromLine(b))
	if err != nil {
		return rep, err
	}
	if tooLarge != nil {
		rep.Truncated = true
	}
	return rep, tooLarge
}

// readAll reads up to limit bytes of r. When r knows its length (a
// bytes.Reader, a bytes.Buffer) the buffer is allocated once at that size,
// instead of growing by doubling.
func readAll(r io.Reader, limit int64) ([]byte, error) {
	size := int64(512)
	if l, ok := r.(interface{ Len() int }); ok {
		size = min(int64(l.Len()), limit) + bytes.MinRead
	}
	buf := bytes.NewBuffer(make([]byte, 0, size))
	_, err := buf.ReadFrom(io.LimitReader(r, limit))
	return buf.Bytes(), err
}

// parseBytes turns one whole message into a report. What cannot be read as
// MIME is read as text, so malformed mail is no error. The one error is a
// panic of a recogniser: that is a bug (the fuzz targets hunt for them), but
// a milter reading mail from anyone must survive it, so it comes back as
// ErrInternal with an empty report.
func (p *Parser) parseBytes(b []byte) (rep *Report, err error) {
	defer func() {
		if v := recover(); v != nil {
			rep = &Report{Recipients: []Recipient{}}
			err = fmt.Errorf("%w: %v", ErrInternal, v)
		}
	}()
	// Bytes copied out of MIME parts, across every level of attached
	// messages, are held to the size of the message (and a little for
	// the report parts of an attached bounce): a chain of forwarded
	// messages is not copied again at each level.
	budget := int64(len(b)) + 64<<10
	// Searching multipart bodies for their boundaries is held to a few
	// times the size of the message across all levels: a structure
	// nested deeper than any real mail's is not searched again at each
	// level (see maxScanFactor), unless MaxDepth asks for deeper.
	factor := int64(maxScanFactor)
	if p.maxDepth() > DefaultMaxDepth {
		factor = int64(p.maxDepth()) + 1
	}
	scan := factor*int64(len(b)) + 256<<10
	// The copies the parse makes go to an arena, which the next message
	// reuses: the report is detached from it (and from b) before it is
	// put back. On a panic, the report above is a new one.
	a := getArena()
	defer putArena(a)
	m := p.read(b, &budget, &scan, a)
	rep = p.recognise(m, 0)
	rep.Original = m.original()
	p.finish(rep, a)
	rep.detach()
	return rep, nil
}

// msg is what the recognisers look at: the top-level header, the parts that
// matter, and the text a person would read.
type msg struct {
	raw    []byte
	header header
	// headerOK is false when the top-level header could not be read; then
	// text holds the whole message.
	headerOK bool
	// text is the human-readable part: the first text/plain (or text/html
	// with tags removed) part, or the body of a single-part message.
	text string
	// status holds the bodies of message/delivery-status and
	// message/global-delivery-status parts (RFC 3464, RFC 6533): slices
	// of the message or buffers of their own, never a pooled scratch.
	status [][]byte
	// feedback is set when a message/feedback-report part (RFC 5965) is
	// present.
	feedback bool
	// returned is the header of the returned message, from a
	// message/rfc822, message/global, text/rfc822-headers or
	// message/global-headers part.
	returned    *header
	returnedRaw []byte // body of the attached message, for forwarded bounces
	reportType  string // report-type parameter of multipart/report
	// forwarded is the attached bounce, when m only forwards one; the
	// original is then the one that bounce returned.
	forwarded *msg
	parts     int
	truncated bool
	stop      bool // a limit was reached: read no further part

	// sigPos caches where each signature first occurs (signatureAt).
	sigPos []int

	// excluded caches excluded.
	excluded map[string]bool

	// failed caches failedOrder.
	failed     []Recipient
	failedDone bool

	// quoted caches quotedHeader.
	quoted     *header
	quotedDone bool

	// budget is what may still be copied out of parts, shared by the
	// levels of attached messages.
	budget *int64
	// scan is how many more bytes multipart bodies may be searched for
	// their boundaries, shared likewise.
	scan *int64
	// maxRecipients is Parser.MaxRecipients: the recognisers read one
	// more, to tell that there were more.
	maxRecipients int
	// keepUnread is Parser.keepUnread.
	keepUnread bool
	// arena holds the copies made for this message and the messages
	// attached to it (see arena).
	arena *arena

	// low and cut cache what every recogniser needs: the text with
	// ASCII letters lowercased, and where the returned message starts
	// in it.
	low     string
	lowDone bool
	cut     int
	cutDone bool
}

// lower returns m.text with its ASCII letters lowercased; offsets into it
// are offsets into m.text.
func (m *msg) lower() string {
	if !m.lowDone {
		m.low, m.lowDone = m.arena.lower(m.text), true
	}
	return m.low
}

// lowerOf returns asciiLower(s). When s is part of m.text (a substring,
// as the recognisers cut it), that is the same part of m.lower(), with no
// copy: several recognisers lowercase the text they look at, up to 32 KB.
func (m *msg) lowerOf(s string) string {
	if len(s) > 0 && len(s) <= len(m.text) {
		base := uintptr(unsafe.Pointer(unsafe.StringData(m.text)))
		p := uintptr(unsafe.Pointer(unsafe.StringData(s)))
		if p >= base && p-base <= uintptr(len(m.text)-len(s)) {
			off := int(p - base)
			return m.lower()[off : off+len(s)]
		}
	}
	return m.arena.lower(s)
}

// body returns the text up to the returned message (see returnedCut).
func (m *msg) body() string {
	if !m.cutDone {
		m.cut, m.cutDone = returnedCut(m.lower()), true
	}
	return m.text[:m.cut]
}

func (p *Parser) read(b []byte, budget, scan *int64, a *arena) *msg {
	m := a.msg()
	*m = msg{raw: b, budget: budget, scan: scan, maxRecipients: p.maxRecipients(), keepUnread: p != nil && p.keepUnread, arena: a}
	e := readEntity(m, b)
	if e == nil {
		// No header that can be read: the text recognisers may still
		// find a bounce in it (some tools hand over the body alone).
		m.text = capTextBytes(b, a)
		return m
	}
	m.header = e.header
	m.headerOK = true
	p.walk(m, e, 0)
	if m.text == "" && len(m.status) == 0 && *budget > 0 && !m.stop {
		// A multipart message whose boundary never occurs, or one
		// whose only text is in its preamble: read the body as text
		// (within the budget, and not when a limit stopped the walk:
		// a structure too deep or too large is not read again as text).
		body := rawBody(b)
		if n := min(int64(len(body)), maxTextBytes+1, *budget); n < int64(len(body)) {
			// Cut at a line end whichever limit fell, the budget
			// or maxTextBytes; capTextBytes then applies
			// maxTextBytes, to the same text.
			body = cutToLine(body[:n])
		}
		*budget -= int64(len(body))
		m.text = capTextBytes(body, a)
	}
	return m
}

// maxHeaderBytes bounds the header block of a message: real ones are a
// few kilobytes.
const maxHeaderBytes = 64 << 10

// readEntity reads the message b: its header block, cut at a line end to
// maxHeaderBytes (marking m truncated), and its body. It returns nil when
// the header cannot be read.
func readEntity(m *msg, b []byte) *entity {
	hb, body := b, []byte(nil)
	if len(b) > maxHeaderBytes {
		if end := len(b) - len(rawBody(b)); end > maxHeaderBytes {
			hb = cutToLine(b[:maxHeaderBytes])
			body = b[end:]
			m.truncated = true
		}
	}
	h, n, err := readHeader(hb, m.keepUnread, m.arena)
	if err != nil {
		return nil
	}
	if body == nil {
		body = hb[n:]
	}
	return newEntity(h, body, m.arena)
}

// rawBody returns what follows the header block of a message, whose lines
// end in LF or CRLF, or nil when no blank line ends it within
// maxEntityHeaderBytes: past that bound the message is all header, as
// go-message has it, and no longer searched line by line for its end.
func rawBody(b []byte) []byte {
	if end, ok := headerEnd(b[:min(len(b), maxEntityHeaderBytes)]); ok {
		return b[end:]
	}
	return nil
}

// walk visits the MIME tree within the parser's limits and records the parts
// the recognisers need (RFC 6522 section 3: the report's parts).
func (p *Parser) walk(m *msg, e *entity, depth int) {
	if depth > p.maxDepth() || *m.budget <= 0 {
		// Stop reading altogether: every byte that follows would
		// go through as many boundary scanners as there are levels.
		m.truncated, m.stop = true, true
		return
	}
	m.parts++
	if m.parts > p.maxParts() {
		m.truncated = true
		return
	}
	mediaType := e.mediaType
	if e.badType {
		// Content-Type could not be parsed: read the part as text.
		mediaType = "text/plain"
	}
	if strings.HasPrefix(e.mediaType, "multipart/") {
		if mediaType == "multipart/report" && m.reportType == "" {
			m.reportType = strings.ToLower(e.reportType)
		}
		mr := newMultipartReader(e, m.keepUnread, m.arena)
		mr.scan = m.scan
		for {
			part, err := mr.next()
			if part == nil {
				// A message that ends without its closing boundary
				// (a reporting MTA that cut the returned message short)
				// has been read to its end: nothing of it is left
				// unread, so it is not truncated. Any other error is.
				if err != io.EOF && err != errEndedEarly {
					m.truncated = true
				}
				if err == errScanLimit {
					m.stop = true
				}
				return
			}
			p.walk(m, part, depth+1)
			if m.stop || m.truncated && m.parts > p.maxParts() {
				return
			}
		}
	}
	// body returns the part's content, up to limit bytes and within the
	// budget. Where what is cut off could hold recipients (mark), the
	// report is marked truncated; text beyond maxTextBytes is not.
	// Content that is cut is cut back by cut (cutToLine, or cutToField
	// for fields that may be folded), so that no line, nor an address
	// in it, ends where a limit fell.
	// With scratch, decoded bytes are read into *scratch and valid until
	// it is used again. The content may be a slice of the message: it
	// must not be changed.
	body := func(limit int64, mark bool, scratch *[]byte, cut func([]byte) []byte) []byte {
		n := min(limit, p.maxBytes(), *m.budget)
		b := e.content(n+1, scratch)
		if int64(len(b)) > n {
			b = cut(b[:n])
			if mark || n < limit {
				// Cut where recipients may follow, or out of
				// budget: read no further part, so that the rest
				// is not scanned for boundaries at every level.
				m.truncated, m.stop = true, true
			}
		}
		*m.budget -= int64(len(b))
		return b
	}
	switch mediaType {
	case "message/delivery-status", "message/global-delivery-status":
		m.status = append(m.status, body(maxStatusBytes, true, nil, cutToField))
	case "message/feedback-report":
		m.feedback = true
	case "message/rfc822", "message/global", "message/partial":
		if m.returned != nil {
			return
		}
		if len(m.status) > 0 || m.feedback {
			// The report part came first (RFC 6522 section 3 puts
			// it before the returned message): only the header of
			// the returned message is needed, not its body.
			sp := getScratch()
			if b, err := e.headerBlock(sp); err == nil {
				if h, ok := m.readHeader(b); ok {
					m.returned = &h
				}
			}
			putScratch(sp)
			return
		}
		// It may be a bounce forwarded as an attachment: keep it whole.
		b := body(p.maxBytes(), true, nil, cutToLine)
		m.returnedRaw = b
		if h, ok := m.readHeader(b); ok {
			m.returned = &h
		}
	case "text/rfc822-headers", "message/global-headers":
		if m.returned == nil {
			sp := getScratch()
			if h, ok := m.readHeader(body(maxStatusBytes, false, sp, cutToLine)); ok {
				m.returned = &h
			}
			putScratch(sp)
		}
	case "text/plain", "text/html", "text/enriched":
		if m.text != "" && depth > 0 {
			// Only the first text part explains the bounce; later ones
			// are usually attachments. An HTML part is used only when
			// no plain text came before it.
			return
		}
		sp := getScratch()
		if b := body(maxTextBytes+1, false, sp, cutToLine); mediaType == "text/html" {
			m.text = htmlText(b, m.arena)
		} else {
			m.text = capTextBytes(b, m.arena)
		}
		putScratch(sp)
	default:
		if depth == 0 {
			// A single-part message of an odd type: look at it as text.
			sp := getScratch()
			m.text = capTextBytes(body(maxTextBytes+1, false, sp, cutToLine), m.arena)
			putScratch(sp)
		}
	}
}

// readInto is io.ReadAll into *scratch, which it grows as needed.
func readInto(r io.Reader, scratch *[]byte) []byte {
	b := (*scratch)[:0]
	for {
		if len(b) == cap(b) {
			b = append(b, 0)[:len(b)]
		}
		n, err := r.Read(b[len(b):cap(b)])
		b = b[:len(b)+n]
		if err != nil {
			break
		}
	}
	*scratch = b
	return b
}

// scratchPool holds buffers that part bodies are read into when only a
// string (or parsed header) made from them is kept: one allocation of the
// right size instead of io.ReadAll's growing ones. It holds no state
// between uses.
var scratchPool = sync.Pool{New: func() any { b := make([]byte, 0, 8<<10); return &b }}

func getScratch() *[]byte { return scratchPool.Get().(*[]byte) }

func putScratch(b *[]byte) {
	if cap(*b) <= 64<<10 {
		scratchPool.Put(b)
	}
}

// readHeader parses a header block; a header that cannot be read is none.
func (m *msg) readHeader(b []byte) (header, bool) {
	if h, _, err := readHeader(b, m.keepUnread, m.arena); err == nil {
		return h, true
	}
	return header{}, false
}

// readHeaderBlock reads the lines of r into *scratch up to the blank line
// that ends a header block (included), the end of r, or an error, within
// maxEntityHeaderBytes. The error is the one reading fails with (the end
// of r is none: a header may end there).
func readHeaderBlock(r io.Reader, scratch *[]byte) ([]byte, error) {
	br := getBufio(&headerLimit{r: r, n: maxEntityHeaderBytes})
	defer putBufio(br)
	b := (*scratch)[:0]
	start := true // at the start of a line
	var err error
	for {
		var line []byte
		line, err = br.ReadSlice('\n')
		b = append(b, line...)
		if err != nil && err != bufio.ErrBufferFull {
			break
		}
		if start && err == nil && (len(line) == 1 || len(line) == 2 && line[0] == '\r') {
			break
		}
		start = err == nil
	}
	*scratch = b
	if err == io.EOF {
		err = nil
	}
	return b, err
}

// headerLimit fails reading past n bytes, where io.LimitReader would end:
// a header block may end at the end of its input, but not at the bound.
type headerLimit struct {
	r io.Reader
	n int64
}

func (l *headerLimit) Read(p []byte) (int, error) {
	if l.n <= 0 {
		return 0, errHeaderTooLarge
	}
	if int64(len(p)) > l.n {
		p = p[:l.n]
	}
	n, err := l.r.Read(p)
	l.n -= int64(n)
	return n, err
}

// bufioPool holds the buffered readers readHeaderBlock needs, so that
// each message does not allocate its own: it holds no state between uses.
var bufioPool = sync.Pool{New: func() any { return bufio.NewReader(nil) }}

func getBufio(r io.Reader) *bufio.Reader {
	br := bufioPool.Get().(*bufio.Reader)
	br.Reset(r)
	return br
}

func putBufio(br *bufio.Reader) {
	br.Reset(nil)
	bufioPool.Put(br)
}

// cutToLine returns b, which a limit cut short, up to the end of its last
// whole line: the line the limit fell in is dropped (all of b when it has
// no line end), so that an address cut there ("alice@example.co" of
// "alice@example.com") is not read, let alone as written literally.
// Every limit that cuts text cuts it back with this.
func cutToLine(b []byte) []byte {
	return b[:bytes.LastIndexByte(b, '\n')+1]
}

// cutToField returns a delivery-status part, b, which maxStatusBytes (or
// the budget) cut short, without its last field, which the cut may have
// left incomplete: the fields use header syntax (RFC 3464 section 2.1),
// so a value may go on in continuation lines, and one read in part could
// pass for a literal recipient. When the cut falls in the first line of
// a field, the fields before it are whole; when it falls in a continuation
// line, or at a line end (the next line may be one), the field that line
// belongs to is dropped too.
func cutToField(b []byte) []byte {
	end := len(cutToLine(b))
	if end < len(b) && b[end] != ' ' && b[end] != '\t' {
		return b[:end]
	}
	for end > 0 {
		start := bytes.LastIndexByte(b[:end-1], '\n') + 1
		if c := b[start]; c != ' ' && c != '\t' {
			return b[:start]
		}
		end = start
	}
	return b[:0]
}

// capTextBytes returns the text of a part, b, cut to maxTextBytes (at a
// line end, see cutToLine) and copied into the arena a (nil: the heap)
// with its line ends turned into LF on the way; b, which may be a slice
// of the message, is left as it is.
func capTextBytes(b []byte, a *arena) string {
	if len(b) > maxTextBytes {
		b = cutToLine(b[:maxTextBytes])
	}
	if bytes.IndexByte(b, '\r') < 0 {
		return a.string(b)
	}
	out := a.alloc(len(b))
	return unsafe.String(unsafe.SliceData(out), crlfToLF(out, b))
}

// crlfToLF copies src to dst (at least as long; it may be src itself) with
// each "\r\n" turned into "\n", and returns the length written.
func crlfToLF(dst, src []byte) int {
	w := 0
	for i := 0; i < len(src); i++ {
		if src[i] == '\r' && i+1 < len(src) && src[i+1] == '\n' {
			continue
		}
		dst[w] = src[i]
		w++
	}
	return w
}

// skipFromLine drops an mbox "From " separator line at the start.
func skipFromLine(b []byte) []byte {
	if !bytes.HasPrefix(b, []byte("From ")) {
		return b
	}
	if i := bytes.IndexByte(b, '\n'); i >= 0 {
		return b[i+1:]
	}
	return nil
}

// htmlText turns an HTML part into text good enough for pattern matching:
// tags dropped, block elements ending lines (so that line-oriented
// recognisers keep working), the common entities decoded, then cut to
// maxTextBytes at a line end (see cutToLine) with its line ends turned
// into LF: tags stripped in one pass over b, then entities and line ends
// rewritten in place, in the arena a (nil: the heap): the text is never
// longer than the HTML. TestHTMLText and
// FuzzHTMLText hold it to stripping, replacing and capping one after the
// other.
func htmlText(b []byte, a *arena) string {
	out := a.alloc(len(b))
	w := 0
	in := false
	for i := 0; i < len(b); i++ {
		switch c := b[i]; {
		case c == '<':
			in = true
			if blockTag(b[i+1 : min(len(b), i+4)]) {
				out[w] = '\n'
				w++
			}
		case c == '>' && in:
			in = false
		case !in:
			out[w] = c
			w++
		}
	}
	// Entities, each read once: what a replacement writes is not read
	// again ("&amp;lt;" is "&lt;"), and no entity is shorter than what
	// it stands for, so the text is rewritten in place.
	n := 0
	for r := 0; r < w; {
		if out[r] == '&' {
			if e, ok := entityAt(out[r:w]); ok {
				out[n] = htmlEntities[e].text
				n++
				r += len(htmlEntities[e].name)
				continue
			}
		}
		out[n] = out[r]
		n++
		r++
	}
	// As capTextBytes: cut at a line end to maxTextBytes, and "\r\n"
	// becomes "\n" within the cut text.
	out = out[:n]
	if n > maxTextBytes {
		out = cutToLine(out[:maxTextBytes])
	}
	return unsafe.String(unsafe.SliceData(out), crlfToLF(out, out))
}

// htmlEntities are the entities htmlText decodes.
var htmlEntities = [...]struct {
	name string
	text byte
}{{"&lt;", '<'}, {"&gt;", '>'}, {"&amp;", '&'}, {"&nbsp;", ' '}, {"&quot;", '"'}, {"&#64;", '@'}}

// entityAt returns which of htmlEntities b starts with.
func entityAt(b []byte) (int, bool) {
	for i, e := range htmlEntities {
		if len(b) >= len(e.name) && string(b[:len(e.name)]) == e.name {
			return i, true
		}
	}
	return 0, false
}

// blockTag reports whether the (at most) three bytes after a "<" start
// a tag that ends a line: br, p, /p, div, /di(v), tr or li, in any case.
// Bytes beyond ASCII are lowercased as strings.ToLower does, which can
// turn them into ASCII letters (U+0130 into "i" and a combining dot).
func blockTag(rest []byte) bool {
	var buf [3]byte
	low := buf[:0]
	for _, c := range rest {
		if c >= 0x80 {
			low = []byte(strings.ToLower(string(rest)))
			break
		}
		if 'A' <= c && c <= 'Z' {
			c += 'a' - 'A'
		}
		low = append(low, c)
	}
	for _, p := range [...]string{"br", "p", "/p", "div", "/di", "tr", "li"} {
		if bytes.HasPrefix(low, []byte(p)) {
			return true
		}
	}
	return false
}
