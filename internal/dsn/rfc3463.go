package dsn

import "strings"

// This file finds and infers enhanced status codes (RFC 3463):
//
//	status-code = class "." subject "." detail
//	class       = "2" / "4" / "5"        (section 3.1)
//	subject     = 1*3digit               (section 3.2 ff.)
//	detail      = 1*3digit
//
// and SMTP reply codes (RFC 5321 section 4.2), from which a status is
// inferred when a report gives none.

// findStatus returns the first RFC 3463 status code in s, or "".
func findStatus(s string) string {
	for i := 0; i+4 < len(s); i++ {
		c := s[i]
		if c != '2' && c != '4' && c != '5' || s[i+1] != '.' {
			continue
		}
		if i > 0 && (isDigit(s[i-1]) || s[i-1] == '.') {
			continue
		}
		j := i + 2
		n := digits(s[j:])
		if n == 0 || n > 3 || j+n >= len(s) || s[j+n] != '.' {
			continue
		}
		k := j + n + 1
		m := digits(s[k:])
		if m == 0 || m > 3 {
			continue
		}
		if e := k + m; e < len(s) && (s[e] == '.' && e+1 < len(s) && isDigit(s[e+1]) || isAlnum(s[e])) {
			continue // a version number or an IP address
		}
		return s[i : k+m]
	}
	return ""
}

// lastStatus returns the last RFC 3463 status code in s, or "". When a
// diagnostic quotes several replies, the last is the remote server's own.
func lastStatus(s string) string {
	last := ""
	for {
		c := findStatus(s)
		if c == "" {
			return last
		}
		last = c
		i := strings.Index(s, c)
		s = s[i+len(c):]
	}
}

// findReplyCode returns the first SMTP reply code (RFC 5321 section 4.2:
// three digits, the first 2 to 5, then space, "-" or end) in s, or "".
func findReplyCode(s string) string {
	for i := 0; i+2 < len(s); i++ {
		c := s[i]
		if c < '2' || c > '5' || (i > 0 && (isAlnum(s[i-1]) || s[i-1] == '.' || s[i-1] == '-' || s[i-1] == ':' || s[i-1] == '/')) {
			continue
		}
		if !isDigit(s[i+1]) || !isDigit(s[i+2]) || s[i+1] > '5' {
			continue
		}
		if e := i + 3; e < len(s) && s[e] != ' ' && s[e] != '-' && s[e] != '\t' && s[e] != '\n' && s[e] != ',' {
			continue
		}
		return s[i : i+3]
	}
	return ""
}

// genericStatus reports codes that say nothing beyond their class (x.0.0),
// which a more specific code in the diagnostic text should replace.
func genericStatus(s string) bool {
	return s == "" || strings.HasSuffix(s, ".0.0")
}

// statusForReason is the code Sisimai reports for a reason when the message
// carries none (Sisimai::SMTP::Status).
var statusForReason = map[string]string{
	"userunknown":     "5.1.1",
	"hostunknown":     "5.1.2",
	"hasmoved":        "5.1.6",
	"suspend":         "5.2.1",
	"mailboxfull":     "5.2.2",
	"exceedlimit":     "5.2.3",
	"mesgtoolarge":    "5.3.4",
	"systemfull":      "5.3.1",
	"systemerror":     "5.3.0",
	"networkerror":    "5.4.0",
	"expired":         "5.4.7",
	"contenterror":    "5.6.0",
	"norelaying":      "5.7.1",
	"securityerror":   "5.7.0",
	"spamdetected":    "5.7.1",
	"policyviolation": "5.7.0",
	"filtered":        "5.2.1",
	"rejected":        "5.7.1",
	"blocked":         "5.7.1",
}

func isDigit(c byte) bool { return '0' <= c && c <= '9' }

func isAlnum(c byte) bool {
	return isDigit(c) || 'a' <= c && c <= 'z' || 'A' <= c && c <= 'Z'
}

func digits(s string) int {
	n := 0
	for n < len(s) && isDigit(s[n]) {
		n++
	}
	return n
}
