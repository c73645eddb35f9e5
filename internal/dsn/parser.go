package dsn

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"io"
	"strings"
	"sync"

	"github.com/emersion/go-message"
	"github.com/emersion/go-message/textproto"
	// Bounces arrive in every legacy charset there is (ISO-2022-JP,
	// Windows-1252, KOI8-R, ...); this registers their decoders with
	// go-message.
	_ "github.com/emersion/go-message/charset"
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
		b = b[:limit]
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
	m := p.read(b, &budget)
	rep = p.recognise(m, 0)
	rep.Original = m.original()
	p.finish(rep)
	return rep, nil
}

// msg is what the recognisers look at: the top-level header, the parts that
// matter, and the text a person would read.
type msg struct {
	raw    []byte
	header message.Header
	// headerOK is false when the top-level header could not be read; then
	// text holds the whole message.
	headerOK bool
	// text is the human-readable part: the first text/plain (or text/html
	// with tags removed) part, or the body of a single-part message.
	text string
	// status holds the bodies of message/delivery-status and
	// message/global-delivery-status parts (RFC 3464, RFC 6533).
	status [][]byte
	// feedback is set when a message/feedback-report part (RFC 5965) is
	// present.
	feedback bool
	// returned is the header of the returned message, from a
	// message/rfc822, message/global, text/rfc822-headers or
	// message/global-headers part.
	returned    *message.Header
	returnedRaw []byte // body of the attached message, for forwarded bounces
	reportType  string // report-type parameter of multipart/report
	// forwarded is the attached bounce, when m only forwards one; the
	// original is then the one that bounce returned.
	forwarded *msg
	parts     int
	truncated bool
	stop      bool // a limit was reached: read no further part

	// quoted caches quotedHeader.
	quoted     *message.Header
	quotedDone bool

	// budget is what may still be copied out of parts, shared by the
	// levels of attached messages.
	budget *int64
	// keepUnread is Parser.keepUnread.
	keepUnread bool

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
		m.low, m.lowDone = asciiLower(m.text), true
	}
	return m.low
}

// body returns the text up to the returned message (bodyBeforeReturned).
func (m *msg) body() string {
	if !m.cutDone {
		m.cut, m.cutDone = returnedCut(m.lower()), true
	}
	return m.text[:m.cut]
}

func (p *Parser) read(b []byte, budget *int64) *msg {
	m := &msg{raw: b, budget: budget, keepUnread: p != nil && p.keepUnread}
	// An unknown charset or transfer encoding is no reason to stop: the
	// entity is still readable (as raw bytes) and go-message says so.
	e, _ := readEntity(m, b)
	if e == nil {
		// No header that can be read: the text recognisers may still
		// find a bounce in it (some tools hand over the body alone).
		m.text = capText(string(b[:min(len(b), maxTextBytes+1)]))
		return m
	}
	m.header = e.Header
	m.headerOK = true
	p.walk(m, e, 0)
	if m.text == "" && len(m.status) == 0 && *budget > 0 && !m.stop {
		// A multipart message whose boundary never occurs, or one
		// whose only text is in its preamble: read the body as text
		// (within the budget, and not when a limit stopped the walk:
		// a structure too deep or too large is not read again as text).
		body := rawBody(b)
		body = body[:min(int64(len(body)), maxTextBytes+1, *budget)]
		*budget -= int64(len(body))
		m.text = capText(string(body))
	}
	return m
}

// maxHeaderBytes bounds the header block of a message: real ones are a
// few kilobytes, and go-message reads a folded field slowly.
const maxHeaderBytes = 64 << 10

// headerCapped returns a reader of b whose header block is cut, at a line
// end, to maxHeaderBytes (marking m truncated), without copying b.
func headerCapped(m *msg, b []byte) io.Reader {
	if len(b) <= maxHeaderBytes {
		return bytes.NewReader(b)
	}
	end := len(b) - len(rawBody(b)) // where the body starts, or len(b)
	if end <= maxHeaderBytes {
		return bytes.NewReader(b)
	}
	cut := bytes.LastIndexByte(b[:maxHeaderBytes], '\n') + 1
	m.truncated = true
	return io.MultiReader(bytes.NewReader(b[:cut]), strings.NewReader("\r\n"), bytes.NewReader(b[end:]))
}

// rawBody returns what follows the header block of a message, whose lines
// end in LF or CRLF, or nil when no blank line ends it. One pass over the
// lines of the header, however long it is.
func rawBody(b []byte) []byte {
	for off := 0; off < len(b); {
		i := bytes.IndexByte(b[off:], '\n')
		if i < 0 {
			return nil
		}
		line := b[off : off+i]
		off += i + 1
		if len(line) == 0 || len(line) == 1 && line[0] == '\r' {
			return b[off:]
		}
	}
	return nil
}

// walk visits the MIME tree within the parser's limits and records the parts
// the recognisers need (RFC 6522 section 3: the report's parts).
func (p *Parser) walk(m *msg, e *message.Entity, depth int) {
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
	mediaType, params, err := e.Header.ContentType()
	if err != nil || mediaType == "" {
		mediaType = "text/plain"
	}
	if mr := e.MultipartReader(); mr != nil {
		if mediaType == "multipart/report" && m.reportType == "" {
			m.reportType = strings.ToLower(params["report-type"])
		}
		for {
			part, err := mr.NextPart()
			if part == nil || (err != nil && !message.IsUnknownCharset(err) && !message.IsUnknownEncoding(err)) {
				// A message that ends without its closing boundary
				// (a reporting MTA that cut the returned message short)
				// has been read to its end: nothing of it is left
				// unread, so it is not truncated. Any other error is.
				if err != nil && !endedEarly(err) {
					m.truncated = true
				}
				return
			}
			p.walk(m, part, depth+1)
			if m.stop || m.truncated && m.parts > p.maxParts() {
				return
			}
		}
	}
	// body copies the part out, up to limit bytes and within the
	// budget. Where what is cut off could hold recipients (mark), the
	// report is marked truncated; text beyond maxTextBytes is not.
	// With scratch, the bytes are read into *scratch and valid until
	// it is used again.
	body := func(limit int64, mark bool, scratch *[]byte) []byte {
		n := min(limit, p.maxBytes(), *m.budget)
		var b []byte
		if scratch != nil {
			b = readInto(io.LimitReader(e.Body, n+1), scratch)
		} else if limit > maxStatusBytes {
			// An attached message, maybe large. Decoded, it is no
			// longer than the message it is in: one buffer of that
			// size, not io.ReadAll's many.
			buf := bytes.NewBuffer(make([]byte, 0, min(n, int64(len(m.raw)))+bytes.MinRead))
			buf.ReadFrom(io.LimitReader(e.Body, n+1))
			b = buf.Bytes()
		} else {
			b, _ = io.ReadAll(io.LimitReader(e.Body, n+1))
		}
		if int64(len(b)) > n {
			b = b[:n]
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
		m.status = append(m.status, body(maxStatusBytes, true, nil))
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
			if b, err := readHeaderBlock(e.Body, sp); err == nil {
				if h, ok := m.readHeader(b); ok {
					m.returned = &h
				}
			}
			putScratch(sp)
			return
		}
		// It may be a bounce forwarded as an attachment: keep it whole.
		b := body(p.maxBytes(), true, nil)
		m.returnedRaw = b
		if h, ok := m.readHeader(b); ok {
			m.returned = &h
		}
	case "text/rfc822-headers", "message/global-headers":
		if m.returned == nil {
			sp := getScratch()
			if h, ok := m.readHeader(body(maxStatusBytes, false, sp)); ok {
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
		if b := body(maxTextBytes+1, false, sp); mediaType == "text/html" {
			m.text = capText(stripTags(string(b)))
		} else {
			m.text = capTextBytes(b)
		}
		putScratch(sp)
	default:
		if depth == 0 {
			// A single-part message of an odd type: look at it as text.
			sp := getScratch()
			m.text = capTextBytes(body(maxTextBytes+1, false, sp))
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

// readHeader parses a header block; what a broken header yields up to the
// error is kept, since returned headers are often cut short.
func (m *msg) readHeader(b []byte) (message.Header, bool) {
	if h, _, err := headerPrefix(b, m.keepUnread); err == nil {
		return message.Header{Header: h}, true
	}
	return message.Header{}, false
}

// readHeaderBlock reads the lines of r into *scratch up to the blank line
// that ends a header block (included), the end of r, or an error, within
// go-message's bound: what message.Read would parse as the header, and no
// more of the body. The error is what message.Read would fail with (the end
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

// headerLimit is message.Read's bound on a header block: past it, reading
// fails (where io.LimitReader would end, and a header may end at the end).
type headerLimit struct {
	r io.Reader
	n int64
}

var errHeaderTooLarge = errors.New("header block too large")

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

// readEntity is message.Read of the message b, whose header block
// headerCapped cuts to maxHeaderBytes. When it is not cut, the body is read
// from b itself rather than through message.Read's own buffered reader: one
// 4 KiB buffer and one copy less per message.
func readEntity(m *msg, b []byte) (*message.Entity, error) {
	r := headerCapped(m, b)
	if _, ok := r.(*bytes.Reader); !ok {
		return message.Read(r)
	}
	h, n, err := headerPrefix(b, m.keepUnread)
	if err != nil {
		return nil, err
	}
	return message.New(message.Header{Header: h}, bytes.NewReader(b[n:]))
}

// maxEntityHeaderBytes is go-message's own bound on a header block
// (message.Read fails beyond it); the shortcuts around message.Read keep it.
const maxEntityHeaderBytes = 1 << 20

// headerPrefix reads the header block at the start of b as message.Read
// does (the same reader, the same bound) and returns it with the length of
// the header block, blank line included.
//
// The fields no recogniser reads (unreadField) are left out before
// go-message parses the block: trace and signature fields are most of a
// bounce's header, and parsing a field costs several allocations.
func headerPrefix(b []byte, keepUnread bool) (textproto.Header, int, error) {
	sp := getScratch()
	defer putScratch(sp)
	if kept, end, ok := skipUnread(b[:min(len(b), maxEntityHeaderBytes)], sp); ok && !keepUnread {
		// The block ends within the bound: the bound plays no part.
		br := getBufio(bytes.NewReader(kept))
		defer putBufio(br)
		h, err := textproto.ReadHeader(br)
		return h, end, err
	}
	r := bytes.NewReader(b)
	br := getBufio(&headerLimit{r: r, n: maxEntityHeaderBytes})
	defer putBufio(br)
	h, err := textproto.ReadHeader(br)
	return h, len(b) - r.Len() - br.Buffered(), err
}

// skipUnread copies the header block at the start of b, through the blank
// line that ends it, into *scratch without the fields unreadField names,
// and returns it with the length of the block in b. It gives up (ok false)
// when there is nothing to leave out, when no blank line ends the block, or
// when the block starts with a continuation line: go-message then reads b
// itself, errors and all. A continuation line goes with its field, as
// go-message reads it.
func skipUnread(b []byte, scratch *[]byte) (kept []byte, n int, ok bool) {
	if len(b) == 0 || b[0] == ' ' || b[0] == '\t' {
		return nil, 0, false
	}
	out := (*scratch)[:0]
	drop, dropped := false, false
	for off := 0; off < len(b); {
		i := bytes.IndexByte(b[off:], '\n')
		if i < 0 {
			break
		}
		line := b[off : off+i+1]
		off += i + 1
		switch {
		case len(line) == 1 || len(line) == 2 && line[0] == '\r':
			if !dropped {
				return nil, 0, false
			}
			out = append(out, line...)
			*scratch = out
			return out, off, true
		case line[0] == ' ' || line[0] == '\t':
		default:
			drop = unreadField(line)
			dropped = dropped || drop
		}
		if !drop {
			out = append(out, line...)
		}
	}
	*scratch = out
	return nil, 0, false
}

// unreadField reports whether the header line starts a field that no
// recogniser reads and that go-message would accept: trace fields and
// signatures, which make up most of a bounce's header. A field that any
// code of this package (or go-message: Content-*) reads must never be
// listed here; TestUnreadFields checks that the reports do not change.
func unreadField(line []byte) bool {
	colon := bytes.IndexByte(line, ':')
	if colon <= 0 {
		return false
	}
	name := bytes.TrimRight(line[:colon], " \t")
	if len(name) == 0 {
		return false
	}
	for _, c := range name {
		// go-message's own test for a field name: anything else makes
		// the header unreadable, and so must stay.
		if c < 33 || c > 126 {
			return false
		}
	}
	if hasPrefixFold(name, "x-ms-exchange-") || hasPrefixFold(name, "x-microsoft-") {
		return true
	}
	for _, k := range unreadFields {
		if len(k) == len(name) && bytes.EqualFold(name, []byte(k)) {
			return true
		}
	}
	return false
}

var unreadFields = [...]string{"received", "x-received", "dkim-signature", "x-google-dkim-signature",
	"authentication-results", "arc-seal", "arc-message-signature", "arc-authentication-results",
	"received-spf", "x-gm-message-state", "x-google-smtp-source"}

func hasPrefixFold(b []byte, prefix string) bool {
	return len(b) >= len(prefix) && bytes.EqualFold(b[:len(prefix)], []byte(prefix))
}

// bufioPool holds the buffered readers the header reader needs, so that
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

// capTextBytes is capText(string(b)) with one copy, changing b.
func capTextBytes(b []byte) string {
	b = b[:min(len(b), maxTextBytes)]
	if bytes.IndexByte(b, '\r') < 0 {
		return string(b)
	}
	w := 0
	for i := 0; i < len(b); i++ {
		if b[i] == '\r' && i+1 < len(b) && b[i+1] == '\n' {
			continue
		}
		b[w] = b[i]
		w++
	}
	return string(b[:w])
}

func capText(s string) string {
	if len(s) > maxTextBytes {
		s = s[:maxTextBytes]
	}
	if strings.IndexByte(s, '\r') >= 0 {
		s = strings.ReplaceAll(s, "\r\n", "\n")
	}
	return s
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

// stripTags turns HTML into text good enough for pattern matching.
func stripTags(s string) string {
	var b strings.Builder
	b.Grow(len(s))
	in := false
	for i := 0; i < len(s); i++ {
		c := s[i]
		switch {
		case c == '<':
			in = true
			// Block elements end lines, so that line-oriented
			// recognisers keep working.
			rest := strings.ToLower(s[i+1 : min(len(s), i+4)])
			if strings.HasPrefix(rest, "br") || strings.HasPrefix(rest, "p") || strings.HasPrefix(rest, "/p") ||
				strings.HasPrefix(rest, "div") || strings.HasPrefix(rest, "/di") || strings.HasPrefix(rest, "tr") ||
				strings.HasPrefix(rest, "li") {
				b.WriteByte('\n')
			}
		case c == '>' && in:
			in = false
		case !in:
			b.WriteByte(c)
		}
	}
	r := strings.NewReplacer("&lt;", "<", "&gt;", ">", "&amp;", "&", "&nbsp;", " ", "&quot;", `"`, "&#64;", "@")
	return r.Replace(b.String())
}

// endedEarly reports whether a multipart reader's error says only that the
// input ended before the closing boundary. go-message wraps the cause with
// %v ("multipart: NextPart: EOF"), so only its text tells.
func endedEarly(err error) bool {
	return errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF) ||
		strings.HasSuffix(err.Error(), ": EOF") || strings.HasSuffix(err.Error(), ": unexpected EOF")
}
