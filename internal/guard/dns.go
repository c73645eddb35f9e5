package guard

import (
	"context"
	"errors"
	"fmt"
	"net"
	"strings"
	"sync"
	"time"

	"github.com/miekg/dns"
)

// Domain is what DNS says about a recipient domain's mail.
type Domain int

// What a domain can be.
const (
	// Receives: it has MX records, or A/AAAA records that stand in for
	// them (RFC 5321 section 5.1).
	Receives Domain = iota
	// NullMX: its only MX is "." (RFC 7505): it says it takes no mail.
	NullMX
	// NoSuchDomain: the name does not exist (NXDOMAIN).
	NoSuchDomain
	// NoAddress: the name exists but has no MX and no A or AAAA record.
	NoAddress
)

func (d Domain) String() string {
	switch d {
	case NullMX:
		return "null-mx"
	case NoSuchDomain:
		return "no-such-domain"
	case NoAddress:
		return "no-address-records"
	}
	return "receives"
}

// Resolver asks one DNS server about recipient domains, caches the answers
// for their TTL, and bounds every lookup in time. Make one with
// NewResolver.
type Resolver struct {
	server  string
	timeout time.Duration
	client  *dns.Client
	tcp     *dns.Client
	now     func() time.Time

	mu    sync.Mutex
	cache map[string]cached
}

type cached struct {
	domain  Domain
	err     error
	expires time.Time
}

// Cache bounds.
const (
	maxTTL = time.Hour
	// negTTL is used for an answer without records or SOA to take a TTL
	// from.
	negTTL = 5 * time.Minute
	// errTTL: a failing or slow resolver is not asked again for each mail
	// for this long; meanwhile the mail goes.
	errTTL = 30 * time.Second
	// maxCache caps the cache; when full it is emptied (botnets' domains
	// are many and one-off, and a lookup is cheap).
	maxCache = 100_000
)

// DefaultTimeout bounds each domain check when the admin sets nothing:
// MediaGoblin sends its verification mail inside the sign-up request, so a
// slow resolver delays the sign-up's answer by at most this.
const DefaultTimeout = 2 * time.Second

// NewResolver returns a resolver that asks server ("host:port", or a host
// for port 53; "" for the first nameserver of /etc/resolv.conf).
func NewResolver(server string, timeout time.Duration) (*Resolver, error) {
	if server == "" {
		conf, err := dns.ClientConfigFromFile("/etc/resolv.conf")
		if err != nil || len(conf.Servers) == 0 {
			return nil, fmt.Errorf("no resolver given and none in /etc/resolv.conf: %v", err)
		}
		server = net.JoinHostPort(conf.Servers[0], conf.Port)
	} else if _, _, err := net.SplitHostPort(server); err != nil {
		server = net.JoinHostPort(strings.Trim(server, "[]"), "53")
	}
	if timeout <= 0 {
		timeout = DefaultTimeout
	}
	return &Resolver{
		server:  server,
		timeout: timeout,
		client:  &dns.Client{Net: "udp", Timeout: timeout},
		tcp:     &dns.Client{Net: "tcp", Timeout: timeout},
		now:     time.Now,
		cache:   map[string]cached{},
	}, nil
}

// ErrLookup wraps every reason a domain could not be judged; the caller
// lets the mail go.
var ErrLookup = errors.New("DNS lookup failed")

// Check says whether domain can receive mail. An error (timeout, SERVFAIL,
// a malformed name) means nothing is known.
func (r *Resolver) Check(ctx context.Context, domain string) (Domain, error) {
	domain = strings.ToLower(strings.TrimSuffix(domain, "."))
	if _, ok := dns.IsDomainName(domain); !ok || domain == "" || strings.HasPrefix(domain, "[") {
		return Receives, fmt.Errorf("%w: %q is not a domain name", ErrLookup, domain)
	}
	now := r.now()
	r.mu.Lock()
	c, ok := r.cache[domain]
	r.mu.Unlock()
	if ok && now.Before(c.expires) {
		return c.domain, c.err
	}
	ctx, cancel := context.WithTimeout(ctx, r.timeout)
	defer cancel()
	d, ttl, err := r.lookup(ctx, domain)
	if err != nil {
		d, ttl = Receives, errTTL
	}
	r.mu.Lock()
	if len(r.cache) >= maxCache {
		r.cache = map[string]cached{}
	}
	r.cache[domain] = cached{domain: d, err: err, expires: now.Add(ttl)}
	r.mu.Unlock()
	return d, err
}

func (r *Resolver) lookup(ctx context.Context, domain string) (Domain, time.Duration, error) {
	mx, err := r.query(ctx, domain, dns.TypeMX)
	if err != nil {
		return Receives, 0, err
	}
	if mx.Rcode == dns.RcodeNameError {
		return NoSuchDomain, negativeTTL(mx), nil
	}
	var exchanges []*dns.MX
	for _, rr := range mx.Answer {
		if m, ok := rr.(*dns.MX); ok {
			exchanges = append(exchanges, m)
		}
	}
	if len(exchanges) == 1 && exchanges[0].Mx == "." {
		return NullMX, answerTTL(mx), nil
	}
	if len(exchanges) > 0 {
		return Receives, answerTTL(mx), nil
	}
	// No MX: the A or AAAA records stand in for one.
	ttl := negativeTTL(mx)
	for _, qtype := range []uint16{dns.TypeA, dns.TypeAAAA} {
		resp, err := r.query(ctx, domain, qtype)
		if err != nil {
			return Receives, 0, err
		}
		if resp.Rcode == dns.RcodeNameError {
			return NoSuchDomain, negativeTTL(resp), nil
		}
		for _, rr := range resp.Answer {
			switch rr.(type) {
			case *dns.A, *dns.AAAA:
				return Receives, answerTTL(resp), nil
			}
		}
		ttl = min(ttl, negativeTTL(resp))
	}
	return NoAddress, ttl, nil
}

// query asks the server one question, over TCP again when the UDP answer
// was truncated. Anything but NOERROR and NXDOMAIN is an error.
func (r *Resolver) query(ctx context.Context, name string, qtype uint16) (*dns.Msg, error) {
	m := new(dns.Msg)
	m.SetQuestion(dns.Fqdn(name), qtype)
	m.RecursionDesired = true
	resp, _, err := r.client.ExchangeContext(ctx, m, r.server)
	if err == nil && resp.Truncated {
		resp, _, err = r.tcp.ExchangeContext(ctx, m, r.server)
	}
	if err != nil {
		return nil, fmt.Errorf("%w: %s %s: %v", ErrLookup, dns.TypeToString[qtype], name, err)
	}
	if resp.Rcode != dns.RcodeSuccess && resp.Rcode != dns.RcodeNameError {
		return nil, fmt.Errorf("%w: %s %s: %s", ErrLookup, dns.TypeToString[qtype], name, dns.RcodeToString[resp.Rcode])
	}
	return resp, nil
}

func answerTTL(m *dns.Msg) time.Duration {
	ttl := maxTTL
	for _, rr := range m.Answer {
		ttl = min(ttl, time.Duration(rr.Header().Ttl)*time.Second)
	}
	return ttl
}

// negativeTTL is how long an answer without records holds (RFC 2308: the
// SOA's TTL, at most its minimum field).
func negativeTTL(m *dns.Msg) time.Duration {
	for _, rr := range m.Ns {
		if soa, ok := rr.(*dns.SOA); ok {
			return min(time.Duration(min(soa.Hdr.Ttl, soa.Minttl))*time.Second, maxTTL)
		}
	}
	return negTTL
}
