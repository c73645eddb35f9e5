package filter

import (
	"encoding/binary"
	"errors"
	"log/slog"
	"net"
	"sync"
	"time"
)

// inflight counts the messages between Postfix's MAIL command and the
// milter's final answer, over every connection. go-milter tells its milter
// nothing when a connection drops in the middle of a message, so the count
// is kept by the connections themselves, from the packets that pass: a
// message starts with MAIL ('M'), and ends with an abort ('A'), a quit
// ('Q'), a final answer (accept, discard, reject, tempfail, reply code), or
// the connection's end, whichever comes first.
type inflight struct {
	mu   sync.Mutex
	n    int
	idle chan struct{} // closed while n == 0
}

func newInflight() *inflight {
	idle := make(chan struct{})
	close(idle)
	return &inflight{idle: idle}
}

func (f *inflight) add(d int) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.n == 0 && d > 0 {
		f.idle = make(chan struct{})
	}
	f.n += d
	if f.n == 0 {
		close(f.idle)
	}
}

// Load returns the number of messages in flight.
func (f *inflight) Load() int {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.n
}

// Idle returns a channel closed when no message is in flight.
func (f *inflight) Idle() <-chan struct{} {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.idle
}

// trackedConn is one connection from Postfix, which follows the packets it
// reads and writes to keep the count of messages in flight.
type trackedConn struct {
	net.Conn
	f *inflight

	mu     sync.Mutex
	in     packetScanner
	out    packetScanner
	busy   bool // a message is in flight on this connection
	closed bool
}

func (c *trackedConn) Read(b []byte) (int, error) {
	n, err := c.Conn.Read(b)
	c.mu.Lock()
	c.in.feed(b[:n], c.command)
	c.mu.Unlock()
	return n, err
}

func (c *trackedConn) Write(b []byte) (int, error) {
	n, err := c.Conn.Write(b)
	c.mu.Lock()
	c.out.feed(b[:n], c.answer)
	c.mu.Unlock()
	return n, err
}

func (c *trackedConn) Close() error {
	c.mu.Lock()
	c.end()
	c.closed = true
	c.mu.Unlock()
	return c.Conn.Close()
}

// command sees each packet code Postfix sends.
func (c *trackedConn) command(code byte) {
	switch code {
	case 'M':
		if !c.busy && !c.closed {
			c.busy = true
			c.f.add(1)
		}
	case 'A', 'Q':
		c.end()
	}
}

// answer sees each packet code the milter sends.
func (c *trackedConn) answer(code byte) {
	switch code {
	case 'a', 'd', 'r', 't', 'y':
		c.end()
	}
}

func (c *trackedConn) end() {
	if c.busy {
		c.busy = false
		c.f.add(-1)
	}
}

// packetScanner follows milter packet boundaries (a 32-bit length, then
// that many bytes starting with the code) in one direction of a stream.
type packetScanner struct {
	hdr   [4]byte
	n     int    // bytes of hdr read
	left  uint32 // bytes of the packet still to come
	first bool   // the next byte is the code
}

func (p *packetScanner) feed(b []byte, code func(byte)) {
	for len(b) > 0 {
		if p.left == 0 {
			k := copy(p.hdr[p.n:], b)
			p.n += k
			b = b[k:]
			if p.n == len(p.hdr) {
				p.n = 0
				p.left = binary.BigEndian.Uint32(p.hdr[:])
				p.first = p.left > 0
			}
			continue
		}
		if p.first {
			code(b[0])
			p.first = false
		}
		k := uint32(len(b))
		if k > p.left {
			k = p.left
		}
		b = b[k:]
		p.left -= k
	}
}

// listener hands out tracked connections, and keeps accepting through
// temporary errors (too many open files, a connection reset before it was
// accepted) with a backoff, as net/http's server does: go-milter's Serve
// returns on any Accept error, and a milter that stopped listening would
// leave Postfix to its default action until a restart.
type listener struct {
	net.Listener
	f   *inflight
	log *slog.Logger
	// sleep is time.Sleep; tests may shorten it.
	sleep func(time.Duration)
}

const maxAcceptBackoff = time.Second

func (l *listener) Accept() (net.Conn, error) {
	var delay time.Duration
	for {
		c, err := l.Listener.Accept()
		if err == nil {
			return &trackedConn{Conn: c, f: l.f}, nil
		}
		var ne interface{ Temporary() bool }
		if errors.Is(err, net.ErrClosed) || !errors.As(err, &ne) || !ne.Temporary() {
			return nil, err
		}
		if delay == 0 {
			delay = 5 * time.Millisecond
		} else {
			delay = min(2*delay, maxAcceptBackoff)
		}
		l.log.Warn("accepting a milter connection failed; retrying", "err", err, "retry_in", delay)
		l.sleep(delay)
	}
}
