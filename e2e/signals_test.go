package e2e

import (
	"net"
	"syscall"
	"testing"
	"time"

	"github.com/emersion/go-milter"

	"github.com/bouncemilter/bouncemilter/internal/loadtest"
	"github.com/bouncemilter/bouncemilter/internal/mediagoblin/mgtest"
)

// TestReloadWithoutSigningKeepsServing: contrib/systemd/bouncemilter.service
// has ExecReload=/bin/kill -HUP $MAINPID. With --sign-return-path=false (a
// documented setup, the one --trust-returned-headers needs) there are no
// keys to reload, and SIGHUP must still not end the milter: systemd's
// Restart=on-failure takes death by SIGHUP for a clean exit.
func TestReloadWithoutSigningKeepsServing(t *testing.T) {
	f := newFlood(t, mgtest.NewSQLite(t, sender), 2)
	f.start(t, "--sign-return-path=false")
	if err := f.serve.Process.Signal(syscall.SIGHUP); err != nil {
		t.Fatal(err)
	}
	select {
	case <-f.exited:
		t.Fatalf("bouncemilter serve --sign-return-path=false died on SIGHUP (systemctl reload): %v", f.serve.ProcessState)
	case <-time.After(2 * time.Second):
	}
	c, err := net.DialTimeout("tcp", f.addr, time.Second)
	if err != nil {
		t.Fatalf("milter no longer listening after SIGHUP: %v", err)
	}
	c.Close()
	f.stop(t)
}

// TestHangupWhileDrainingKeepsDraining: on SIGTERM serve waits up to
// --shutdown-grace for the messages in flight and then applies what they
// queued. A `systemctl reload` (or logrotate's postrotate, or an admin's
// keys rotate and reload) in those seconds must not end the drain.
func TestHangupWhileDrainingKeepsDraining(t *testing.T) {
	f := newFlood(t, mgtest.NewSQLite(t, sender), 2)
	f.start(t, "--shutdown-grace", "8s")
	c := milter.NewClientWithOptions("tcp", f.addr, milter.ClientOptions{ActionMask: loadtest.V2Actions,
		ReadTimeout: 30 * time.Second, WriteTimeout: 30 * time.Second})
	s, err := c.Session()
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	if _, err := s.Conn("localhost", milter.FamilyInet, 25, "127.0.0.1"); err != nil {
		t.Fatal(err)
	}
	// A bounce in flight: MAIL FROM:<> answered, the rest still to come.
	if act, err := s.Mail("", nil); err != nil || act.Code != milter.ActContinue {
		t.Fatalf("mail: %v %v", act, err)
	}
	if err := f.serve.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	time.Sleep(time.Second)
	if err := f.serve.Process.Signal(syscall.SIGHUP); err != nil {
		t.Fatal(err)
	}
	select {
	case <-f.exited:
		t.Fatalf("serve, draining after SIGTERM, died on SIGHUP: %v", f.serve.ProcessState)
	case <-time.After(2 * time.Second):
	}
	<-f.exited
	if !f.serve.ProcessState.Success() {
		t.Errorf("serve ended its drain with %v", f.serve.ProcessState)
	}
}
