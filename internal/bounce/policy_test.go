package bounce

import (
	"context"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/bouncemilter/bouncemilter/internal/dsn"
	"github.com/bouncemilter/bouncemilter/internal/registry"
)

func TestSaysNoSuchAddress(t *testing.T) {
	tests := []struct {
		name string
		r    dsn.Recipient
		want bool
	}{
		{"5.1.1 userunknown", dsn.Recipient{Action: "failed", Status: "5.1.1", Reason: "userunknown", Permanent: true}, true},
		{"action in upper case", dsn.Recipient{Action: "Failed", Status: "5.1.1", Reason: "userunknown", Permanent: true}, true},
		{"5.1.2 hostunknown", dsn.Recipient{Action: "failed", Status: "5.1.2", Reason: "hostunknown", Permanent: true}, true},
		{"5.4.4 hostunknown", dsn.Recipient{Action: "failed", Status: "5.4.4", Reason: "hostunknown", Permanent: true}, true},
		{"5.0.0 userunknown from the text", dsn.Recipient{Action: "failed", Status: "5.0.0", Reason: "userunknown", Permanent: true}, true},
		// RFC 3463 section 3.2 and RFC 7505 section 4.2, when nothing
		// named the reason.
		{"5.1.1 no reason", dsn.Recipient{Action: "failed", Status: "5.1.1", Permanent: true}, true},
		{"5.1.2 undefined", dsn.Recipient{Action: "failed", Status: "5.1.2", Reason: "undefined", Permanent: true}, true},
		{"5.1.10 undefined (null MX)", dsn.Recipient{Action: "failed", Status: "5.1.10", Reason: "undefined", Permanent: true}, true},
		{"5.1.3 undefined", dsn.Recipient{Action: "failed", Status: "5.1.3", Reason: "undefined", Permanent: true}, false},
		{"5.0.0 undefined", dsn.Recipient{Action: "failed", Status: "5.0.0", Reason: "undefined", Permanent: true}, false},

		// A policy rejection says nothing of the address, whatever the
		// reason the parser guessed from the words.
		{"5.7.1 userunknown", dsn.Recipient{Action: "failed", Status: "5.7.1", Reason: "userunknown", Permanent: true}, false},
		{"5.7.1 blocked", dsn.Recipient{Action: "failed", Status: "5.7.1", Reason: "blocked", Permanent: true}, false},
		{"5.7.26 hostunknown", dsn.Recipient{Action: "failed", Status: "5.7.26", Reason: "hostunknown", Permanent: true}, false},

		// Temporary failures, never.
		{"4.1.1 userunknown", dsn.Recipient{Action: "failed", Status: "4.1.1", Reason: "userunknown", Permanent: true}, false},
		{"4.4.4 hostunknown", dsn.Recipient{Action: "failed", Status: "4.4.4", Reason: "hostunknown", Permanent: false}, false},
		{"not permanent", dsn.Recipient{Action: "failed", Status: "5.1.1", Reason: "userunknown", Permanent: false}, false},
		{"delayed", dsn.Recipient{Action: "delayed", Status: "4.4.1", Reason: "networkerror"}, false},
		{"delayed 5.1.1", dsn.Recipient{Action: "delayed", Status: "5.1.1", Reason: "userunknown", Permanent: true}, false},

		// The mailbox exists.
		{"mailboxfull", dsn.Recipient{Action: "failed", Status: "5.2.2", Reason: "mailboxfull", Permanent: true}, false},
		{"suspend", dsn.Recipient{Action: "failed", Status: "5.2.1", Reason: "suspend", Permanent: true}, false},
		{"spamdetected", dsn.Recipient{Action: "failed", Status: "5.0.0", Reason: "spamdetected", Permanent: true}, false},
		{"delivered", dsn.Recipient{Action: "delivered", Status: "2.0.0", Reason: "delivered"}, false},
		{"relayed", dsn.Recipient{Action: "relayed", Status: "2.0.0", Reason: "delivered"}, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := SaysNoSuchAddress(tt.r); got != tt.want {
				t.Errorf("SaysNoSuchAddress(%+v) = %v, want %v", tt.r, got, tt.want)
			}
		})
	}
}

func TestPolicyCheck(t *testing.T) {
	now := time.Date(2026, 11, 26, 9, 14, 8, 0, time.UTC)
	p := DefaultPolicy()
	recent := registry.Registration{UserID: 7, Username: "xk7bot", Email: "Xk7bot@example.net", Created: now.Add(-3 * time.Minute)}
	with := func(f func(*registry.Registration)) registry.Registration {
		r := recent
		f(&r)
		return r
	}
	tests := []struct {
		name    string
		reg     registry.Registration
		others  []registry.Registration
		allowed bool
		want    string // a substring of the answer; "" for eligible
	}{
		{name: "recent unverified sign-up", reg: recent},
		{name: "admin or moderator", reg: with(func(r *registry.Registration) { r.Privileged = true }), want: "admin"},
		{name: "privileged wins over everything", reg: with(func(r *registry.Registration) { r.Privileged, r.Verified = true, true }), allowed: true, want: "admin"},
		{name: "verified", reg: with(func(r *registry.Registration) { r.Verified = true }), want: "verified"},
		{name: "allow-listed", reg: recent, allowed: true, want: "allow-listed"},
		{name: "sign-up time unknown", reg: with(func(r *registry.Registration) { r.Created = time.Time{} }), want: "unknown"},
		{name: "at the edge of the window", reg: with(func(r *registry.Registration) { r.Created = now.Add(-p.Window) })},
		{name: "older than the window", reg: with(func(r *registry.Registration) { r.Created = now.Add(-p.Window - time.Second) }), want: "before the window"},
		{name: "a year old", reg: with(func(r *registry.Registration) { r.Created = now.AddDate(-1, 0, 0) }), want: "before the window"},
		{name: "ahead by the skew", reg: with(func(r *registry.Registration) { r.Created = now.Add(p.Skew) })},
		{name: "in the future", reg: with(func(r *registry.Registration) { r.Created = now.Add(p.Skew + time.Second) }), want: "future"},
		{
			name: "a sibling with the same address is verified",
			reg:  recent,
			others: []registry.Registration{
				recent,
				{UserID: 3, Username: "realperson", Email: "xk7bot@example.net", Created: now.AddDate(-2, 0, 0), Verified: true},
			},
			want: "verified by realperson",
		},
		{
			name: "unverified siblings",
			reg:  recent,
			others: []registry.Registration{
				recent,
				{UserID: 8, Username: "xk7bot2", Email: "xk7bot@example.net", Created: now.Add(-time.Minute)},
			},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got := p.Check(tt.reg, tt.others, tt.allowed, now)
			switch {
			case tt.want == "" && got != "":
				t.Errorf("Check = %q, want eligible", got)
			case tt.want != "" && !strings.Contains(got, tt.want):
				t.Errorf("Check = %q, want it to say %q", got, tt.want)
			}
		})
	}
}

// The zero Policy has no window: it must not act on a sign-up of a
// second ago.
func TestZeroPolicyActsOnNothingOld(t *testing.T) {
	now := time.Date(2026, 11, 26, 9, 14, 8, 0, time.UTC)
	reg := registry.Registration{UserID: 7, Username: "xk7bot", Created: now.Add(-time.Second)}
	if why := (Policy{}).Check(reg, nil, false, now); why == "" {
		t.Error("zero Policy accepted a sign-up of a second ago")
	}
}

// allowNames allow-lists the usernames it holds.
type allowNames []string

func (a allowNames) Allowed(_ context.Context, reg registry.Registration) (bool, error) {
	return slices.Contains(a, reg.Username), nil
}

// Eligible keeps the sign-ups with exactly the address that Check lets
// through, and says why of the others with it; a look-alike's sign-up is
// neither.
func TestEligible(t *testing.T) {
	now := time.Date(2026, 11, 20, 10, 0, 0, 0, time.UTC)
	recent := now.Add(-time.Minute)
	regs := []registry.Registration{
		{UserID: 1, Username: "bot", Email: "bot@example.net", Created: recent},
		{UserID: 2, Username: "lookalike", Email: "Bot@example.net", Created: recent},
		{UserID: 3, Username: "friend", Email: "bot@EXAMPLE.net", Created: recent},
		{UserID: 4, Username: "old", Email: "bot@example.net", Created: now.Add(-30 * 24 * time.Hour)},
	}
	eligible, notes, err := DefaultPolicy().Eligible(context.Background(), allowNames{"friend"}, "bot@example.net", regs, now)
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	for _, r := range eligible {
		names = append(names, r.Username)
	}
	if !slices.Equal(names, []string{"bot"}) {
		t.Errorf("eligible = %v, want [bot]", names)
	}
	want := []string{"friend not eligible: allow-listed", "old not eligible: signed up before the window of 168h0m0s"}
	if !slices.Equal(notes, want) {
		t.Errorf("notes = %q, want %q", notes, want)
	}
	if e, n, _ := DefaultPolicy().Eligible(context.Background(), allowNames{}, "nobody@example.net", regs, now); e != nil || n != nil {
		t.Errorf("no sign-up with the address: %v, %q", e, n)
	}
}
