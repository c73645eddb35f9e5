package dsn

import (
	"bytes"
	"encoding/base64"
	"errors"
	"fmt"
	"io"
	"mime/quotedprintable"
	"strings"

	"golang.org/x/text/encoding"
)

// This file walks the MIME structure of a message held in memory (RFC 2045
// and RFC 2046): an entity is a header and a body, both slices of the
// message, and the parts of a multipart body (RFC 2046 section 5.1.1) are
// found by searching its bytes for the boundary, the way go-message's
// multipart reader (itself Go's mime/multipart) finds them, with the same
// tolerance for broken mail. Nothing is copied until a recogniser needs a
// part's content, and a part in 7bit, 8bit or binary and in UTF-8 or ASCII
// is not copied at all.

// entity is a message or a body part.
type entity struct {
	header header
	// raw is the body as it is in the message, still encoded.
	raw []byte
	// mediaType is the parsed type, lower case; when Content-Type cannot
	// be parsed it is the field's raw value (as go-message keeps it, so
	// that a broken "multipart/..." is still read as multipart).
	mediaType string
	badType   bool // Content-Type could not be parsed
	// boundary and reportType are parameters of Content-Type.
	boundary, reportType string
	// encoding is the Content-Transfer-Encoding, lower case, for a body
	// that is not multipart (RFC 2045 section 6.4: a multipart body is
	// never encoded, and one that says so is read as it is).
	encoding string
	// cut is set when the body ended before the closing boundary of
	// the multipart body it is in: its end is not its own.
	cut bool
	// charset is the charset parameter of a text type, lower case,
	// unless it is one that needs no decoding.
	charset string
}

// newEntity makes an entity of a header and its raw body, in the arena a
// (nil: the heap).
func newEntity(h header, raw []byte, a *arena) *entity {
	ct := h.contentType()
	e := a.entity()
	*e = entity{header: h, raw: raw, mediaType: ct.mediaType, badType: ct.bad, boundary: ct.boundary, reportType: ct.reportType}
	if !strings.HasPrefix(ct.mediaType, "multipart/") {
		e.encoding = strings.ToLower(h.Get("Content-Transfer-Encoding"))
	}
	if strings.HasPrefix(ct.mediaType, "text/") {
		// UTF-8 and ASCII read as they are, invalid bytes and all,
		// as go-message reads them.
		switch cs := strings.ToLower(ct.charset); cs {
		case "utf-8", "us-ascii":
		default:
			e.charset = cs
		}
	}
	return e
}

// content returns at most n bytes of the decoded body: transfer encoding
// undone (RFC 2045 section 6), and a text body in a legacy charset turned
// into UTF-8. An unknown encoding or charset leaves the body as it is, as
// go-message does. A body that needs no decoding (no transfer encoding,
// and no charset, or UTF-8 or ASCII) is returned as a slice of the
// message; any other is decoded into *scratch (grown as needed) or, when
// scratch is nil, into a buffer of its own. Decoded from a charset, a body
// cut at n bytes comes back shorter than n, which the caller cannot tell
// from a whole one: it is cut at a line end here (see decodeCharset).
func (e *entity) content(n int64, scratch *[]byte) []byte {
	// An unknown charset leaves the bytes as they are, as no charset does.
	var enc encoding.Encoding
	if e.charset != "" {
		enc = charsetEncoding(e.charset)
	}
	switch e.encoding {
	case "quoted-printable", "base64":
		if enc == nil {
			return e.transferDecoded(n, scratch)
		}
		// Decoded twice: the transfer encoding into a buffer of
		// the pool, the charset from it. n bytes decoded may be
		// all there is, or a cut: it is taken for one.
		sp := getScratch()
		defer putScratch(sp)
		src := e.transferDecoded(n, sp)
		return decodeCharset(enc, src, int64(len(src)) >= n, n, scratch)
	}
	b := e.raw[:min(int64(len(e.raw)), n)]
	if enc == nil {
		return b
	}
	return decodeCharset(enc, b, int64(len(e.raw)) > n, n, scratch)
}

// transferDecoded returns at most n bytes of the body with its transfer
// encoding undone, in *scratch (grown as needed) or, when scratch is nil,
// in a buffer of its own. Decoded, a body is no longer than encoded.
func (e *entity) transferDecoded(n int64, scratch *[]byte) []byte {
	if e.encoding == "quoted-printable" {
		size := int(min(n, int64(len(e.raw))))
		var dst []byte
		if scratch != nil {
			dst = (*scratch)[:0]
		}
		if cap(dst) < size {
			dst = make([]byte, 0, size)
		}
		dst = appendQuotedPrintable(dst, e.raw, size)
		if scratch != nil {
			*scratch = dst
		}
		return dst
	}
	return readLimited(e.transferReader(), n, int64(len(e.raw)), scratch)
}

// readLimited reads at most n bytes of r into *scratch (grown as needed)
// or, when scratch is nil, into a buffer of its own, sized for size bytes.
func readLimited(r io.Reader, n, size int64, scratch *[]byte) []byte {
	r = io.LimitReader(r, n)
	if scratch != nil {
		return readInto(r, scratch)
	}
	buf := bytes.NewBuffer(make([]byte, 0, min(n, size)+bytes.MinRead))
	buf.ReadFrom(r)
	return buf.Bytes()
}

// transferReader returns the body with its transfer encoding undone (RFC
// 2045 section 6).
func (e *entity) transferReader() io.Reader {
	var r io.Reader = bytes.NewReader(e.raw)
	switch e.encoding {
	case "quoted-printable":
		r = quotedprintable.NewReader(r)
	case "base64":
		// Some mail indents base64 lines: blanks read as line ends,
		// which the decoder skips.
		r = base64.NewDecoder(base64.StdEncoding, &blankToNewline{r: r})
	}
	return r
}

// blankToNewline replaces spaces and tabs with line feeds.
type blankToNewline struct{ r io.Reader }

func (b *blankToNewline) Read(p []byte) (int, error) {
	n, err := b.r.Read(p)
	for i := range p[:n] {
		if p[i] == ' ' || p[i] == '\t' {
			p[i] = '\n'
		}
	}
	return n, err
}

// multipartReader finds the parts of a multipart body (RFC 2046 section
// 5.1.1): each starts after a line "--boundary" and ends before the line
// break that precedes the next such line; "--boundary--" closes the body.
// Lines end in CRLF, or in LF when the first boundary line does.
type multipartReader struct {
	b        []byte
	off      int
	boundary string
	nl       string // "\r\n" or "\n"
	nlDash   []byte // nl + "--" + boundary
	parts    int    // parts read so far
	// cut is set when the body itself was cut short: then its end is
	// no proper end of anything in it.
	cut bool
	// keepUnread is Parser.keepUnread, for the parts' headers.
	keepUnread bool
	// arena holds the parts' header fields (nil: the heap).
	arena *arena
	// scan, when set, is how many more bytes may be searched for
	// boundaries; once it is spent, next fails with errScanLimit.
	scan *int64
}

// maxScanFactor bounds the bytes searched for boundaries, across every
// multipart body of a message and its attached messages, to this many
// times its size (and 256 KiB). Each level of nesting searches the bytes
// of its parts once, so real mail (a report, an attached message, its
// own parts) stays within two or three times; a message nested deeper,
// whose every level spans the whole message, is not searched again and
// again: its report is marked truncated instead.
const maxScanFactor = 4

// errScanLimit is returned by next when the search budget is spent.
var errScanLimit = errors.New("multipart: nested too deep to search")

// errEndedEarly is returned when the body ends before its closing
// boundary: everything in it was read, but it was cut short.
var errEndedEarly = errors.New("multipart: NextPart: EOF")

func newMultipartReader(e *entity, keepUnread bool, a *arena) *multipartReader {
	boundary := e.boundary
	return &multipartReader{b: e.raw, boundary: boundary, nl: "\r\n", nlDash: []byte("\r\n--" + boundary),
		cut: e.cut, keepUnread: keepUnread, arena: a}
}

// next returns the next part, or nil and io.EOF after the closing
// boundary, or nil and an error when the body is not well formed
// (errEndedEarly when it only ends too soon).
func (r *multipartReader) next() (*entity, error) {
	if r.boundary == "" {
		return nil, errors.New("multipart: boundary is empty")
	}
	expectNewPart := false
	for {
		line, atEnd := r.line()
		if atEnd {
			if !r.cut && r.isFinal(line) {
				return nil, io.EOF
			}
			return nil, errEndedEarly
		}
		if r.isDelimiter(line) {
			r.parts++
			h, n, complete, err := readHeaderEnd(r.b[r.off:], r.keepUnread, r.arena)
			if err != nil {
				return nil, err
			}
			if !complete && r.cut {
				return nil, errEndedEarly
			}
			start := r.off + n
			if r.scan != nil && *r.scan <= 0 {
				return nil, errScanLimit
			}
			end, found := r.bodyEnd(start)
			if r.scan != nil {
				// What the search went over: to the boundary, or to
				// the end when there is none.
				*r.scan -= int64(max(end, min(len(r.b), end+len(r.nlDash))) - start)
			}
			r.off = end
			e := newEntity(h, r.b[start:end], r.arena)
			e.cut = !found
			return e, nil
		}
		if r.isFinal(line) {
			return nil, io.EOF
		}
		if expectNewPart {
			return nil, fmt.Errorf("multipart: expecting a new Part; got line %q", line)
		}
		if r.parts == 0 {
			continue // the preamble
		}
		if string(line) == r.nl {
			expectNewPart = true
			continue
		}
		return nil, fmt.Errorf("multipart: unexpected line in Next(): %q", line)
	}
}

// line returns the next line, its end included, and whether the body ended
// before a line end.
func (r *multipartReader) line() ([]byte, bool) {
	rest := r.b[r.off:]
	i := bytes.IndexByte(rest, '\n')
	if i < 0 {
		r.off = len(r.b)
		return rest, true
	}
	r.off += i + 1
	return rest[:i+1], false
}

func (r *multipartReader) isFinal(line []byte) bool {
	rest, ok := bytes.CutPrefix(line, r.nlDash[len(r.nl):])
	if !ok {
		return false
	}
	if rest, ok = bytes.CutPrefix(rest, []byte("--")); !ok {
		return false
	}
	rest = skipBlanks(rest)
	return len(rest) == 0 || string(rest) == r.nl
}

func (r *multipartReader) isDelimiter(line []byte) bool {
	rest, ok := bytes.CutPrefix(line, r.nlDash[len(r.nl):])
	if !ok {
		return false
	}
	rest = skipBlanks(rest)
	if r.parts == 0 && len(rest) == 1 && rest[0] == '\n' {
		r.nl, r.nlDash = "\n", r.nlDash[1:]
	}
	return string(rest) == r.nl
}

func skipBlanks(b []byte) []byte {
	for len(b) > 0 && (b[0] == ' ' || b[0] == '\t') {
		b = b[1:]
	}
	return b
}

// bodyEnd returns where the body of the part that starts at start ends:
// before the line break of the next line that starts with "--boundary"
// followed by a blank, a line end, a dash or the end of the body; at the end
// of the body when there is none. A part that starts with such a line is
// empty. This is go-message's scanUntilBoundary over the whole body.
func (r *multipartReader) bodyEnd(start int) (end int, found bool) {
	dash := r.nlDash[len(r.nl):]
	rest := r.b[start:]
	if bytes.HasPrefix(rest, dash) && endsDelimiter(rest, len(dash)) || bytes.HasPrefix(dash, rest) {
		return start, len(rest) >= len(dash)
	}
	// The boundary is searched for after its dashes, which text rarely
	// holds, rather than after the line break before it, which every
	// line ends in; an occurrence counts only with that line break
	// before it.
	nlDash, nl := r.nlDash, r.nlDash[:len(r.nl)]
	for off := len(nl); off < len(rest); {
		i := bytes.Index(rest[off:], dash)
		if i < 0 {
			break
		}
		q := off + i
		if bytes.Equal(rest[q-len(nl):q], nl) && endsDelimiter(rest[q-len(nl):], len(nlDash)) {
			return start + q - len(nl), true
		}
		off = q + 1
	}
	// Cut short. What could have been the start of a boundary is left
	// out, as a stream reader holds it back waiting for more and then
	// never gets it.
	lo := max(0, len(rest)-len(nlDash)+1)
	if j := bytes.LastIndexByte(rest[lo:], nlDash[0]); j >= 0 && bytes.HasPrefix(nlDash, rest[lo+j:]) {
		return start + lo + j, false
	}
	return len(r.b), false
}

// endsDelimiter reports whether what follows a boundary at b[n:] makes it
// one: nothing, a blank, a line end or a dash.
func endsDelimiter(b []byte, n int) bool {
	if len(b) == n {
		return true
	}
	switch b[n] {
	case ' ', '\t', '\r', '\n', '-':
		return true
	}
	return false
}

// headerBlock returns the decoded body up to the end of the header block
// it starts with, for an attached message (RFC 2046 section 5.2.1) of
// which only the header is read. A body that needs no decoding is
// returned whole: reading its header stops at the blank line.
func (e *entity) headerBlock(scratch *[]byte) ([]byte, error) {
	if e.encoding != "quoted-printable" && e.encoding != "base64" {
		return e.raw, nil
	}
	return readHeaderBlock(e.transferReader(), scratch)
}
