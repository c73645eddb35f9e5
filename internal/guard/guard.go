// Package guard stops MediaGoblin's mail on its way out when it goes to an
// address that cannot receive it, so that the bounce never happens: an
// address this instance already proved bad, one that enough peers list
// (package feed), or one whose domain takes no mail (a null MX, RFC 7505,
// or no MX and no A/AAAA record). For such a mail it journals what the
// bounce would have led to, under the same rules (bounce.Policy), and tells
// the milter to discard it.
//
// Whatever it cannot tell — a DNS lookup that fails or times out, a
// registry error — lets the mail go. It applies no action itself (the
// worker does, from the journal) and knows nothing of the milter protocol.
package guard

import (
	"context"
	"encoding/json"
	"fmt"
	"log/slog"
	"strings"
	"time"

	"github.com/bouncemilter/bouncemilter/internal/bounce"
	"github.com/bouncemilter/bouncemilter/internal/defaults"
	"github.com/bouncemilter/bouncemilter/internal/registry"
)

// Journal is what the guard needs of the registry.
type Journal interface {
	RegistrationsByEmail(ctx context.Context, addr string) ([]registry.Registration, error)
	Allowed(ctx context.Context, reg registry.Registration) (bool, error)
	ProvenAddress(ctx context.Context, addr string, since time.Time) (bool, error)
	Record(ctx context.Context, b registry.Bounce, actions []registry.Action) (registry.Recorded, error)
}

// Listings says whether enough peers list an address (feed.Subscriber).
type Listings interface {
	AddressListed(ctx context.Context, addr string) (bool, []string, error)
}

// Domains says whether a domain can receive mail (Resolver).
type Domains interface {
	Check(ctx context.Context, domain string) (Domain, error)
}

// Guard decides on MediaGoblin's outgoing mail.
type Guard struct {
	Journal Journal
	Policy  bounce.Policy
	Peers   Listings // nil: no peers
	DNS     Domains  // nil: no DNS checks
	Log     *slog.Logger
	Now     func() time.Time
	// Queued is called after actions were journalled (to wake the
	// worker); may be nil.
	Queued func()
}

// How an address was known not to receive mail, as journalled (the
// entry's Client is registry.GuardClient(how)).
const (
	KnownOwn   = "known-bad"
	KnownPeers = "peers"
)

// stopped is one recipient the guard found unable to receive mail.
type stopped struct {
	Address string   `json:"address"`
	How     string   `json:"how"`
	Peers   []string `json:"peers,omitempty"`
	Acted   []string `json:"acted,omitempty"`
}

// Stop reports whether the message env describes is to be discarded
// because none of its recipients can receive it; it then has journalled
// the actions their sign-ups call for. An error means the mail goes and
// nothing was journalled.
func (g *Guard) Stop(ctx context.Context, env bounce.Envelope) (bool, error) {
	if len(env.Recipients) == 0 {
		return false, nil
	}
	now := g.now()
	var (
		found   []stopped
		actions []registry.Action
		details []string
	)
	for _, rcpt := range env.Recipients {
		s, err := g.judge(ctx, rcpt, now)
		if err != nil || s == nil {
			// One recipient that may receive it: the mail goes, whole.
			return false, err
		}
		regs, err := g.Journal.RegistrationsByEmail(ctx, rcpt)
		if err != nil {
			return false, err
		}
		eligible, notes, err := g.Policy.Eligible(ctx, g.Journal, rcpt, regs, now)
		if err != nil {
			return false, err
		}
		for _, n := range notes {
			details = append(details, rcpt+": "+n)
		}
		// A listing says an address is bad; a sign-up that cannot be
		// acted on (verified, allow-listed, none) says it may be fine:
		// then the mail goes. A domain that takes no mail is a fact.
		if len(eligible) == 0 && (s.How == KnownOwn || s.How == KnownPeers) {
			return false, nil
		}
		reason := stopReason(*s, env.QueueID, now)
		for _, reg := range eligible {
			actions = append(actions, registry.Action{UserID: reg.UserID, Kind: registry.BanAccount, Target: registry.UserTarget(reg.UserID), Reason: reason})
			if reg.IP != "" {
				actions = append(actions, registry.Action{UserID: reg.UserID, Kind: registry.BanIP, Target: reg.IP, Reason: reason})
			}
			s.Acted = append(s.Acted, reg.Username)
			details = append(details, fmt.Sprintf("%s: %s disabled (%s)", rcpt, reg.Username, s.How))
		}
		found = append(found, *s)
	}
	report, err := json.Marshal(map[string]any{"stopped": found})
	if err != nil {
		return false, err
	}
	b := registry.Bounce{
		Received:   now,
		QueueID:    env.QueueID,
		EnvelopeTo: strings.Join(env.Recipients, ","),
		Client:     registry.GuardClient(found[0].How),
		Verdict:    registry.VerdictStopped,
		Detail:     strings.Join(details, "; "),
		Report:     string(report),
	}
	rec, err := g.Journal.Record(ctx, b, actions)
	if err != nil {
		return false, err
	}
	if rec.Actions > 0 && g.Queued != nil {
		g.Queued()
	}
	if rec.Actions != len(actions) {
		// An account was allow-listed (an admin's restore) between the
		// decision and the commit: that sign-up's mail goes.
		g.log().Info("outgoing mail let go: a recipient's sign-up was allow-listed meanwhile", "queue_id", env.QueueID,
			"recipients", b.EnvelopeTo, "detail", rec.Detail)
		return false, nil
	}
	g.log().Info("outgoing mail stopped: its recipients cannot receive it", "queue_id", env.QueueID,
		"recipients", b.EnvelopeTo, "how", found[0].How, "actions", len(actions), "detail", b.Detail)
	return true, nil
}

// judge says how rcpt is known unable to receive mail, or nil when it is
// not. Cheap local knowledge comes first; DNS last.
//
// An address this instance proved bad counts for the policy's window: bots
// reuse their made-up addresses within days, and a mailbox that did not
// exist long ago may have a real owner now.
func (g *Guard) judge(ctx context.Context, rcpt string, now time.Time) (*stopped, error) {
	own, err := g.Journal.ProvenAddress(ctx, rcpt, now.Add(-g.Policy.Window))
	if err != nil {
		return nil, err
	}
	if own {
		return &stopped{Address: rcpt, How: KnownOwn}, nil
	}
	if g.Peers != nil {
		listed, peers, err := g.Peers.AddressListed(ctx, rcpt)
		if err != nil {
			return nil, err
		}
		if listed {
			return &stopped{Address: rcpt, How: KnownPeers, Peers: peers}, nil
		}
	}
	if g.DNS == nil {
		return nil, nil
	}
	at := strings.LastIndexByte(rcpt, '@')
	if at < 0 {
		return nil, nil
	}
	d, err := g.DNS.Check(ctx, rcpt[at+1:])
	if err != nil {
		g.log().Info("domain check failed; the mail goes", "recipient", rcpt, "err", err)
		return nil, nil
	}
	if d == Receives {
		return nil, nil
	}
	return &stopped{Address: rcpt, How: d.String()}, nil
}

func stopReason(s stopped, queueID string, now time.Time) string {
	var why string
	switch s.How {
	case KnownOwn:
		why = "an address that bounced here before"
	case KnownPeers:
		why = "an address listed as non-existent by peers " + strings.Join(s.Peers, ", ")
	case NullMX.String():
		why = "a domain that takes no mail (null MX)"
	case NoSuchDomain.String():
		why = "a domain that does not exist"
	default:
		why = "a domain with no mail server (no MX, A or AAAA record)"
	}
	r := fmt.Sprintf("bouncemilter: verification mail to %s stopped on %s: %s", s.Address, now.UTC().Format("2006-01-02 15:04 MST"), why)
	if queueID != "" {
		r += ", queue id " + queueID
	}
	return r
}

func (g *Guard) now() time.Time { return defaults.Now(g.Now) }

func (g *Guard) log() *slog.Logger { return defaults.Log(g.Log) }
