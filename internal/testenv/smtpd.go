package testenv

import (
	"bufio"
	"fmt"
	"net"
	"net/textproto"
	"strings"
	"sync"
	"testing"
	"time"
)

// SMTPServer plays a remote mail server on a loopback address: the one
// thing an end-to-end test may not run for real. It speaks just enough
// RFC 5321 for Postfix's smtp client (no ESMTP extensions beyond 8BITMIME
// and SIZE), refuses the recipients Refuse says, and keeps the rest.
type SMTPServer struct {
	Addr string
	// Refuse returns the reply for a recipient ("550 5.1.1 ..."), or "" to
	// accept it.
	Refuse func(rcpt string) string

	mu       sync.Mutex
	received []Received
	senders  []string
	ln       net.Listener
}

// Received is one message the server accepted.
type Received struct {
	From string
	To   []string
	Data string
}

// StartSMTPServer listens on addr (e.g. "127.0.0.2:0") until the test ends.
func StartSMTPServer(t testing.TB, addr string, refuse func(string) string) *SMTPServer {
	t.Helper()
	ln, err := net.Listen("tcp4", addr)
	if err != nil {
		t.Fatalf("fake SMTP server on %s: %v", addr, err)
	}
	s := &SMTPServer{Addr: ln.Addr().String(), Refuse: refuse, ln: ln}
	go s.serve()
	t.Cleanup(func() { ln.Close() })
	return s
}

// Messages returns what the server accepted so far.
func (s *SMTPServer) Messages() []Received {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]Received(nil), s.received...)
}

// Senders returns every envelope sender a client gave, in order, whether
// or not its message was then accepted.
func (s *SMTPServer) Senders() []string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]string(nil), s.senders...)
}

// MessagesTo returns the accepted messages with rcpt among their recipients.
func (s *SMTPServer) MessagesTo(rcpt string) []Received {
	var out []Received
	for _, m := range s.Messages() {
		for _, to := range m.To {
			if strings.EqualFold(to, rcpt) {
				out = append(out, m)
				break
			}
		}
	}
	return out
}

func (s *SMTPServer) serve() {
	for {
		c, err := s.ln.Accept()
		if err != nil {
			return
		}
		go s.session(c)
	}
}

func (s *SMTPServer) session(c net.Conn) {
	defer c.Close()
	c.SetDeadline(time.Now().Add(time.Minute))
	tp := textproto.NewConn(c)
	reply := func(format string, args ...any) bool { return tp.PrintfLine(format, args...) == nil }
	if !reply("220 remote.test ESMTP fake") {
		return
	}
	var msg Received
	for {
		line, err := tp.ReadLine()
		if err != nil {
			return
		}
		verb, arg, _ := strings.Cut(line, " ")
		switch strings.ToUpper(verb) {
		case "EHLO":
			reply("250-remote.test\r\n250-8BITMIME\r\n250 SIZE 52428800")
		case "HELO":
			reply("250 remote.test")
		case "MAIL":
			msg = Received{From: pathOf(arg)}
			s.mu.Lock()
			s.senders = append(s.senders, msg.From)
			s.mu.Unlock()
			reply("250 2.1.0 ok")
		case "RCPT":
			rcpt := pathOf(arg)
			if s.Refuse != nil {
				if r := s.Refuse(rcpt); r != "" {
					reply("%s", r)
					continue
				}
			}
			msg.To = append(msg.To, rcpt)
			reply("250 2.1.5 ok")
		case "DATA":
			if len(msg.To) == 0 {
				reply("554 5.5.1 no valid recipients")
				continue
			}
			reply("354 go ahead")
			data, err := tp.ReadDotBytes()
			if err != nil {
				return
			}
			msg.Data = string(data)
			s.mu.Lock()
			s.received = append(s.received, msg)
			s.mu.Unlock()
			msg = Received{}
			reply("250 2.0.0 queued")
		case "RSET":
			msg = Received{}
			reply("250 2.0.0 ok")
		case "NOOP":
			reply("250 2.0.0 ok")
		case "QUIT":
			reply("221 2.0.0 bye")
			return
		default:
			reply("502 5.5.2 not implemented")
		}
	}
}

// pathOf takes the address out of "FROM:<a@b> SIZE=1" or "TO:<a@b>".
func pathOf(arg string) string {
	_, rest, _ := strings.Cut(arg, ":")
	rest = strings.TrimSpace(rest)
	if i := strings.IndexByte(rest, '>'); strings.HasPrefix(rest, "<") && i > 0 {
		return rest[1:i]
	}
	addr, _, _ := strings.Cut(rest, " ")
	return addr
}

// SendMail submits one message over SMTP, like MediaGoblin's smtplib does.
// from may be "" for a bounce.
func SendMail(addr, from string, to []string, msg string) error {
	return SendMailParams(addr, from, to, "", msg)
}

// SendMailParams is SendMail with parameters on each RCPT command (RFC
// 3461's NOTIFY and ORCPT, as a client may send them), or none when
// params is "".
func SendMailParams(addr, from string, to []string, params, msg string) error {
	c, err := net.DialTimeout("tcp", addr, 5*time.Second)
	if err != nil {
		return err
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(30 * time.Second))
	tp := textproto.NewConn(c)
	step := func(code int, format string, args ...any) error {
		if format != "" {
			if err := tp.PrintfLine(format, args...); err != nil {
				return err
			}
		}
		if _, _, err := tp.ReadResponse(code); err != nil {
			return fmt.Errorf("%s: %w", strings.SplitN(format, " ", 2)[0], err)
		}
		return nil
	}
	if err := step(220, ""); err != nil {
		return err
	}
	if err := step(250, "EHLO client.test"); err != nil {
		return err
	}
	if err := step(250, "MAIL FROM:<%s>", from); err != nil {
		return err
	}
	if params != "" {
		params = " " + params
	}
	for _, r := range to {
		if err := step(250, "RCPT TO:<%s>%s", r, params); err != nil {
			return err
		}
	}
	if err := step(354, "DATA"); err != nil {
		return err
	}
	w := tp.DotWriter()
	bw := bufio.NewWriter(w)
	// DotWriter turns each \n into \r\n and dot-stuffs.
	bw.WriteString(strings.ReplaceAll(msg, "\r\n", "\n"))
	bw.Flush()
	if err := w.Close(); err != nil {
		return err
	}
	if err := step(250, ""); err != nil {
		return err
	}
	return step(221, "QUIT")
}
