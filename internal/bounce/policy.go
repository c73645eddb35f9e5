package bounce

import (
	"context"
	"strings"
	"time"

	"github.com/bouncemilter/bouncemilter/internal/dsn"
	"github.com/bouncemilter/bouncemilter/internal/registry"
)

// Policy holds the rules that protect real users. Its zero value acts on
// nothing: start from DefaultPolicy.
type Policy struct {
	// Window is how recent a sign-up must be to be acted on. Botnets'
	// sign-ups bounce within minutes; an older account that bounces is a
	// real user whose mailbox went away, and is left to the admin.
	Window time.Duration
	// Skew tolerates clocks that disagree between MediaGoblin's host and
	// this one: a sign-up "from the future" by up to Skew is still recent.
	Skew time.Duration
}

// DefaultPolicy is the policy when the admin sets nothing.
func DefaultPolicy() Policy {
	return Policy{Window: 7 * 24 * time.Hour, Skew: 10 * time.Minute}
}

// SaysNoSuchAddress reports whether r is a permanent failure that says the
// mailbox or its domain does not exist. Temporary failures, full
// mailboxes and policy rejections (RFC 3463 class 5.7: the remote refused
// this instance, the address may be fine) never qualify.
func SaysNoSuchAddress(r dsn.Recipient) bool {
	if !strings.EqualFold(r.Action, "failed") || !r.Permanent {
		return false
	}
	if strings.HasPrefix(r.Status, "5.7.") || strings.HasPrefix(r.Status, "4.") {
		return false
	}
	switch r.Reason {
	case "userunknown", "hostunknown":
		return true
	case "", "undefined":
		// RFC 3463 section 3.2: X.1.1 bad destination mailbox address,
		// X.1.2 bad destination system address; RFC 7505 section 4.2:
		// X.1.10 the domain publishes a null MX.
		switch r.Status {
		case "5.1.1", "5.1.2", "5.1.10":
			return true
		}
	}
	return false
}

// Check says why reg must not be acted on, or "" when it may. Other holds
// every registration with the same address: if any of them is verified,
// the address received mail, so it exists and the bounce is not about a
// made-up address.
func (p Policy) Check(reg registry.Registration, others []registry.Registration, allowed bool, now time.Time) string {
	switch {
	case reg.Privileged:
		return "admin or moderator"
	case reg.Verified:
		return "verified"
	case allowed:
		return "allow-listed"
	case reg.Created.IsZero():
		return "sign-up time unknown"
	case now.Sub(reg.Created) > p.Window:
		return "signed up before the window of " + p.Window.String()
	case reg.Created.Sub(now) > p.Skew:
		return "signed up in the future"
	}
	for _, o := range others {
		if o.Verified {
			return "the address is verified by " + o.Username
		}
	}
	return ""
}

// Allower says whether a sign-up is allow-listed (registry.DB.Allowed).
type Allower interface {
	Allowed(ctx context.Context, reg registry.Registration) (bool, error)
}

// Eligible returns the sign-ups of regs with exactly the address addr
// (SameAddress: the journal matches addresses without regard to case, and
// a look-alike's sign-up is not addr's) that may be acted on (Check, with
// the allow-list read from a), and for each other one with that address a
// note, "USERNAME not eligible: WHY". No sign-up with the address leaves
// both empty.
func (p Policy) Eligible(ctx context.Context, a Allower, addr string, regs []registry.Registration, now time.Time) (eligible []registry.Registration, notes []string, err error) {
	for _, reg := range regs {
		if !registry.SameAddress(reg.Email, addr) {
			continue
		}
		allowed, err := a.Allowed(ctx, reg)
		if err != nil {
			return nil, nil, err
		}
		if why := p.Check(reg, regs, allowed, now); why != "" {
			notes = append(notes, reg.Username+" not eligible: "+why)
			continue
		}
		eligible = append(eligible, reg)
	}
	return eligible, notes, nil
}
