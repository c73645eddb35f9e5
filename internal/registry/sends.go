package registry

import (
	"context"
	"fmt"
	"time"
)

// Send is one message MediaGoblin sent through Postfix, as the milter saw
// it leave. A bounce can only be authentic for a recipient that was sent to.
type Send struct {
	Recipient string
	Sent      time.Time
	QueueID   string
	Subject   string
}

// RecordSends journals outgoing messages, one row per recipient.
func (r *DB) RecordSends(ctx context.Context, sends []Send) error {
	err := r.Tx(ctx, func(tx *Tx) error {
		for _, s := range sends {
			if _, err := tx.tx.ExecContext(ctx, `INSERT INTO sends(recipient_key, sent, queue_id, subject) VALUES (?, ?, ?, ?)`,
				EmailKey(s.Recipient), unix(s.Sent), s.QueueID, s.Subject); err != nil {
				return err
			}
		}
		return nil
	})
	if err != nil {
		return fmt.Errorf("record sends: %w", err)
	}
	return nil
}

// SentTo reports whether a message to recipient was recorded at or after
// since.
func (r *DB) SentTo(ctx context.Context, recipient string, since time.Time) (bool, error) {
	var ok bool
	err := r.db.QueryRowContext(ctx, `SELECT EXISTS(SELECT 1 FROM sends WHERE recipient_key = ? AND sent >= ?)`,
		EmailKey(recipient), unix(since)).Scan(&ok)
	if err != nil {
		return false, fmt.Errorf("look up sends to %s: %w", recipient, err)
	}
	return ok, nil
}

// PruneJournal deletes what the journal holds from before before: the
// record of sends, and bounces that led to no action (a bounce that did is
// the evidence behind a ban, kept while the ban is). It reports how many
// rows it deleted. Without it a flood would grow the registry for ever.
func (t *Tx) PruneJournal(ctx context.Context, before time.Time) (int64, error) {
	sends, err := t.tx.ExecContext(ctx, `DELETE FROM sends WHERE sent < ?`, unix(before))
	if err != nil {
		return 0, fmt.Errorf("prune sends: %w", err)
	}
	bounces, err := t.tx.ExecContext(ctx, `DELETE FROM bounces WHERE received < ?
		AND id NOT IN (SELECT bounce_id FROM actions WHERE bounce_id IS NOT NULL)`, unix(before))
	if err != nil {
		return 0, fmt.Errorf("prune bounces: %w", err)
	}
	n, _ := sends.RowsAffected()
	m, _ := bounces.RowsAffected()
	return n + m, nil
}
