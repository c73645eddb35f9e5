package worker

import (
	"context"
	"sync"

	"github.com/bouncemilter/bouncemilter/internal/refusal"
)

// LazyAccounts opens the account store on first use, and again after an
// attempt failed, so that the milter starts (and journals) while
// MediaGoblin's database is still down; the actions wait in the queue.
// A failure that is not a refusal closes the store: connections that a
// restarted server dropped are not used again. That includes a failure on
// an SQLite file replaced meanwhile (mediagoblin.ErrReplaced), though
// mediagoblin.DB would open the new file itself: the store is opened
// again, once, needlessly.
type LazyAccounts struct {
	Open func(ctx context.Context) (Accounts, error)

	mu  sync.Mutex
	acc Accounts
}

func (l *LazyAccounts) get(ctx context.Context) (Accounts, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.acc != nil {
		return l.acc, nil
	}
	acc, err := l.Open(ctx)
	if err != nil {
		return nil, err
	}
	l.acc = acc
	return acc, nil
}

// failed closes acc after err, unless err is nil or a refusal (the store
// answered), so that the next attempt opens the store again.
func (l *LazyAccounts) failed(acc Accounts, err error) error {
	if err == nil || refusal.Is(err) {
		return err
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.acc == acc {
		l.closeLocked()
	}
	return err
}

// closeLocked closes and forgets the store; l.mu is held.
func (l *LazyAccounts) closeLocked() {
	if c, ok := l.acc.(interface{ Close() error }); ok {
		c.Close()
	}
	l.acc = nil
}

// BanUser opens the store if needed and bans the user.
func (l *LazyAccounts) BanUser(ctx context.Context, userID int64, reason string) error {
	acc, err := l.get(ctx)
	if err != nil {
		return err
	}
	return l.failed(acc, acc.BanUser(ctx, userID, reason))
}

// UnbanUser opens the store if needed and lifts the user's ban.
func (l *LazyAccounts) UnbanUser(ctx context.Context, userID int64) error {
	acc, err := l.get(ctx)
	if err != nil {
		return err
	}
	return l.failed(acc, acc.UnbanUser(ctx, userID))
}

// BanUsers opens the store if needed and bans the users together when the
// store can (BatchAccounts), else one by one.
func (l *LazyAccounts) BanUsers(ctx context.Context, bans map[int64]string) (map[int64]error, error) {
	acc, err := l.get(ctx)
	if err != nil {
		return nil, err
	}
	if batch, ok := acc.(BatchAccounts); ok {
		refused, err := batch.BanUsers(ctx, bans)
		return refused, l.failed(acc, err)
	}
	refused := map[int64]error{}
	for id, reason := range bans {
		if err := l.failed(acc, acc.BanUser(ctx, id, reason)); err != nil {
			refused[id] = err
		}
	}
	return refused, nil
}
