package dsnfiles

import (
	"strconv"
	"unicode/utf8"

	"github.com/bouncemilter/bouncemilter/internal/dsn"
)

// AppendJSON appends the JSON object of r to b: byte for byte what
// encoding/json's Encoder with SetEscapeHTML(false) writes for it, without
// the newline that ends the Encoder's line. It writes the fields itself:
// the reflection of encoding/json costs about as much as reading the
// file, and allocates for every value. TestJSONFields fails when a field
// is added to Result, dsn.Recipient or dsn.Original and not here.
func (r *Result) AppendJSON(b []byte) []byte {
	b = append(b, `{"file":`...)
	b = appendString(b, r.File)
	b = append(b, `,"bounce":`...)
	b = strconv.AppendBool(b, r.Bounce)
	b = appendOmitEmpty(b, "kind", r.Kind)
	b = appendOmitEmpty(b, "format", r.Format)
	b = append(b, `,"recipients":`...)
	if r.Recipients == nil {
		b = append(b, "null"...)
	} else {
		b = append(b, '[')
		for i := range r.Recipients {
			if i > 0 {
				b = append(b, ',')
			}
			b = appendRecipient(b, &r.Recipients[i])
		}
		b = append(b, ']')
	}
	if r.Original != nil {
		b = append(b, `,"original":`...)
		b = appendOriginal(b, r.Original)
	}
	if r.Messages != 0 {
		b = append(b, `,"messages":`...)
		b = strconv.AppendInt(b, int64(r.Messages), 10)
	}
	if r.Truncated {
		b = append(b, `,"truncated":true`...)
	}
	b = appendOmitEmpty(b, "error", r.Error)
	return append(b, '}')
}

// appendOmitEmpty appends the field key with the string v, unless v is
// empty (omitempty).
func appendOmitEmpty(b []byte, key, v string) []byte {
	if v == "" {
		return b
	}
	b = append(b, `,"`...)
	b = append(b, key...)
	b = append(b, `":`...)
	return appendString(b, v)
}

func appendRecipient(b []byte, rc *dsn.Recipient) []byte {
	b = append(b, `{"address":`...)
	b = appendString(b, rc.Address)
	b = appendOmitEmpty(b, "original_address", rc.OriginalAddress)
	b = append(b, `,"literal":`...)
	b = strconv.AppendBool(b, rc.Literal)
	if rc.OriginalLiteral {
		b = append(b, `,"original_literal":true`...)
	}
	b = append(b, `,"action":`...)
	b = appendString(b, rc.Action)
	b = append(b, `,"status":`...)
	b = appendString(b, rc.Status)
	b = append(b, `,"reason":`...)
	b = appendString(b, rc.Reason)
	b = append(b, `,"permanent":`...)
	b = strconv.AppendBool(b, rc.Permanent)
	b = appendOmitEmpty(b, "diagnostic", rc.Diagnostic)
	b = appendOmitEmpty(b, "remote_mta", rc.RemoteMTA)
	return append(b, '}')
}

func appendOriginal(b []byte, o *dsn.Original) []byte {
	b = append(b, '{')
	n := len(b)
	field := func(name, v string) {
		if v == "" {
			return
		}
		if len(b) > n {
			b = append(b, ',')
		}
		b = append(b, name...)
		b = appendString(b, v)
	}
	field(`"message_id":`, o.MessageID)
	field(`"from":`, o.From)
	field(`"to":`, o.To)
	field(`"subject":`, o.Subject)
	field(`"date":`, o.Date)
	return append(b, '}')
}

// plain marks the ASCII bytes a JSON string holds as they are (with HTML
// escaping off): everything but controls, quote and backslash.
var plain = func() (t [utf8.RuneSelf]bool) {
	for c := ' '; c < utf8.RuneSelf; c++ {
		t[c] = c != '"' && c != '\\'
	}
	return t
}()

// appendString appends s as a JSON string the way encoding/json does:
// the short escapes \" \\ \b \f \n \r \t, \u00XX for other controls,
// \ufffd for each byte that is not UTF-8, and \u2028 and \u2029 (which
// JavaScript does not allow raw in a string).
func appendString(b []byte, s string) []byte {
	const hex = "0123456789abcdef"
	b = append(b, '"')
	start := 0
	for i := 0; i < len(s); {
		c := s[i]
		if c < utf8.RuneSelf {
			if plain[c] {
				i++
				continue
			}
			b = append(b, s[start:i]...)
			switch c {
			case '"', '\\':
				b = append(b, '\\', c)
			case '\b':
				b = append(b, '\\', 'b')
			case '\f':
				b = append(b, '\\', 'f')
			case '\n':
				b = append(b, '\\', 'n')
			case '\r':
				b = append(b, '\\', 'r')
			case '\t':
				b = append(b, '\\', 't')
			default:
				b = append(b, '\\', 'u', '0', '0', hex[c>>4], hex[c&0xf])
			}
			i++
			start = i
			continue
		}
		r, size := utf8.DecodeRuneInString(s[i:])
		switch {
		case r == utf8.RuneError && size == 1:
			b = append(b, s[start:i]...)
			b = append(b, `\ufffd`...)
		case r == '\u2028' || r == '\u2029':
			b = append(b, s[start:i]...)
			b = append(b, '\\', 'u', '2', '0', '2', hex[r&0xf])
		default:
			i += size
			continue
		}
		i += size
		start = i
	}
	b = append(b, s[start:]...)
	return append(b, '"')
}
