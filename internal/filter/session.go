package filter

import (
	"bytes"
	"context"
	"fmt"
	"net"
	"net/netip"
	"net/textproto"

	"github.com/emersion/go-milter"

	"github.com/bouncemilter/bouncemilter/internal/bounce"
	"github.com/bouncemilter/bouncemilter/internal/registry"
)

// kind is what the filter has learnt a message to be.
type kind int

const (
	undecided  kind = iota
	isBounce        // null sender, addressed to MediaGoblin's sender
	isOutgoing      // sent by MediaGoblin
)

// session is the milter for one SMTP connection. go-milter makes a new one
// after each message that got a final answer; Abort resets it for the next
// message of the same connection.
type session struct {
	f      *Filter
	client bounce.Client
	// daemon is the {daemon_name} macro of the connection: which Postfix
	// service passed the message (see Config.BounceDaemonName).
	daemon string

	kind      kind
	env       bounce.Envelope
	ownRcpt   bool
	otherRcpt bool // also addressed to someone else: never discard
	msg       bytes.Buffer
	truncated bool
	subject   string
}

var _ milter.Milter = (*session)(nil)

func (s *session) Connect(host, family string, port uint16, addr net.IP, m *milter.Modifier) (milter.Response, error) {
	s.client = bounce.Client{Host: host, Port: port}
	if ip, ok := netip.AddrFromSlice(addr); ok {
		s.client.Addr = ip.Unmap()
	}
	if m != nil {
		s.daemon = macro(m, "daemon_name")
	}
	return milter.RespContinue, nil
}

// macro returns the value of a macro Postfix may send with or without
// braces.
func macro(m *milter.Modifier, name string) string {
	if v, ok := m.Macros["{"+name+"}"]; ok {
		return v
	}
	return m.Macros[name]
}

func (s *session) Helo(name string, m *milter.Modifier) (milter.Response, error) {
	return milter.RespContinue, nil
}

func (s *session) MailFrom(from string, m *milter.Modifier) (milter.Response, error) {
	s.reset()
	s.env = bounce.Envelope{Sender: from, Client: s.client}
	s.queueID(m)
	switch {
	case from == "":
		s.kind = isBounce
		s.env.Generated = s.client.Local() && (s.f.cfg.BounceDaemonName == "" || s.daemon == s.f.cfg.BounceDaemonName)
	case registry.EmailKey(from) == registry.EmailKey(s.f.cfg.Sender) && s.f.fromMediaGoblin(s.client):
		s.kind = isOutgoing
	default:
		s.unread()
		return milter.RespAccept, nil
	}
	// This message is already counted (see inflight).
	if n := s.f.inflight.Load(); n > s.f.cfg.MaxInFlight {
		s.f.log.Warn("too many messages in flight; accepting this one unread", "queue_id", s.env.QueueID,
			"in_flight", n, "max_inflight", s.f.cfg.MaxInFlight, "null_sender", from == "")
		s.kind = undecided
		s.unread()
		return milter.RespAccept, nil
	}
	return milter.RespContinue, nil
}

func (s *session) RcptTo(rcpt string, m *milter.Modifier) (milter.Response, error) {
	s.env.Recipients = append(s.env.Recipients, rcpt)
	if s.kind == isBounce {
		if s.f.isOwn(rcpt) {
			s.ownRcpt = true
		} else {
			s.otherRcpt = true
		}
	}
	return milter.RespContinue, nil
}

func (s *session) Header(name, value string, m *milter.Modifier) (milter.Response, error) {
	s.queueID(m)
	switch s.kind {
	case isBounce:
		if !s.ownRcpt {
			// A bounce, but not of MediaGoblin's mail: not ours to read.
			s.unread()
			return milter.RespAccept, nil
		}
		// Postfix passes folded values with bare LF line breaks.
		s.write([]byte(name + ": " + value + "\r\n"))
	case isOutgoing:
		if textproto.CanonicalMIMEHeaderKey(name) == "Subject" {
			s.subject = value
		}
	}
	return milter.RespContinue, nil
}

func (s *session) Headers(h textproto.MIMEHeader, m *milter.Modifier) (milter.Response, error) {
	s.queueID(m)
	if s.kind == isBounce && !s.ownRcpt {
		// A message with no header at all.
		s.unread()
		return milter.RespAccept, nil
	}
	if s.kind == isBounce {
		s.write([]byte("\r\n"))
	}
	return milter.RespContinue, nil
}

func (s *session) BodyChunk(chunk []byte, m *milter.Modifier) (milter.Response, error) {
	if s.kind == isBounce {
		s.write(chunk)
	}
	return milter.RespContinue, nil
}

func (s *session) Body(m *milter.Modifier) (resp milter.Response, err error) {
	s.queueID(m)
	defer func() {
		// Whatever goes wrong in here, the message is delivered.
		if v := recover(); v != nil {
			s.f.log.Error("panic handling message; accepting it", "queue_id", s.env.QueueID, "panic", fmt.Sprint(v))
			resp, err = milter.RespAccept, nil
		}
	}()
	ctx, cancel := context.WithTimeout(context.Background(), s.f.cfg.Timeout)
	defer cancel()
	switch s.kind {
	case isOutgoing:
		s.outgoing(ctx, m)
		if s.stopped(ctx) {
			return milter.RespDiscard, nil
		}
		return milter.RespAccept, nil
	case isBounce:
		return s.bounce(ctx), nil
	}
	return milter.RespAccept, nil
}

func (s *session) Abort(m *milter.Modifier) error {
	s.reset()
	return nil
}

func (s *session) bounce(ctx context.Context) milter.Response {
	log := s.f.log.With("queue_id", s.env.QueueID, "client", s.client.String())
	out, err := s.f.handler.Handle(ctx, s.env, s.msg.Bytes())
	if err != nil {
		log.Error("handling bounce failed; delivering it", "err", err)
		return milter.RespAccept
	}
	// Discarding drops the message for every recipient; a bounce that was
	// cut short may report more than was read.
	discard := out.Discard && !s.truncated && !s.otherRcpt
	log.Info("bounce", "verdict", out.Verdict, "discard", discard, "actions", out.Actions,
		"bounce_id", out.BounceID, "truncated", s.truncated, "detail", out.Detail)
	if discard {
		return milter.RespDiscard
	}
	return milter.RespAccept
}

func (s *session) outgoing(ctx context.Context, m *milter.Modifier) {
	now := s.f.now()
	if s.f.cfg.Signups != nil {
		if _, err := s.f.cfg.Signups.CopySignups(ctx, s.env.Recipients); err != nil {
			s.f.log.Warn("copying the sign-up from MediaGoblin failed; the next sync will", "queue_id", s.env.QueueID, "err", err)
		}
	}
	if s.f.sends != nil {
		sends := make([]registry.Send, 0, len(s.env.Recipients))
		for _, r := range s.env.Recipients {
			sends = append(sends, registry.Send{Recipient: r, Sent: now, QueueID: s.env.QueueID, Subject: s.subject})
		}
		if err := s.f.sends.RecordSends(ctx, sends); err != nil {
			s.f.log.Error("recording outgoing mail failed", "queue_id", s.env.QueueID, "err", err)
		}
	}
	if s.f.rewriter == nil {
		return
	}
	if signed := s.f.rewriter.Rewrite(s.env.Sender, s.env.Recipients, now); signed != "" {
		if err := m.ChangeFrom(signed); err != nil {
			s.f.log.Error("rewriting the envelope sender failed", "queue_id", s.env.QueueID, "err", err)
		}
	}
}

// write buffers message bytes up to the size cap.
func (s *session) write(b []byte) {
	if room := s.f.cfg.MaxSize - s.msg.Len(); len(b) > room {
		b = b[:max(room, 0)]
		s.truncated = true
	}
	s.msg.Write(b)
}

func (s *session) queueID(m *milter.Modifier) {
	if m == nil {
		return
	}
	if id := m.Macros["i"]; id != "" {
		s.env.QueueID = id
	}
}

func (s *session) unread() {
	if s.f.cfg.Unread != nil {
		s.f.cfg.Unread()
	}
}

func (s *session) reset() {
	s.kind = undecided
	s.env = bounce.Envelope{}
	s.ownRcpt, s.otherRcpt = false, false
	s.msg.Reset()
	s.truncated = false
	s.subject = ""
}
