package dsn

import (
	"bytes"
	"errors"
	"fmt"
	"iter"
	"mime"
	"strings"
	"unsafe"
)

// This file reads header blocks (RFC 5322 section 2.2: fields of a name, a
// colon and a body, folded over lines that start with white space) straight
// from the bytes of the message, the way go-message's textproto.ReadHeader
// reads them: the same fields, values, errors and end of block, so that
// what a bounce reports does not depend on which of the two read it (the
// differential fuzz target in mime_test.go checks this). It reads in place:
// one string for the whole block, the fields substrings of it, instead of
// several allocations per field.

// header is a header block: its fields in the order of the message.
type header struct {
	fields []headerField
}

// headerField is one field, its value unfolded: each line trimmed of
// blanks, empty ones dropped, joined by one space (RFC 5322 section
// 2.2.3), as go-message unfolds it.
type headerField struct {
	name, value string
}

// Get returns the value of the first field named k (case-insensitively),
// or "".
func (h *header) Get(k string) string {
	for i := range h.fields {
		if strings.EqualFold(h.fields[i].name, k) {
			return h.fields[i].value
		}
	}
	return ""
}

// values yields the values of every field named k, in order.
func (h *header) values(k string) iter.Seq[string] {
	return func(yield func(string) bool) {
		for i := range h.fields {
			if strings.EqualFold(h.fields[i].name, k) && !yield(h.fields[i].value) {
				return
			}
		}
	}
}

// Text returns the value of the field k with its encoded words (RFC 2047)
// decoded to UTF-8. When they cannot be decoded it returns the raw value
// and the error.
func (h *header) Text(k string) (string, error) {
	return decodeWords(h.Get(k))
}

// wordDecoder decodes RFC 2047 encoded words in any charset
// charsetEncoding knows. It holds no state.
var wordDecoder = mime.WordDecoder{CharsetReader: wordCharsetReader}

func decodeWords(s string) (string, error) {
	if !strings.Contains(s, "=?") {
		return s, nil
	}
	d, err := wordDecoder.DecodeHeader(s)
	if err != nil {
		return s, err
	}
	return d, nil
}

// contentType is what this package reads of Content-Type.
type contentType struct {
	// mediaType is the type, lower case: text/plain when there is no
	// Content-Type; when it cannot be parsed, the field's raw value
	// (as go-message keeps it, so that a broken "multipart/..." is still
	// read as multipart) and bad is set.
	mediaType string
	bad       bool
	// The parameters read: boundary (RFC 2046 section 5.1.1), charset
	// (section 4.1.2), report-type (RFC 6522 section 3).
	boundary, charset, reportType string
}

// contentType parses Content-Type (RFC 2045 section 5.1) for what this
// package reads of it: text/plain when there is none.
func (h *header) contentType() contentType {
	v := h.Get("Content-Type")
	if v == "" {
		return contentType{mediaType: "text/plain"}
	}
	var ct contentType
	set := func(k, p string) {
		switch k {
		case "boundary":
			ct.boundary = p
		case "charset":
			ct.charset = p
		case "report-type":
			ct.reportType = p
		}
	}
	t, ok := parseSimpleMediaType(v, set)
	if !ok {
		mt, params, err := mime.ParseMediaType(v)
		if err != nil {
			return contentType{mediaType: v, bad: true}
		}
		t = mt
		for k, p := range params {
			set(k, p)
		}
	}
	ct.mediaType = t
	ct.boundary, _ = decodeWords(ct.boundary)
	ct.charset, _ = decodeWords(ct.charset)
	ct.reportType, _ = decodeWords(ct.reportType)
	return ct
}

// maxEntityHeaderBytes bounds a header block: past it without the blank
// line that ends the block, the header is unreadable (go-message's bound).
const maxEntityHeaderBytes = 1 << 20

// errHeaderTooLarge is returned for a header block beyond
// maxEntityHeaderBytes.
var errHeaderTooLarge = errors.New("header block too large")

// readHeader reads the header block at the start of b and returns it with
// the length of the block, the blank line that ends it included. A block
// may also end at the end of b. What was read before an error is returned
// with it: a field line without a colon, a name with a byte outside
// printable ASCII, a first line that is a continuation, or a block larger
// than maxEntityHeaderBytes. Fields that no recogniser reads (unreadField)
// are left out unless keepUnread.
func readHeader(b []byte, keepUnread bool, a *arena) (header, int, error) {
	h, n, _, err := readHeaderEnd(b, keepUnread, a)
	return h, n, err
}

// readHeaderEnd is readHeader, saying also whether a blank line ended the
// block. The fields are copied into the arena a (nil: the heap).
func readHeaderEnd(b []byte, keepUnread bool, a *arena) (h header, n int, complete bool, err error) {
	limited := len(b) > maxEntityHeaderBytes
	if limited {
		b = b[:maxEntityHeaderBytes]
	}
	if len(b) > 0 && (b[0] == ' ' || b[0] == '\t') {
		line, _ := nextLine(b, 0)
		return h, 0, false, fmt.Errorf("message: malformed MIME header initial line: %v", string(line))
	}
	end, complete := headerEnd(b)
	if !complete && limited {
		return h, 0, false, errHeaderTooLarge
	}
	// The fields to keep are found first, and copied into one string
	// (in the arena a) that they are substrings of: trace fields, most
	// of a bounce's header, are not copied at all.
	type span struct{ start, colon, end int }
	var stack [48]span
	spans, size := stack[:0], 0
	for off := 0; off < end; {
		start := off
		first, next := nextLine(b[:end], off)
		off = next
		if len(first) == 0 {
			break // the blank line that ends the block
		}
		for off < end && (b[off] == ' ' || b[off] == '\t') {
			_, off = nextLine(b[:end], off)
		}
		colon := bytes.IndexByte(first, ':')
		if colon < 0 {
			err = fmt.Errorf("message: malformed MIME header line: %v", string(b[start:off]))
			break
		}
		name := trimBlanks(first[:colon])
		if !validFieldName(name) {
			err = fmt.Errorf("message: malformed MIME header key: %v", string(name))
			break
		}
		if len(name) == 0 || !keepUnread && unreadField(name) {
			continue
		}
		spans = append(spans, span{start, start + colon, off})
		size += off - start
	}
	kept := a.alloc(size)[:0]
	for _, sp := range spans {
		kept = append(kept, b[sp.start:sp.end]...)
	}
	all := unsafe.String(unsafe.SliceData(kept), len(kept))
	h.fields = a.headerFields(len(spans))
	for i, pos := 0, 0; i < len(spans); i++ {
		sp := spans[i]
		f := all[pos : pos+sp.end-sp.start]
		pos += sp.end - sp.start
		c := sp.colon - sp.start
		h.fields[i] = headerField{name: trimBlanks(f[:c]), value: unfold(f[c+1:], a)}
	}
	if err != nil {
		return h, 0, false, err
	}
	return h, end, complete, nil
}

// validFieldName reports whether a field name has only printable ASCII
// (RFC 5322 section 2.2; the colon cannot occur, it ends the name).
func validFieldName(name []byte) bool {
	for _, c := range name {
		if c < 33 || c > 126 {
			return false
		}
	}
	return true
}

// headerEnd returns the length of the header block at the start of b,
// through the blank line that ends it, and whether that line was found;
// without it, the block is all of b. A blank line is "\n" or "\r\n" at the
// start of a line. One pass from line to line: bytes.Index of "\n\n" would
// look at every line end of a header of short folded lines twice over.
func headerEnd(b []byte) (int, bool) {
	for off := 0; off < len(b); {
		switch {
		case b[off] == '\n':
			return off + 1, true
		case b[off] == '\r' && off+1 < len(b) && b[off+1] == '\n':
			return off + 2, true
		}
		i := bytes.IndexByte(b[off:], '\n')
		if i < 0 {
			break
		}
		off += i + 1
	}
	return len(b), false
}

// nextLine returns the line of b at off without its end ("\r\n" or "\n",
// as bufio.Reader.ReadLine drops it) and where the next line starts.
func nextLine(b []byte, off int) ([]byte, int) {
	i := bytes.IndexByte(b[off:], '\n')
	if i < 0 {
		return b[off:], len(b)
	}
	line := b[off : off+i]
	if len(line) > 0 && line[len(line)-1] == '\r' {
		line = line[:len(line)-1]
	}
	return line, off + i + 1
}

// unfold joins the lines of a field's value: each trimmed of its line end
// and blanks, empty ones dropped, one space between. A value on one line is
// a substring of v, without a copy; a folded one is joined in the arena a
// (nil: the heap).
func unfold(v string, a *arena) string {
	if i := strings.IndexByte(v, '\n'); i < 0 || i == len(v)-1 {
		return trimLine(v)
	}
	// Joined, the value is no longer than v.
	b := a.alloc(len(v))[:0]
	for v != "" {
		line := v
		if i := strings.IndexByte(v, '\n'); i >= 0 {
			line, v = v[:i+1], v[i+1:]
		} else {
			v = ""
		}
		if line = trimLine(line); line != "" {
			if len(b) > 0 {
				b = append(b, ' ')
			}
			b = append(b, line...)
		}
	}
	// What the joining saved goes back to the arena, as collapseSpace's.
	a.shrink(b[:cap(b)], len(b))
	return unsafe.String(unsafe.SliceData(b), len(b))
}

// trimLine trims a line of a value of its end ("\r\n" or "\n") and then
// blanks. A line without a line feed (the last of the message) keeps a
// carriage return, as go-message reads it.
func trimLine(l string) string {
	if l, ok := strings.CutSuffix(l, "\n"); ok {
		return trimBlanks(strings.TrimSuffix(l, "\r"))
	}
	return trimBlanks(l)
}

// trimBlanks trims spaces and tabs.
func trimBlanks[T string | []byte](s T) T {
	i, j := 0, len(s)
	for i < j && (s[i] == ' ' || s[i] == '\t') {
		i++
	}
	for j > i && (s[j-1] == ' ' || s[j-1] == '\t') {
		j--
	}
	return s[i:j]
}

// unreadField reports whether a field of this name is one that no
// recogniser reads: trace fields and signatures, which make up most of a
// bounce's header. A field that any code of this package reads
// (Content-* included) must never be listed here; TestUnreadFields checks
// that the reports do not change.
func unreadField(name []byte) bool {
	if len(name) < 8 {
		return false
	}
	if hasPrefixFold(name, "x-ms-exchange-") || hasPrefixFold(name, "x-microsoft-") {
		return true
	}
	for _, k := range unreadFields {
		if len(name) == len(k) && hasPrefixFold(name, k) {
			return true
		}
	}
	return false
}

var unreadFields = [...]string{"received", "x-received", "dkim-signature", "x-google-dkim-signature",
	"authentication-results", "arc-seal", "arc-message-signature", "arc-authentication-results",
	"received-spf", "x-gm-message-state", "x-google-smtp-source"}

// hasPrefixFold reports whether b starts with the lower-case ASCII prefix,
// in any case.
func hasPrefixFold(b []byte, prefix string) bool {
	if len(b) < len(prefix) {
		return false
	}
	for i := 0; i < len(prefix); i++ {
		c := b[i]
		if 'A' <= c && c <= 'Z' {
			c += 'a' - 'A'
		}
		if c != prefix[i] {
			return false
		}
	}
	return true
}
