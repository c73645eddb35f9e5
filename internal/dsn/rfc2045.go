package dsn

import (
	"bytes"
	"strings"
)

// This file undoes the quoted-printable transfer encoding (RFC 2045 section
// 6.7) of a body held in memory, with the leniency of Go's
// mime/quotedprintable reader, byte for byte (FuzzQuotedPrintable holds it
// to that reader): "=\n" is a soft line break as well as "=\r\n", a line
// end not after "=" passes through, "=" at the very end is dropped, and
// "=" not followed by two hex digits is a literal "=" unless a line end
// follows it. Where that reader fails, decoding stops. Go's reader reads
// line by line through a buffered reader of its own, which costs more
// than the decoding for a typical bounce part.

// appendQuotedPrintable appends to dst the decoding of src, stopping once
// dst holds n bytes, and returns it.
func appendQuotedPrintable(dst, src []byte, n int) []byte {
	var tmp []byte
	for len(src) > 0 && len(dst) < n {
		whole := src
		atEOF := true
		if i := bytes.IndexByte(src, '\n'); i >= 0 {
			whole, src, atEOF = src[:i+1], src[i+1:], false
		} else {
			src = nil
		}
		line := bytes.TrimRight(whole, " \t\r\n")
		fail := false
		if len(line) > 0 && line[len(line)-1] == '=' {
			right := bytes.TrimLeft(whole[len(line):], " \t")
			line = line[:len(line)-1]
			if !bytes.HasPrefix(right, []byte("\n")) && !bytes.HasPrefix(right, []byte("\r\n")) &&
				!(len(right) == 0 && len(line) > 0 && atEOF) {
				fail = true // decoding stops after this line
			}
		} else if bytes.HasSuffix(whole, []byte("\n")) {
			// The line with its end as it was, without the blanks
			// before it: whole itself when there were none.
			end := "\n"
			if bytes.HasSuffix(whole, []byte("\r\n")) {
				end = "\r\n"
			}
			if len(line)+len(end) == len(whole) {
				line = whole
			} else {
				tmp = append(append(tmp[:0], line...), end...)
				line = tmp
			}
		}
		for i := 0; i < len(line) && len(dst) < n; i++ {
			b := line[i]
			switch {
			case b == '=':
				if i+2 < len(line) {
					if hb, ok := unhex(line[i+1]); ok {
						if lb, ok := unhex(line[i+2]); ok {
							dst = append(dst, hb<<4|lb)
							i += 2
							continue
						}
					}
				}
				if i+1 < len(line) && line[i+1] != '\r' && line[i+1] != '\n' {
					dst = append(dst, '=') // a literal "="
					continue
				}
				return dst
			case b == '\t' || b == '\r' || b == '\n' || b >= 0x80:
			case b < ' ' || b > '~':
				return dst
			}
			dst = append(dst, b)
		}
		if fail {
			return dst
		}
	}
	return dst
}

// unhex is the value of a hex digit, upper or (leniently) lower case.
func unhex(c byte) (byte, bool) {
	switch {
	case '0' <= c && c <= '9':
		return c - '0', true
	case 'A' <= c && c <= 'F':
		return c - 'A' + 10, true
	case 'a' <= c && c <= 'f':
		return c - 'a' + 10, true
	}
	return 0, false
}

// parseSimpleMediaType reads the Content-Type values nearly all mail has
// (RFC 2045 section 5.1: type "/" subtype, then "; name=value" parameters
// whose values are tokens or quoted strings without escapes), as
// mime.ParseMediaType reads them (FuzzMediaType holds it to that), without
// a map: param is called with each parameter, its name lower-cased only
// when it has capitals. ok is false for anything else (RFC 2231
// parameters, escapes, a repeated name, more than eight parameters, junk,
// non-ASCII), which is left to mime.ParseMediaType.
func parseSimpleMediaType(v string, param func(name, value string)) (mediaType string, ok bool) {
	for i := 0; i < len(v); i++ {
		if v[i] >= 0x80 {
			return "", false
		}
	}
	base, rest, _ := strings.Cut(v, ";")
	base = strings.TrimSpace(base)
	typ, sub, found := strings.Cut(base, "/")
	if !isToken(typ) || found && !isToken(sub) {
		return "", false
	}
	var seen [8][2]string // names and values
	n := 0
	for rest = strings.TrimLeft(rest, asciiSpace); rest != ""; rest = strings.TrimLeft(rest, asciiSpace) {
		// rest starts after a ";": a parameter, or nothing more.
		i := 0
		for i < len(rest) && isTokenChar(rest[i]) {
			i++
		}
		name := rest[:i]
		rest = strings.TrimLeft(rest[i:], asciiSpace)
		if name == "" || strings.IndexByte(name, '*') >= 0 || !strings.HasPrefix(rest, "=") {
			return "", false
		}
		rest = strings.TrimLeft(rest[1:], asciiSpace)
		var value string
		if strings.HasPrefix(rest, `"`) {
			end := strings.IndexByte(rest[1:], '"')
			if end < 0 || strings.ContainsAny(rest[1:1+end], "\\\r\n") {
				return "", false
			}
			value, rest = rest[1:1+end], rest[2+end:]
		} else {
			j := 0
			for j < len(rest) && isTokenChar(rest[j]) {
				j++
			}
			if j == 0 {
				return "", false
			}
			value, rest = rest[:j], rest[j:]
		}
		for _, s := range seen[:n] {
			if strings.EqualFold(s[0], name) {
				return "", false
			}
		}
		if n == len(seen) {
			return "", false
		}
		seen[n] = [2]string{name, value}
		n++
		rest = strings.TrimLeft(rest, asciiSpace)
		if rest != "" && rest[0] != ';' {
			return "", false
		}
		rest = strings.TrimPrefix(rest, ";")
	}
	for _, s := range seen[:n] {
		param(knownLower(s[0], paramNames), s[1])
	}
	return strings.ToLower(base), true
}

// paramNames are the parameter names mail uses: knownLower reads them
// without a copy.
var paramNames = []string{"charset", "boundary", "report-type", "name", "format", "delsp", "micalg", "protocol", "type"}

const asciiSpace = " \t\r\n\v\f"

func isToken(s string) bool {
	if s == "" {
		return false
	}
	for i := 0; i < len(s); i++ {
		if !isTokenChar(s[i]) {
			return false
		}
	}
	return true
}

// isTokenChar reports whether c may be part of a token (RFC 2045 section
// 5.1): printable ASCII but the specials.
func isTokenChar(c byte) bool {
	return c > ' ' && c < 0x7f && !strings.ContainsRune(`()<>@,;:\"/[]?=`, rune(c))
}
