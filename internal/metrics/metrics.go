// Package metrics counts what the milter does, for Prometheus: messages by
// kind, bounces by verdict, the time each decision took, parse errors,
// actions by kind and result, the backlog of actions waiting, and when sync
// last ran; beside them a few standard process_* and go_* metrics of the
// process itself.
//
// It writes Prometheus's text exposition format (version 0.0.4) itself
// rather than use Prometheus's Go client: that client's package
// initialisation (protobuf, procfs, ...) cost every command of the one
// binary, parse included, some 20 ms of CPU at start. The counting is done
// by decorators around the parts that do the work (the bounce handler, the
// send recorder, the worker's queue), so that those parts know nothing of
// metrics. The package decides nothing and changes nothing.
package metrics

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/bouncemilter/bouncemilter/internal/bounce"
	"github.com/bouncemilter/bouncemilter/internal/defaults"
	"github.com/bouncemilter/bouncemilter/internal/registry"
	"github.com/bouncemilter/bouncemilter/internal/worker"
)

// Message kinds of bouncemilter_messages_total.
const (
	KindBounce   = "bounce"   // a null-sender message to the sender address, read and decided
	KindOutgoing = "outgoing" // MediaGoblin's own mail, recorded
	KindOther    = "other"    // everything else, accepted unread
)

// Results of bouncemilter_actions_total.
const (
	ResultApplied = "applied"
	ResultFailed  = "failed" // an attempt failed; it is retried
	ResultRefused = "refused"
)

// Source is what the scrape-time gauges read from the registry.
type Source interface {
	PendingActions(ctx context.Context) (int64, error)
	LastSync(ctx context.Context) (registry.SyncRun, bool, error)
}

// Metrics holds the counts. Make one with New; it is safe for concurrent
// use.
type Metrics struct {
	src         Source
	messages    *counterVec
	bounces     *counterVec
	actions     *counterVec
	parseErrors counter
	decision    *histogram
}

// New makes the metrics. The backlog and the last sync time are read from
// src at each scrape; src may be nil, and then they are not exposed.
//
// Every message kind, verdict, and action kind and result the code knows
// is exposed from the start with 0, so that a rate over them needs no
// first event.
func New(src Source) *Metrics {
	m := &Metrics{
		src: src,
		messages: newCounterVec("bouncemilter_messages_total",
			"Messages the milter saw, by kind: bounce (read and decided), outgoing (MediaGoblin's mail, recorded), other (accepted unread).",
			"kind"),
		bounces: newCounterVec("bouncemilter_bounces_total",
			"Bounces journalled, by verdict (acted, no-match, ineligible, suspect, not-bounce).",
			"verdict"),
		actions: newCounterVec("bouncemilter_actions_total",
			"Attempts at actions, by kind (ban-account, ban-ip, unban-account, unban-ip) and result (applied, failed, refused).",
			"kind", "result"),
		decision: newHistogram("bouncemilter_decision_seconds",
			"Time from a complete bounce to its journalled decision: parse, look-up, durable commit.",
			[]float64{.0005, .001, .0025, .005, .01, .025, .05, .1, .25, .5, 1, 2.5, 5}),
	}
	for _, k := range []string{KindBounce, KindOutgoing, KindOther} {
		m.messages.with(k)
	}
	for _, v := range []registry.Verdict{registry.VerdictActed, registry.VerdictNoMatch, registry.VerdictIneligible,
		registry.VerdictSuspect, registry.VerdictNotBounce} {
		m.bounces.with(string(v))
	}
	for _, k := range []registry.ActionKind{registry.BanAccount, registry.BanIP, registry.UnbanAccount, registry.UnbanIP} {
		for _, r := range []string{ResultApplied, ResultFailed, ResultRefused} {
			m.actions.with(string(k), r)
		}
	}
	return m
}

// Handler serves the metrics in Prometheus's text format. A value that
// cannot be read at the scrape (the registry is down, /proc is not there)
// is left out of it and logged to log (which may be nil), and the rest is
// served: a scrape that failed as a whole would hide the counts with the
// one value that is missing, and Prometheus marks the absent series stale.
func (m *Metrics) Handler(log *slog.Logger) http.Handler {
	log = defaults.Log(log)
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		ctx, cancel := context.WithTimeout(r.Context(), 5*time.Second)
		defer cancel()
		fams, err := m.gather(ctx)
		if err != nil {
			log.Warn("metrics: values left out of the scrape", "err", err)
		}
		var b bytes.Buffer
		writeText(&b, fams)
		w.Header().Set("Content-Type", ContentType)
		w.Header().Set("Content-Length", strconv.Itoa(b.Len()))
		w.Write(b.Bytes())
	})
}

// gather reads every metric. The families it could not read are left out
// and their errors returned.
func (m *Metrics) gather(ctx context.Context) ([]family, error) {
	fams, err := m.sourceFamilies(ctx)
	fams = append(fams, m.ownFamilies()...)
	fams = append(fams, goFamilies()...)
	proc, perr := processFamilies()
	return append(fams, proc...), errors.Join(err, perr)
}

// ownFamilies are the counts kept in memory.
func (m *Metrics) ownFamilies() []family {
	return []family{
		m.messages.family(),
		m.bounces.family(),
		m.actions.family(),
		m.parseErrors.family("bouncemilter_parse_errors_total", "Bounces the parser could not read (they are delivered)."),
		m.decision.family(),
	}
}

// sourceFamilies reads the gauges that live in the registry at scrape
// time, so that they are right even when another process (sync, a
// restore) changed them.
func (m *Metrics) sourceFamilies(ctx context.Context) ([]family, error) {
	if m.src == nil {
		return nil, nil
	}
	var fams []family
	var errs []error
	if n, err := m.src.PendingActions(ctx); err != nil {
		errs = append(errs, fmt.Errorf("bouncemilter_action_backlog: %w", err))
	} else {
		fams = append(fams, gauge("bouncemilter_action_backlog",
			"Actions pending in the journal (waiting for their first attempt or for a retry).", float64(n)))
	}
	const lastSync, lastSyncHelp = "bouncemilter_last_sync_timestamp_seconds", "When the last sync run ended, in Unix seconds; 0 when none was recorded."
	switch run, ok, err := m.src.LastSync(ctx); {
	case err != nil:
		errs = append(errs, fmt.Errorf("%s: %w", lastSync, err))
	case !ok:
		fams = append(fams, gauge(lastSync, lastSyncHelp, 0))
	default:
		fams = append(fams, gauge(lastSync, lastSyncHelp, float64(run.At.UnixNano())/1e9))
	}
	return fams, errors.Join(errs...)
}

// goFamilies are the go_* metrics, with the names and help texts of
// Prometheus's Go client.
func goFamilies() []family {
	var ms runtime.MemStats
	runtime.ReadMemStats(&ms)
	threads, _ := runtime.ThreadCreateProfile(nil)
	return []family{
		gauge("go_goroutines", "Number of goroutines that currently exist.", float64(runtime.NumGoroutine())),
		gauge("go_threads", "Number of OS threads created.", float64(threads)),
		gauge("go_memstats_heap_alloc_bytes", "Number of heap bytes allocated and currently in use.", float64(ms.HeapAlloc)),
		{name: "go_info", help: "Information about the Go environment.", typ: typeGauge,
			samples: []sample{{labels: []label{{"version", runtime.Version()}}, value: "1"}}},
	}
}

// Message counts one message of kind.
func (m *Metrics) Message(kind string) { m.messages.with(kind).inc() }

// BounceHandler is the filter's bounce handler.
type BounceHandler interface {
	Handle(ctx context.Context, env bounce.Envelope, msg []byte) (bounce.Outcome, error)
}

// WrapHandler wraps h: each bounce it decides counts as a message of kind
// bounce, its verdict, its decision time and, when the parser could not
// read it, a parse error.
func (m *Metrics) WrapHandler(h BounceHandler) BounceHandler { return &handler{m: m, next: h} }

type handler struct {
	m    *Metrics
	next BounceHandler
}

func (h *handler) Handle(ctx context.Context, env bounce.Envelope, msg []byte) (bounce.Outcome, error) {
	start := time.Now()
	out, err := h.next.Handle(ctx, env, msg)
	h.m.decision.observe(time.Since(start).Seconds())
	h.m.Message(KindBounce)
	if err != nil {
		return out, err
	}
	h.m.bounces.with(string(out.Verdict)).inc()
	// The handler journals an unparsable bounce as not-bounce with this
	// detail (bounce.Handler.Handle).
	if out.Verdict == registry.VerdictNotBounce && strings.HasPrefix(out.Detail, "unreadable: ") {
		h.m.parseErrors.inc()
	}
	return out, nil
}

// SendRecorder is the filter's recorder of MediaGoblin's mail.
type SendRecorder interface {
	RecordSends(ctx context.Context, sends []registry.Send) error
}

// WrapSends wraps r: each message recorded counts as a message of kind
// outgoing.
func (m *Metrics) WrapSends(r SendRecorder) SendRecorder { return &sends{m: m, next: r} }

type sends struct {
	m    *Metrics
	next SendRecorder
}

func (s *sends) RecordSends(ctx context.Context, list []registry.Send) error {
	s.m.Message(KindOutgoing)
	return s.next.RecordSends(ctx, list)
}

// WrapQueue wraps q: each attempt the worker books counts in
// bouncemilter_actions_total with the action's kind and its result. The
// kinds are learnt from ReadyActions, which hands the worker every action it
// attempts.
func (m *Metrics) WrapQueue(q worker.Queue) worker.Queue {
	return &queue{Queue: q, m: m, kinds: map[int64]registry.ActionKind{}}
}

type queue struct {
	worker.Queue
	m     *Metrics
	mu    sync.Mutex
	kinds map[int64]registry.ActionKind
}

func (q *queue) ReadyActions(ctx context.Context, now time.Time, limit int) ([]registry.Action, error) {
	due, err := q.Queue.ReadyActions(ctx, now, limit)
	q.mu.Lock()
	for _, a := range due {
		q.kinds[a.ID] = a.Kind
	}
	q.mu.Unlock()
	return due, err
}

func (q *queue) count(id int64, result string, forget bool) {
	q.mu.Lock()
	kind, ok := q.kinds[id]
	if forget {
		delete(q.kinds, id)
	}
	q.mu.Unlock()
	if !ok {
		kind = "unknown"
	}
	q.m.actions.with(string(kind), result).inc()
}

func (q *queue) MarkApplied(ctx context.Context, id int64, now time.Time, banned string) error {
	err := q.Queue.MarkApplied(ctx, id, now, banned)
	if err == nil {
		q.count(id, ResultApplied, true)
	}
	return err
}

func (q *queue) MarkFailed(ctx context.Context, id int64, cause error, next time.Time) error {
	err := q.Queue.MarkFailed(ctx, id, cause, next)
	if err == nil {
		// Kept: the action stays pending until applied or refused.
		q.count(id, ResultFailed, false)
	}
	return err
}

func (q *queue) MarkRefused(ctx context.Context, id int64, cause error, now time.Time) error {
	err := q.Queue.MarkRefused(ctx, id, cause, now)
	if err == nil {
		q.count(id, ResultRefused, true)
	}
	return err
}

// Serve serves the metrics at /metrics on ln until ctx ends.
func (m *Metrics) Serve(ctx context.Context, ln net.Listener, log *slog.Logger) error {
	mux := http.NewServeMux()
	mux.Handle("/metrics", m.Handler(log))
	srv := &http.Server{Handler: mux, ReadHeaderTimeout: 10 * time.Second}
	done := make(chan struct{})
	go func() {
		select {
		case <-ctx.Done():
			shut, cancel := context.WithTimeout(context.Background(), 5*time.Second)
			defer cancel()
			srv.Shutdown(shut)
		case <-done:
		}
	}()
	err := srv.Serve(ln)
	close(done)
	if errors.Is(err, http.ErrServerClosed) {
		return nil
	}
	return fmt.Errorf("metrics listener: %w", err)
}
