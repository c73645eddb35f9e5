// Package metrics counts what the milter does, for Prometheus: messages by
// kind, bounces by verdict, the time each decision took, parse errors,
// actions by kind and result, the backlog of actions waiting, and when sync
// last ran.
//
// The metrics live on a registry of their own (never Prometheus's global
// default), served by Handler. The counting is done by decorators around
// the parts that do the work (the bounce handler, the send recorder, the
// worker's queue), so that those parts know nothing of Prometheus. The
// package decides nothing and changes nothing.
package metrics

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"strings"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"

	"github.com/bouncemilter/bouncemilter/internal/bounce"
	"github.com/bouncemilter/bouncemilter/internal/registry"
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

// Metrics holds the collectors. Make one with New.
type Metrics struct {
	reg         *prometheus.Registry
	messages    *prometheus.CounterVec
	bounces     *prometheus.CounterVec
	actions     *prometheus.CounterVec
	parseErrors prometheus.Counter
	decision    prometheus.Histogram
}

// New makes the metrics on a registry of their own. The backlog and the
// last sync time are read from src at each scrape; src may be nil.
func New(src Source) *Metrics {
	m := &Metrics{
		reg: prometheus.NewRegistry(),
		messages: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "bouncemilter_messages_total",
			Help: "Messages the milter saw, by kind: bounce (read and decided), outgoing (MediaGoblin's mail, recorded), other (accepted unread).",
		}, []string{"kind"}),
		bounces: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "bouncemilter_bounces_total",
			Help: "Bounces journalled, by verdict (acted, no-match, ineligible, suspect, not-bounce).",
		}, []string{"verdict"}),
		actions: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "bouncemilter_actions_total",
			Help: "Attempts at actions, by kind (ban-account, ban-ip, unban-account, unban-ip) and result (applied, failed, refused).",
		}, []string{"kind", "result"}),
		parseErrors: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "bouncemilter_parse_errors_total",
			Help: "Bounces the parser could not read (they are delivered).",
		}),
		decision: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name:    "bouncemilter_decision_seconds",
			Help:    "Time from a complete bounce to its journalled decision: parse, look-up, durable commit.",
			Buckets: []float64{.0005, .001, .0025, .005, .01, .025, .05, .1, .25, .5, 1, 2.5, 5},
		}),
	}
	m.reg.MustRegister(m.messages, m.bounces, m.actions, m.parseErrors, m.decision,
		collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	if src != nil {
		m.reg.MustRegister(&sourceCollector{src: src})
	}
	return m
}

// Registry returns the registry the metrics are on, for tests and for
// adding more.
func (m *Metrics) Registry() *prometheus.Registry { return m.reg }

// Handler serves the metrics in Prometheus's text format.
func (m *Metrics) Handler() http.Handler {
	return promhttp.HandlerFor(m.reg, promhttp.HandlerOpts{ErrorHandling: promhttp.ContinueOnError})
}

// Message counts one message of kind.
func (m *Metrics) Message(kind string) { m.messages.WithLabelValues(kind).Inc() }

// sourceCollector reads the gauges that live in the registry at scrape
// time, so that they are right even when another process (sync, a restore)
// changed them.
type sourceCollector struct{ src Source }

var (
	backlogDesc = prometheus.NewDesc("bouncemilter_action_backlog",
		"Actions pending in the journal (waiting for their first attempt or for a retry).", nil, nil)
	lastSyncDesc = prometheus.NewDesc("bouncemilter_last_sync_timestamp_seconds",
		"When the last sync run ended, in Unix seconds; 0 when none was recorded.", nil, nil)
)

func (c *sourceCollector) Describe(ch chan<- *prometheus.Desc) {
	ch <- backlogDesc
	ch <- lastSyncDesc
}

func (c *sourceCollector) Collect(ch chan<- prometheus.Metric) {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if n, err := c.src.PendingActions(ctx); err != nil {
		ch <- prometheus.NewInvalidMetric(backlogDesc, err)
	} else {
		ch <- prometheus.MustNewConstMetric(backlogDesc, prometheus.GaugeValue, float64(n))
	}
	run, ok, err := c.src.LastSync(ctx)
	switch {
	case err != nil:
		ch <- prometheus.NewInvalidMetric(lastSyncDesc, err)
	case !ok:
		ch <- prometheus.MustNewConstMetric(lastSyncDesc, prometheus.GaugeValue, 0)
	default:
		ch <- prometheus.MustNewConstMetric(lastSyncDesc, prometheus.GaugeValue, float64(run.At.UnixNano())/1e9)
	}
}

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
	h.m.decision.Observe(time.Since(start).Seconds())
	h.m.Message(KindBounce)
	if err != nil {
		return out, err
	}
	h.m.bounces.WithLabelValues(string(out.Verdict)).Inc()
	// The handler journals an unparsable bounce as not-bounce with this
	// detail (bounce.Handler.Handle).
	if out.Verdict == registry.VerdictNotBounce && strings.HasPrefix(out.Detail, "unreadable: ") {
		h.m.parseErrors.Inc()
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

// Queue is the worker's action journal.
type Queue interface {
	DueActions(ctx context.Context, now time.Time, limit int) ([]registry.Action, error)
	Actions(ctx context.Context, userID int64) ([]registry.Action, error)
	MarkStarted(ctx context.Context, id int64, now time.Time) error
	MarkApplied(ctx context.Context, id int64, now time.Time) error
	MarkFailed(ctx context.Context, id int64, cause error, next time.Time) error
	MarkRefused(ctx context.Context, id int64, cause error, now time.Time) error
}

// WrapQueue wraps q: each attempt the worker books counts in
// bouncemilter_actions_total with the action's kind and its result. The
// kinds are learnt from DueActions, which hands the worker every action it
// attempts.
func (m *Metrics) WrapQueue(q Queue) Queue {
	return &queue{Queue: q, m: m, kinds: map[int64]registry.ActionKind{}}
}

type queue struct {
	Queue
	m     *Metrics
	mu    sync.Mutex
	kinds map[int64]registry.ActionKind
}

func (q *queue) DueActions(ctx context.Context, now time.Time, limit int) ([]registry.Action, error) {
	due, err := q.Queue.DueActions(ctx, now, limit)
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
	q.m.actions.WithLabelValues(string(kind), result).Inc()
}

func (q *queue) MarkApplied(ctx context.Context, id int64, now time.Time) error {
	err := q.Queue.MarkApplied(ctx, id, now)
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
	mux.Handle("/metrics", m.Handler())
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
