package app

import (
	"context"
	"fmt"
	"log/slog"
	"net"
	"os"
	"os/signal"
	"syscall"
	"time"

	"github.com/bouncemilter/bouncemilter/internal/bounce"
	"github.com/bouncemilter/bouncemilter/internal/filter"
	"github.com/bouncemilter/bouncemilter/internal/metrics"
	"github.com/bouncemilter/bouncemilter/internal/returnpath"
	"github.com/bouncemilter/bouncemilter/internal/signups"
	"github.com/bouncemilter/bouncemilter/internal/worker"
)

// Serve runs the milter on cfg.Listen and the worker that applies its
// actions, until ctx is cancelled; then it drains: the milter stops
// accepting and finishes the messages in flight (up to ShutdownGrace),
// and the worker applies what they queued (within the same grace) before
// it stops. On SIGHUP it re-reads the signing keys.
func Serve(ctx context.Context, cfg Config, log *slog.Logger) error {
	// SIGHUP is `systemctl reload` (the unit's ExecReload): caught for as
	// long as serve runs, draining included, whatever there is to reload.
	// Its default action would end the milter, and systemd counts that a
	// clean exit: Postfix would pass mail unfiltered with nothing said.
	hup := make(chan os.Signal, 1)
	signal.Notify(hup, syscall.SIGHUP)
	defer signal.Stop(hup)

	// Configuration errors first, before anything is opened.
	if cfg.TrustReturnedHeaders && cfg.SignReturnPath {
		return usage("--trust-returned-headers needs --sign-return-path=false: with signed return paths a valid tag is the only proof a bounce is genuine")
	}
	if _, _, err := filter.ParseSpec(cfg.Listen); err != nil {
		return usage("%v", err)
	}
	if cfg.SignReturnPath && cfg.Delimiter == "" {
		// The signer would tag with "+" while the filter, with no
		// delimiter, would take no tagged bounce for its own.
		return usage("--sign-return-path needs a --recipient-delimiter (Postfix's recipient_delimiter, usually +)")
	}
	if cfg.SocketMode > 0o777 {
		return usage("--socket-mode %o is not a permission", cfg.SocketMode)
	}
	if cfg.MetricsListen != "" {
		if _, _, err := net.SplitHostPort(cfg.MetricsListen); err != nil {
			return usage("--metrics-listen %q: %v", cfg.MetricsListen, err)
		}
	}

	mg, err := cfg.mediaGoblin(log)
	if err != nil {
		return err
	}
	sender := cfg.Sender
	if sender == "" {
		sender = mg.EmailSender
	}
	reg, err := openRegistry(ctx, cfg.Registry)
	if err != nil {
		return err
	}
	defer reg.Close()
	ipBanner, err := cfg.banner(log, reg.AllowedIPs)
	if err != nil {
		return err
	}

	var m *metrics.Metrics
	var queue worker.Queue = reg
	if cfg.MetricsListen != "" {
		m = metrics.New(reg)
		queue = m.WrapQueue(reg)
	}
	w := worker.New(queue, cfg.accounts(mg, reg, log), ipBanner, log.With("component", "worker"))
	// An IP ban queued by sync (its sign-up's IP was linked after the
	// bounce) is applied within a second.
	w.Poll = time.Second
	copier := &signups.Copier{Registry: reg, Log: log.With("component", "signups"),
		Open: func(ctx context.Context) (signups.Source, error) {
			ro := mg
			ro.ReadOnly = true
			return openMediaGoblin(ctx, ro)
		}}
	handler := &bounce.Handler{
		Journal:              signups.Journal{Journal: reg, Copier: copier},
		Policy:               bounce.Policy{Window: cfg.Window, Skew: bounce.DefaultPolicy().Skew},
		Sender:               sender,
		TrustReturnedHeaders: cfg.TrustReturnedHeaders,
		DiscardSuspect:       cfg.DiscardSuspect,
		Log:                  log,
		Queued:               w.Wake,
	}
	outGuard, err := cfg.guard(reg, handler.Policy, log, w.Wake)
	if err != nil {
		return err
	}
	var (
		rewriter filter.Rewriter
		keys     *returnpath.Keyring
	)
	if cfg.SignReturnPath {
		if keys, err = returnpath.LoadOrCreate(cfg.KeyFile()); err != nil {
			return err
		}
		signer := &returnpath.Signer{Keys: keys, MaxAge: cfg.Window, Delimiter: cfg.Delimiter}
		handler.Tags = signer
		rewriter = signer
	}
	go reloadOnHangup(ctx, hup, keys, log)

	fcfg := filter.Config{Sender: sender, Delimiter: cfg.Delimiter, MaxSize: cfg.MaxSize, Signups: copier, Guard: outGuard,
		MediaGoblinClients: cfg.MediaGoblinClients, BounceDaemonName: cfg.BounceDaemonName, MaxInFlight: cfg.MaxInFlight}
	var (
		h     filter.Handler      = handler
		sends filter.SendRecorder = reg
	)
	if m != nil {
		h, sends = m.WrapHandler(handler), m.WrapSends(reg)
		fcfg.Unread = func() { m.Message(metrics.KindOther) }
	}
	f, err := filter.New(fcfg, h, sends, rewriter, log.With("component", "milter"))
	if err != nil {
		return err
	}
	ln, err := filter.Listen(cfg.Listen, filter.Socket{Group: cfg.SocketGroup, Mode: cfg.SocketMode})
	if err != nil {
		return err
	}
	mdone := make(chan error, 1)
	if m != nil {
		mln, err := net.Listen("tcp", cfg.MetricsListen)
		if err != nil {
			ln.Close()
			return fmt.Errorf("metrics listener: %w", err)
		}
		go func() { mdone <- m.Serve(ctx, mln, log) }()
		log.Info("metrics", "listen", mln.Addr().String())
	} else {
		mdone <- nil
	}
	log.Info("serving", "listen", cfg.Listen, "sender", sender, "registry", cfg.Registry, "banner", cfg.Banner,
		"mediagoblin", mg.SourceRedacted(), "signed_return_path", cfg.SignReturnPath)

	wctx, stopWorker := context.WithCancel(context.WithoutCancel(ctx))
	wdone := make(chan struct{})
	go func() {
		defer close(wdone)
		w.Run(wctx)
	}()
	start := time.Now()
	err = f.Serve(ctx, ln, cfg.ShutdownGrace)
	// Drain: the milter has finished (or given up on) the messages in
	// flight; stop the worker's loop, then apply at once what they queued,
	// within what is left of the grace.
	stopWorker()
	<-wdone
	left := cfg.ShutdownGrace - time.Since(start)
	if left < time.Second {
		left = time.Second
	}
	dctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), left)
	if n, derr := w.RunOnce(dctx); derr != nil {
		log.Warn("draining the action queue", "applied", n, "err", derr)
	} else if n > 0 {
		log.Info("drained the action queue", "applied", n)
	}
	cancel()
	if merr := <-mdone; err == nil {
		err = merr
	}
	if err != nil {
		return err
	}
	log.Info("stopped")
	return nil
}

// reloadOnHangup re-reads the signing keys (nil: none) at each signal on
// hup, so that a key rotated from the command line is used without a
// restart, until ctx is done.
func reloadOnHangup(ctx context.Context, hup <-chan os.Signal, keys *returnpath.Keyring, log *slog.Logger) {
	for {
		select {
		case <-ctx.Done():
			return
		case <-hup:
			if keys == nil {
				log.Info("SIGHUP: nothing to reload (--sign-return-path=false)")
				continue
			}
			if err := keys.Reload(); err != nil {
				log.Error("reloading signing keys failed; keeping the old ones", "err", err)
				continue
			}
			log.Info("signing keys reloaded")
		}
	}
}
