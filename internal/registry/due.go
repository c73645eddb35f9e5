package registry

import (
	"context"
	"fmt"
	"time"
)

// ReadyActions returns up to limit due actions that an attempt can act on,
// oldest first: DueActions less the IP bans still waiting for their
// account's ban (the user's latest ban-account is pending; see
// worker.accountBanned). A waiting IP ban is left out rather than read and
// put back, so that any number of them (MediaGoblin's database down during
// a flood) never fill a batch and hide the actions queued after them; and
// it is ready again the moment its account ban is applied or refused,
// whatever its own next attempt said.
func (r *DB) ReadyActions(ctx context.Context, now time.Time, limit int) ([]Action, error) {
	rows, err := r.db.QueryContext(ctx, `SELECT `+actionColumns+` FROM actions a
		WHERE state = 'pending' AND next_attempt <= ?
		AND NOT (kind = 'ban-ip' AND user_id != 0 AND coalesce((SELECT b.state FROM actions b
			WHERE b.user_id = a.user_id AND b.kind = 'ban-account' AND b.retired = 0
			ORDER BY b.id DESC LIMIT 1), '') = 'pending')
		ORDER BY id LIMIT ?`, unix(now), limit)
	if err != nil {
		return nil, fmt.Errorf("ready actions: %w", err)
	}
	return collectActions(rows)
}
