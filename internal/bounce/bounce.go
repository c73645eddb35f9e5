// Package bounce decides what one bounce proves and journals it: it parses
// the report, looks each failed address up among recent sign-ups, applies
// the rules that protect real users, checks that the bounce answers mail
// this instance really sent, and records the verdict with the actions it
// calls for in the registry, durably, before it tells the caller whether
// the bounce may be discarded.
//
// It applies no action itself (a worker does, from the journal) and knows
// nothing of the milter protocol.
package bounce

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"log/slog"
	"net/mail"
	"net/netip"
	"strings"
	"time"

	"github.com/bouncemilter/bouncemilter/internal/defaults"
	"github.com/bouncemilter/bouncemilter/internal/dsn"
	"github.com/bouncemilter/bouncemilter/internal/registry"
)

// Envelope is what the MTA told about a message besides its content.
type Envelope struct {
	QueueID    string
	Client     Client
	Sender     string // "" for the null sender of a bounce
	Recipients []string
	// Generated is set by the caller when the message was made by this
	// Postfix's bounce daemon, as far as it can tell (see package filter):
	// Client.Local alone cannot tell it from a local user's sendmail.
	Generated bool
}

// Client is the SMTP client a message came from.
type Client struct {
	Host string
	Addr netip.Addr
	Port uint16
}

// Local reports whether the message did not arrive over SMTP but was made
// on this machine: Postfix shows mail from its own bounce daemon (and
// pickup) to non_smtpd_milters as a connection from localhost, port 0.
func (c Client) Local() bool {
	return c.Port == 0 && (c.Host == "localhost" || (c.Addr.IsValid() && c.Addr.IsLoopback()))
}

func (c Client) String() string {
	if !c.Addr.IsValid() {
		return c.Host
	}
	return fmt.Sprintf("%s[%s]:%d", c.Host, c.Addr, c.Port)
}

// Journal is what the handler needs of the registry.
type Journal interface {
	RegistrationsByEmail(ctx context.Context, addr string) ([]registry.Registration, error)
	Allowed(ctx context.Context, reg registry.Registration) (bool, error)
	SentTo(ctx context.Context, recipient string, since time.Time) (bool, error)
	Record(ctx context.Context, b registry.Bounce, actions []registry.Action) (registry.Recorded, error)
}

// TagVerifier checks the signed return path a bounce was addressed to (see
// package returnpath).
type TagVerifier interface {
	// VerifySender returns nil only when bounceAddr is sender with a valid
	// tag for exactly failedRecipient.
	VerifySender(sender, bounceAddr, failedRecipient string, now time.Time) error
}

// Handler turns bounces into journalled verdicts.
type Handler struct {
	Journal Journal
	Policy  Policy
	// Tags verifies signed return paths; nil when they are not in use.
	Tags TagVerifier
	// TrustReturnedHeaders accepts, as authentic, a bounce whose returned
	// headers show a message from Sender to an address a send was recorded
	// to (exact addresses, parsed from From and To). It is no
	// authentication at all: anybody can write such headers. Only for
	// setups where outgoing mail bypasses this Postfix, and only with Tags
	// nil: with signed return paths a valid tag is the one proof.
	TrustReturnedHeaders bool
	// Sender is MediaGoblin's email_sender_address.
	Sender string
	// DiscardSuspect discards bounces that could not be shown authentic
	// instead of delivering them.
	DiscardSuspect bool
	Log            *slog.Logger
	// Now is the clock; nil means time.Now.
	Now func() time.Time
	// Queued is called after a verdict queued actions (to wake the worker);
	// may be nil.
	Queued func()
}

// Outcome is the handler's answer for one bounce.
type Outcome struct {
	Verdict  registry.Verdict
	Discard  bool // every failed recipient is accounted for and journalled
	BounceID int64
	Actions  int
	Detail   string
}

// maxJournalledHeader caps how much of the bounce's own header is kept.
const maxJournalledHeader = 16 << 10

// Handle decides on one bounce. On error the caller must deliver the
// message: nothing was journalled.
func (h *Handler) Handle(ctx context.Context, env Envelope, msg []byte) (Outcome, error) {
	now := h.now()
	// The message is already in memory: parse it without another copy.
	rep, parseErr := new(dsn.Parser).ParseBytes(msg)
	b := registry.Bounce{
		Received:   now,
		QueueID:    env.QueueID,
		EnvelopeTo: strings.Join(env.Recipients, ","),
		Client:     env.Client.String(),
		Headers:    headerOf(msg, maxJournalledHeader),
	}
	var (
		out     Outcome
		actions []registry.Action
	)
	if parseErr != nil || rep == nil || !rep.Bounce {
		out.Verdict = registry.VerdictNotBounce
		if parseErr != nil {
			out.Detail = "unreadable: " + parseErr.Error()
		}
	} else {
		var err error
		if actions, out, err = h.decide(ctx, env, rep, now); err != nil {
			return Outcome{}, err
		}
	}
	if rep != nil {
		js, err := json.Marshal(rep)
		if err != nil {
			return Outcome{}, fmt.Errorf("encode report: %w", err)
		}
		b.Report = string(js)
	} else {
		b.Report = "null"
	}
	b.Verdict, b.Detail = out.Verdict, out.Detail
	rec, err := h.Journal.Record(ctx, b, actions)
	if err != nil {
		return Outcome{}, err
	}
	if rec.Actions != len(actions) {
		// An account was allow-listed (an admin's restore) between the
		// decision and the commit: what was journalled stands, and a
		// bounce not wholly acted on is delivered.
		out.Verdict, out.Detail, out.Discard = rec.Verdict, rec.Detail, false
	}
	out.BounceID, out.Actions = rec.ID, rec.Actions
	if rec.Actions > 0 && h.Queued != nil {
		h.Queued()
	}
	return out, nil
}

func (h *Handler) decide(ctx context.Context, env Envelope, rep *dsn.Report, now time.Time) ([]registry.Action, Outcome, error) {
	var (
		actions           []registry.Action
		details           []string
		reported, handled int
		matched, suspect  bool
	)
	for _, rcpt := range rep.Recipients {
		if a := strings.ToLower(rcpt.Action); a != "failed" && a != "delayed" {
			continue
		}
		reported++
		note := func(format string, args ...any) {
			details = append(details, rcpt.Address+": "+fmt.Sprintf(format, args...))
		}
		if !SaysNoSuchAddress(rcpt) {
			note("not a permanent no-such-address failure (%s %s %s)", rcpt.Action, rcpt.Status, rcpt.Reason)
			continue
		}
		candidates := literalAddresses(rcpt, h.Tags != nil)
		if len(candidates) == 0 {
			// The parser derived, cleaned or guessed the address: it may
			// be shown, never acted on.
			note("address not literal in the report; not acted on")
			continue
		}
		// Authenticity first, for each literal address: only an address
		// this bounce is shown to answer is ever looked up, so a forged
		// bounce cannot even make the journal (or what stands behind it)
		// search for an address.
		var (
			addr, how string
			whyNot    []string
		)
		for _, c := range candidates {
			ok, why, err := h.authentic(ctx, env, rep, c, now)
			if err != nil {
				return nil, Outcome{}, err
			}
			if ok {
				addr, how = c, why
				break
			}
			whyNot = append(whyNot, why)
		}
		if addr == "" {
			suspect = true
			note("suspect: %s", strings.Join(whyNot, "; "))
			continue
		}
		regs, err := h.Journal.RegistrationsByEmail(ctx, addr)
		if err != nil {
			return nil, Outcome{}, err
		}
		eligible, notes, err := h.Policy.Eligible(ctx, h.Journal, addr, regs, now)
		if err != nil {
			return nil, Outcome{}, err
		}
		for _, n := range notes {
			note("%s", n)
		}
		if len(eligible) == 0 && len(notes) == 0 {
			note("no sign-up")
			continue
		}
		matched = true
		if len(eligible) == 0 {
			continue
		}
		for _, reg := range eligible {
			reason := banReason(rcpt, addr, env.QueueID, now)
			actions = append(actions, registry.Action{UserID: reg.UserID, Kind: registry.BanAccount, Target: registry.UserTarget(reg.UserID), Reason: reason})
			if reg.IP != "" {
				actions = append(actions, registry.Action{UserID: reg.UserID, Kind: registry.BanIP, Target: reg.IP, Reason: reason})
			}
			note("%s disabled (%s)", reg.Username, how)
		}
		handled++
	}
	out := Outcome{Detail: strings.Join(details, "; ")}
	switch {
	case len(actions) > 0:
		out.Verdict = registry.VerdictActed
		// A bounce that also reports an address we did not act on still
		// tells the admin something, and one the parser cut short may
		// report more than was read: deliver it.
		out.Discard = handled == reported && !rep.Truncated
	case suspect:
		out.Verdict = registry.VerdictSuspect
		out.Discard = h.DiscardSuspect && !rep.Truncated
	case matched:
		out.Verdict = registry.VerdictIneligible
	default:
		out.Verdict = registry.VerdictNoMatch
	}
	return actions, out, nil
}

// literalAddresses returns the addresses of r that the report wrote
// literally as the address that failed: its Final-Recipient, and, when
// signed return paths can prove it, its Original-Recipient when that is
// the same address in other letter case (the tag signs the local part
// exactly, as MediaGoblin wrote it; a remote MTA may report it otherwise).
//
// Original-Recipient is the ORCPT parameter the SMTP client chose (RFC 3461
// section 4.2), so without a tag naming it a bounce this Postfix made may
// still carry any address an attacker picked. And even tagged it is not the
// address that failed when Final-Recipient names another, or none, or a
// pipe or a file (dsn.Recipient.FromOriginal): the receiving domain
// rewrote or expanded it, and an alias expanded to several mailboxes (RFC
// 3464 section 2.3.1) reports each member that failed under the alias's
// name while the others received the mail.
func literalAddresses(r dsn.Recipient, signed bool) []string {
	if !r.Literal || r.Address == "" || r.FromOriginal {
		return nil
	}
	out := []string{r.Address}
	if signed && r.OriginalLiteral && r.OriginalAddress != "" && !registry.SameAddress(r.OriginalAddress, r.Address) &&
		registry.EmailKey(r.OriginalAddress) == registry.EmailKey(r.Address) {
		out = append(out, r.OriginalAddress)
	}
	return out
}

// authentic reports whether a bounce about the literal address rcpt
// answers mail this instance sent, and how that was shown. With signed
// return paths that is the only proof there is: the bounce's address must
// be the sender's, with a valid tag for exactly rcpt. Without them, a
// bounce Postfix made itself for an address a send was recorded to counts,
// and, when the admin asked for it, returned headers that name one.
func (h *Handler) authentic(ctx context.Context, env Envelope, rep *dsn.Report, rcpt string, now time.Time) (bool, string, error) {
	if h.Tags != nil {
		for _, to := range env.Recipients {
			if err := h.Tags.VerifySender(h.Sender, to, rcpt, now); err == nil {
				return true, "signed return path", nil
			}
		}
		return false, "no valid tag for " + rcpt, nil
	}
	sent, err := h.Journal.SentTo(ctx, rcpt, now.Add(-h.Policy.Window))
	if err != nil {
		return false, "", err
	}
	switch {
	case !sent:
		return false, "no mail to " + rcpt + " was recorded", nil
	case env.Generated:
		return true, "generated by this Postfix", nil
	case h.TrustReturnedHeaders && returnedMatches(rep.Original, rcpt, h.Sender):
		return true, "returned headers match a recorded send", nil
	}
	return false, "neither signed nor generated by this Postfix", nil
}

// returnedMatches reports whether the returned headers show a message from
// sender to rcpt: exactly one address in From, the sender, and rcpt among
// the addresses in To. Anybody can write such headers: this is no
// authentication at all, only a match.
func returnedMatches(o dsn.Original, rcpt, sender string) bool {
	if sender == "" {
		return false
	}
	from, err := mail.ParseAddressList(o.From)
	if err != nil || len(from) != 1 || !strings.EqualFold(from[0].Address, sender) {
		return false
	}
	to, err := mail.ParseAddressList(o.To)
	if err != nil {
		return false
	}
	for _, a := range to {
		if registry.SameAddress(a.Address, rcpt) {
			return true
		}
	}
	return false
}

func banReason(r dsn.Recipient, addr, queueID string, now time.Time) string {
	var b strings.Builder
	fmt.Fprintf(&b, "bouncemilter: mail to %s bounced permanently", addr)
	if r.Status != "" || r.Reason != "" {
		fmt.Fprintf(&b, " (%s)", strings.TrimSpace(r.Status+" "+r.Reason))
	}
	fmt.Fprintf(&b, " on %s", now.UTC().Format("2006-01-02 15:04 MST"))
	if queueID != "" {
		fmt.Fprintf(&b, ", bounce queue id %s", queueID)
	}
	if d := oneLine(r.Diagnostic, 160); d != "" {
		fmt.Fprintf(&b, ": %s", d)
	}
	return b.String()
}

func oneLine(s string, max int) string {
	s = strings.Join(strings.Fields(s), " ")
	if len(s) > max {
		s = s[:max] + "…"
	}
	return s
}

// headerOf returns the message's header section, at most max bytes.
func headerOf(msg []byte, max int) string {
	end := len(msg)
	for _, sep := range [][]byte{[]byte("\r\n\r\n"), []byte("\n\n")} {
		if i := bytes.Index(msg, sep); i >= 0 && i < end {
			end = i
		}
	}
	if end > max {
		end = max
	}
	return string(msg[:end])
}

func (h *Handler) now() time.Time { return defaults.Now(h.Now) }
