package accesslog

import (
	"fmt"
	"net/netip"
	"reflect"
	"strings"
	"testing"
)

func linkAll(t *testing.T, opts Options, lines ...string) (map[string]string, []string) {
	t.Helper()
	l := NewLinker(opts)
	for _, line := range lines {
		e, err := ParseLine(line)
		if err != nil {
			t.Fatalf("%q: %v", line, err)
		}
		l.Add(e)
	}
	links, amb := l.Result()
	got := map[string]string{}
	for _, k := range links {
		got[k.Username] = k.IP.String() + " " + k.Source
	}
	return got, amb
}

func comb(ip, hms, method, path string, status int) string {
	return fmt.Sprintf(`%s - - [20/Nov/2026:%s +0000] "%s %s HTTP/1.1" %d 100 "-" "UA"`, ip, hms, method, path, status)
}

func signup(ip, hms, location, fwd string) string {
	return fmt.Sprintf(`bouncemilter-signup/1 %s [2026-11-20T%s+00:00] "POST /auth/register/ HTTP/1.1" 302 "%s" "%s"`, ip, hms, location, fwd)
}

func TestLinker(t *testing.T) {
	const a, b = "203.0.113.1", "203.0.113.2"
	proxy := []netip.Prefix{netip.MustParsePrefix("127.0.0.1/32")}
	tests := []struct {
		name      string
		opts      Options
		lines     []string
		links     map[string]string
		ambiguous []string
	}{
		{
			name: "post then get",
			lines: []string{
				comb(a, "10:00:00", "POST", "/auth/register/", 302),
				comb(a, "10:00:01", "GET", "/u/bot/", 200),
			},
			links: map[string]string{"bot": a + " combined-log"},
		},
		{
			name: "failed sign-up links nothing",
			lines: []string{
				comb(a, "10:00:00", "POST", "/auth/register/", 200),
				comb(a, "10:00:01", "GET", "/u/bot/", 200),
			},
			links: map[string]string{},
		},
		{
			name: "get from another address links nothing",
			lines: []string{
				comb(a, "10:00:00", "POST", "/auth/register/", 302),
				comb(b, "10:00:01", "GET", "/u/bot/", 200),
			},
			links: map[string]string{},
		},
		{
			name: "get too late links nothing",
			lines: []string{
				comb(a, "10:00:00", "POST", "/auth/register/", 302),
				comb(a, "10:00:30", "GET", "/u/bot/", 200),
			},
			links: map[string]string{},
		},
		{
			name: "a post is taken by one get",
			lines: []string{
				comb(a, "10:00:00", "POST", "/auth/register/", 302),
				comb(a, "10:00:01", "GET", "/u/newbie/", 200),
				comb(a, "10:00:03", "GET", "/u/famous/", 200),
			},
			links: map[string]string{"newbie": a + " combined-log"},
		},
		{
			name: "two sign-ups from one address",
			lines: []string{
				comb(a, "10:00:00", "POST", "/auth/register/", 302),
				comb(a, "10:00:00", "POST", "/auth/register/", 302),
				comb(a, "10:00:01", "GET", "/u/bot1/", 200),
				comb(a, "10:00:01", "GET", "/u/bot2/", 200),
			},
			links: map[string]string{"bot1": a + " combined-log", "bot2": a + " combined-log"},
		},
		{
			name: "profile fetched after sign-ups from two addresses",
			lines: []string{
				comb(a, "10:00:00", "POST", "/auth/register/", 302),
				comb(b, "10:00:00", "POST", "/auth/register/", 302),
				comb(a, "10:00:01", "GET", "/u/bot/", 200),
				comb(b, "10:00:02", "GET", "/u/bot/", 200),
			},
			links:     map[string]string{},
			ambiguous: []string{"bot"},
		},
		{
			name: "signup log is exact",
			lines: []string{
				signup(a, "10:00:00", "https://m.example/u/bot/", "-"),
			},
			links: map[string]string{"bot": a + " signup-log"},
		},
		{
			name: "signup log wins over combined",
			opts: Options{TrustedProxies: proxy},
			lines: []string{
				comb("127.0.0.1", "10:00:00", "POST", "/auth/register/", 302),
				comb("127.0.0.1", "10:00:01", "GET", "/u/bot/", 200),
				signup("127.0.0.1", "10:00:00", "/u/bot/", a),
			},
			links: map[string]string{"bot": a + " signup-log"},
		},
		{
			name: "signup log naming two addresses",
			lines: []string{
				signup(a, "10:00:00", "/u/bot/", "-"),
				signup(b, "10:00:00", "/u/bot/", "-"),
			},
			links:     map[string]string{},
			ambiguous: []string{"bot"},
		},
		{
			name: "forwarded-for believed only from a trusted proxy",
			lines: []string{
				signup(a, "10:00:00", "/u/bot/", b),
			},
			links: map[string]string{"bot": a + " signup-log"},
		},
		{
			name: "behind a trusted proxy",
			opts: Options{TrustedProxies: proxy},
			lines: []string{
				signup("127.0.0.1", "10:00:00", "/u/bot/", b),
			},
			links: map[string]string{"bot": b + " signup-log"},
		},
		{
			name: "mounted under a prefix",
			lines: []string{
				comb(a, "10:00:00", "POST", "/mg/auth/register/", 302),
				comb(a, "10:00:01", "GET", "/mg/u/bot/", 200),
			},
			links: map[string]string{"bot": a + " combined-log"},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			links, amb := linkAll(t, tt.opts, tt.lines...)
			if !reflect.DeepEqual(links, tt.links) {
				t.Errorf("links = %v, want %v", links, tt.links)
			}
			if strings.Join(amb, ",") != strings.Join(tt.ambiguous, ",") {
				t.Errorf("ambiguous = %v, want %v", amb, tt.ambiguous)
			}
		})
	}
}

// A read may end between a sign-up POST and its GET: State carries the POST
// over to the next run.
func TestLinkerState(t *testing.T) {
	l := NewLinker(Options{})
	e, _ := ParseLine(comb("203.0.113.1", "10:00:00", "POST", "/auth/register/", 302))
	l.Add(e)
	if links, _ := l.Result(); len(links) != 0 {
		t.Fatalf("links before GET: %v", links)
	}
	st, err := l.State()
	if err != nil {
		t.Fatal(err)
	}
	l2 := NewLinker(Options{})
	if err := l2.Restore(st); err != nil {
		t.Fatal(err)
	}
	e, _ = ParseLine(comb("203.0.113.1", "10:00:02", "GET", "/u/bot/", 200))
	l2.Add(e)
	links, _ := l2.Result()
	if len(links) != 1 || links[0].Username != "bot" || links[0].IP.String() != "203.0.113.1" {
		t.Errorf("links after restore = %v", links)
	}
	if err := l2.Restore([]byte("{garbage")); err == nil {
		t.Error("Restore accepted garbage")
	}
}

func TestLinkerForgetsOldPosts(t *testing.T) {
	l := NewLinker(Options{})
	for i := 0; i < 10000; i++ {
		e, _ := ParseLine(comb(fmt.Sprintf("198.51.%d.%d", i/250, i%250), fmt.Sprintf("%02d:%02d:%02d", i/3600, i/60%60, i%60), "POST", "/auth/register/", 302))
		l.Add(e)
	}
	st, _ := l.State()
	if len(st) > 2000 {
		t.Errorf("state holds %d bytes: old POSTs not forgotten", len(st))
	}
}
