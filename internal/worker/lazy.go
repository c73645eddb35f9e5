package worker

import (
	"context"
	"sync"
)

// LazyAccounts opens the account store on first use, and again after an
// attempt failed, so that the milter starts (and journals) while
// MediaGoblin's database is still down; the actions wait in the queue.
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

// BanUser opens the store if needed and bans the user.
func (l *LazyAccounts) BanUser(ctx context.Context, userID int64, reason string) error {
	acc, err := l.get(ctx)
	if err != nil {
		return err
	}
	return acc.BanUser(ctx, userID, reason)
}

// UnbanUser opens the store if needed and lifts the user's ban.
func (l *LazyAccounts) UnbanUser(ctx context.Context, userID int64) error {
	acc, err := l.get(ctx)
	if err != nil {
		return err
	}
	return acc.UnbanUser(ctx, userID)
}

// BanUsers opens the store if needed and bans the users together when the
// store can (BatchAccounts), else one by one.
func (l *LazyAccounts) BanUsers(ctx context.Context, bans map[int64]string) (map[int64]error, error) {
	acc, err := l.get(ctx)
	if err != nil {
		return nil, err
	}
	if batch, ok := acc.(BatchAccounts); ok {
		return batch.BanUsers(ctx, bans)
	}
	refused := map[int64]error{}
	for id, reason := range bans {
		if err := acc.BanUser(ctx, id, reason); err != nil {
			refused[id] = err
		}
	}
	return refused, nil
}
