// Package loadtest plays Postfix towards a milter, for fault tests and load
// benchmarks: it dials the milter with go-milter's client, passes messages
// through it stage by stage as Postfix's smtpd or cleanup would, and times
// the milter's answer at the end of each message. It also builds the
// messages such tests send (Postfix's own delivery status notifications)
// and reads a process's peak memory.
//
// It asserts nothing and knows nothing of bouncemilter's decisions: callers
// compare what they got with what they expected.
package loadtest

import (
	"bytes"
	"errors"
	"fmt"
	"net/netip"
	"os"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/emersion/go-milter"
)

// V2Actions is every action a client may negotiate with go-milter's server,
// which speaks milter protocol version 2: go-milter's client refuses to
// negotiate when it asks for more.
const V2Actions = milter.OptAddHeader | milter.OptChangeBody | milter.OptAddRcpt |
	milter.OptRemoveRcpt | milter.OptChangeHeader | milter.OptQuarantine

// Client is the SMTP client the MTA reports at connect time.
type Client struct {
	Host string
	Addr netip.Addr
	Port uint16
}

// Local is how Postfix shows mail it makes itself (its bounces) to
// non_smtpd_milters: a connection from localhost, 127.0.0.1, port 0.
var Local = Client{Host: "localhost", Addr: netip.MustParseAddr("127.0.0.1")}

// Remote is a mail server delivering over SMTP.
var Remote = Client{Host: "mx1.example.net", Addr: netip.MustParseAddr("192.0.2.25"), Port: 41234}

// Field is one header field as Postfix passes it: the name, and the value
// without the space after the colon.
type Field struct{ Name, Value string }

// Message is one message as Postfix passes it to a milter.
type Message struct {
	From    string // "" for a bounce's null sender
	Rcpts   []string
	QueueID string // the {i} macro, sent from DATA on
	Header  []Field
	Body    []byte // CRLF line ends
}

// Result is the milter's answer to one message.
type Result struct {
	// Stage is the stage that answered: "mail", "rcpt", "header", "eoh",
	// "body" or "eob".
	Stage string
	Code  milter.ActionCode
	// Latency is the time from the last command of the message (the end of
	// body, or the stage that answered early) to the answer.
	Latency time.Duration
	// Total is the time the whole message took, MAIL FROM to answer.
	Total time.Duration
}

// Conn is one connection of the MTA to a milter. It is not safe for
// concurrent use; a connection carries one message at a time, as an SMTP
// session does.
type Conn struct {
	s *milter.ClientSession
}

// Dial connects to the milter at network, address ("tcp", "127.0.0.1:8891"
// or "unix", "/run/milter.sock") and passes the connect and HELO stages for
// client.
func Dial(network, address string, client Client, timeout time.Duration) (*Conn, error) {
	c := milter.NewClientWithOptions(network, address, milter.ClientOptions{
		ActionMask:   V2Actions,
		ReadTimeout:  timeout,
		WriteTimeout: timeout,
	})
	s, err := c.Session()
	if err != nil {
		return nil, err
	}
	ip := ""
	if client.Addr.IsValid() {
		ip = client.Addr.String()
	}
	if act, err := s.Conn(client.Host, milter.FamilyInet, client.Port, ip); err != nil || act.Code != milter.ActContinue {
		s.Close()
		return nil, fmt.Errorf("milter connect stage: %v %w", act, err)
	}
	if act, err := s.Helo(client.Host); err != nil || act.Code != milter.ActContinue {
		s.Close()
		return nil, fmt.Errorf("milter helo stage: %v %w", act, err)
	}
	return &Conn{s: s}, nil
}

// Close ends the connection with QUIT.
func (c *Conn) Close() error { return c.s.Close() }

// Send passes m through the milter stage by stage and stops at the first
// answer that is not "continue", as Postfix does. An error means the milter
// gave no answer (it died, or the connection broke): with
// milter_default_action = accept, Postfix delivers such a message.
func (c *Conn) Send(m Message) (Result, error) {
	s := c.s
	start := time.Now()
	step := start
	answer := func(stage string, act *milter.Action) Result {
		now := time.Now()
		return Result{Stage: stage, Code: act.Code, Latency: now.Sub(step), Total: now.Sub(start)}
	}
	if err := s.Macros(milter.CodeMail, "{mail_addr}", m.From); err != nil {
		return Result{Stage: "mail"}, err
	}
	act, err := s.Mail(m.From, nil)
	if err != nil {
		return Result{Stage: "mail"}, err
	}
	if act.Code != milter.ActContinue {
		return answer("mail", act), nil
	}
	for _, r := range m.Rcpts {
		step = time.Now()
		if act, err = s.Rcpt(r, nil); err != nil {
			return Result{Stage: "rcpt"}, err
		}
		if act.Code != milter.ActContinue {
			return answer("rcpt", act), nil
		}
	}
	// Postfix knows the queue id from DATA on.
	if m.QueueID != "" {
		if err := s.Macros(milter.CodeData, "i", m.QueueID); err != nil {
			return Result{Stage: "data"}, err
		}
	}
	for _, f := range m.Header {
		step = time.Now()
		if act, err = s.HeaderField(f.Name, f.Value); err != nil {
			return Result{Stage: "header"}, err
		}
		if act.Code != milter.ActContinue {
			return answer("header", act), nil
		}
	}
	step = time.Now()
	if act, err = s.HeaderEnd(); err != nil {
		return Result{Stage: "eoh"}, err
	}
	if act.Code != milter.ActContinue {
		return answer("eoh", act), nil
	}
	for b := m.Body; len(b) > 0; {
		n := min(len(b), milter.MaxBodyChunk)
		step = time.Now()
		if act, err = s.BodyChunk(b[:n]); err != nil {
			return Result{Stage: "body"}, err
		}
		if act.Code != milter.ActContinue {
			return answer("body", act), nil
		}
		b = b[n:]
	}
	// Postfix sends the queue id again with the end of message.
	if m.QueueID != "" {
		if err := s.Macros(milter.CodeEOB, "i", m.QueueID); err != nil {
			return Result{Stage: "eob"}, err
		}
	}
	step = time.Now()
	_, act, err = s.End()
	if err != nil {
		return Result{Stage: "eob"}, err
	}
	return answer("eob", act), nil
}

// ParseMessage splits a message as it would be on disk (LF or CRLF line
// ends) into the header fields and body Postfix passes to a milter: folded
// values keep bare LF line breaks, the body gets CRLF.
func ParseMessage(raw []byte) ([]Field, []byte, error) {
	raw = bytes.ReplaceAll(raw, []byte("\r\n"), []byte("\n"))
	head, body, ok := bytes.Cut(raw, []byte("\n\n"))
	if !ok {
		return nil, nil, errors.New("message without a body")
	}
	var fields []Field
	for _, line := range strings.Split(string(head), "\n") {
		if line == "" {
			continue
		}
		if line[0] == ' ' || line[0] == '\t' {
			if len(fields) == 0 {
				return nil, nil, errors.New("message starts with a continuation line")
			}
			fields[len(fields)-1].Value += "\n" + line
			continue
		}
		name, value, ok := strings.Cut(line, ":")
		if !ok {
			return nil, nil, fmt.Errorf("bad header line %q", line)
		}
		fields = append(fields, Field{name, strings.TrimPrefix(value, " ")})
	}
	return fields, bytes.ReplaceAll(body, []byte("\n"), []byte("\r\n")), nil
}

// Bounce returns the delivery status notification Postfix's bounce daemon
// writes when the remote server refused failed with 550 5.1.1, addressed to
// to (MediaGoblin's sender address, or its signed form) from the null
// sender. The returned headers are those of MediaGoblin's verification mail
// from sender.
func Bounce(sender, to, failed, queueID string) Message {
	raw := `Date: Thu, 26 Nov 2026 02:00:00 +0000 (UTC)
From: MAILER-DAEMON@media.example.org (Mail Delivery System)
Subject: Undelivered Mail Returned to Sender
To: ` + to + `
Auto-Submitted: auto-replied
MIME-Version: 1.0
Content-Type: multipart/report; report-type=delivery-status;
	boundary="` + queueID + `.1764122400/media.example.org"
Message-Id: <20261126020000.` + queueID + `@media.example.org>

This is a MIME-encapsulated message.

--` + queueID + `.1764122400/media.example.org
Content-Description: Notification
Content-Type: text/plain; charset=us-ascii

This is the mail system at host media.example.org.

I'm sorry to have to inform you that your message could not
be delivered to one or more recipients. It's attached below.

                   The mail system

<` + failed + `>: host mx.nowhere.example[192.0.2.80] said: 550 5.1.1
    <` + failed + `>: Recipient address rejected: User unknown (in reply to
    RCPT TO command)

--` + queueID + `.1764122400/media.example.org
Content-Description: Delivery report
Content-Type: message/delivery-status

Reporting-MTA: dns; media.example.org
X-Postfix-Queue-ID: ` + queueID + `
X-Postfix-Sender: rfc822; ` + sender + `
Arrival-Date: Thu, 26 Nov 2026 01:59:58 +0000 (UTC)

Final-Recipient: rfc822; ` + failed + `
Original-Recipient: rfc822;` + failed + `
Action: failed
Status: 5.1.1
Remote-MTA: dns; mx.nowhere.example
Diagnostic-Code: smtp; 550 5.1.1 <` + failed + `>: Recipient address rejected:
    User unknown

--` + queueID + `.1764122400/media.example.org
Content-Description: Undelivered Message Headers
Content-Type: text/rfc822-headers

Return-Path: <` + sender + `>
Subject: GNU MediaGoblin - Verify your email!
From: ` + sender + `
To: ` + failed + `
Message-Id: <20261126015958.1A2B3C4D5E@media.example.org>
Date: Thu, 26 Nov 2026 01:59:58 +0000 (UTC)

--` + queueID + `.1764122400/media.example.org--
`
	h, b, err := ParseMessage([]byte(raw))
	if err != nil {
		panic("loadtest: the bounce template is broken: " + err.Error())
	}
	return Message{From: "", Rcpts: []string{to}, QueueID: queueID, Header: h, Body: b}
}

// Ordinary returns a short personal message from one person to another.
func Ordinary(from, to, queueID string) Message {
	raw := "From: " + from + "\nTo: " + to + "\nSubject: lunch on Friday?\n" +
		"Date: Thu, 26 Nov 2026 02:00:00 +0000\nMessage-Id: <" + queueID + "@example.com>\n" +
		"MIME-Version: 1.0\nContent-Type: text/plain; charset=utf-8\n\n" +
		strings.Repeat("Shall we meet at the usual place at noon? Bring the photos.\n", 20)
	h, b, err := ParseMessage([]byte(raw))
	if err != nil {
		panic("loadtest: the ordinary template is broken: " + err.Error())
	}
	return Message{From: from, Rcpts: []string{to}, QueueID: queueID, Header: h, Body: b}
}

// QueueID returns a Postfix-like queue id (hexadecimal, 10 digits) for n.
func QueueID(n int) string {
	return fmt.Sprintf("%010X", n)
}

// PeakRSS returns the peak resident set size of process pid, in bytes
// (VmHWM in /proc/PID/status; Linux only).
func PeakRSS(pid int) (int64, error) {
	b, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/status")
	if err != nil {
		return 0, fmt.Errorf("peak RSS of %d: %w", pid, err)
	}
	for _, line := range strings.Split(string(b), "\n") {
		if v, ok := strings.CutPrefix(line, "VmHWM:"); ok {
			kb, err := strconv.ParseInt(strings.TrimSuffix(strings.TrimSpace(v), " kB"), 10, 64)
			if err != nil {
				return 0, fmt.Errorf("peak RSS of %d: %q: %w", pid, line, err)
			}
			return kb << 10, nil
		}
	}
	return 0, fmt.Errorf("peak RSS of %d: no VmHWM line", pid)
}

// CPUTime returns the processor time process pid has used so far, user
// and system (/proc/PID/stat; Linux only, in clock ticks of usually 10 ms).
func CPUTime(pid int) (time.Duration, error) {
	b, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/stat")
	if err != nil {
		return 0, fmt.Errorf("CPU time of %d: %w", pid, err)
	}
	// The command name, in parentheses, may hold spaces: count the
	// fields after it. utime and stime are fields 14 and 15 of the line.
	_, rest, ok := strings.Cut(string(b), ") ")
	fields := strings.Fields(rest)
	if !ok || len(fields) < 13 {
		return 0, fmt.Errorf("CPU time of %d: unreadable stat line", pid)
	}
	var ticks int64
	for _, f := range fields[11:13] {
		n, err := strconv.ParseInt(f, 10, 64)
		if err != nil {
			return 0, fmt.Errorf("CPU time of %d: %w", pid, err)
		}
		ticks += n
	}
	// USER_HZ is 100 on every Linux architecture Go supports.
	return time.Duration(ticks) * 10 * time.Millisecond, nil
}

// Percentile returns the p-th percentile (0 < p <= 100) of ds by the
// nearest-rank method; ds is sorted in place.
func Percentile(ds []time.Duration, p float64) time.Duration {
	if len(ds) == 0 {
		return 0
	}
	slices.Sort(ds)
	rank := int(p/100*float64(len(ds))+0.999999) - 1
	return ds[min(max(rank, 0), len(ds)-1)]
}
