package filter

import (
	"bytes"
	"context"
	"errors"
	"net/netip"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/emersion/go-milter"

	"github.com/bouncemilter/bouncemilter/internal/bounce"
	"github.com/bouncemilter/bouncemilter/internal/dsn"
	"github.com/bouncemilter/bouncemilter/internal/registry"
	"github.com/bouncemilter/bouncemilter/internal/returnpath"
)

// ordinary is a message that is neither a bounce nor MediaGoblin's.
func ordinary(from string, rcpts ...string) message {
	return message{
		from: from, rcpts: rcpts, queueID: "1A2B3C4D5E",
		header: []field{{"From", "Alice <alice@example.com>"}, {"To", strings.Join(rcpts, ", ")}, {"Subject", "lunch?"}},
		body:   []byte("Shall we?\r\n"),
	}
}

// verification is MediaGoblin's verification mail as it leaves through
// sendmail: headers Subject, From and To only.
func verification(to string) message {
	return message{
		from: sender, rcpts: []string{to}, queueID: "7C2E01A0B4",
		header: []field{{"Subject", "GNU MediaGoblin - Verify your email!"}, {"From", sender}, {"To", to}},
		body:   []byte("Hi xk7bot,\r\n\r\nhttps://media.example.org/auth/verify_email/?token=eyJ1c2VyIjo0Mn0.Xb2c\r\n"),
	}
}

func TestAcceptedUnread(t *testing.T) {
	tests := []struct {
		name  string
		msg   message
		stage string
	}{
		{"ordinary mail", ordinary("alice@example.com", "bob@media.example.org"), "mail"},
		{"ordinary mail to the sender address", ordinary("alice@example.com", sender), "mail"},
		{"a sender address that merely contains ours", ordinary("x"+sender, sender), "mail"},
		{"null sender to someone else", message{rcpts: []string{"postmaster@media.example.org"}, header: bounceOf(t).header, body: bounceOf(t).body}, "header"},
		{"null sender to a tagged address without a delimiter set", message{rcpts: []string{"notice+d5ab12cd34ef@media.example.org"}, header: bounceOf(t).header}, "header"},
		{"null sender to someone else, no header at all", message{rcpts: []string{"postmaster@media.example.org"}}, "eoh"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			h := discarding()
			srv := serve(t, Config{}, h, nil, nil, time.Second)
			c := dialSMTP(t, srv.addr)
			stage, act, mods := c.send(tt.msg)
			if stage != tt.stage || act.Code != milter.ActAccept || len(mods) != 0 {
				t.Errorf("answered %q at %s with %v, want accept at %s", act.Code, stage, mods, tt.stage)
			}
			if n := len(h.Calls()); n != 0 {
				t.Errorf("the handler read %d messages", n)
			}
			if n := srv.settled(); n != 0 {
				t.Errorf("%d messages still counted in flight", n)
			}
		})
	}
}

func TestBounceDiscarded(t *testing.T) {
	tests := []struct {
		name  string
		delim string
		rcpt  string
	}{
		{"to the sender", "", sender},
		{"to the sender in capitals", "", "Notice@Media.Example.ORG"},
		{"to a signed return path", "+", "notice+d5ab12cd34ef@media.example.org"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			h := discarding()
			srv := serve(t, Config{Delimiter: tt.delim}, h, nil, nil, time.Second)
			c := dialLocal(t, srv.addr)
			stage, act, mods := c.send(bounceOf(t, tt.rcpt))
			if stage != "eob" || act.Code != milter.ActDiscard || len(mods) != 0 {
				t.Fatalf("answered %q at %s with %v, want discard at the end", act.Code, stage, mods)
			}
			calls := h.Calls()
			if len(calls) != 1 {
				t.Fatalf("the handler saw %d messages", len(calls))
			}
			env := calls[0].env
			want := bounce.Envelope{
				QueueID:    "8D3F11A0B5",
				Client:     bounce.Client{Host: "localhost", Addr: netip.MustParseAddr("127.0.0.1"), Port: 0},
				Sender:     "",
				Recipients: []string{tt.rcpt},
			}
			if env.QueueID != want.QueueID || env.Client != want.Client || env.Sender != "" || !slices.Equal(env.Recipients, want.Recipients) {
				t.Errorf("envelope = %+v, want %+v", env, want)
			}
			if !env.Client.Local() {
				t.Error("Postfix's own bounce is not seen as local")
			}

			// What the handler read is the whole bounce, readable as one.
			msg := calls[0].msg
			if !bytes.HasPrefix(msg, []byte("Return-Path: <>\r\n")) || !bytes.HasSuffix(msg, []byte("--7C2E01A0B4.1764148447/media.example.org--\r\n")) {
				t.Errorf("message read:\n%s", msg)
			}
			rep, err := dsn.Parse(bytes.NewReader(msg))
			if err != nil {
				t.Fatal(err)
			}
			if !rep.Bounce || len(rep.Recipients) != 1 || rep.Recipients[0].Address != "Xk7bot@example.net" || rep.Recipients[0].Status != "5.1.1" {
				t.Errorf("report of what was read = %+v", rep)
			}
			if rep.Original.Subject != "GNU MediaGoblin - Verify your email!" {
				t.Errorf("returned message lost: %+v", rep.Original)
			}
			if n := srv.settled(); n != 0 {
				t.Errorf("%d messages still counted in flight", n)
			}
		})
	}
}

// The filter delivers whenever it is not sure: the handler did not ask
// for a discard, failed, panicked, the bounce was cut short or is also
// for someone else.
func TestBounceDelivered(t *testing.T) {
	big := bounceOf(t, sender)
	big.body = append(bytes.Repeat([]byte("padding padding padding padding\r\n"), 200), big.body...)
	tests := []struct {
		name    string
		cfg     Config
		handler *recorder
		msg     message
		read    bool // the handler got the message
	}{
		{"handler keeps it", Config{}, &recorder{out: bounce.Outcome{Verdict: "no-match"}}, bounceOf(t, sender), true},
		{"handler error", Config{}, &recorder{out: bounce.Outcome{Verdict: "acted", Discard: true}, err: errors.New("database is locked")}, bounceOf(t, sender), true},
		{"handler panic", Config{}, &recorder{out: bounce.Outcome{Discard: true}, panic: true}, bounceOf(t, sender), true},
		{"bigger than MaxSize", Config{MaxSize: 4096}, discarding(), big, true},
		{"also to another recipient", Config{}, discarding(), bounceOf(t, sender, "postmaster@media.example.org"), true},
		{"another recipient first", Config{}, discarding(), bounceOf(t, "postmaster@media.example.org", sender), true},
		{"to the sender and a tagged address", Config{}, discarding(), bounceOf(t, sender, "notice+x@media.example.org"), true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			srv := serve(t, tt.cfg, tt.handler, nil, nil, time.Second)
			c := dialLocal(t, srv.addr)
			stage, act, _ := c.send(tt.msg)
			if act.Code != milter.ActAccept {
				t.Errorf("answered %q at %s, want accept", act.Code, stage)
			}
			calls := tt.handler.Calls()
			if got := len(calls) == 1; got != tt.read {
				t.Fatalf("handler called %d times", len(calls))
			}
			if tt.cfg.MaxSize > 0 && len(calls[0].msg) > tt.cfg.MaxSize {
				t.Errorf("read %d bytes with MaxSize %d", len(calls[0].msg), tt.cfg.MaxSize)
			}
			if n := srv.settled(); n != 0 {
				t.Errorf("%d messages still counted in flight", n)
			}

			// The connection is still good for the next message.
			h := tt.handler
			h.mu.Lock()
			h.panic, h.err, h.out = false, nil, bounce.Outcome{Discard: true}
			h.mu.Unlock()
			if _, act, _ := c.send(ordinary("alice@example.com", "bob@media.example.org")); act.Code != milter.ActAccept {
				t.Errorf("next message: %q", act.Code)
			}
		})
	}
}

// A bounce aborted by Postfix (the client went away) leaves nothing
// behind, and the next message on the connection starts afresh.
func TestAbort(t *testing.T) {
	h := discarding()
	srv := serve(t, Config{}, h, nil, nil, time.Second)
	c := dialLocal(t, srv.addr)
	m := bounceOf(t, sender)
	if act, err := c.s.Mail("", nil); err != nil || act.Code != milter.ActContinue {
		t.Fatal(act, err)
	}
	if act, err := c.s.Rcpt(sender, nil); err != nil || act.Code != milter.ActContinue {
		t.Fatal(act, err)
	}
	for _, f := range m.header[:3] {
		if act, err := c.s.HeaderField(f.name, f.value); err != nil || act.Code != milter.ActContinue {
			t.Fatal(act, err)
		}
	}
	if err := c.s.Abort(); err != nil {
		t.Fatal(err)
	}
	// The same bounce again, whole: the handler sees it alone, not glued
	// to what came before the abort.
	stage, act, _ := c.send(bounceOf(t, sender))
	if stage != "eob" || act.Code != milter.ActDiscard {
		t.Fatalf("after abort: %q at %s", act.Code, stage)
	}
	calls := h.Calls()
	if len(calls) != 1 || !bytes.HasPrefix(calls[0].msg, []byte("Return-Path: <>\r\nReceived:")) || bytes.Count(calls[0].msg, []byte("Return-Path: <>")) != 1 {
		t.Errorf("handler calls after abort: %d, first message starts %q", len(calls), calls[0].msg[:min(60, len(calls[0].msg))])
	}
	if n := srv.settled(); n != 0 {
		t.Errorf("%d messages still counted in flight", n)
	}
}

// sendLog is a SendRecorder that remembers what it was given.
type sendLog struct {
	mu    sync.Mutex
	sends []registry.Send
}

func (l *sendLog) RecordSends(ctx context.Context, sends []registry.Send) error {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.sends = append(l.sends, sends...)
	return nil
}

// rewriter signs every sender the same way.
type rewriter struct{ to string }

func (r rewriter) Rewrite(sender string, recipients []string, now time.Time) string { return r.to }

func TestOutgoingRecorded(t *testing.T) {
	db := openRegistry(t)
	h := discarding()
	srv := serve(t, Config{}, h, db, nil, time.Second)
	c := dialMediaGoblin(t, srv.addr)
	m := verification("Xk7bot@example.net")
	m.rcpts = append(m.rcpts, "second@example.com")
	before := time.Now().Add(-time.Second)
	stage, act, mods := c.send(m)
	if stage != "eob" || act.Code != milter.ActAccept || len(mods) != 0 {
		t.Fatalf("answered %q at %s with %v, want accept at the end", act.Code, stage, mods)
	}
	if len(h.Calls()) != 0 {
		t.Error("outgoing mail was handed to the bounce handler")
	}
	rows, err := db.SQL().QueryContext(t.Context(), `SELECT recipient_key, queue_id, subject, sent FROM sends ORDER BY id`)
	if err != nil {
		t.Fatal(err)
	}
	defer rows.Close()
	var got []string
	for rows.Next() {
		var (
			rcpt, id, subject string
			when              int64
		)
		if err := rows.Scan(&rcpt, &id, &subject, &when); err != nil {
			t.Fatal(err)
		}
		if when < before.Unix() || when > time.Now().Unix()+1 {
			t.Errorf("send to %s recorded at %d", rcpt, when)
		}
		got = append(got, rcpt+" "+id+" "+subject)
	}
	want := []string{
		"xk7bot@example.net 7C2E01A0B4 GNU MediaGoblin - Verify your email!",
		"second@example.com 7C2E01A0B4 GNU MediaGoblin - Verify your email!",
	}
	if !slices.Equal(got, want) {
		t.Errorf("sends = %q, want %q", got, want)
	}
	if ok, err := db.SentTo(t.Context(), "XK7BOT@example.net", before); err != nil || !ok {
		t.Errorf("SentTo = %v, %v", ok, err)
	}
	if n := srv.settled(); n != 0 {
		t.Errorf("%d messages still counted in flight", n)
	}
}

// The envelope sender of MediaGoblin's mail is signed at the end of the
// message, where the milter protocol allows it.
func TestOutgoingRewritten(t *testing.T) {
	log := &sendLog{}
	srv := serve(t, Config{Delimiter: "+"}, discarding(), log, rewriter{"notice+d5ab12cd34ef@media.example.org"}, time.Second)
	c := dialMediaGoblin(t, srv.addr)
	stage, act, mods := c.send(verification("Xk7bot@example.net"))
	if stage != "eob" || act.Code != milter.ActAccept {
		t.Fatalf("answered %q at %s", act.Code, stage)
	}
	if len(mods) != 1 || mods[0].Code != milter.ActChangeFrom || mods[0].From != "notice+d5ab12cd34ef@media.example.org" {
		t.Errorf("modifications = %+v, want one change of sender", mods)
	}
	log.mu.Lock()
	defer log.mu.Unlock()
	if len(log.sends) != 1 || log.sends[0].QueueID != "7C2E01A0B4" {
		t.Errorf("sends = %+v", log.sends)
	}

	// A Rewriter that keeps the sender asks for no change.
	srv2 := serve(t, Config{}, discarding(), nil, rewriter{""}, time.Second)
	_, act, mods = dialMediaGoblin(t, srv2.addr).send(verification("Xk7bot@example.net"))
	if act.Code != milter.ActAccept || len(mods) != 0 {
		t.Errorf("keeping the sender: %q with %+v", act.Code, mods)
	}
}

// Several messages on one connection: go-milter makes a new milter after
// each final answer and Postfix sends the connect stage only once, so the
// later messages lose the client. That must never make a message look
// like Postfix's own bounce.
func TestSeveralMessagesOnOneConnection(t *testing.T) {
	h := discarding()
	srv := serve(t, Config{}, h, nil, nil, time.Second)
	c := dialSMTP(t, srv.addr)
	for i, m := range []message{
		ordinary("alice@example.com", "bob@media.example.org"),
		bounceOf(t, sender),
		bounceOf(t, sender),
	} {
		_, act, _ := c.send(m)
		want := milter.ActAccept
		if m.from == "" {
			want = milter.ActDiscard
		}
		if act.Code != want {
			t.Errorf("message %d: %q, want %q", i, act.Code, want)
		}
	}
	for i, call := range h.Calls() {
		if call.env.Client.Local() {
			t.Errorf("bounce %d over SMTP seen as local: %+v", i, call.env.Client)
		}
		if call.env.QueueID != "8D3F11A0B5" || len(call.env.Recipients) != 1 {
			t.Errorf("bounce %d: envelope %+v", i, call.env)
		}
	}
}

func openRegistry(t testing.TB) *registry.DB {
	t.Helper()
	db, err := registry.Open(t.Context(), filepath.Join(t.TempDir(), "r.db"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { db.Close() })
	return db
}

// The whole path through the milter with the real handler and registry:
// MediaGoblin's verification mail leaves and is recorded; Postfix's bounce
// of it is journalled and discarded; the same bounce forged over SMTP, and
// ordinary mail, are delivered.
func TestEndToEnd(t *testing.T) {
	ctx := t.Context()
	db := openRegistry(t)
	now := time.Now()
	err := db.Tx(ctx, func(tx *registry.Tx) error {
		if err := tx.UpsertRegistration(ctx, registry.Registration{
			UserID: 42, Username: "xk7bot", Email: "Xk7bot@example.net", Created: now.Add(-3 * time.Minute), Synced: now,
		}); err != nil {
			return err
		}
		if err := tx.UpsertRegistration(ctx, registry.Registration{
			UserID: 3, Username: "realperson", Email: "real@example.net", Created: now.Add(-time.Hour), Synced: now, Verified: true,
		}); err != nil {
			return err
		}
		_, err := tx.SetIP(ctx, "xk7bot", "203.0.113.9", "combined")
		return err
	})
	if err != nil {
		t.Fatal(err)
	}
	woken := make(chan struct{}, 10)
	h := &bounce.Handler{
		Journal: db, Policy: bounce.DefaultPolicy(), Sender: sender,
		Queued: func() { woken <- struct{}{} },
	}
	srv := serve(t, Config{Delimiter: "+"}, h, db, nil, time.Second)

	// A forged bounce before anything was sent: delivered.
	if _, act, _ := dialSMTP(t, srv.addr).send(bounceOf(t, sender)); act.Code != milter.ActAccept {
		t.Errorf("forged bounce before any send: %q", act.Code)
	}

	// MediaGoblin sends the verification mail through sendmail.
	if _, act, _ := dialMediaGoblin(t, srv.addr).send(verification("Xk7bot@example.net")); act.Code != milter.ActAccept {
		t.Fatalf("verification mail: %q", act.Code)
	}

	// The same bounce over SMTP, without a signed return path: delivered.
	if _, act, _ := dialSMTP(t, srv.addr).send(bounceOf(t, sender)); act.Code != milter.ActAccept {
		t.Errorf("bounce over SMTP: %q", act.Code)
	}
	if dis, _ := db.DisabledAccounts(ctx); len(dis) != 0 {
		t.Fatalf("a bounce over SMTP disabled %+v", dis)
	}

	// Postfix's own bounce of it: journalled, then discarded.
	if _, act, _ := dialLocal(t, srv.addr).send(bounceOf(t, sender)); act.Code != milter.ActDiscard {
		t.Fatalf("Postfix's bounce: %q, want discard", act.Code)
	}
	select {
	case <-woken:
	default:
		t.Error("the worker was not woken")
	}
	dis, err := db.DisabledAccounts(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if len(dis) != 1 || dis[0].Username != "xk7bot" || dis[0].QueueID != "8D3F11A0B5" || !strings.Contains(dis[0].Reason, "5.1.1") {
		t.Errorf("disabled = %+v", dis)
	}
	acts, err := db.Actions(ctx, 42)
	if err != nil {
		t.Fatal(err)
	}
	if len(acts) != 2 || acts[0].Kind != registry.BanAccount || acts[1].Kind != registry.BanIP || acts[1].Target != "203.0.113.9" {
		t.Errorf("actions = %+v", acts)
	}

	// A bounce for the verified user, even Postfix's own: delivered.
	real := bounceOf(t, sender)
	for i, f := range real.header {
		real.header[i].value = strings.ReplaceAll(f.value, "Xk7bot@Example.NET", "real@example.net")
	}
	real.body = bytes.ReplaceAll(bytes.ReplaceAll(real.body, []byte("Xk7bot@Example.NET"), []byte("real@example.net")), []byte("Xk7bot@example.net"), []byte("real@example.net"))
	if _, act, _ := dialMediaGoblin(t, srv.addr).send(verification("real@example.net")); act.Code != milter.ActAccept {
		t.Fatalf("mail to the verified user: %q", act.Code)
	}
	if _, act, _ := dialLocal(t, srv.addr).send(real); act.Code != milter.ActAccept {
		t.Errorf("bounce for a verified user: %q, want accept", act.Code)
	}
	if acts, _ := db.Actions(ctx, 3); len(acts) != 0 {
		t.Errorf("actions against the verified user: %+v", acts)
	}

	counts, err := db.CountBounces(ctx)
	if err != nil {
		t.Fatal(err)
	}
	want := map[registry.Verdict]int64{registry.VerdictSuspect: 2, registry.VerdictActed: 1, registry.VerdictIneligible: 1}
	for v, n := range want {
		if counts[v] != n {
			t.Errorf("journal holds %v, want %v", counts, want)
			break
		}
	}
}

// With signed return paths (issue 5): the verification mail leaves with a
// signed envelope sender, and the remote server's bounce to that address,
// arriving over SMTP, is journalled and discarded. The same bounce sent to
// the plain address, or to a tag for someone else, is delivered.
func TestEndToEndSigned(t *testing.T) {
	ctx := t.Context()
	db := openRegistry(t)
	now := time.Now()
	err := db.Tx(ctx, func(tx *registry.Tx) error {
		return tx.UpsertRegistration(ctx, registry.Registration{
			UserID: 42, Username: "xk7bot", Email: "Xk7bot@example.net", Created: now.Add(-3 * time.Minute), Synced: now,
		})
	})
	if err != nil {
		t.Fatal(err)
	}
	keys, err := returnpath.LoadOrCreate(filepath.Join(t.TempDir(), "returnpath.keys"))
	if err != nil {
		t.Fatal(err)
	}
	signer := &returnpath.Signer{Keys: keys, Delimiter: "+"}
	h := &bounce.Handler{Journal: db, Policy: bounce.DefaultPolicy(), Sender: sender, Tags: signer}
	srv := serve(t, Config{Delimiter: "+"}, h, db, signer, time.Second)

	_, act, mods := dialMediaGoblin(t, srv.addr).send(verification("Xk7bot@example.net"))
	if act.Code != milter.ActAccept || len(mods) != 1 || mods[0].Code != milter.ActChangeFrom {
		t.Fatalf("verification mail: %q with %+v, want accept with a new sender", act.Code, mods)
	}
	signed := mods[0].From
	if base, tag := returnpath.Split(signed, "+"); base != sender || tag == "" {
		t.Fatalf("signed sender %q", signed)
	}

	other, err := signer.Sign(sender, "someone@example.net", now)
	if err != nil {
		t.Fatal(err)
	}
	for _, to := range []string{sender, other} {
		if _, act, _ := dialSMTP(t, srv.addr).send(bounceOf(t, to)); act.Code != milter.ActAccept {
			t.Errorf("forged bounce to %s: %q, want accept", to, act.Code)
		}
	}
	if acts, _ := db.Actions(ctx, 42); len(acts) != 0 {
		t.Fatalf("a forged bounce queued %+v", acts)
	}

	if _, act, _ := dialSMTP(t, srv.addr).send(bounceOf(t, signed)); act.Code != milter.ActDiscard {
		t.Fatalf("bounce to the signed sender: %q, want discard", act.Code)
	}
	acts, err := db.Actions(ctx, 42)
	if err != nil {
		t.Fatal(err)
	}
	if len(acts) != 1 || acts[0].Kind != registry.BanAccount {
		t.Errorf("actions = %+v, want the account ban", acts)
	}
}

// A handler that takes longer than Config.Timeout has its context
// cancelled, and the bounce is delivered.
func TestHandlerTimeout(t *testing.T) {
	h := handlerFunc(func(ctx context.Context, env bounce.Envelope, msg []byte) (bounce.Outcome, error) {
		<-ctx.Done()
		return bounce.Outcome{Discard: true}, ctx.Err()
	})
	srv := serve(t, Config{Timeout: 50 * time.Millisecond}, h, nil, nil, time.Second)
	if _, act, _ := dialLocal(t, srv.addr).send(bounceOf(t, sender)); act.Code != milter.ActAccept {
		t.Errorf("answer %q, want accept", act.Code)
	}
}

type failingSends struct{}

func (failingSends) RecordSends(ctx context.Context, sends []registry.Send) error {
	return errors.New("database is locked")
}

// MediaGoblin's mail leaves even when it cannot be recorded, signed all
// the same.
func TestOutgoingRecordFails(t *testing.T) {
	srv := serve(t, Config{}, discarding(), failingSends{}, rewriter{"notice+d5ab12cd34ef@media.example.org"}, time.Second)
	_, act, mods := dialMediaGoblin(t, srv.addr).send(verification("Xk7bot@example.net"))
	if act.Code != milter.ActAccept || len(mods) != 1 {
		t.Errorf("answer %q with %+v, want accept with the sender signed", act.Code, mods)
	}
}

// Nothing is discarded that is not on disk: with the registry gone, the
// real handler fails and Postfix's bounce is delivered.
func TestRegistryUnavailable(t *testing.T) {
	db := openRegistry(t)
	now := time.Now()
	err := db.Tx(t.Context(), func(tx *registry.Tx) error {
		return tx.UpsertRegistration(t.Context(), registry.Registration{UserID: 42, Username: "xk7bot", Email: "Xk7bot@example.net", Created: now, Synced: now})
	})
	if err != nil {
		t.Fatal(err)
	}
	if err := db.RecordSends(t.Context(), []registry.Send{{Recipient: "Xk7bot@example.net", Sent: now}}); err != nil {
		t.Fatal(err)
	}
	h := &bounce.Handler{Journal: db, Policy: bounce.DefaultPolicy(), Sender: sender}
	srv := serve(t, Config{}, h, db, nil, time.Second)
	db.Close()
	if _, act, _ := dialLocal(t, srv.addr).send(bounceOf(t, sender)); act.Code != milter.ActAccept {
		t.Errorf("bounce with the registry closed: %q, want accept", act.Code)
	}
	if _, act, _ := dialMediaGoblin(t, srv.addr).send(verification("Xk7bot@example.net")); act.Code != milter.ActAccept {
		t.Errorf("outgoing mail with the registry closed: %q, want accept", act.Code)
	}
}
