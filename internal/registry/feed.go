package registry

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"net/netip"
	"time"

	"github.com/bouncemilter/bouncemilter/internal/banner"
)

// feedSchema holds what package feed keeps: the peers' listings, one row
// per peer and entry, replaced whole when a newer feed of that peer is
// accepted; each peer's fetch history; and the IP bans the listings led
// to, so that they can be lifted when the listings go.
const feedSchema = `
CREATE TABLE feed_peers (
	name          TEXT PRIMARY KEY,
	last_fetch    INTEGER NOT NULL DEFAULT 0, -- unix seconds, 0 never
	last_made     INTEGER NOT NULL DEFAULT 0, -- made time of the last accepted feed
	last_accepted INTEGER NOT NULL DEFAULT 0, -- when it was accepted
	entries       INTEGER NOT NULL DEFAULT 0,
	errors        INTEGER NOT NULL DEFAULT 0, -- fetches that failed in a row
	last_error    TEXT NOT NULL DEFAULT ''
);

CREATE TABLE feed_entries (
	peer       TEXT NOT NULL,
	kind       TEXT NOT NULL,    -- 'ip' (address or CIDR) or 'address' (SHA-256, hex)
	value      TEXT NOT NULL,
	first_seen INTEGER NOT NULL,
	last_seen  INTEGER NOT NULL,
	count      INTEGER NOT NULL,
	expires    INTEGER NOT NULL,
	PRIMARY KEY (kind, value, peer)
);
CREATE INDEX feed_entries_peer ON feed_entries(peer);

CREATE TABLE feed_bans (
	ip        TEXT PRIMARY KEY,
	action_id INTEGER NOT NULL REFERENCES actions(id),
	expires   INTEGER NOT NULL,
	peers     TEXT NOT NULL DEFAULT ''
);
`

// VerdictStopped marks a journal entry that no bounce made: the milter
// stopped MediaGoblin's mail to an address known to be unable to receive it
// (package guard), and journalled what the bounce would have led to. The
// entry's Client says how the address was known: see GuardClient.
const VerdictStopped Verdict = "stopped"

// GuardClient is the Client of a journal entry with VerdictStopped whose
// address was known bad from how (for example "null-mx", "peers").
func GuardClient(how string) string { return "guard:" + how }

// Proven is an IP address or an address that this instance's own bounces
// proved bad: some action against it is pending or applied, it was not
// restored, and it is not allow-listed.
type Proven struct {
	Value     string // an IP address, or an address as EmailKey has it
	FirstSeen time.Time
	LastSeen  time.Time
	Count     int
}

// ownProof selects the actions that this instance's own evidence led to: a
// bounce, or a stopped mail whose address was not known from the peers
// (re-publishing what peers said would let one peer's listing count twice).
const ownProof = `a.bounce_id IS NOT NULL AND a.state IN ('pending', 'applied')
	AND EXISTS (SELECT 1 FROM bounces b WHERE b.id = a.bounce_id
		AND (b.verdict = 'acted' OR (b.verdict = 'stopped' AND b.client != 'guard:peers')))`

// ProvenIPs returns the sign-up IPs this instance banned on its own
// evidence: each counts the accounts from it that were disabled, and is
// seen when they were; its IP ban must still be pending or applied.
func (r *DB) ProvenIPs(ctx context.Context) ([]Proven, error) {
	return r.proven(ctx, `SELECT g.ip, min(a.created), max(a.created), count(*) FROM actions a
		JOIN registrations g ON g.user_id = a.user_id AND `+banOf+`
		WHERE a.kind = 'ban-account' AND `+ownProof+` AND coalesce(g.ip, '') != ''
		AND EXISTS (SELECT 1 FROM actions i WHERE i.kind = 'ban-ip' AND i.target = g.ip AND i.state IN ('pending', 'applied'))
		AND g.ip NOT IN (SELECT value FROM allowlist WHERE kind = 'ip')
		GROUP BY g.ip ORDER BY g.ip`)
}

// ProvenAddresses returns the addresses, as EmailKey has them, of the
// accounts this instance disabled on its own evidence.
func (r *DB) ProvenAddresses(ctx context.Context) ([]Proven, error) {
	return r.proven(ctx, `SELECT g.email_key, min(a.created), max(a.created), count(*) FROM actions a
		JOIN registrations g ON g.user_id = a.user_id AND `+banOf+`
		WHERE a.kind = 'ban-account' AND `+ownProof+`
		AND g.email_key NOT IN (SELECT value FROM allowlist WHERE kind = 'email')
		AND g.username NOT IN (SELECT value FROM allowlist WHERE kind = 'user')
		GROUP BY g.email_key ORDER BY g.email_key`)
}

func (r *DB) proven(ctx context.Context, query string) ([]Proven, error) {
	rows, err := r.db.QueryContext(ctx, query)
	if err != nil {
		return nil, fmt.Errorf("proven entries: %w", err)
	}
	defer rows.Close()
	var out []Proven
	for rows.Next() {
		var (
			p           Proven
			first, last int64
		)
		if err := rows.Scan(&p.Value, &first, &last, &p.Count); err != nil {
			return nil, fmt.Errorf("proven entries: %w", err)
		}
		p.FirstSeen, p.LastSeen = fromUnix(first), fromUnix(last)
		out = append(out, p)
	}
	return out, rows.Err()
}

// ProvenAddress reports whether addr, exactly (SameAddress), belongs to an
// account this instance disabled on its own evidence since since, and did
// not restore. A look-alike's ban (Victim@ for victim@) proves nothing of
// addr, and neither does an old one: a mailbox that did not exist a year
// ago may have an owner today.
func (r *DB) ProvenAddress(ctx context.Context, addr string, since time.Time) (bool, error) {
	rows, err := r.db.QueryContext(ctx, `SELECT DISTINCT g.email FROM actions a
		JOIN registrations g ON g.user_id = a.user_id AND `+banOf+`
		WHERE g.email_key = ? AND a.kind = 'ban-account' AND a.created >= ? AND `+ownProof, EmailKey(addr), unix(since))
	if err != nil {
		return false, fmt.Errorf("proven address %s: %w", addr, err)
	}
	defer rows.Close()
	for rows.Next() {
		var email string
		if err := rows.Scan(&email); err != nil {
			return false, fmt.Errorf("proven address %s: %w", addr, err)
		}
		if SameAddress(email, addr) {
			return true, nil
		}
	}
	if err := rows.Err(); err != nil {
		return false, fmt.Errorf("proven address %s: %w", addr, err)
	}
	return false, nil
}

// FeedPeer is what the registry knows of one peer's feed.
type FeedPeer struct {
	Name         string
	LastFetch    time.Time // last attempt, successful or not
	LastMade     time.Time // made time of the last accepted feed
	LastAccepted time.Time // when that feed was accepted
	Entries      int
	Errors       int // failed fetches since the last good one
	LastError    string
}

// FeedEntry is one entry a peer listed.
type FeedEntry struct {
	Peer      string
	Kind      string // "ip" or "address"
	Value     string
	FirstSeen time.Time
	LastSeen  time.Time
	Count     int
	Expires   time.Time
}

// FeedPeers returns every peer the registry has heard of, by name.
func (r *DB) FeedPeers(ctx context.Context) ([]FeedPeer, error) {
	rows, err := r.db.QueryContext(ctx, `SELECT name, last_fetch, last_made, last_accepted, entries, errors, last_error
		FROM feed_peers ORDER BY name`)
	if err != nil {
		return nil, fmt.Errorf("feed peers: %w", err)
	}
	defer rows.Close()
	var out []FeedPeer
	for rows.Next() {
		p, err := scanFeedPeer(rows)
		if err != nil {
			return nil, fmt.Errorf("feed peers: %w", err)
		}
		out = append(out, p)
	}
	return out, rows.Err()
}

// FeedPeerState returns what the registry knows of one peer; a peer never
// fetched has only its name.
func (r *DB) FeedPeerState(ctx context.Context, name string) (FeedPeer, error) {
	p, err := scanFeedPeer(r.db.QueryRowContext(ctx, `SELECT name, last_fetch, last_made, last_accepted, entries, errors, last_error
		FROM feed_peers WHERE name = ?`, name))
	if errors.Is(err, sql.ErrNoRows) {
		return FeedPeer{Name: name}, nil
	}
	if err != nil {
		return p, fmt.Errorf("feed peer %s: %w", name, err)
	}
	return p, nil
}

func scanFeedPeer(s interface{ Scan(...any) error }) (FeedPeer, error) {
	var (
		p                   FeedPeer
		fetch, made, accept int64
	)
	err := s.Scan(&p.Name, &fetch, &made, &accept, &p.Entries, &p.Errors, &p.LastError)
	p.LastFetch, p.LastMade, p.LastAccepted = fromUnix(fetch), fromUnix(made), fromUnix(accept)
	return p, err
}

// FeedFetchFailed records a fetch of peer that failed, keeping what was
// accepted from it before.
func (r *DB) FeedFetchFailed(ctx context.Context, peer string, cause error, now time.Time) error {
	_, err := r.exec(ctx, `INSERT INTO feed_peers(name, last_fetch, errors, last_error) VALUES (?, ?, 1, ?)
		ON CONFLICT(name) DO UPDATE SET last_fetch = excluded.last_fetch, errors = errors + 1, last_error = excluded.last_error`,
		peer, unix(now), cause.Error())
	if err != nil {
		return fmt.Errorf("record fetch of %s: %w", peer, err)
	}
	return nil
}

// FeedFetched records a fetch of peer that brought nothing newer than what
// was accepted (the same feed again).
func (r *DB) FeedFetched(ctx context.Context, peer string, now time.Time) error {
	_, err := r.exec(ctx, `INSERT INTO feed_peers(name, last_fetch) VALUES (?, ?)
		ON CONFLICT(name) DO UPDATE SET last_fetch = excluded.last_fetch, errors = 0, last_error = ''`, peer, unix(now))
	if err != nil {
		return fmt.Errorf("record fetch of %s: %w", peer, err)
	}
	return nil
}

// StoreFeed replaces what peer listed with entries, from a feed made at
// made, in one transaction. It refuses, with ErrStale, a feed not newer
// than the last one accepted from peer, so that two concurrent pulls
// cannot store an older feed over a newer one.
func (r *DB) StoreFeed(ctx context.Context, peer string, made time.Time, entries []FeedEntry, now time.Time) error {
	err := r.Tx(ctx, func(tx *Tx) error {
		var last int64
		err := tx.tx.QueryRowContext(ctx, `SELECT last_made FROM feed_peers WHERE name = ?`, peer).Scan(&last)
		if err != nil && !errors.Is(err, sql.ErrNoRows) {
			return err
		}
		if last != 0 && unix(made) <= last {
			return ErrStale
		}
		if _, err := tx.tx.ExecContext(ctx, `DELETE FROM feed_entries WHERE peer = ?`, peer); err != nil {
			return err
		}
		for _, e := range entries {
			if _, err := tx.tx.ExecContext(ctx, `INSERT INTO feed_entries(peer, kind, value, first_seen, last_seen, count, expires)
				VALUES (?, ?, ?, ?, ?, ?, ?) ON CONFLICT(kind, value, peer) DO NOTHING`,
				peer, e.Kind, e.Value, unix(e.FirstSeen), unix(e.LastSeen), e.Count, unix(e.Expires)); err != nil {
				return err
			}
		}
		_, err = tx.tx.ExecContext(ctx, `INSERT INTO feed_peers(name, last_fetch, last_made, last_accepted, entries) VALUES (?, ?, ?, ?, ?)
			ON CONFLICT(name) DO UPDATE SET last_fetch = excluded.last_fetch, last_made = excluded.last_made,
				last_accepted = excluded.last_accepted, entries = excluded.entries, errors = 0, last_error = ''`,
			peer, unix(now), unix(made), unix(now), len(entries))
		return err
	})
	if err != nil {
		return fmt.Errorf("store feed of %s: %w", peer, err)
	}
	return nil
}

// ErrStale refuses a feed that is not newer than the last one accepted from
// the same peer.
var ErrStale = errors.New("not newer than the feed last accepted")

// FeedEntries returns the entries of kind ("ip" or "address") that have
// not expired at now, with value when value is not "".
func (r *DB) FeedEntries(ctx context.Context, kind, value string, now time.Time) ([]FeedEntry, error) {
	q := `SELECT peer, kind, value, first_seen, last_seen, count, expires FROM feed_entries WHERE kind = ? AND expires > ?`
	args := []any{kind, unix(now)}
	if value != "" {
		q += ` AND value = ?`
		args = append(args, value)
	}
	rows, err := r.db.QueryContext(ctx, q+` ORDER BY value, peer`, args...)
	if err != nil {
		return nil, fmt.Errorf("feed entries: %w", err)
	}
	defer rows.Close()
	var out []FeedEntry
	for rows.Next() {
		var (
			e                    FeedEntry
			first, last, expires int64
		)
		if err := rows.Scan(&e.Peer, &e.Kind, &e.Value, &first, &last, &e.Count, &expires); err != nil {
			return nil, fmt.Errorf("feed entries: %w", err)
		}
		e.FirstSeen, e.LastSeen, e.Expires = fromUnix(first), fromUnix(last), fromUnix(expires)
		out = append(out, e)
	}
	return out, rows.Err()
}

// FeedBan is an IP ban that the peers' listings led to.
type FeedBan struct {
	IP       string
	ActionID int64
	State    ActionState // of the ban action: undone when the admin lifted it
	Expires  time.Time
	Peers    string
}

// FeedBans returns the IP bans the peers' listings led to, by IP.
func (r *DB) FeedBans(ctx context.Context) (map[string]FeedBan, error) {
	rows, err := r.db.QueryContext(ctx, `SELECT f.ip, f.action_id, a.state, f.expires, f.peers
		FROM feed_bans f JOIN actions a ON a.id = f.action_id`)
	if err != nil {
		return nil, fmt.Errorf("feed bans: %w", err)
	}
	defer rows.Close()
	out := map[string]FeedBan{}
	for rows.Next() {
		var (
			b       FeedBan
			state   string
			expires int64
		)
		if err := rows.Scan(&b.IP, &b.ActionID, &state, &expires, &b.Peers); err != nil {
			return nil, fmt.Errorf("feed bans: %w", err)
		}
		b.State, b.Expires = ActionState(state), fromUnix(expires)
		out[b.IP] = b
	}
	return out, rows.Err()
}

// BanFromFeed queues a ban of ip that the peers' listings call for, unless
// ip is allow-listed or a ban of it is already pending or applied (this
// instance's own, which the listing does not own and never lifts). It
// reports whether it queued one.
func (r *DB) BanFromFeed(ctx context.Context, ip, reason, peers string, expires, now time.Time) (bool, error) {
	var queued bool
	err := r.Tx(ctx, func(tx *Tx) error {
		allowed, err := tx.ipAllowed(ctx, canonicalIP(ip))
		if err != nil {
			return err
		}
		if allowed {
			return nil
		}
		id, err := tx.Queue(ctx, Action{Kind: BanIP, Target: ip, Reason: reason}, now)
		if err != nil || id == 0 {
			return err
		}
		queued = true
		_, err = tx.tx.ExecContext(ctx, `INSERT INTO feed_bans(ip, action_id, expires, peers) VALUES (?, ?, ?, ?)
			ON CONFLICT(ip) DO UPDATE SET action_id = excluded.action_id, expires = excluded.expires, peers = excluded.peers`,
			ip, id, unix(expires), peers)
		return err
	})
	if err != nil {
		return false, fmt.Errorf("ban %s from feed: %w", ip, err)
	}
	return queued, nil
}

// UpdateFeedBan records a new expiry and list of peers for a ban the
// listings keep.
func (r *DB) UpdateFeedBan(ctx context.Context, ip, peers string, expires time.Time) error {
	_, err := r.exec(ctx, `UPDATE feed_bans SET expires = ?, peers = ? WHERE ip = ?`, unix(expires), peers, ip)
	if err != nil {
		return fmt.Errorf("update feed ban of %s: %w", ip, err)
	}
	return nil
}

// UnbanFromFeed ends a ban that a listing led to and that no listing calls
// for any more. The ban is cancelled or undone and an unban queued, unless
// this instance proved the IP bad itself since (a sign-up from it has its
// account ban pending or applied): then the ban stays, as its own. A ban
// the admin lifted already is only forgotten.
//
// v6bits is serve's --ipv6-prefix. The unban goes through the banner, which
// lifts the whole network an address is grouped in (an IPv6 /64), not the
// address alone; when another ban-ip pending or applied covers the same
// network (this instance's own ban of a neighbour, or the feed's of
// another address there), the feed's ban is only cancelled or undone in
// the journal, with no unban queued, so that the network stays banned for
// the other. It reports whether an unban was queued.
func (r *DB) UnbanFromFeed(ctx context.Context, ip, reason string, v6bits int, now time.Time) (bool, error) {
	var unbanned bool
	err := r.Tx(ctx, func(tx *Tx) error {
		var (
			actionID int64
			state    string
		)
		err := tx.tx.QueryRowContext(ctx, `SELECT f.action_id, a.state FROM feed_bans f JOIN actions a ON a.id = f.action_id
			WHERE f.ip = ?`, ip).Scan(&actionID, &state)
		if errors.Is(err, sql.ErrNoRows) {
			return nil
		}
		if err != nil {
			return err
		}
		if _, err := tx.tx.ExecContext(ctx, `DELETE FROM feed_bans WHERE ip = ?`, ip); err != nil {
			return err
		}
		if state != string(Pending) && state != string(Applied) {
			return nil
		}
		var own bool
		if err := tx.tx.QueryRowContext(ctx, `SELECT EXISTS(SELECT 1 FROM registrations g JOIN actions a ON a.user_id = g.user_id AND `+banOf+`
			WHERE g.ip = ? AND a.kind = 'ban-account' AND a.state IN ('pending', 'applied'))`, ip).Scan(&own); err != nil {
			return err
		}
		if own {
			return nil
		}
		ban := Action{ID: actionID, State: ActionState(state), Kind: BanIP, Target: ip}
		unbanned, err = tx.withdrawBan(ctx, ban, 0, reason, v6bits, now)
		return err
	})
	if err != nil {
		return false, fmt.Errorf("unban %s from feed: %w", ip, err)
	}
	return unbanned, nil
}

// withdrawBan lifts ban, a ban-ip whose evidence is gone, as liftBan does,
// unless another ban-ip in force covers the network the banner would lift
// with it when IPv6 addresses are grouped in networks of v6bits
// (networkBannedByOther): then the ban is only ended in the journal and the
// network stays banned for the other. It reports whether an unban was
// queued.
//
// Only withdrawn evidence goes this way. An admin's restore or allow-list
// lifts the network whatever else it holds: a person known to be innocent
// is set free even when that frees a bot beside them.
func (t *Tx) withdrawBan(ctx context.Context, ban Action, userID int64, reason string, v6bits int, now time.Time) (bool, error) {
	shared, err := t.networkBannedByOther(ctx, ban.Target, ban.ID, v6bits)
	if err != nil {
		return false, err
	}
	if shared {
		return false, t.endBan(ctx, ban, now)
	}
	if _, err := t.liftBan(ctx, ban, userID, reason, now); err != nil {
		return false, err
	}
	return true, nil
}

// networkBannedByOther reports whether a ban-ip other than the action
// except, pending or applied, covers the network a ban of ip covers when
// IPv6 addresses are grouped in networks of v6bits (banner.Group): lifting
// ip through the banner would lift that ban too.
func (t *Tx) networkBannedByOther(ctx context.Context, ip string, except int64, v6bits int) (bool, error) {
	a, err := netip.ParseAddr(ip)
	if err != nil {
		return false, nil
	}
	net := banner.Group(a, v6bits)
	// An address banned alone: only its two spellings can match. A
	// network: every IPv6 target in force is compared, one query per
	// lifted IPv6 feed ban.
	query := `SELECT target FROM actions WHERE kind = 'ban-ip' AND state IN ('pending', 'applied') AND id != ? AND `
	args := []any{except}
	if net.IsSingleIP() {
		u := net.Addr().String()
		query += `target IN (?, ?, ?)`
		args = append(args, u, "::ffff:"+u, ip)
	} else {
		query += `target LIKE '%:%'`
	}
	rows, err := t.tx.QueryContext(ctx, query, args...)
	if err != nil {
		return false, err
	}
	defer rows.Close()
	for rows.Next() {
		var target string
		if err := rows.Scan(&target); err != nil {
			return false, err
		}
		if b, err := netip.ParseAddr(target); err == nil && banner.Group(b, v6bits) == net {
			return true, nil
		}
	}
	return false, rows.Err()
}

// ListedBy returns the peers whose unexpired listing holds value (an IP, or
// an address hash as package feed makes it), for review.
func (r *DB) ListedBy(ctx context.Context, kind, value string, now time.Time) ([]string, error) {
	entries, err := r.FeedEntries(ctx, kind, value, now)
	if err != nil {
		return nil, err
	}
	out := make([]string, 0, len(entries))
	for _, e := range entries {
		out = append(out, e.Peer)
	}
	return out, nil
}

// PeerCount says how many of this instance's disabled sign-ups a peer also
// listed: by their IP, and by their address.
type PeerCount struct {
	Peer      string `json:"peer"`
	IPs       int64  `json:"ips"`
	Addresses int64  `json:"addresses"`
}
