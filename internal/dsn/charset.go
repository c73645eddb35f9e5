package dsn

import (
	"bytes"
	"fmt"
	"io"
	"strings"

	"golang.org/x/text/encoding"
	"golang.org/x/text/encoding/charmap"
	"golang.org/x/text/encoding/htmlindex"
	"golang.org/x/text/encoding/ianaindex"
	"golang.org/x/text/encoding/unicode"
	"golang.org/x/text/transform"
)

// This file turns text in the charsets bounces arrive in (ISO-2022-JP,
// Windows-1252, KOI8-R, ...: RFC 2046 section 4.1.2's charset parameter,
// and RFC 2047's encoded words) into UTF-8. It finds a charset as
// go-message's charset package does, by its IANA name, then with "cs"
// before it, then by its WHATWG label, and decodes a whole buffer at once:
// go-message's stream decoder costs two 4 KiB buffers, and the word
// decoder's copy a 32 KiB one, for a subject line.

// charsetQuirks are the names go-message knows that the indexes do not.
var charsetQuirks = map[string]encoding.Encoding{
	"ansi_x3.110-1983": charmap.ISO8859_1, // RFC 1345 page 62: mostly a superset of ISO 8859-1
	"x-utf_8j":         unicode.UTF8,
}

// charsetEncoding returns the encoding of a charset name, or nil when it
// is unknown.
func charsetEncoding(name string) encoding.Encoding {
	if enc, ok := charsetQuirks[strings.ToLower(name)]; ok {
		return enc
	}
	if enc, err := ianaindex.MIME.Encoding(name); err == nil && enc != nil {
		return enc
	}
	if enc, err := ianaindex.MIME.Encoding("cs" + name); err == nil && enc != nil {
		return enc
	}
	if enc, err := htmlindex.Get(name); err == nil && enc != nil {
		return enc
	}
	return nil
}

// decodeCharset returns at most n bytes of src turned from the charset
// enc into UTF-8, written into *dst (grown as needed) or, when dst is nil,
// into a buffer of its own. Bytes that are not valid in enc become U+FFFD.
// When src was cut short (cut) or its decoding does not fit in n bytes,
// what is returned is cut back to a line end (see cutToLine): its length,
// which the charset changes, no longer tells that it was cut.
func decodeCharset(enc encoding.Encoding, src []byte, cut bool, n int64, dst *[]byte) []byte {
	// A character takes at most three bytes in UTF-8 and at least one in
	// the charsets mail uses: three times the input is room enough.
	size := int(min(n, 3*int64(len(src))+utf8Max))
	var out []byte
	if dst != nil && cap(*dst) >= size {
		out = (*dst)[:size]
	} else {
		out = make([]byte, size)
		if dst != nil {
			*dst = out
		}
	}
	k, read, _ := enc.NewDecoder().Transform(out, src, true)
	if cut || read < len(src) {
		return cutToLine(out[:k])
	}
	return out[:k]
}

const utf8Max = 4

// wordCharsetReader is mime.WordDecoder's CharsetReader: it decodes the
// encoded word at once and hands back a reader that io.Copy reads without
// a buffer of its own.
func wordCharsetReader(name string, input io.Reader) (io.Reader, error) {
	enc := charsetEncoding(name)
	if enc == nil {
		return nil, fmt.Errorf("charset %q: unsupported charset", name)
	}
	src, err := io.ReadAll(input)
	if err != nil {
		return nil, err
	}
	out, _, err := transform.Bytes(enc.NewDecoder(), src)
	if err != nil {
		return nil, fmt.Errorf("charset %q: %w", name, err)
	}
	return bytes.NewReader(out), nil
}
