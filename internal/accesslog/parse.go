// Package accesslog links MediaGoblin sign-ups to the IP addresses they came
// from, using the web server's access log: MediaGoblin itself stores no
// address.
//
// It reads two line formats, detected per line:
//
//   - the combined format of nginx and Apache (optionally with nginx's
//     trailing "$http_x_forwarded_for" field, as in its stock "main"
//     format). A sign-up shows as "POST …/auth/register/" answered 302,
//     followed by the browser's "GET …/u/<username>/" from the same address;
//     see Linker for when that is trusted.
//
//   - the sign-up format that contrib/nginx and contrib/apache configure,
//     which records the response's Location header and so names the new
//     username exactly:
//
//     bouncemilter-signup/1 ADDR [TIME] "REQUEST" STATUS "LOCATION" "X-FORWARDED-FOR"
//
//     TIME is ISO 8601 (nginx's $time_iso8601) or the common log format.
//
// Files are read incrementally across runs and across rotation (see Read).
// The package links and reads; it writes nothing anywhere: the caller stores
// the links and the positions it is handed.
package accesslog

import (
	"bytes"
	"errors"
	"fmt"
	"net/netip"
	"net/url"
	"strconv"
	"strings"
	"time"
	"unicode"
	"unicode/utf8"
)

// Format is the format a line was written in.
type Format uint8

// The formats ParseLine understands.
const (
	Combined Format = iota + 1
	Signup
)

func (f Format) String() string {
	switch f {
	case Combined:
		return "combined"
	case Signup:
		return "signup"
	}
	return "unknown"
}

// signupTag starts every line of the sign-up format.
const signupTag = "bouncemilter-signup/1 "

// ErrMalformed is wrapped by ParseLine's errors.
var ErrMalformed = errors.New("accesslog: malformed line")

// Entry is one request as the log recorded it.
type Entry struct {
	Format Format
	// Remote is the address that connected to the web server, as logged;
	// it may be a reverse proxy, or not an IP at all ("unix:").
	Remote    string
	Time      time.Time
	Method    string
	Path      string // the request path without query, %-decoded
	Status    int
	Location  string // the response's Location header (sign-up format only)
	Forwarded string // the X-Forwarded-For header, "" when not logged or "-"
}

// ParseLine parses one log line, without its line ending.
func ParseLine(line string) (Entry, error) {
	var e Entry
	var err error
	if rest, ok := strings.CutPrefix(line, signupTag); ok {
		e, err = parseSignup(rest)
	} else {
		e, err = parseCombined(line)
	}
	if err != nil {
		return Entry{}, fmt.Errorf("%w: %v", ErrMalformed, err)
	}
	return e, nil
}

// scanner walks a log line field by field.
type scanner struct {
	s   string
	err error
}

func (p *scanner) fail(what string) {
	if p.err == nil {
		p.err = fmt.Errorf("bad %s at %q", what, truncate(p.s, 40))
	}
}

// token returns the next space-delimited field.
func (p *scanner) token(what string) string {
	if p.err != nil {
		return ""
	}
	p.s = strings.TrimLeft(p.s, " ")
	i := strings.IndexByte(p.s, ' ')
	if i < 0 {
		i = len(p.s)
	}
	tok := p.s[:i]
	p.s = p.s[i:]
	if tok == "" {
		p.fail(what)
	}
	return tok
}

// bracketed returns the contents of the next [...] field.
func (p *scanner) bracketed(what string) string {
	if p.err != nil {
		return ""
	}
	p.s = strings.TrimLeft(p.s, " ")
	if !strings.HasPrefix(p.s, "[") {
		p.fail(what)
		return ""
	}
	i := strings.IndexByte(p.s, ']')
	if i < 0 {
		p.fail(what)
		return ""
	}
	v := p.s[1:i]
	p.s = p.s[i+1:]
	return v
}

// quoted returns the unescaped contents of the next "..." field. nginx
// escapes '"', '\' and control bytes as \xHH; Apache as \" , \\ and \xHH.
func (p *scanner) quoted(what string) string {
	if p.err != nil {
		return ""
	}
	p.s = strings.TrimLeft(p.s, " ")
	if !strings.HasPrefix(p.s, `"`) {
		p.fail(what)
		return ""
	}
	var b strings.Builder
	for i := 1; i < len(p.s); i++ {
		c := p.s[i]
		switch {
		case c == '"':
			p.s = p.s[i+1:]
			return b.String()
		case c == '\\' && i+1 < len(p.s):
			i++
			switch p.s[i] {
			case 'x':
				if i+2 < len(p.s) {
					if v, err := strconv.ParseUint(p.s[i+1:i+3], 16, 8); err == nil {
						b.WriteByte(byte(v))
						i += 2
						continue
					}
				}
				b.WriteString(`\x`)
			case 'n':
				b.WriteByte('\n')
			case 't':
				b.WriteByte('\t')
			default:
				b.WriteByte(p.s[i])
			}
		default:
			b.WriteByte(c)
		}
	}
	p.fail(what)
	return ""
}

func (p *scanner) more() bool {
	return p.err == nil && strings.TrimLeft(p.s, " ") != ""
}

// parseCombined reads
//
//	%h %l %u [%t] "%r" %>s %b "%{Referer}i" "%{User-Agent}i" ["X-Forwarded-For"]
//
// The fields up to the request are read by position, not as tokens: %u
// ($remote_user) is whatever name a client sends in "Authorization: Basic",
// logged by nginx even where no auth is configured and by Apache on a
// failed login, spaces and brackets as sent. Read as a token, "a b" split
// the line, and any client could make lines malformed at will.
func parseCombined(line string) (Entry, error) {
	p := &scanner{s: line}
	e := Entry{Format: Combined}
	remote, rest, _ := strings.Cut(line, " ")
	if remote == "" {
		p.fail("remote address")
		return Entry{}, p.err
	}
	e.Remote = remote
	p.s = rest
	q := requestStart(rest)
	if q < 0 {
		p.fail("request")
		return Entry{}, p.err
	}
	ts, ok := combinedTime(rest[:q])
	if !ok {
		p.fail("ident, user or time")
		return Entry{}, p.err
	}
	p.s = rest[q:]
	req := p.quoted("request")
	status := p.token("status")
	p.token("size")
	p.quoted("referer")
	p.quoted("user agent")
	if p.more() && strings.HasPrefix(strings.TrimLeft(p.s, " "), `"`) {
		e.Forwarded = dash(p.quoted("forwarded-for"))
	}
	if p.err != nil {
		return Entry{}, p.err
	}
	return finish(e, ts, req, status)
}

// requestStart returns the index in s of the quote that opens the request:
// the first '"' that is not behind a backslash and follows a ']' (the end
// of the time), or -1. Neither server leaves a bare '"' in %l or %u: nginx
// (escape=default) writes '"' and '\' as \x22 and \x5C; Apache
// (ap_escape_logitem) as \" and \\, and an empty user name as "" — which
// follows no ']'.
func requestStart(s string) int {
	for i := 0; i < len(s); i++ {
		switch s[i] {
		case '\\':
			i++
		case '"':
			if strings.HasSuffix(strings.TrimRight(s[:i], " "), "]") {
				return i
			}
		}
	}
	return -1
}

// combinedTime returns the time of "%l %u [%t] ", which requestStart found
// to end in ']': the last [...], since %u may hold brackets itself but %t
// holds none; %l a token and %u anything but nothing.
func combinedTime(s string) (string, bool) {
	s = strings.TrimRight(s, " ")
	i := strings.LastIndexByte(s, '[')
	if i < 0 {
		return "", false
	}
	ident, user, _ := strings.Cut(s[:i], " ")
	user, ok := strings.CutSuffix(user, " ")
	if ident == "" || user == "" || !ok {
		return "", false
	}
	return s[i+1 : len(s)-1], true
}

// parseSignup reads the sign-up format after its tag.
func parseSignup(line string) (Entry, error) {
	p := &scanner{s: line}
	e := Entry{Format: Signup}
	e.Remote = p.token("remote address")
	ts := p.bracketed("time")
	req := p.quoted("request")
	status := p.token("status")
	e.Location = dash(p.quoted("location"))
	if p.more() {
		e.Forwarded = dash(p.quoted("forwarded-for"))
	}
	if p.err != nil {
		return Entry{}, p.err
	}
	if p.more() {
		return Entry{}, fmt.Errorf("trailing data %q", truncate(p.s, 40))
	}
	return finish(e, ts, req, status)
}

func finish(e Entry, ts, req, status string) (Entry, error) {
	var err error
	if e.Time, err = parseTime(ts); err != nil {
		return Entry{}, err
	}
	if e.Status, err = strconv.Atoi(status); err != nil || e.Status < 100 || e.Status > 999 {
		return Entry{}, fmt.Errorf("bad status %q", truncate(status, 20))
	}
	// "GET /path HTTP/1.1"; a garbage request (a TLS handshake sent to
	// the plain port, say) is logged as is and is simply not a sign-up.
	method, rest, _ := strings.Cut(req, " ")
	target, _, _ := strings.Cut(rest, " ")
	e.Method = method
	e.Path = requestPath(target)
	return e, nil
}

// requestPath returns the %-decoded path of a request target.
func requestPath(target string) string {
	if i := strings.IndexAny(target, "?#"); i >= 0 {
		target = target[:i]
	}
	if strings.HasPrefix(target, "http://") || strings.HasPrefix(target, "https://") {
		if u, err := url.Parse(target); err == nil {
			target = u.Path
		}
	}
	if p, err := url.PathUnescape(target); err == nil {
		return p
	}
	return target
}

var timeLayouts = []string{
	"02/Jan/2006:15:04:05 -0700", // common log format, nginx $time_local, Apache %t
	time.RFC3339,                 // nginx $time_iso8601
	"2006-01-02T15:04:05-0700",   // Apache %{%Y-%m-%dT%H:%M:%S%z}t
	time.RFC3339Nano,
}

func parseTime(s string) (time.Time, error) {
	for _, l := range timeLayouts {
		if t, err := time.Parse(l, s); err == nil {
			return t.UTC(), nil
		}
	}
	return time.Time{}, fmt.Errorf("bad time %q", truncate(s, 40))
}

func dash(s string) string {
	if s == "-" {
		return ""
	}
	return s
}

func truncate(s string, n int) string {
	if len(s) <= n {
		return s
	}
	return s[:n] + "…"
}

// IsRegisterPost reports whether e is a sign-up MediaGoblin accepted: a POST
// to /auth/register/ (under any prefix MediaGoblin is mounted at) answered
// with a redirect.
func (e Entry) IsRegisterPost() bool {
	return e.Method == "POST" && strings.HasSuffix(e.Path, "/auth/register/") &&
		(e.Status == 302 || e.Status == 303)
}

// ProfileUser returns the username of a successful "GET …/u/<username>/",
// the page MediaGoblin redirects a new account to.
func (e Entry) ProfileUser() (string, bool) {
	if e.Method != "GET" || e.Status != 200 {
		return "", false
	}
	return profileUser(e.Path)
}

// LocationUser returns the username that a sign-up's Location header
// names: "https://host/u/<username>/" or "/u/<username>/".
func (e Entry) LocationUser() (string, bool) {
	if e.Location == "" {
		return "", false
	}
	u, err := url.Parse(e.Location)
	if err != nil {
		return "", false
	}
	return profileUser(u.Path)
}

// profileUser extracts <username> from a path ending in /u/<username>/.
// MediaGoblin's usernames match ^[-_\w]+$ (Unicode \w) and are lowercase.
func profileUser(path string) (string, bool) {
	rest, ok := strings.CutSuffix(path, "/")
	if !ok {
		return "", false
	}
	i := strings.LastIndex(rest, "/u/")
	if i < 0 {
		return "", false
	}
	name := rest[i+3:]
	if name == "" || !utf8.ValidString(name) {
		return "", false
	}
	for _, r := range name {
		if r != '-' && r != '_' && !unicode.IsLetter(r) && !unicode.IsDigit(r) {
			return "", false
		}
	}
	return name, true
}

// Client returns the address of the client behind e: Remote, or, when
// Remote is a trusted proxy, the right-most address of X-Forwarded-For that
// is not itself trusted, as each trusted proxy appends the address it saw.
// A request over a unix socket ("unix:") has no address of its own; its
// X-Forwarded-For is believed only with trustUnix: any local user who can
// reach the socket can write that header, and so have any IP banned.
func (e Entry) Client(trusted []netip.Prefix, trustUnix bool) (netip.Addr, bool) {
	remote, err := netip.ParseAddr(e.Remote)
	isTrusted := func(a netip.Addr) bool {
		for _, p := range trusted {
			if p.Contains(a) {
				return true
			}
		}
		return false
	}
	if err == nil && !isTrusted(remote.Unmap()) {
		return remote.Unmap(), true
	}
	if err != nil && !(trustUnix && strings.HasPrefix(e.Remote, "unix:")) {
		return netip.Addr{}, false
	}
	hops := strings.Split(e.Forwarded, ",")
	for i := len(hops) - 1; i >= 0; i-- {
		h := strings.TrimSpace(hops[i])
		if h == "" {
			continue
		}
		a, err := netip.ParseAddr(h)
		if err != nil {
			return netip.Addr{}, false // a forged or garbled hop: trust nothing
		}
		if a = a.Unmap(); !isTrusted(a) {
			return a, true
		}
	}
	if err == nil {
		// Every hop is a trusted proxy: the request came from one itself.
		return remote.Unmap(), true
	}
	return netip.Addr{}, false
}

// lineBytes trims the line ending of a line as read from a file.
func lineBytes(b []byte) []byte {
	b = bytes.TrimSuffix(b, []byte("\n"))
	return bytes.TrimSuffix(b, []byte("\r"))
}
