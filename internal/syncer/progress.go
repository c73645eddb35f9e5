package syncer

import (
	"fmt"
	"io"
	"log/slog"
	"time"
)

// progress reports how far a long copy is: a line redrawn in place on a
// terminal, otherwise a log line every logEvery.
type progress struct {
	term     io.Writer
	log      *slog.Logger
	what     string
	total    int64 // estimate: ids to go, which deletions make too high
	n        int64
	started  time.Time
	last     time.Time
	drawn    bool
	logEvery time.Duration
}

func newProgress(opts Options, what string, total int64) *progress {
	now := time.Now()
	return &progress{term: opts.Terminal, log: opts.Log, what: what, total: total,
		started: now, last: now, logEvery: 10 * time.Second}
}

func (p *progress) add(n int64) {
	p.n += n
	now := time.Now()
	if p.term != nil {
		if now.Sub(p.last) < 200*time.Millisecond {
			return
		}
		p.last = now
		p.drawn = true
		fmt.Fprintf(p.term, "\r%s %s", bar(p.n, p.total), p.line(now))
		return
	}
	if now.Sub(p.last) >= p.logEvery {
		p.last = now
		p.log.Info("sync progress", "what", p.what, "done", p.n, "of", p.total, "elapsed", now.Sub(p.started).Round(time.Second))
	}
}

func (p *progress) line(now time.Time) string {
	return fmt.Sprintf("%d/%d %s (%s)", p.n, p.total, p.what, now.Sub(p.started).Round(time.Second))
}

func (p *progress) done() {
	if p.term != nil && p.drawn {
		p.total = p.n // the estimate counted ids of deleted users too
		fmt.Fprintf(p.term, "\r%s %s\n", bar(p.total, p.total), p.line(time.Now()))
	}
}

// bar draws [#####.....] for n of total.
func bar(n, total int64) string {
	const width = 30
	filled := width
	if total > 0 && n < total {
		filled = int(n * width / total)
	}
	b := make([]byte, width+2)
	b[0], b[width+1] = '[', ']'
	for i := 0; i < width; i++ {
		if i < filled {
			b[i+1] = '#'
		} else {
			b[i+1] = '.'
		}
	}
	return string(b)
}
