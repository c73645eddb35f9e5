package filter

import (
	"context"
	"errors"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/emersion/go-milter"

	"github.com/bouncemilter/bouncemilter/internal/registry"
)

type copier struct {
	mu    sync.Mutex
	calls [][]string
	err   error
	delay time.Duration
}

func (c *copier) CopySignups(ctx context.Context, emails []string) ([]registry.Registration, error) {
	c.mu.Lock()
	c.calls = append(c.calls, slices.Clone(emails))
	c.mu.Unlock()
	select {
	case <-time.After(c.delay):
	case <-ctx.Done():
		return nil, ctx.Err()
	}
	return nil, c.err
}

// MediaGoblin's mail copies its recipients' sign-ups as it passes; ordinary
// mail and bounces do not.
func TestOutgoingCopiesSignups(t *testing.T) {
	c := &copier{}
	db := openRegistry(t)
	srv := serve(t, Config{Signups: c}, discarding(), db, nil, time.Second)
	m := verification("Xk7bot@example.net")
	m.rcpts = append(m.rcpts, "second@example.com")
	if _, act, _ := dialMediaGoblin(t, srv.addr).send(m); act.Code != milter.ActAccept {
		t.Fatalf("answer %q", act.Code)
	}
	dialLocal(t, srv.addr).send(ordinary("friend@else.example", "admin@media.example.org"))
	want := [][]string{{"Xk7bot@example.net", "second@example.com"}}
	if !slices.EqualFunc(c.calls, want, slices.Equal[[]string]) {
		t.Errorf("copier called with %q, want %q", c.calls, want)
	}
}

// A copy that fails or hangs never refuses, delays beyond the handler's
// timeout, or unsigns MediaGoblin's mail.
func TestOutgoingCopyFails(t *testing.T) {
	for name, c := range map[string]*copier{
		"error": {err: errors.New("mediagoblin: database unavailable")},
		"hangs": {delay: time.Hour},
	} {
		t.Run(name, func(t *testing.T) {
			srv := serve(t, Config{Signups: c, Timeout: 200 * time.Millisecond}, discarding(), openRegistry(t), rewriter{"notice+d5ab12cd34ef@media.example.org"}, time.Second)
			start := time.Now()
			_, act, mods := dialMediaGoblin(t, srv.addr).send(verification("Xk7bot@example.net"))
			if act.Code != milter.ActAccept || len(mods) != 1 {
				t.Errorf("answer %q with %+v, want accept with the sender signed", act.Code, mods)
			}
			if d := time.Since(start); d > 5*time.Second {
				t.Errorf("answered after %s", d)
			}
		})
	}
}
