package dsn

import (
	"strconv"
	"strings"
	"unicode/utf8"
)

// This file undoes the encodings addresses carry in delivery reports.
//
// RFC 3461 section 4 defines xtext: any byte outside "!" to "~", and "+"
// and "=" themselves, is written "+" and two upper-case hex digits. The
// ORCPT parameter is xtext, and some MTAs copy it into Original-Recipient
// (and even Final-Recipient) without decoding it.
//
// RFC 6533 section 3 defines the utf-8 address type, whose addresses may
// carry "\x{HEX}" escapes (utf-8-addr-xtext and utf-8-addr-unitext).

// decodeXtext decodes the "+XX" escapes of RFC 3461 section 4 that an
// encoder must have produced. "+" is common in real local parts
// ("user+tag@"), so "+XX" is decoded only when XX names a byte that xtext
// must escape: "+", "=", a control or space, or a non-ASCII byte that
// forms valid UTF-8 with its neighbours.
func decodeXtext(s string) string {
	if !strings.Contains(s, "+") {
		return s
	}
	var b []byte
	changed := false
	for i := 0; i < len(s); i++ {
		if s[i] == '+' && i+2 < len(s) && isUpperHex(s[i+1]) && isUpperHex(s[i+2]) {
			v, _ := strconv.ParseUint(s[i+1:i+3], 16, 8)
			if v == '+' || v == '=' || v <= ' ' || v >= 0x7f {
				b = append(b, byte(v))
				i += 2
				changed = true
				continue
			}
		}
		b = append(b, s[i])
	}
	if !changed || !utf8.Valid(b) {
		return s
	}
	return string(b)
}

func isUpperHex(c byte) bool {
	return '0' <= c && c <= '9' || 'A' <= c && c <= 'F'
}

// decodeUTF8Addr decodes the "\x{HEX}" escapes of RFC 6533 section 3, used
// by the utf-8 address type for characters the field cannot carry.
func decodeUTF8Addr(s string) string {
	if !strings.Contains(s, `\x{`) {
		return s
	}
	var b strings.Builder
	for {
		i := strings.Index(s, `\x{`)
		if i < 0 {
			b.WriteString(s)
			return b.String()
		}
		j := strings.IndexByte(s[i:], '}')
		if j < 0 {
			b.WriteString(s)
			return b.String()
		}
		v, err := strconv.ParseUint(s[i+3:i+j], 16, 32)
		b.WriteString(s[:i])
		if err != nil || !utf8.ValidRune(rune(v)) {
			b.WriteString(s[i : i+j+1])
		} else {
			b.WriteRune(rune(v))
		}
		s = s[i+j+1:]
	}
}
