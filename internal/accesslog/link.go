package accesslog

import (
	"encoding/json"
	"fmt"
	"net/netip"
	"sort"
	"time"
)

// How a link was made, as stored in the registry's ip_source.
const (
	// SourceLocation: a sign-up log line recorded the 302's Location,
	// naming the username; exact.
	SourceLocation = "signup-log"
	// SourceCombined: a combined log showed a sign-up POST and then the
	// redirect's GET /u/<username>/ from the same client within the
	// window; inferred.
	SourceCombined = "combined-log"
)

// DefaultWindow is how long after a sign-up POST the browser's GET of the
// new profile is taken as its redirect. Browsers follow a redirect at once;
// logs have one-second resolution.
const DefaultWindow = 10 * time.Second

// Link says that username signed up from IP.
type Link struct {
	Username string
	IP       netip.Addr
	Source   string
	Time     time.Time // when the sign-up was logged
}

// Options tune a Linker.
type Options struct {
	// Window: see DefaultWindow (used when zero).
	Window time.Duration
	// TrustedProxies are reverse proxies whose X-Forwarded-For is believed,
	// when the log records that header. Empty: the logged remote address
	// is the client (the web server's realip / remoteip module has
	// already put the client there).
	TrustedProxies []netip.Prefix
	// TrustUnixSocket believes the X-Forwarded-For of requests that came
	// over a unix socket (remote "unix:"): only for a proxy on this
	// machine that is the socket's only user.
	TrustUnixSocket bool
}

// Linker turns log entries into links, refusing any that the evidence does
// not settle:
//
//   - Sign-up log lines link exactly; a username that two of them link to
//     different addresses is ambiguous.
//   - In combined logs, a GET of /u/<username>/ (200) from client C, at most
//     Window after a sign-up POST from C that no earlier GET took, makes C a
//     candidate for username. A username with more than one candidate
//     address is ambiguous. (A POST is taken by one GET only: a new member
//     then browsing other profiles proves nothing about those.)
//   - A sign-up log link wins over a combined one for the same username: it
//     sees the real client even where the combined log sees a proxy.
//
// Feed it the entries of all logs with Add, then take Result. Sign-up POSTs
// still waiting for their GET are kept in State for the next run.
type Linker struct {
	opts   Options
	posts  map[netip.Addr][]time.Time // sign-up POSTs not yet taken by a GET
	cands  map[string]*candidate
	latest time.Time
	adds   int
}

type candidate struct {
	first    time.Time
	location map[netip.Addr]time.Time
	combined map[netip.Addr]time.Time
}

// NewLinker returns a Linker with no evidence.
func NewLinker(opts Options) *Linker {
	if opts.Window <= 0 {
		opts.Window = DefaultWindow
	}
	return &Linker{opts: opts, posts: map[netip.Addr][]time.Time{}, cands: map[string]*candidate{}}
}

func (l *Linker) candidate(name string, t time.Time) *candidate {
	c := l.cands[name]
	if c == nil {
		c = &candidate{first: t, location: map[netip.Addr]time.Time{}, combined: map[netip.Addr]time.Time{}}
		l.cands[name] = c
	}
	if t.Before(c.first) {
		c.first = t
	}
	return c
}

// Add takes one log entry into account.
func (l *Linker) Add(e Entry) {
	if e.Time.After(l.latest) {
		l.latest = e.Time
	}
	if l.adds++; l.adds%4096 == 0 {
		l.sweep()
	}
	if !e.IsRegisterPost() && e.Method != "GET" {
		return
	}
	client, ok := e.Client(l.opts.TrustedProxies, l.opts.TrustUnixSocket)
	if !ok {
		return
	}
	if e.IsRegisterPost() {
		if e.Format == Signup {
			if name, ok := e.LocationUser(); ok {
				l.candidate(name, e.Time).location[client] = e.Time
			}
			return
		}
		l.posts[client] = append(l.posts[client], e.Time)
		return
	}
	name, ok := e.ProfileUser()
	if !ok {
		return
	}
	posts := l.posts[client]
	for i, t := range posts {
		// One second of slack: a log line is stamped when the request
		// ends, and the GET may end in the same second as the POST or,
		// with a slow POST, apparently before it.
		d := e.Time.Sub(t)
		if d < -time.Second || d > l.opts.Window {
			continue
		}
		l.posts[client] = append(posts[:i:i], posts[i+1:]...)
		if len(l.posts[client]) == 0 {
			delete(l.posts, client)
		}
		l.candidate(name, t).combined[client] = t
		return
	}
}

// sweep forgets POSTs too old to be taken by any GET still to come.
func (l *Linker) sweep() {
	limit := l.latest.Add(-l.opts.Window - time.Second)
	for ip, ts := range l.posts {
		keep := ts[:0]
		for _, t := range ts {
			if !t.Before(limit) {
				keep = append(keep, t)
			}
		}
		if len(keep) == 0 {
			delete(l.posts, ip)
		} else {
			l.posts[ip] = keep
		}
	}
}

// Result returns the links the evidence settles and the usernames it
// leaves ambiguous, both sorted by sign-up time, and forgets them.
func (l *Linker) Result() (links []Link, ambiguous []string) {
	type amb struct {
		name string
		t    time.Time
	}
	var ambs []amb
	for name, c := range l.cands {
		var set map[netip.Addr]time.Time
		source := SourceLocation
		switch {
		case len(c.location) > 0:
			set = c.location
		default:
			set, source = c.combined, SourceCombined
		}
		if len(set) != 1 {
			ambs = append(ambs, amb{name, c.first})
			continue
		}
		for ip, t := range set {
			links = append(links, Link{Username: name, IP: ip, Source: source, Time: t})
		}
	}
	l.cands = map[string]*candidate{}
	sort.Slice(links, func(i, j int) bool {
		if !links[i].Time.Equal(links[j].Time) {
			return links[i].Time.Before(links[j].Time)
		}
		return links[i].Username < links[j].Username
	})
	sort.Slice(ambs, func(i, j int) bool {
		if !ambs[i].t.Equal(ambs[j].t) {
			return ambs[i].t.Before(ambs[j].t)
		}
		return ambs[i].name < ambs[j].name
	})
	for _, a := range ambs {
		ambiguous = append(ambiguous, a.name)
	}
	return links, ambiguous
}

type linkerState struct {
	Latest time.Time     `json:"latest"`
	Posts  []pendingPost `json:"posts,omitempty"`
}

type pendingPost struct {
	IP   netip.Addr `json:"ip"`
	Time time.Time  `json:"t"`
}

// State returns the sign-up POSTs still waiting for their GET, to hand to
// Restore at the next run: a log read may end between the two.
func (l *Linker) State() ([]byte, error) {
	l.sweep()
	st := linkerState{Latest: l.latest}
	for ip, ts := range l.posts {
		for _, t := range ts {
			st.Posts = append(st.Posts, pendingPost{ip, t})
		}
	}
	sort.Slice(st.Posts, func(i, j int) bool { return st.Posts[i].Time.Before(st.Posts[j].Time) })
	return json.Marshal(st)
}

// Restore loads what State returned. Empty data is no state.
func (l *Linker) Restore(data []byte) error {
	if len(data) == 0 {
		return nil
	}
	var st linkerState
	if err := json.Unmarshal(data, &st); err != nil {
		return fmt.Errorf("restore linker state: %w", err)
	}
	if st.Latest.After(l.latest) {
		l.latest = st.Latest
	}
	for _, p := range st.Posts {
		l.posts[p.IP] = append(l.posts[p.IP], p.Time)
	}
	return nil
}
