package accesslog_test

import (
	"fmt"

	"github.com/bouncemilter/bouncemilter/internal/accesslog"
)

func ExampleLinker() {
	l := accesslog.NewLinker(accesslog.Options{})
	for _, line := range []string{
		`203.0.113.7 - - [20/Nov/2026:10:00:05 +0000] "POST /auth/register/ HTTP/1.1" 302 209 "-" "Mozilla/5.0"`,
		`203.0.113.7 - - [20/Nov/2026:10:00:06 +0000] "GET /u/bot4711/ HTTP/1.1" 200 3012 "-" "Mozilla/5.0"`,
		`bouncemilter-signup/1 198.51.100.9 [2026-11-20T10:00:07+00:00] "POST /auth/register/ HTTP/1.1" 302 "https://media.example.org/u/carol/" "-"`,
	} {
		e, err := accesslog.ParseLine(line)
		if err != nil {
			fmt.Println(err)
			continue
		}
		l.Add(e)
	}
	links, ambiguous := l.Result()
	for _, k := range links {
		fmt.Println(k.Username, k.IP, k.Source)
	}
	fmt.Println("ambiguous:", len(ambiguous))
	// Output:
	// bot4711 203.0.113.7 combined-log
	// carol 198.51.100.9 signup-log
	// ambiguous: 0
}
