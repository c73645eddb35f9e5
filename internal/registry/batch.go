package registry

import (
	"context"
	"errors"
	"fmt"

	"github.com/mattn/go-sqlite3"
)

// Group commit. Every journalled bounce must be on disk before the milter
// answers DISCARD, and with synchronous=FULL each commit costs an fsync. In
// a flood, sessions would queue behind each other's fsyncs; instead one
// goroutine takes every bounce waiting at that moment and commits them in
// one transaction, so the cost of a commit is shared by all of them.

// maxBatch bounds one group commit, so that a transaction stays short.
const maxBatch = 128

// A bounceRecord is one write of a group commit: a bounce and its actions,
// or, when fn is set, the worker's bookkeeping (an action marked applied,
// failed, …). Bookkeeping goes through the group
// commit too, so that the worker does not take turns with the milter for
// the write lock and an fsync of its own per action: a flood of bounces
// makes a flood of actions.
type bounceRecord struct {
	// ctx is the caller's: a record whose caller gave up is not written
	// (see commitBatch).
	ctx     context.Context
	b       Bounce
	actions []Action
	fn      func(ctx context.Context, t *Tx) error
	done    chan recordResult
}

type recordResult struct {
	rec Recorded
	err error
}

// errClosed is returned for bounces submitted after Close.
var errClosed = errors.New("registry closed")

// runBatcher commits queued bounces until r.stop is closed.
func (r *DB) runBatcher() {
	defer close(r.batcherDone)
	for {
		var first bounceRecord
		select {
		case first = <-r.records:
		case <-r.stop:
			return
		}
		batch := []bounceRecord{first}
	drain:
		for len(batch) < maxBatch {
			select {
			case rec := <-r.records:
				batch = append(batch, rec)
			default:
				break drain
			}
		}
		r.commitBatch(batch)
	}
}

// commitBatch writes batch in one transaction; if that fails, each record
// is written on its own, so that one bad record fails alone. Not when the
// write lock was the trouble: another process (sync, an admin's command)
// held it for the whole busy timeout, and each record on its own would
// wait as long again, holding every bounce of the batch for one busy
// timeout per record.
//
// A record whose caller gave up before the transaction took the write lock
// is not written: the caller was told its fate is unknown and delivers its
// bounce, and written now it would be journalled (its actions applied)
// with the bounce delivered. Only a caller that leaves during the
// statements and the commit can still find its record written.
func (r *DB) commitBatch(batch []bounceRecord) {
	// Not a caller's context: the records share the transaction, and one
	// caller giving up must not roll back the others.
	ctx := context.Background()
	res := make([]recordResult, len(batch))
	err := r.Tx(ctx, func(tx *Tx) error {
		for i, rec := range batch {
			if res[i].err = rec.ctx.Err(); res[i].err != nil {
				continue // its caller gave up
			}
			recorded, err := tx.record(ctx, rec)
			if err != nil {
				return err
			}
			res[i].rec = recorded
		}
		return nil
	})
	if err == nil {
		for i, rec := range batch {
			rec.done <- res[i]
		}
		return
	}
	if isBusy(err) {
		for _, rec := range batch {
			rec.done <- recordResult{err: err}
		}
		return
	}
	for _, rec := range batch {
		var recorded Recorded
		err := rec.ctx.Err() // its caller gave up
		if err == nil {
			err = r.Tx(ctx, func(tx *Tx) (err error) {
				recorded, err = tx.record(ctx, rec)
				return err
			})
		}
		rec.done <- recordResult{rec: recorded, err: err}
	}
}

// isBusy reports whether err is SQLite's answer to a write lock that
// another connection held for the whole busy timeout.
func isBusy(err error) bool {
	var se sqlite3.Error
	return errors.As(err, &se) && (se.Code == sqlite3.ErrBusy || se.Code == sqlite3.ErrLocked)
}

func (t *Tx) record(ctx context.Context, rec bounceRecord) (Recorded, error) {
	if rec.fn != nil {
		return Recorded{}, rec.fn(ctx, t)
	}
	return t.recordBounce(ctx, rec.b, rec.actions)
}

// grouped runs one writing statement in the next group commit and waits
// until it is committed.
func (r *DB) grouped(ctx context.Context, stmt string, args ...any) error {
	return r.groupedTx(ctx, func(ctx context.Context, t *Tx) error {
		_, err := t.tx.ExecContext(ctx, stmt, args...)
		return err
	})
}

// groupedTx runs fn in the next group commit and waits until it is
// committed.
func (r *DB) groupedTx(ctx context.Context, fn func(ctx context.Context, t *Tx) error) error {
	_, err := r.enqueue(ctx, bounceRecord{fn: fn, done: make(chan recordResult, 1)})
	return err
}

// submit queues a bounce for the next group commit and waits for it.
func (r *DB) submit(ctx context.Context, b Bounce, actions []Action) (Recorded, error) {
	rec, err := r.enqueue(ctx, bounceRecord{b: b, actions: actions, done: make(chan recordResult, 1)})
	if err != nil {
		return Recorded{}, fmt.Errorf("journal bounce %s: %w", b.QueueID, err)
	}
	return rec, nil
}

// enqueue queues rec for the next group commit and waits for it, until
// ctx ends: then it returns ctx's error. The record is then not written
// (see commitBatch) unless its commit was under way. Either way the caller acts
// as on any failed write (the milter delivers the bounce), and a record is
// written whole or not at all: a bounce journalled after its caller gave
// up is one that was also delivered, never one that is lost.
func (r *DB) enqueue(ctx context.Context, rec bounceRecord) (Recorded, error) {
	rec.ctx = ctx
	select {
	case r.records <- rec:
	case <-r.stop:
		return Recorded{}, errClosed
	case <-ctx.Done():
		return Recorded{}, ctx.Err()
	}
	// Only a result sent on done says the record was written: a caller
	// that stops waiting never discards a bounce whose fate it does not
	// know. done has room for the result nobody reads.
	select {
	case res := <-rec.done:
		return res.rec, res.err
	case <-ctx.Done():
		select {
		case res := <-rec.done: // came at the same time: it is known
			return res.rec, res.err
		default:
			return Recorded{}, fmt.Errorf("not known to be written: %w", ctx.Err())
		}
	}
}
