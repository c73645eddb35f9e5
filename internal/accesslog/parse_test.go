package accesslog

import (
	"bufio"
	"fmt"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

func TestParseLine(t *testing.T) {
	tests := []struct {
		line string
		want Entry
	}{
		{
			`203.0.113.7 - - [20/Nov/2026:10:00:05 +0000] "POST /auth/register/ HTTP/1.1" 302 209 "https://media.example.org/auth/register/" "Mozilla/5.0 (X11; Linux x86_64)"`,
			Entry{Format: Combined, Remote: "203.0.113.7", Time: time.Date(2026, 11, 20, 10, 0, 5, 0, time.UTC), Method: "POST", Path: "/auth/register/", Status: 302},
		},
		{
			`203.0.113.8 - frank [20/Nov/2026:11:00:01 +0100] "GET /mediagoblin/u/carol/ HTTP/1.1" 200 2326 "-" "Mozilla/5.0 \"quoted\""`,
			Entry{Format: Combined, Remote: "203.0.113.8", Time: time.Date(2026, 11, 20, 10, 0, 1, 0, time.UTC), Method: "GET", Path: "/mediagoblin/u/carol/", Status: 200},
		},
		{
			`10.0.0.2 - - [20/Nov/2026:10:00:05 +0000] "GET /u/%C3%A9lodie/?x=1 HTTP/1.1" 200 209 "-" "Mozilla/5.0" "203.0.113.9, 10.0.0.1"`,
			Entry{Format: Combined, Remote: "10.0.0.2", Time: time.Date(2026, 11, 20, 10, 0, 5, 0, time.UTC), Method: "GET", Path: "/u/élodie/", Status: 200, Forwarded: "203.0.113.9, 10.0.0.1"},
		},
		{
			`192.0.2.1 - - [20/Nov/2026:10:02:00 +0000] "\x16\x03\x01" 400 157 "-" "-"`,
			Entry{Format: Combined, Remote: "192.0.2.1", Time: time.Date(2026, 11, 20, 10, 2, 0, 0, time.UTC), Method: "\x16\x03\x01", Status: 400},
		},
		{
			`bouncemilter-signup/1 203.0.113.7 [2026-11-20T10:00:05+00:00] "POST /auth/register/ HTTP/1.1" 302 "https://media.example.org/u/bot4711/" "-"`,
			Entry{Format: Signup, Remote: "203.0.113.7", Time: time.Date(2026, 11, 20, 10, 0, 5, 0, time.UTC), Method: "POST", Path: "/auth/register/", Status: 302, Location: "https://media.example.org/u/bot4711/"},
		},
		{
			`bouncemilter-signup/1 2001:db8::1 [2026-11-20T11:00:05+0100] "POST /auth/register/ HTTP/2.0" 302 "/u/x/" "198.51.100.1"`,
			Entry{Format: Signup, Remote: "2001:db8::1", Time: time.Date(2026, 11, 20, 10, 0, 5, 0, time.UTC), Method: "POST", Path: "/auth/register/", Status: 302, Location: "/u/x/", Forwarded: "198.51.100.1"},
		},
		{
			`bouncemilter-signup/1 203.0.113.7 [20/Nov/2026:10:00:05 +0000] "POST /auth/register/ HTTP/1.1" 200 "-"`,
			Entry{Format: Signup, Remote: "203.0.113.7", Time: time.Date(2026, 11, 20, 10, 0, 5, 0, time.UTC), Method: "POST", Path: "/auth/register/", Status: 200},
		},
	}
	for _, tt := range tests {
		got, err := ParseLine(tt.line)
		if err != nil {
			t.Errorf("ParseLine(%q): %v", tt.line, err)
			continue
		}
		if got != tt.want {
			t.Errorf("ParseLine(%q)\n got %+v\nwant %+v", tt.line, got, tt.want)
		}
	}
}

func TestParseLineMalformed(t *testing.T) {
	for _, line := range []string{
		``,
		`hello world`,
		`203.0.113.7 - - [yesterday] "GET / HTTP/1.1" 200 1 "-" "-"`,
		`203.0.113.7 - - [20/Nov/2026:10:00:05 +0000] "GET / HTTP/1.1" abc 1 "-" "-"`,
		`203.0.113.7 - - [20/Nov/2026:10:00:05 +0000] "GET / HTTP/1.1 200 1 "-" "-"`,
		`203.0.113.7 - - [20/Nov/2026:10:00:05 +0000] "GET / HTTP/1.1" 200`,
		`{"remote_addr":"203.0.113.7","status":302}`,
		`bouncemilter-signup/1 203.0.113.7 [2026-11-20T10:00:05+00:00] "POST /auth/register/ HTTP/1.1" 302 "/u/x/" "-" trailing`,
		`bouncemilter-signup/1 203.0.113.7 [2026-11-20T10:00:05+00:00] "POST /auth/register/ HTTP/1.1" 302`,
		// What reading the user field by position must still refuse.
		`203.0.113.7 [20/Nov/2026:10:00:05 +0000] "GET / HTTP/1.1" 200 1 "-" "-"`,
		`203.0.113.7 - [20/Nov/2026:10:00:05 +0000] "GET / HTTP/1.1" 200 1 "-" "-"`,
		`203.0.113.7 - - "GET / HTTP/1.1" 200 1 "-" "-"`,
		`203.0.113.7 - - [20/Nov/2026:10:00:05 +0000] x "GET / HTTP/1.1" 200 1 "-" "-"`,
		`203.0.113.7 - "a b" [20/Nov/2026:10:00:05 +0000] 200 1 "-" "-"`,
		`203.0.113.7 - - [20/Nov/2026:10:00:05 +0000] \"GET / HTTP/1.1" 200 1 "-" "-"`,
	} {
		if e, err := ParseLine(line); err == nil {
			t.Errorf("ParseLine(%q) = %+v, want error", line, e)
		}
	}
}

// A unix socket's X-Forwarded-For is believed only when the admin says the
// socket belongs to a proxy (issue 9 §6).
func TestClientUnixSocket(t *testing.T) {
	for _, tt := range []struct {
		fwd       string
		trustUnix bool
		want      string
	}{
		{"198.51.100.78", false, ""},
		{"198.51.100.78", true, "198.51.100.78"},
		{"", true, ""},
		{"garbage", true, ""},
	} {
		got, ok := Entry{Remote: "unix:", Forwarded: tt.fwd}.Client(nil, tt.trustUnix)
		if (tt.want == "") != !ok || (ok && got.String() != tt.want) {
			t.Errorf("Client(unix:, %q, trustUnix %v) = %v %v, want %q", tt.fwd, tt.trustUnix, got, ok, tt.want)
		}
	}
}

func TestClient(t *testing.T) {
	trusted := []netip.Prefix{netip.MustParsePrefix("127.0.0.0/8"), netip.MustParsePrefix("10.0.0.0/8")}
	tests := []struct {
		remote, fwd string
		trusted     []netip.Prefix
		want        string // "" = no client
	}{
		{"203.0.113.7", "", nil, "203.0.113.7"},
		{"203.0.113.7", "198.51.100.1", nil, "203.0.113.7"}, // untrusted: header ignored
		{"127.0.0.1", "198.51.100.1", nil, "127.0.0.1"},     // no proxy configured
		{"127.0.0.1", "198.51.100.1", trusted, "198.51.100.1"},
		{"127.0.0.1", "6.6.6.6, 198.51.100.1, 10.0.0.5", trusted, "198.51.100.1"}, // client-set first hop ignored
		{"127.0.0.1", "", trusted, "127.0.0.1"},
		{"127.0.0.1", "garbage, 198.51.100.1", trusted, "198.51.100.1"},
		{"127.0.0.1", "198.51.100.1, garbage", trusted, ""},
		{"::ffff:203.0.113.7", "", nil, "203.0.113.7"},
		// Over a unix socket, the header is believed only when told to
		// (below).
		{"unix:", "198.51.100.78", nil, ""},
		{"not-an-ip", "198.51.100.1", trusted, ""},
	}
	for _, tt := range tests {
		got, ok := Entry{Remote: tt.remote, Forwarded: tt.fwd}.Client(tt.trusted, false)
		if (tt.want == "") != !ok || (ok && got.String() != tt.want) {
			t.Errorf("Client(%q, %q) = %v %v, want %q", tt.remote, tt.fwd, got, ok, tt.want)
		}
	}
}

func TestUsernames(t *testing.T) {
	for _, tt := range []struct {
		e    Entry
		want string
	}{
		{Entry{Method: "GET", Status: 200, Path: "/u/alice/"}, "alice"},
		{Entry{Method: "GET", Status: 200, Path: "/prefix/u/bob-2_x/"}, "bob-2_x"},
		{Entry{Method: "GET", Status: 200, Path: "/u/élodie/"}, "élodie"},
		{Entry{Method: "GET", Status: 200, Path: "/u/alice/gallery/"}, ""},
		{Entry{Method: "GET", Status: 200, Path: "/u/alice"}, ""},
		{Entry{Method: "GET", Status: 404, Path: "/u/alice/"}, ""},
		{Entry{Method: "HEAD", Status: 200, Path: "/u/alice/"}, ""},
		{Entry{Method: "GET", Status: 200, Path: "/u/al ice/"}, ""},
	} {
		got, _ := tt.e.ProfileUser()
		if got != tt.want {
			t.Errorf("ProfileUser(%+v) = %q, want %q", tt.e, got, tt.want)
		}
	}
	for loc, want := range map[string]string{
		"https://media.example.org/u/bot4711/": "bot4711",
		"/u/x/":                                "x",
		"/auth/register/":                      "",
		"":                                     "",
		"https://media.example.org/u/%C3%A9/":  "é",
	} {
		got, _ := Entry{Location: loc}.LocationUser()
		if got != want {
			t.Errorf("LocationUser(%q) = %q, want %q", loc, got, want)
		}
	}
}

// The sample logs in testdata parse whole.
func TestSamples(t *testing.T) {
	files, _ := filepath.Glob("testdata/*.log")
	if len(files) == 0 {
		t.Fatal("no samples")
	}
	for _, name := range files {
		f, err := os.Open(name)
		if err != nil {
			t.Fatal(err)
		}
		sc := bufio.NewScanner(f)
		for n := 1; sc.Scan(); n++ {
			if _, err := ParseLine(sc.Text()); err != nil {
				t.Errorf("%s:%d: %v", name, n, err)
			}
		}
		f.Close()
	}
}

func FuzzParseLine(f *testing.F) {
	files, _ := filepath.Glob("testdata/*.log")
	for _, name := range files {
		data, _ := os.ReadFile(name)
		for _, l := range strings.Split(string(data), "\n") {
			f.Add(l)
		}
	}
	f.Fuzz(func(t *testing.T, line string) {
		e, err := ParseLine(line)
		if err != nil {
			return
		}
		e.IsRegisterPost()
		e.ProfileUser()
		e.LocationUser()
		e.Client([]netip.Prefix{netip.MustParsePrefix("127.0.0.0/8")}, true)
		if e.Status < 100 || e.Status > 999 {
			t.Errorf("status %d accepted", e.Status)
		}
	})
}

// $remote_user is whatever a client sends in "Authorization: Basic", logged
// even where no auth is configured (nginx) or on a failed login (Apache),
// spaces and brackets unescaped: it must not split the line (found by
// review: two such requests made a read ErrGarbled and stopped sync).
func TestParseLineRemoteUser(t *testing.T) {
	want := Entry{Format: Combined, Remote: "198.51.100.66", Time: time.Date(2026, 11, 20, 10, 0, 1, 0, time.UTC), Method: "GET", Path: "/u/bob/", Status: 200}
	for _, user := range []string{
		`-`,
		`a b`,
		`a  b `,
		` `,
		`[20/Nov/2026:09:00:00 +0000]`,
		`x] [y`,
		`a\x22 b`,                // nginx: '"' as \x22
		`\x5C\x22`,               // nginx: '\' and '"'
		`\xC3\xA9 \x09`,          // nginx: bytes above 126 and below 32
		`a\" [x] \"b`,            // Apache: '"' as \"
		`a\\`,                    // Apache: '\' as \\
		`a\\\" \"GET / HTTP/1.1`, // Apache: an escaped quote after an escaped backslash
		`""`,                     // Apache: an empty user name
		`\t\x01`,                 // Apache: control bytes
	} {
		line := `198.51.100.66 - ` + user + ` [20/Nov/2026:10:00:01 +0000] "GET /u/bob/ HTTP/1.1" 200 5 "-" "ua"`
		got, err := ParseLine(line)
		if err != nil {
			t.Errorf("ParseLine(%q): %v", line, err)
		} else if got != want {
			t.Errorf("ParseLine(%q)\n got %+v\nwant %+v", line, got, want)
		}
	}
}

// nginxEscape escapes a value as nginx's log_format escape=default does:
// '"', '\' and bytes below 32 or above 126 as \xHH.
func nginxEscape(s string) string {
	var b strings.Builder
	for i := 0; i < len(s); i++ {
		if c := s[i]; c == '"' || c == '\\' || c < 32 || c > 126 {
			fmt.Fprintf(&b, `\x%02X`, c)
		} else {
			b.WriteByte(c)
		}
	}
	return b.String()
}

// apacheUser writes a user name as Apache's %u does (log_remote_user and
// ap_escape_logitem): "" when empty, else '"' and '\' behind a backslash,
// \b \n \r \t \v as such, other unprintable bytes as \xhh. A C string ends
// at NUL.
func apacheUser(s string) string {
	s, _, _ = strings.Cut(s, "\x00")
	if s == "" {
		return `""`
	}
	var b strings.Builder
	for i := 0; i < len(s); i++ {
		switch c := s[i]; {
		case c == '"' || c == '\\':
			b.WriteByte('\\')
			b.WriteByte(c)
		case c == '\b':
			b.WriteString(`\b`)
		case c == '\n':
			b.WriteString(`\n`)
		case c == '\r':
			b.WriteString(`\r`)
		case c == '\t':
			b.WriteString(`\t`)
		case c == '\v':
			b.WriteString(`\v`)
		case c < 32 || c > 126:
			fmt.Fprintf(&b, `\x%02x`, c)
		default:
			b.WriteByte(c)
		}
	}
	return b.String()
}

// Whatever user name a client sends, nginx's and Apache's combined lines
// parse to the same entry.
func FuzzParseLineRemoteUser(f *testing.F) {
	for _, s := range []string{"a b", `a" [x] "b`, `\`, `\"`, "", "é \t\n", `] "GET / HTTP/1.1" 200`} {
		f.Add(s)
	}
	want := Entry{Format: Combined, Remote: "2001:db8::7", Time: time.Date(2026, 11, 20, 10, 0, 1, 0, time.UTC), Method: "POST", Path: "/auth/register/", Status: 302, Forwarded: "198.51.100.1"}
	f.Fuzz(func(t *testing.T, user string) {
		for server, logged := range map[string]string{"nginx": nginxEscape(user), "Apache": apacheUser(user)} {
			if logged == "" {
				logged = "-" // nginx logs an empty value as "-"
			}
			line := `2001:db8::7 - ` + logged + ` [20/Nov/2026:10:00:01 +0000] "POST /auth/register/ HTTP/1.1" 302 0 "-" "ua" "198.51.100.1"`
			got, err := ParseLine(line)
			if err != nil || got != want {
				t.Errorf("%s: user %q, line %q: got %+v, %v", server, user, line, got, err)
			}
		}
	})
}
