package banner

import (
	"context"
	"errors"
	"net/netip"
	"path/filepath"
	"slices"
	"strings"
	"testing"
)

func TestProtected(t *testing.T) {
	allow := []netip.Prefix{
		netip.MustParsePrefix("10.0.0.0/8"),
		netip.MustParsePrefix("2001:db8:ffff::/48"),
	}
	for _, tc := range []struct {
		ip   string // "" is the zero Addr
		want string // "" when it may be banned
	}{
		{"", "not a valid address"},
		{"0.0.0.0", "unspecified address"},
		{"::", "unspecified address"},
		{"127.0.0.1", "loopback address"},
		{"127.1.2.3", "loopback address"},
		{"::1", "loopback address"},
		{"::ffff:127.0.0.1", "loopback address"},
		{"224.0.0.1", "multicast address"},
		{"239.255.255.250", "multicast address"},
		{"ff02::1", "multicast address"},
		{"169.254.1.1", "link-local address"},
		{"fe80::1", "link-local address"},
		{"fe80::1%eth0", "link-local address"},
		{"255.255.255.255", "broadcast address"},
		{"10.1.2.3", "allow-listed (10.0.0.0/8)"},
		{"::ffff:10.1.2.3", "allow-listed (10.0.0.0/8)"},
		{"2001:db8:ffff:1::1", "allow-listed (2001:db8:ffff::/48)"},
		{"203.0.113.7", ""},
		{"::ffff:203.0.113.7", ""},
		{"2001:db8::7", ""},
		{"192.168.1.1", ""}, // private, but not allow-listed: the admin says
		{"100.64.0.1", ""},
	} {
		var ip netip.Addr
		if tc.ip != "" {
			ip = netip.MustParseAddr(tc.ip)
		}
		if got := Protected(ip, allow); got != tc.want {
			t.Errorf("Protected(%s) = %q, want %q", tc.ip, got, tc.want)
		}
	}
}

func TestGuarded(t *testing.T) {
	ctx := context.Background()
	path := filepath.Join(t.TempDir(), "bans.log")
	l, err := NewLogFile(path)
	if err != nil {
		t.Fatal(err)
	}
	b := Guarded(l, []netip.Prefix{netip.MustParsePrefix("192.0.2.0/24")})
	for _, tc := range []struct {
		ip      string
		wantErr error
	}{
		{"192.0.2.55", ErrProtected},
		{"::ffff:192.0.2.55", ErrProtected},
		{"::1", ErrProtected},
		{"203.0.113.7", nil},
		{"::ffff:198.51.100.7", nil},
	} {
		err := b.Ban(ctx, netip.MustParseAddr(tc.ip), "test")
		if !errors.Is(err, tc.wantErr) {
			t.Errorf("Ban(%s) = %v, want %v", tc.ip, err, tc.wantErr)
		}
		if err != nil && !strings.HasPrefix(err.Error(), "ban ") {
			t.Errorf("Ban(%s) error %q does not say what it was doing", tc.ip, err)
		}
	}
	if got := addrs(t, path); !slices.Equal(got, []string{"203.0.113.7", "198.51.100.7"}) {
		t.Errorf("the log bans %q", got)
	}
	// Unban is never refused by the guard.
	if err := b.Unban(ctx, netip.MustParseAddr("192.0.2.55")); !errors.Is(err, ErrUnbanUnsupported) {
		t.Errorf("Unban through the guard = %v, want LogFile's ErrUnbanUnsupported", err)
	}
}

func TestNew(t *testing.T) {
	ctx := context.Background()
	dir := t.TempDir()
	for _, tc := range []struct {
		name      string
		kind      string
		opts      Options
		wantErr   string // from New
		ban       string
		banErr    error
		unbanErr  error
		unbanText string // in Unban's error
	}{
		{name: "log", kind: "log", opts: Options{LogPath: filepath.Join(dir, "a.log")},
			ban: "203.0.113.7", unbanErr: ErrUnbanUnsupported},
		{name: "log guarded", kind: "log", opts: Options{LogPath: filepath.Join(dir, "b.log"), Allow: []netip.Prefix{netip.MustParsePrefix("203.0.113.0/24")}},
			ban: "203.0.113.7", banErr: ErrProtected, unbanErr: ErrUnbanUnsupported},
		{name: "log with jail", kind: "log", opts: Options{LogPath: filepath.Join(dir, "c.log"), Jail: "bouncemilter", Fail2banConfig: filepath.Join(dir, "nofail2ban")},
			ban: "203.0.113.7", unbanText: "fail2ban-client -c " + filepath.Join(dir, "nofail2ban") + " set bouncemilter unbanip 203.0.113.7"},
		{name: "log without path", kind: "log", wantErr: "no log path"},
		{name: "log in missing directory", kind: "log", opts: Options{LogPath: filepath.Join(dir, "missing", "bans.log")}, wantErr: "no such file"},
		{name: "fail2ban default jail", kind: "fail2ban", opts: Options{Fail2banConfig: filepath.Join(dir, "nofail2ban")},
			ban: "127.0.0.1", banErr: ErrProtected, unbanText: "set bouncemilter unbanip"},
		{name: "none", kind: "none", ban: "203.0.113.7"},
		{name: "none guarded", kind: "none", ban: "::1", banErr: ErrProtected},
		{name: "unknown", kind: "iptables", wantErr: `unknown banner "iptables"`},
		{name: "empty", kind: "", wantErr: `unknown banner ""`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			b, err := New(tc.kind, tc.opts)
			if tc.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
					t.Fatalf("New = %v, want an error saying %q", err, tc.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			ip := netip.MustParseAddr(tc.ban)
			if err := b.Ban(ctx, ip, "test"); !errors.Is(err, tc.banErr) {
				t.Errorf("Ban = %v, want %v", err, tc.banErr)
			}
			err = b.Unban(ctx, ip)
			switch {
			case tc.unbanText != "":
				if err == nil || !strings.Contains(err.Error(), tc.unbanText) {
					t.Errorf("Unban = %v, want an error saying %q", err, tc.unbanText)
				}
			case !errors.Is(err, tc.unbanErr):
				t.Errorf("Unban = %v, want %v", err, tc.unbanErr)
			}
		})
	}
}
