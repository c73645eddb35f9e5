package feed

import (
	"errors"
	"testing"
	"time"
)

// An IPv4-mapped IPv6 address is netip's canonical spelling of
// ::ffff:192.0.2.1, but the banner bans it as 192.0.2.1: a feed that
// lists one is refused whole, as a feed with any malformed entry is.
func TestParseRefusesMappedIP(t *testing.T) {
	seen := Seen{FirstSeen: t0, LastSeen: t0, Count: 1, Expires: t0.Add(DefaultTTL)}
	for _, ip := range []string{"::ffff:192.0.2.1", "::ffff:192.0.2.0/120", "::ffff:0:0/96"} {
		f := &Feed{Version: Version, Name: "a.example", Made: t0.Add(time.Hour), IPs: []IP{{IP: ip, Seen: seen}}}
		data, err := f.Marshal()
		if err != nil {
			t.Fatal(err)
		}
		if _, err := Parse(data); !errors.Is(err, ErrFormat) {
			t.Errorf("feed listing %s: err = %v; want ErrFormat", ip, err)
		}
	}
	// What is not mapped still parses.
	for _, ip := range []string{"192.0.2.1", "2001:db8::7", "::1:2:3", "2001:db8::/32"} {
		f := &Feed{Version: Version, Name: "a.example", Made: t0.Add(time.Hour), IPs: []IP{{IP: ip, Seen: seen}}}
		data, _ := f.Marshal()
		if _, err := Parse(data); err != nil {
			t.Errorf("feed listing %s: %v", ip, err)
		}
	}
}
