package guard

import (
	"context"
	"errors"
	"net"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/miekg/dns"
)

// dnsServer is a DNS server of the test's own on loopback, answering for a
// few test domains as real authoritative data would.
type dnsServer struct {
	addr    string
	queries atomic.Int64
}

func startDNS(t *testing.T) *dnsServer {
	t.Helper()
	pc, err := net.ListenPacket("udp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	s := &dnsServer{addr: pc.LocalAddr().String()}
	srv := &dns.Server{PacketConn: pc, Handler: dns.HandlerFunc(s.answer)}
	started := make(chan struct{})
	srv.NotifyStartedFunc = func() { close(started) }
	go srv.ActivateAndServe()
	<-started
	t.Cleanup(func() { srv.Shutdown() })
	return s
}

func rr(t string) dns.RR {
	r, err := dns.NewRR(t)
	if err != nil {
		panic(err)
	}
	return r
}

func (s *dnsServer) answer(w dns.ResponseWriter, req *dns.Msg) {
	s.queries.Add(1)
	m := new(dns.Msg)
	m.SetReply(req)
	q := req.Question[0]
	name := strings.ToLower(q.Name)
	zone := name
	if i := strings.Index(name, "."); i >= 0 && strings.Count(name, ".") > 2 {
		zone = name[i+1:]
	}
	soa := rr(zone + " 300 IN SOA ns." + zone + " hostmaster." + zone + " 1 3600 600 86400 60")
	switch zone {
	case "nullmx.test.":
		if q.Qtype == dns.TypeMX {
			m.Answer = append(m.Answer, rr(name+" 300 IN MX 0 ."))
		} else {
			m.Ns = append(m.Ns, soa)
		}
	case "good.test.":
		switch q.Qtype {
		case dns.TypeMX:
			m.Answer = append(m.Answer, rr(name+" 300 IN MX 10 mx.good.test."))
		default:
			m.Ns = append(m.Ns, soa)
		}
	case "aonly.test.":
		switch q.Qtype {
		case dns.TypeAAAA:
			m.Answer = append(m.Answer, rr(name+" 300 IN AAAA 2001:db8::25"))
		default:
			m.Ns = append(m.Ns, soa)
		}
	case "empty.test.", "known.test.":
		m.Ns = append(m.Ns, soa)
	case "broken.test.":
		m.Rcode = dns.RcodeServerFailure
	case "slow.test.":
		time.Sleep(3 * time.Second)
		m.Ns = append(m.Ns, soa)
	default:
		m.Rcode = dns.RcodeNameError
		m.Ns = append(m.Ns, rr("test. 300 IN SOA ns.test. hostmaster.test. 1 3600 600 86400 60"))
	}
	w.WriteMsg(m)
}

func TestResolver(t *testing.T) {
	srv := startDNS(t)
	r, err := NewResolver(srv.addr, 500*time.Millisecond)
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	for _, tc := range []struct {
		domain string
		want   Domain
		err    bool
	}{
		{"nullmx.test", NullMX, false},
		{"good.test", Receives, false},
		{"GOOD.test.", Receives, false},
		{"aonly.test", Receives, false},
		{"empty.test", NoAddress, false},
		{"gone.test", NoSuchDomain, false},
		{"broken.test", Receives, true},
		{"slow.test", Receives, true},
		{"[192.0.2.1]", Receives, true},
		{"", Receives, true},
	} {
		start := time.Now()
		got, err := r.Check(ctx, tc.domain)
		if got != tc.want || (err != nil) != tc.err {
			t.Errorf("Check(%q) = %v, %v; want %v, error %v", tc.domain, got, err, tc.want, tc.err)
		}
		if err != nil && !errors.Is(err, ErrLookup) {
			t.Errorf("Check(%q) error %v is not ErrLookup", tc.domain, err)
		}
		if d := time.Since(start); d > 2*time.Second {
			t.Errorf("Check(%q) took %v, beyond its time bound", tc.domain, d)
		}
	}
	// Cached: asking again sends nothing, the slow domain included (its
	// failure is remembered briefly, so that each mail does not wait).
	n := srv.queries.Load()
	for _, d := range []string{"nullmx.test", "empty.test", "gone.test", "slow.test"} {
		r.Check(ctx, d)
	}
	if got := srv.queries.Load(); got != n {
		t.Errorf("%d more queries for cached domains", got-n)
	}
	// After the TTL (60 s: the SOA minimum, for the empty answer) it asks again.
	r.now = func() time.Time { return time.Now().Add(61 * time.Second) }
	r.Check(ctx, "empty.test")
	if srv.queries.Load() == n {
		t.Error("an expired cache entry was used")
	}
}
