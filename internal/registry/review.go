package registry

import (
	"context"
	"database/sql"
	"encoding/json"
	"fmt"
	"net/netip"
	"sort"
	"strings"
	"time"
)

// The admin's queries: the whole story of one account, the accounts
// disabled (filtered), and the numbers per day. They only read.

// BounceRecipient is one recipient of a journalled bounce, as the parsed
// report gives it.
type BounceRecipient struct {
	Address    string
	Action     string
	Status     string
	Reason     string
	Diagnostic string
	Literal    bool
}

// BounceEvidence is a journalled bounce that concerns one account: its
// address failed in it, or an action of the account came from it.
type BounceEvidence struct {
	Bounce
	ReportingMTA string
	// Recipients are the report's recipients whose address is the
	// account's (all of them when none is).
	Recipients []BounceRecipient
}

// AllowEntry is one allow-list entry.
type AllowEntry struct {
	Kind    AllowKind
	Value   string
	Note    string
	Created time.Time
}

// Story is everything the registry knows of one sign-up.
type Story struct {
	Registration Registration
	Sends        []Send
	Bounces      []BounceEvidence
	Actions      []Action
	Allow        []AllowEntry
}

// FindRegistrations returns the registrations that who names: a username,
// an address (every sign-up with it), or an IP address (every sign-up from
// it), in user id order. It returns ErrNotFound when none matches.
func (r *DB) FindRegistrations(ctx context.Context, who string) ([]Registration, error) {
	who = strings.TrimSpace(who)
	var (
		where string
		arg   any
	)
	switch ip, err := netip.ParseAddr(who); {
	case err == nil:
		where, arg = `ip = ?`, ip.Unmap().String()
	case strings.Contains(who, "@"):
		where, arg = `email_key = ?`, EmailKey(who)
	default:
		where, arg = `username = ?`, who
	}
	rows, err := r.db.QueryContext(ctx, `SELECT `+registrationColumns+` FROM registrations WHERE `+where+` ORDER BY user_id`, arg)
	if err != nil {
		return nil, fmt.Errorf("find %q: %w", who, err)
	}
	out, err := collectRegistrations(rows)
	if err != nil {
		return nil, fmt.Errorf("find %q: %w", who, err)
	}
	if len(out) == 0 {
		return nil, fmt.Errorf("find %q: %w", who, ErrNotFound)
	}
	return out, nil
}

func collectRegistrations(rows *sql.Rows) ([]Registration, error) {
	defer rows.Close()
	var out []Registration
	for rows.Next() {
		reg, err := scanRegistration(rows)
		if err != nil {
			return nil, err
		}
		out = append(out, reg)
	}
	return out, rows.Err()
}

// Story tells everything the registry knows of the sign-up reg: the sends
// to its address, the bounces that named its address or led to its
// actions, the actions, and the allow-list entries that protect it.
func (r *DB) Story(ctx context.Context, reg Registration) (Story, error) {
	s := Story{Registration: reg}
	key := EmailKey(reg.Email)
	wrap := func(err error) error { return fmt.Errorf("story of %s: %w", reg.Username, err) }

	rows, err := r.db.QueryContext(ctx, `SELECT recipient_key, sent, queue_id, subject FROM sends
		WHERE recipient_key = ? ORDER BY sent, id`, key)
	if err != nil {
		return s, wrap(err)
	}
	for rows.Next() {
		var (
			snd  Send
			sent int64
		)
		if err := rows.Scan(&snd.Recipient, &sent, &snd.QueueID, &snd.Subject); err != nil {
			rows.Close()
			return s, wrap(err)
		}
		snd.Sent = fromUnix(sent)
		s.Sends = append(s.Sends, snd)
	}
	rows.Close()
	if err := rows.Err(); err != nil {
		return s, wrap(err)
	}

	// A bounce concerns the account when its report names the address
	// (whatever the verdict: the ineligible and suspect ones explain why
	// nothing happened) or when one of its actions came from it.
	rows, err = r.db.QueryContext(ctx, `SELECT id, received, queue_id, envelope_to, client, verdict, detail,
			coalesce(json_extract(report, '$.reporting_mta'), ''), report
		FROM bounces b
		WHERE id IN (SELECT bounce_id FROM actions WHERE user_id = ? AND retired = 0 AND bounce_id IS NOT NULL)
			OR (json_valid(report) AND EXISTS (SELECT 1 FROM json_each(b.report, '$.recipients') rc
				WHERE lower(json_extract(rc.value, '$.address')) = ?
					OR lower(json_extract(rc.value, '$.original_address')) = ?))
		ORDER BY received, id`, reg.UserID, key, key)
	if err != nil {
		return s, wrap(err)
	}
	for rows.Next() {
		var (
			b        BounceEvidence
			received int64
			verdict  string
			report   string
		)
		if err := rows.Scan(&b.ID, &received, &b.QueueID, &b.EnvelopeTo, &b.Client, &verdict, &b.Detail, &b.ReportingMTA, &report); err != nil {
			rows.Close()
			return s, wrap(err)
		}
		b.Received, b.Verdict, b.Report = fromUnix(received), Verdict(verdict), report
		s.Bounces = append(s.Bounces, b)
	}
	rows.Close()
	if err := rows.Err(); err != nil {
		return s, wrap(err)
	}
	for i := range s.Bounces {
		rcpts, err := r.bounceRecipients(ctx, s.Bounces[i].ID)
		if err != nil {
			return s, wrap(err)
		}
		var mine []BounceRecipient
		for _, rc := range rcpts {
			if EmailKey(rc.Address) == key {
				mine = append(mine, rc)
			}
		}
		if len(mine) == 0 {
			mine = rcpts
		}
		s.Bounces[i].Recipients = mine
	}

	if s.Actions, err = r.Actions(ctx, reg.UserID); err != nil {
		return s, wrap(err)
	}

	rows, err = r.db.QueryContext(ctx, `SELECT kind, value, note, created FROM allowlist
		WHERE (kind = 'user' AND value = ?) OR (kind = 'email' AND value = ?) OR (kind = 'ip' AND value = ? AND value != '')
		ORDER BY created, kind`, reg.Username, key, reg.IP)
	if err != nil {
		return s, wrap(err)
	}
	defer rows.Close()
	for rows.Next() {
		var (
			e       AllowEntry
			kind    string
			created int64
		)
		if err := rows.Scan(&kind, &e.Value, &e.Note, &created); err != nil {
			return s, wrap(err)
		}
		e.Kind, e.Created = AllowKind(kind), fromUnix(created)
		s.Allow = append(s.Allow, e)
	}
	if err := rows.Err(); err != nil {
		return s, wrap(err)
	}
	return s, nil
}

// bounceRecipients reads the recipients of a journalled bounce's report.
func (r *DB) bounceRecipients(ctx context.Context, id int64) ([]BounceRecipient, error) {
	rows, err := r.db.QueryContext(ctx, `SELECT
			coalesce(json_extract(rc.value, '$.address'), ''), coalesce(json_extract(rc.value, '$.action'), ''),
			coalesce(json_extract(rc.value, '$.status'), ''), coalesce(json_extract(rc.value, '$.reason'), ''),
			coalesce(json_extract(rc.value, '$.diagnostic'), ''), coalesce(json_extract(rc.value, '$.literal'), 0)
		FROM bounces b, json_each(b.report, '$.recipients') rc
		WHERE b.id = ? AND json_valid(b.report)`, id)
	if err != nil {
		return nil, err
	}
	defer rows.Close()
	var out []BounceRecipient
	for rows.Next() {
		var rc BounceRecipient
		if err := rows.Scan(&rc.Address, &rc.Action, &rc.Status, &rc.Reason, &rc.Diagnostic, &rc.Literal); err != nil {
			return nil, err
		}
		out = append(out, rc)
	}
	return out, rows.Err()
}

// ListFilter narrows DisabledAccountsWhere. Zero fields do not filter.
type ListFilter struct {
	// States of the account ban; empty means pending and applied (the
	// accounts disabled now).
	States []ActionState
	// Since keeps the accounts disabled at or after it.
	Since time.Time
	// Network keeps the sign-ups whose IP is inside it.
	Network netip.Prefix
	// Domain keeps the sign-ups whose address is at that domain (or a
	// subdomain of it).
	Domain string
}

// DisabledAccountsWhere lists the accounts whose ban matches f, newest
// first.
func (r *DB) DisabledAccountsWhere(ctx context.Context, f ListFilter) ([]Disabled, error) {
	states := f.States
	if len(states) == 0 {
		states = []ActionState{Pending, Applied}
	}
	ph := make([]string, len(states))
	args := make([]any, 0, len(states)+2)
	for i, s := range states {
		ph[i] = "?"
		args = append(args, string(s))
	}
	q := `
SELECT r.user_id, r.username, r.email, r.created, r.verified, r.privileged, coalesce(r.ip, ''), coalesce(r.ip_source, ''), r.synced,
	a.id, a.state, a.reason, a.created, coalesce(b.detail, ''), coalesce(b.queue_id, '')
FROM actions a
JOIN registrations r ON r.user_id = a.user_id AND a.retired = 0
LEFT JOIN bounces b ON b.id = a.bounce_id
WHERE a.kind = 'ban-account' AND a.state IN (` + strings.Join(ph, ",") + `) AND a.created >= ?`
	args = append(args, unix(f.Since))
	domain := strings.ToLower(strings.TrimPrefix(strings.TrimSpace(f.Domain), "@"))
	if domain != "" {
		q += ` AND (r.email_key LIKE ? ESCAPE '\' OR r.email_key LIKE ? ESCAPE '\')`
		esc := strings.NewReplacer(`\`, `\\`, `%`, `\%`, `_`, `\_`).Replace(domain)
		args = append(args, "%@"+esc, "%.%"+esc)
	}
	q += ` ORDER BY a.created DESC, a.id DESC`
	rows, err := r.db.QueryContext(ctx, q, args...)
	if err != nil {
		return nil, fmt.Errorf("list disabled accounts: %w", err)
	}
	defer rows.Close()
	out := []Disabled{}
	for rows.Next() {
		var (
			d                     Disabled
			created, synced, when int64
			state                 string
		)
		if err := rows.Scan(&d.UserID, &d.Username, &d.Email, &created, &d.Verified, &d.Privileged, &d.IP, &d.IPSource, &synced,
			&d.ActionID, &state, &d.Reason, &when, &d.Detail, &d.QueueID); err != nil {
			return nil, fmt.Errorf("list disabled accounts: %w", err)
		}
		d.Created, d.Synced, d.When, d.State = fromUnix(created), fromUnix(synced), fromUnix(when), ActionState(state)
		if domain != "" && !inDomain(d.Email, domain) {
			continue
		}
		if f.Network.IsValid() {
			ip, err := netip.ParseAddr(d.IP)
			if err != nil || !f.Network.Contains(ip.Unmap()) {
				continue
			}
		}
		out = append(out, d)
	}
	return out, rows.Err()
}

// inDomain reports whether addr is at domain or one of its subdomains; the
// LIKE above only narrows, since "%.%example.org" also matches
// "x@badexample.org".
func inDomain(addr, domain string) bool {
	at := strings.LastIndexByte(addr, '@')
	if at < 0 {
		return false
	}
	d := strings.ToLower(addr[at+1:])
	return d == domain || strings.HasSuffix(d, "."+domain)
}

// DayStats are the numbers of one UTC day.
type DayStats struct {
	Day      time.Time // midnight UTC
	Bounces  map[Verdict]int64
	Disabled int64 // account bans queued that day and not cancelled or refused
	IPsBan   int64 // IP bans likewise
}

// Total is the number of bounces of the day.
func (d DayStats) Total() int64 {
	var n int64
	for _, c := range d.Bounces {
		n += c
	}
	return n
}

// Count is one row of a top list.
type Count struct {
	Key      string
	SignUps  int64
	Disabled int64
}

// Stats are the numbers of the last days.
type Stats struct {
	Since time.Time
	Days  []DayStats // oldest first, every day present
	// Networks are the sign-up networks (/24 for IPv4, /48 for IPv6) with
	// the most sign-ups since Since; Domains the address domains.
	Networks []Count
	Domains  []Count
	// Peers counts, for each peer, the accounts disabled since Since
	// whose IP or address it also listed (package feed; filled by the
	// caller, which knows how feeds hash addresses).
	Peers []PeerCount
}

// Stats counts, per UTC day for the days days up to now, the bounces by
// verdict, the accounts disabled and the IPs banned, and ranks the top
// sign-up networks and address domains of those days (at most top each).
func (r *DB) Stats(ctx context.Context, now time.Time, days, top int) (Stats, error) {
	if days < 1 {
		days = 1
	}
	today := now.UTC().Truncate(24 * time.Hour)
	since := today.AddDate(0, 0, -(days - 1))
	st := Stats{Since: since}
	index := map[int64]int{}
	for i := 0; i < days; i++ {
		d := since.AddDate(0, 0, i)
		index[d.Unix()/86400] = i
		st.Days = append(st.Days, DayStats{Day: d, Bounces: map[Verdict]int64{}})
	}
	rows, err := r.db.QueryContext(ctx, `SELECT received / 86400, verdict, count(*) FROM bounces
		WHERE received >= ? GROUP BY 1, 2`, since.Unix())
	if err != nil {
		return st, fmt.Errorf("stats: %w", err)
	}
	for rows.Next() {
		var (
			day, n  int64
			verdict string
		)
		if err := rows.Scan(&day, &verdict, &n); err != nil {
			rows.Close()
			return st, fmt.Errorf("stats: %w", err)
		}
		if i, ok := index[day]; ok {
			st.Days[i].Bounces[Verdict(verdict)] += n
		}
	}
	rows.Close()
	rows, err = r.db.QueryContext(ctx, `SELECT created / 86400, kind, count(*) FROM actions
		WHERE created >= ? AND kind IN ('ban-account', 'ban-ip') AND state NOT IN ('cancelled', 'refused')
		GROUP BY 1, 2`, since.Unix())
	if err != nil {
		return st, fmt.Errorf("stats: %w", err)
	}
	for rows.Next() {
		var (
			day, n int64
			kind   string
		)
		if err := rows.Scan(&day, &kind, &n); err != nil {
			rows.Close()
			return st, fmt.Errorf("stats: %w", err)
		}
		if i, ok := index[day]; ok {
			if ActionKind(kind) == BanAccount {
				st.Days[i].Disabled += n
			} else {
				st.Days[i].IPsBan += n
			}
		}
	}
	rows.Close()

	// Networks and domains are folded here, not in SQL: SQLite knows
	// nothing of prefixes, and the sign-ups of a few days are few.
	rows, err = r.db.QueryContext(ctx, `SELECT coalesce(ip, ''), email_key,
			EXISTS (SELECT 1 FROM actions a WHERE a.user_id = registrations.user_id AND a.kind = 'ban-account' AND a.state NOT IN ('cancelled', 'refused'))
		FROM registrations WHERE created >= ?`, since.Unix())
	if err != nil {
		return st, fmt.Errorf("stats: %w", err)
	}
	defer rows.Close()
	nets, domains := map[string]*Count{}, map[string]*Count{}
	add := func(m map[string]*Count, k string, disabled bool) {
		c := m[k]
		if c == nil {
			c = &Count{Key: k}
			m[k] = c
		}
		c.SignUps++
		if disabled {
			c.Disabled++
		}
	}
	for rows.Next() {
		var (
			ip, email string
			disabled  bool
		)
		if err := rows.Scan(&ip, &email, &disabled); err != nil {
			return st, fmt.Errorf("stats: %w", err)
		}
		if n, ok := Network(ip); ok {
			add(nets, n.String(), disabled)
		}
		if at := strings.LastIndexByte(email, '@'); at >= 0 {
			add(domains, email[at+1:], disabled)
		}
	}
	if err := rows.Err(); err != nil {
		return st, fmt.Errorf("stats: %w", err)
	}
	st.Networks, st.Domains = topCounts(nets, top), topCounts(domains, top)
	return st, nil
}

// Network is the network an address is counted in: its /24 for IPv4, its
// /48 for IPv6 (a site's allocation).
func Network(ip string) (netip.Prefix, bool) {
	a, err := netip.ParseAddr(ip)
	if err != nil {
		return netip.Prefix{}, false
	}
	a = a.Unmap()
	bits := 48
	if a.Is4() {
		bits = 24
	}
	p, err := a.Prefix(bits)
	return p, err == nil
}

func topCounts(m map[string]*Count, top int) []Count {
	out := make([]Count, 0, len(m))
	for _, c := range m {
		out = append(out, *c)
	}
	sort.Slice(out, func(i, j int) bool {
		if out[i].SignUps != out[j].SignUps {
			return out[i].SignUps > out[j].SignUps
		}
		return out[i].Key < out[j].Key
	})
	if top > 0 && len(out) > top {
		out = out[:top]
	}
	return out
}

// stateLastSync holds the outcome of the last sync run, for doctor and the
// metrics.
const stateLastSync = "sync.last"

// SyncRun is what one sync run did, as far as the admin's tools care.
type SyncRun struct {
	At     time.Time `json:"at"`
	Added  int       `json:"added"`
	Linked int       `json:"linked"`
	Lines  int       `json:"lines"`
	// RecentSignUps and RecentLinked count the sign-ups of the last day
	// and, of them, those with a linked IP, when the run ended.
	RecentSignUps int64 `json:"recent_signups"`
	RecentLinked  int64 `json:"recent_linked"`
}

// RecordSync stores run as the last sync run, counting the recent sign-ups
// and their links itself.
func (r *DB) RecordSync(ctx context.Context, run SyncRun) error {
	day := run.At.Add(-24 * time.Hour)
	err := r.db.QueryRowContext(ctx, `SELECT count(*), count(ip) FROM registrations WHERE created >= ? AND NOT privileged`,
		unix(day)).Scan(&run.RecentSignUps, &run.RecentLinked)
	if err != nil {
		return fmt.Errorf("record sync: %w", err)
	}
	js, err := json.Marshal(run)
	if err != nil {
		return fmt.Errorf("record sync: %w", err)
	}
	return r.SetState(ctx, stateLastSync, string(js))
}

// LastSync returns the last recorded sync run; ok is false when none was.
func (r *DB) LastSync(ctx context.Context) (run SyncRun, ok bool, err error) {
	v, err := r.State(ctx, stateLastSync)
	if err != nil || v == "" {
		return run, false, err
	}
	if err := json.Unmarshal([]byte(v), &run); err != nil {
		return run, false, fmt.Errorf("last sync: %w", err)
	}
	return run, true, nil
}

// PendingActions counts the actions waiting to be applied.
func (r *DB) PendingActions(ctx context.Context) (int64, error) {
	var n int64
	if err := r.db.QueryRowContext(ctx, `SELECT count(*) FROM actions WHERE state = 'pending'`).Scan(&n); err != nil {
		return 0, fmt.Errorf("count pending actions: %w", err)
	}
	return n, nil
}
