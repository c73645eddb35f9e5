package filter

import (
	"bytes"
	"context"
	"errors"
	"net"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/emersion/go-milter"

	"github.com/bouncemilter/bouncemilter/internal/bounce"
)

const sender = "notice@media.example.org"

// v2Actions is what a client may ask of go-milter's server, which speaks
// milter protocol version 2 only: its own Client refuses to negotiate when
// asked for more.
const v2Actions = milter.OptAddHeader | milter.OptChangeBody | milter.OptAddRcpt |
	milter.OptRemoveRcpt | milter.OptChangeHeader | milter.OptQuarantine

// server is a Filter serving on a loopback TCP port.
type server struct {
	f      *Filter
	addr   string
	cancel context.CancelFunc
	errc   chan error
}

// serve starts a Filter and stops it when the test ends.
func serve(t testing.TB, cfg Config, h Handler, sends SendRecorder, rw Rewriter, grace time.Duration) *server {
	t.Helper()
	if cfg.Sender == "" {
		cfg.Sender = sender
	}
	f, err := New(cfg, h, sends, rw, nil)
	if err != nil {
		t.Fatal(err)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	s := &server{f: f, addr: ln.Addr().String(), cancel: cancel, errc: make(chan error, 1)}
	go func() { s.errc <- f.Serve(ctx, ln, grace) }()
	t.Cleanup(func() {
		cancel()
		select {
		case <-s.errc:
		case <-time.After(10 * time.Second):
			t.Error("Serve did not return after cancel")
		}
	})
	return s
}

// conn is one connection of Postfix to the milter.
type conn struct {
	t testing.TB
	s *milter.ClientSession
}

// dial connects as Postfix does and sends the connect and HELO stages.
// Postfix shows mail it makes itself (bounces, pickup) to non_smtpd_milters
// as a connection from localhost, 127.0.0.1, port 0.
func dial(t testing.TB, addr, host, ip string, port uint16) *conn {
	t.Helper()
	c := milter.NewClientWithOptions("tcp", addr, milter.ClientOptions{
		ActionMask:   v2Actions,
		ProtocolMask: 0,
		ReadTimeout:  10 * time.Second,
		WriteTimeout: 10 * time.Second,
	})
	s, err := c.Session()
	if err != nil {
		t.Fatalf("milter session: %v", err)
	}
	t.Cleanup(func() { s.Close() })
	if act, err := s.Conn(host, milter.FamilyInet, port, ip); err != nil || act.Code != milter.ActContinue {
		t.Fatalf("connect = %v, %v", act, err)
	}
	if act, err := s.Helo(host); err != nil || act.Code != milter.ActContinue {
		t.Fatalf("helo = %v, %v", act, err)
	}
	return &conn{t: t, s: s}
}

func dialLocal(t testing.TB, addr string) *conn {
	return dial(t, addr, "localhost", "127.0.0.1", 0)
}

// dialMediaGoblin connects as Postfix's smtpd does for MediaGoblin, which
// talks SMTP to Postfix from this machine.
func dialMediaGoblin(t testing.TB, addr string) *conn {
	return dial(t, addr, "localhost", "127.0.0.1", 46012)
}

func dialSMTP(t testing.TB, addr string) *conn {
	return dial(t, addr, "mx1.example.net", "192.0.2.25", 41234)
}

type field struct{ name, value string }

// message is one message as Postfix passes it to a milter.
type message struct {
	from    string
	rcpts   []string
	queueID string
	header  []field
	body    []byte // CRLF line ends, as Postfix sends it
}

// parseMessage splits a message file into the fields and body Postfix
// would send: folded values keep their bare LF line breaks, the space
// after the colon is dropped, the body gets CRLF.
func parseMessage(t testing.TB, raw []byte) ([]field, []byte) {
	t.Helper()
	raw = bytes.ReplaceAll(raw, []byte("\r\n"), []byte("\n"))
	head, body, ok := bytes.Cut(raw, []byte("\n\n"))
	if !ok {
		t.Fatal("message without a body")
	}
	var fields []field
	for _, line := range strings.Split(string(head), "\n") {
		if line[0] == ' ' || line[0] == '\t' {
			fields[len(fields)-1].value += "\n" + line
			continue
		}
		name, value, ok := strings.Cut(line, ":")
		if !ok {
			t.Fatalf("bad header line %q", line)
		}
		fields = append(fields, field{name, strings.TrimPrefix(value, " ")})
	}
	return fields, bytes.ReplaceAll(body, []byte("\n"), []byte("\r\n"))
}

func readFixture(t testing.TB, name string) []byte {
	t.Helper()
	b, err := os.ReadFile(filepath.Join("testdata", name))
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// bounceOf is the fixture bounce, as Postfix's bounce daemon sends it to
// the given recipients.
func bounceOf(t testing.TB, rcpts ...string) message {
	h, b := parseMessage(t, readFixture(t, "local-userunknown.eml"))
	return message{from: "", rcpts: rcpts, queueID: "8D3F11A0B5", header: h, body: b}
}

// send passes m through the milter stage by stage, as Postfix does, and
// stops at the first answer that is not "continue". It returns the stage
// that answered, the answer and any modifications.
func (c *conn) send(m message) (string, *milter.Action, []milter.ModifyAction) {
	c.t.Helper()
	stage, act, mods, err := c.trySend(m)
	if err != nil {
		c.t.Fatalf("%s: %v", stage, err)
	}
	return stage, act, mods
}

// trySend is send for goroutines other than the test's.
func (c *conn) trySend(m message) (string, *milter.Action, []milter.ModifyAction, error) {
	s := c.s
	if err := s.Macros(milter.CodeMail, "{mail_addr}", m.from); err != nil {
		return "mail", nil, nil, err
	}
	if act, err := s.Mail(m.from, nil); err != nil || act.Code != milter.ActContinue {
		return "mail", act, nil, err
	}
	for _, r := range m.rcpts {
		if act, err := s.Rcpt(r, nil); err != nil || act.Code != milter.ActContinue {
			return "rcpt", act, nil, err
		}
	}
	// Postfix knows the queue id ({i}) from DATA on.
	if m.queueID != "" {
		if err := s.Macros(milter.CodeData, "i", m.queueID); err != nil {
			return "data", nil, nil, err
		}
	}
	for _, f := range m.header {
		if act, err := s.HeaderField(f.name, f.value); err != nil || act.Code != milter.ActContinue {
			return "header", act, nil, err
		}
	}
	if act, err := s.HeaderEnd(); err != nil || act.Code != milter.ActContinue {
		return "eoh", act, nil, err
	}
	for b := m.body; len(b) > 0; {
		n := min(len(b), milter.MaxBodyChunk)
		if act, err := s.BodyChunk(b[:n]); err != nil || act.Code != milter.ActContinue {
			return "body", act, nil, err
		}
		b = b[n:]
	}
	// go-milter replaces its macro map at each stage: a later stage
	// without {i} must not lose the queue id.
	if err := s.Macros(milter.CodeEOB, "{msg_id}", "<x@example.org>"); err != nil {
		return "eob", nil, nil, err
	}
	mods, act, err := s.End()
	return "eob", act, mods, err
}

// call is one Handle call a handler saw.
type call struct {
	env bounce.Envelope
	msg []byte
}

// recorder is a Handler that records each bounce and answers with out
// and err. Where the point is the milter protocol, it stands in for
// bounce.Handler, which has tests of its own.
type recorder struct {
	mu    sync.Mutex
	calls []call
	out   bounce.Outcome
	err   error
	panic bool
}

func (r *recorder) Handle(ctx context.Context, env bounce.Envelope, msg []byte) (bounce.Outcome, error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if _, ok := ctx.Deadline(); !ok {
		return bounce.Outcome{}, errors.New("no deadline on the context")
	}
	r.calls = append(r.calls, call{env: env, msg: bytes.Clone(msg)})
	if r.panic {
		panic("handler blew up")
	}
	return r.out, r.err
}

func (r *recorder) Calls() []call {
	r.mu.Lock()
	defer r.mu.Unlock()
	return append([]call(nil), r.calls...)
}

func discarding() *recorder {
	return &recorder{out: bounce.Outcome{Verdict: "acted", Discard: true, Actions: 2}}
}

func TestNew(t *testing.T) {
	for _, s := range []string{"", "notice", "notice.media.example.org"} {
		if _, err := New(Config{Sender: s}, discarding(), nil, nil, nil); err == nil {
			t.Errorf("New with sender %q succeeded", s)
		}
	}
	f, err := New(Config{Sender: sender}, discarding(), nil, nil, nil)
	if err != nil {
		t.Fatal(err)
	}
	if f.cfg.MaxSize != DefaultMaxSize || f.cfg.Timeout <= 0 {
		t.Errorf("defaults not applied: %+v", f.cfg)
	}
}

func TestIsOwn(t *testing.T) {
	tests := []struct {
		delim  string
		addr   string
		want   bool
		sender string // "" for sender
	}{
		{"", "notice@media.example.org", true, ""},
		{"", "Notice@Media.Example.ORG", true, ""},
		{"", " notice@media.example.org ", true, ""},
		{"", "notice+d5ab12cd34ef@media.example.org", false, ""},
		{"+", "notice+d5ab12cd34ef@media.example.org", true, ""},
		{"+", "NOTICE+x@media.example.org", true, ""},
		{"+", "notice+@media.example.org", true, ""},
		{"+", "notice-x@media.example.org", false, ""},
		{"+", "+notice@media.example.org", false, ""},
		{"+", "notice+x@other.example.org", false, ""},
		{"+", "notice+x@media.example.org.evil.example", false, ""},
		{"+", "noticeboard+x@media.example.org", false, ""},
		{"+", "postmaster@media.example.org", false, ""},
		{"+", "notice+x", false, ""},
		{"+", "", false, ""},
		{"-", "notice-x@media.example.org", true, ""},
		// A sender whose local part holds the delimiter is signed as
		// mg+noreply+TAG (the tag goes after the last one).
		{"+", "mg+noreply+d5ab12cd34ef@media.example.org", true, "mg+noreply@media.example.org"},
		{"+", "mg+noreply@media.example.org", true, "mg+noreply@media.example.org"},
		{"+", "mg+other+x@media.example.org", false, "mg+noreply@media.example.org"},
		{"+", "mg+x@media.example.org", false, "mg+noreply@media.example.org"},
	}
	for _, tt := range tests {
		snd := sender
		if tt.sender != "" {
			snd = tt.sender
		}
		f, err := New(Config{Sender: snd, Delimiter: tt.delim}, nil, nil, nil, nil)
		if err != nil {
			t.Fatal(err)
		}
		if got := f.isOwn(tt.addr); got != tt.want {
			t.Errorf("delimiter %q: isOwn(%q) = %v, want %v", tt.delim, tt.addr, got, tt.want)
		}
	}
}

// Serve stops accepting connections when ctx is cancelled, but lets a
// message in flight finish: Postfix gets its answer.
func TestServeWaitsForMessageInFlight(t *testing.T) {
	entered, release := make(chan struct{}), make(chan struct{})
	h := handlerFunc(func(ctx context.Context, env bounce.Envelope, msg []byte) (bounce.Outcome, error) {
		close(entered)
		<-release
		return bounce.Outcome{Verdict: "acted", Discard: true}, nil
	})
	srv := serve(t, Config{}, h, nil, nil, time.Minute)
	c := dialLocal(t, srv.addr)

	answered := make(chan milter.ActionCode, 1)
	m := bounceOf(t, sender)
	go func() {
		_, act, _, err := c.trySend(m)
		if err != nil {
			answered <- 0
			return
		}
		answered <- act.Code
	}()
	<-entered
	srv.cancel()

	// The listener is closed at once: new connections are refused.
	deadline := time.Now().Add(10 * time.Second)
	for {
		nc, err := net.Dial("tcp", srv.addr)
		if err != nil {
			break
		}
		nc.Close()
		if time.Now().After(deadline) {
			t.Fatal("still accepting connections after cancel")
		}
		time.Sleep(10 * time.Millisecond)
	}
	select {
	case err := <-srv.errc:
		t.Fatalf("Serve returned %v with a message in flight", err)
	default:
	}

	close(release)
	if code := <-answered; code != milter.ActDiscard {
		t.Errorf("message in flight got %q, want discard", code)
	}
	select {
	case err := <-srv.errc:
		if err != nil {
			t.Errorf("Serve = %v, want nil", err)
		}
		srv.errc <- err // for the cleanup
	case <-time.After(10 * time.Second):
		t.Fatal("Serve did not return once the message was done")
	}
}

// A message that never finishes does not hold Serve beyond its grace.
func TestServeGivesUpAfterGrace(t *testing.T) {
	entered, release := make(chan struct{}), make(chan struct{})
	defer close(release)
	h := handlerFunc(func(ctx context.Context, env bounce.Envelope, msg []byte) (bounce.Outcome, error) {
		close(entered)
		<-release
		return bounce.Outcome{}, nil
	})
	srv := serve(t, Config{}, h, nil, nil, 50*time.Millisecond)
	c := dialLocal(t, srv.addr)
	m := bounceOf(t, sender)
	go c.trySend(m)
	<-entered
	srv.cancel()
	select {
	case err := <-srv.errc:
		if err != nil {
			t.Errorf("Serve = %v, want nil", err)
		}
		srv.errc <- err
	case <-time.After(10 * time.Second):
		t.Fatal("Serve waited beyond its grace")
	}
}

// A context cancelled before Serve even started must still stop it.
func TestServeCancelledBeforeStart(t *testing.T) {
	for range 20 {
		f, err := New(Config{Sender: sender}, discarding(), nil, nil, nil)
		if err != nil {
			t.Fatal(err)
		}
		ln, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		ctx, cancel := context.WithCancel(context.Background())
		cancel()
		errc := make(chan error, 1)
		go func() { errc <- f.Serve(ctx, ln, time.Second) }()
		select {
		case err := <-errc:
			if err != nil {
				t.Errorf("Serve = %v, want nil", err)
			}
		case <-time.After(10 * time.Second):
			ln.Close()
			t.Fatal("Serve with a cancelled context did not return")
		}
	}
}

// A listener that fails is an error, not a shutdown.
func TestServeListenerError(t *testing.T) {
	f, err := New(Config{Sender: sender}, discarding(), nil, nil, nil)
	if err != nil {
		t.Fatal(err)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	ln.Close()
	if err := f.Serve(context.Background(), ln, time.Second); err == nil {
		t.Error("Serve on a closed listener returned nil")
	}
}

type handlerFunc func(ctx context.Context, env bounce.Envelope, msg []byte) (bounce.Outcome, error)

func (f handlerFunc) Handle(ctx context.Context, env bounce.Envelope, msg []byte) (bounce.Outcome, error) {
	return f(ctx, env, msg)
}

// settled returns the count of messages in flight once it reached zero, or
// after 5 s: the count drops just after the milter's answer is written,
// which the client may read first, or when the server reads the end of a
// dropped connection.
func (s *server) settled() int {
	for deadline := time.Now().Add(5 * time.Second); time.Now().Before(deadline); time.Sleep(time.Millisecond) {
		if n := s.f.InFlight(); n == 0 {
			return 0
		}
	}
	return s.f.InFlight()
}
