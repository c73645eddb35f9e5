package filter

import (
	"bytes"
	"context"
	"encoding/binary"
	"io"
	"log/slog"
	"net"
	"net/netip"
	"os"
	"os/exec"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/emersion/go-milter"

	"github.com/bouncemilter/bouncemilter/internal/bounce"
)

// dialDaemon connects as Postfix's cleanup does for non_smtpd_milters: a
// local client, port 0, with the {daemon_name} of the cleanup service.
func dialDaemon(t testing.TB, addr, daemon string) *conn {
	t.Helper()
	c := milter.NewClientWithOptions("tcp", addr, milter.ClientOptions{ActionMask: v2Actions, ReadTimeout: 10 * time.Second, WriteTimeout: 10 * time.Second})
	s, err := c.Session()
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close() })
	if err := s.Macros(milter.CodeConn, "{daemon_name}", daemon); err != nil {
		t.Fatal(err)
	}
	if act, err := s.Conn("localhost", milter.FamilyInet, 0, "127.0.0.1"); err != nil || act.Code != milter.ActContinue {
		t.Fatalf("connect = %v, %v", act, err)
	}
	if act, err := s.Helo("localhost"); err != nil || act.Code != milter.ActContinue {
		t.Fatalf("helo = %v, %v", act, err)
	}
	return &conn{t: t, s: s}
}

// Mail from the sender address counts as MediaGoblin's only from the
// client MediaGoblin uses (issue 9 §1): anybody else who writes MAIL
// FROM:<notice@…> gets neither a recorded send nor a signed sender, and
// so can never make a later bounce look answered.
func TestOutgoingOnlyFromMediaGoblin(t *testing.T) {
	tests := []struct {
		name    string
		clients []netip.Prefix
		host    string
		ip      string
		port    uint16
		ours    bool
	}{
		{"MediaGoblin over loopback SMTP", nil, "localhost", "127.0.0.1", 46012, true},
		{"IPv6 loopback", nil, "localhost", "::1", 46012, true},
		{"a local user's sendmail (port 0)", nil, "localhost", "127.0.0.1", 0, false},
		{"a remote SMTP client", nil, "mx1.example.net", "192.0.2.25", 41234, false},
		{"configured client", []netip.Prefix{netip.MustParsePrefix("10.0.0.0/24")}, "mg.internal", "10.0.0.5", 51000, true},
		{"loopback when another client is configured", []netip.Prefix{netip.MustParsePrefix("10.0.0.0/24")}, "localhost", "127.0.0.1", 46012, false},
		{"configured network, port 0", []netip.Prefix{netip.MustParsePrefix("127.0.0.0/8")}, "localhost", "127.0.0.1", 0, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			log := &sendLog{}
			srv := serve(t, Config{Delimiter: "+", MediaGoblinClients: tt.clients}, discarding(), log, rewriter{"notice+d5ab12cd34ef@media.example.org"}, time.Second)
			_, act, mods := dial(t, srv.addr, tt.host, tt.ip, tt.port).send(verification("victim@example.net"))
			if act.Code != milter.ActAccept {
				t.Fatalf("answered %q", act.Code)
			}
			log.mu.Lock()
			recorded := len(log.sends)
			log.mu.Unlock()
			if (recorded > 0) != tt.ours || (len(mods) > 0) != tt.ours {
				t.Errorf("recorded %d sends, modifications %v; want MediaGoblin's: %v", recorded, mods, tt.ours)
			}
		})
	}
}

// "Made by this Postfix" means the bounce daemon's cleanup service, told
// by its {daemon_name}: a local user's sendmail passes the same port-0
// localhost connection, through the default cleanup.
func TestBounceGeneratedByDaemonName(t *testing.T) {
	tests := []struct {
		configured, sent string
		generated        bool
	}{
		{"postfix-bounce", "postfix-bounce", true},
		{"postfix-bounce", "mx.bouncemilter.test", false},
		{"postfix-bounce", "", false},
		{"", "mx.bouncemilter.test", true},
	}
	for _, tt := range tests {
		h := discarding()
		srv := serve(t, Config{BounceDaemonName: tt.configured}, h, nil, nil, time.Second)
		dialDaemon(t, srv.addr, tt.sent).send(bounceOf(t, sender))
		calls := h.Calls()
		if len(calls) != 1 {
			t.Fatalf("%d handler calls", len(calls))
		}
		if calls[0].env.Generated != tt.generated {
			t.Errorf("configured %q, sent %q: Generated = %v, want %v", tt.configured, tt.sent, calls[0].env.Generated, tt.generated)
		}
	}
	// Over SMTP, never.
	h := discarding()
	srv := serve(t, Config{}, h, nil, nil, time.Second)
	dialSMTP(t, srv.addr).send(bounceOf(t, sender))
	if calls := h.Calls(); len(calls) != 1 || calls[0].env.Generated {
		t.Errorf("a bounce over SMTP counted as made by this Postfix: %+v", calls)
	}
}

// Over --max-inflight, a bounce is accepted unread at once: never delayed
// behind the ones being read, never refused (§2).
func TestMaxInFlight(t *testing.T) {
	entered, release := make(chan struct{}), make(chan struct{})
	h := handlerFunc(func(ctx context.Context, env bounce.Envelope, msg []byte) (bounce.Outcome, error) {
		entered <- struct{}{}
		<-release
		return bounce.Outcome{Verdict: "acted", Discard: true}, nil
	})
	srv := serve(t, Config{MaxInFlight: 1}, h, nil, nil, time.Second)
	first := make(chan milter.ActionCode, 1)
	go func() {
		_, act, _, err := dialLocal(t, srv.addr).trySend(bounceOf(t, sender))
		if err != nil {
			first <- 0
			return
		}
		first <- act.Code
	}()
	<-entered
	start := time.Now()
	stage, act, _ := dialLocal(t, srv.addr).send(bounceOf(t, sender))
	if stage != "mail" || act.Code != milter.ActAccept {
		t.Errorf("second bounce over the limit: %q at %s, want accept at mail", act.Code, stage)
	}
	if d := time.Since(start); d > 5*time.Second {
		t.Errorf("the bounce over the limit waited %s", d)
	}
	close(release)
	if code := <-first; code != milter.ActDiscard {
		t.Errorf("the first bounce got %q", code)
	}
	// Below the limit again, bounces are read. The first one's answer
	// can reach the client before its session has ended its count.
	if n := srv.settled(); n != 0 {
		t.Fatalf("%d messages still in flight", n)
	}
	go func() { <-entered }()
	if _, act, _ := dialLocal(t, srv.addr).send(bounceOf(t, sender)); act.Code != milter.ActDiscard {
		t.Errorf("after the first finished: %q, want discard", act.Code)
	}
}

// rawPacket writes one milter packet.
func rawPacket(t *testing.T, c net.Conn, code byte, data []byte) {
	t.Helper()
	var hdr [5]byte
	binary.BigEndian.PutUint32(hdr[:4], uint32(len(data)+1))
	hdr[4] = code
	if _, err := c.Write(append(hdr[:], data...)); err != nil {
		t.Fatal(err)
	}
}

func readPacket(t *testing.T, c net.Conn) byte {
	t.Helper()
	c.SetReadDeadline(time.Now().Add(10 * time.Second))
	var n uint32
	if err := binary.Read(c, binary.BigEndian, &n); err != nil {
		t.Fatal(err)
	}
	b := make([]byte, n)
	if _, err := io.ReadFull(c, b); err != nil {
		t.Fatal(err)
	}
	return b[0]
}

// A connection dropped in the middle of a message, without the abort
// Postfix normally sends, ends that message's count: shutdown then does
// not wait out its grace for a message nobody will finish (§4).
func TestDroppedConnectionsLeaveNothingInFlight(t *testing.T) {
	srv := serve(t, Config{}, discarding(), nil, nil, time.Minute)
	for i, stage := range []string{"mail", "rcpt", "header", "body"} {
		c, err := net.Dial("tcp", srv.addr)
		if err != nil {
			t.Fatal(err)
		}
		opts := make([]byte, 12)
		binary.BigEndian.PutUint32(opts[0:], 2)
		binary.BigEndian.PutUint32(opts[4:], uint32(v2Actions))
		rawPacket(t, c, 'O', opts)
		if code := readPacket(t, c); code != 'O' {
			t.Fatalf("negotiation answered %q", code)
		}
		rawPacket(t, c, 'M', []byte("<>\x00"))
		if code := readPacket(t, c); code != 'c' {
			t.Fatalf("MAIL answered %q", code)
		}
		if stage != "mail" {
			rawPacket(t, c, 'R', []byte("<"+sender+">\x00"))
			readPacket(t, c)
		}
		if stage == "header" || stage == "body" {
			rawPacket(t, c, 'L', []byte("Subject\x00Undelivered Mail\x00"))
			readPacket(t, c)
		}
		if stage == "body" {
			rawPacket(t, c, 'N', nil)
			readPacket(t, c)
			rawPacket(t, c, 'B', bytes.Repeat([]byte("x"), 100))
			readPacket(t, c)
		}
		if n := srv.f.InFlight(); n != 1 {
			t.Fatalf("connection %d: %d messages in flight during the message, want 1", i, n)
		}
		c.Close()
		if n := srv.settled(); n != 0 {
			t.Errorf("connection dropped at %s: %d messages still in flight", stage, n)
		}
	}
	start := time.Now()
	srv.cancel()
	select {
	case err := <-srv.errc:
		srv.errc <- err
	case <-time.After(10 * time.Second):
		t.Fatal("Serve waited for messages on dropped connections")
	}
	if d := time.Since(start); d > 5*time.Second {
		t.Errorf("shutdown took %s", d)
	}
}

// Serve keeps accepting through a shortage of file descriptors, as a
// server must: go-milter's own Serve returned on the first EMFILE, and the
// milter stopped listening for good (§4). The shortage is real: a child
// process lowers its RLIMIT_NOFILE and uses up its descriptors.
func TestServeSurvivesEMFILE(t *testing.T) {
	if os.Getenv("FILTER_EMFILE_CHILD") == "1" {
		emfileChild()
		return
	}
	cmd := exec.Command(os.Args[0], "-test.run=^TestServeSurvivesEMFILE$")
	cmd.Env = append(os.Environ(), "FILTER_EMFILE_CHILD=1")
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	out, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	defer cmd.Process.Kill()
	line := make([]byte, 0, 64)
	for b := make([]byte, 1); ; {
		if _, err := out.Read(b); err != nil {
			t.Fatalf("child: %v\n%s", err, stderr.String())
		}
		if b[0] == '\n' {
			break
		}
		line = append(line, b[0])
	}
	addr, ok := strings.CutPrefix(string(line), "listening ")
	if !ok {
		t.Fatalf("child said %q\n%s", line, stderr.String())
	}
	// The child is out of descriptors now: this connection waits in the
	// backlog until it frees some, and must then be served.
	c := dialLocal(t, addr)
	if _, act, _ := c.send(bounceOf(t, sender)); act.Code != milter.ActDiscard {
		t.Errorf("bounce after the shortage: %q, want discard", act.Code)
	}
	cmd.Process.Signal(syscall.SIGTERM)
	if err := cmd.Wait(); err != nil && !strings.Contains(err.Error(), "signal") {
		t.Errorf("child: %v\n%s", err, stderr.String())
	}
	if !strings.Contains(stderr.String(), "too many open files") {
		t.Errorf("the child never ran out of descriptors:\n%s", stderr.String())
	}
}

func emfileChild() {
	fail := func(err error) {
		os.Stderr.WriteString("child: " + err.Error() + "\n")
		os.Exit(3)
	}
	f, err := New(Config{Sender: sender}, discarding(), nil, nil, nil)
	if err != nil {
		fail(err)
	}
	f.log = slogToStderr()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		fail(err)
	}
	var lim syscall.Rlimit
	if err := syscall.Getrlimit(syscall.RLIMIT_NOFILE, &lim); err != nil {
		fail(err)
	}
	lim.Cur = 64
	if err := syscall.Setrlimit(syscall.RLIMIT_NOFILE, &lim); err != nil {
		fail(err)
	}
	var hog []*os.File
	for {
		h, err := os.Open(os.DevNull)
		if err != nil {
			break
		}
		hog = append(hog, h)
	}
	go func() {
		// Long enough for the parent to connect and for Accept to fail
		// a few times.
		time.Sleep(500 * time.Millisecond)
		for _, h := range hog {
			h.Close()
		}
	}()
	go f.Serve(context.Background(), ln, time.Second)
	os.Stdout.WriteString("listening " + ln.Addr().String() + "\n")
	select {}
}

func slogToStderr() *slog.Logger {
	return slog.New(slog.NewTextHandler(os.Stderr, nil))
}
