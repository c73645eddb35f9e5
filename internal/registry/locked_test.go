package registry

import (
	"context"
	"errors"
	"path/filepath"
	"sync"
	"testing"
	"time"
)

// lockedByOther opens a registry whose write lock another process holds
// (sync pruning a big journal, an admin's command) until unlock is called
// or the test ends.
func lockedByOther(t *testing.T) (db *DB, unlock func()) {
	t.Helper()
	ctx := context.Background()
	path := filepath.Join(t.TempDir(), "registry.db")
	var err error
	db, err = Open(ctx, path)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { db.Close() })
	other, err := Open(ctx, path)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { other.Close() })
	conn, err := other.SQL().Conn(ctx)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	if _, err := conn.ExecContext(ctx, `BEGIN IMMEDIATE`); err != nil {
		t.Fatal(err)
	}
	var once sync.Once
	unlock = func() { once.Do(func() { conn.ExecContext(ctx, `ROLLBACK`) }) }
	t.Cleanup(unlock)
	return db, unlock
}

// TestLockedRegistryWaitsBounded: while another process holds the write
// lock every write fails after the busy timeout and the milter delivers the
// message, as it should; how long it is held must not grow with the number
// of others waiting. A batch that fails with SQLITE_BUSY fails whole (each
// record alone would wait a busy timeout of its own: the k-th bounce of a
// batch was answered after (k+1) × 10 s, beyond Postfix's milter timeouts
// in a flood), and the sign-up copy of MediaGoblin's verification mail,
// whose budget is 2 s (signups.DefaultTimeout), gives up waiting behind the
// batcher for the process's write lock when its context ends.
func TestLockedRegistryWaitsBounded(t *testing.T) {
	t.Parallel()
	db, _ := lockedByOther(t)
	var (
		wg   sync.WaitGroup
		mu   sync.Mutex
		took = map[string]time.Duration{}
	)
	// run runs write with a context of the given budget, in the background.
	run := func(what string, budget time.Duration, write func(ctx context.Context) error) {
		wg.Add(1)
		go func() {
			defer wg.Done()
			ctx, cancel := context.WithTimeout(context.Background(), budget)
			defer cancel()
			start := time.Now()
			err := write(ctx)
			mu.Lock()
			defer mu.Unlock()
			took[what] = time.Since(start)
			t.Logf("%s: %v after %v", what, err, took[what].Round(100*time.Millisecond))
			if err == nil {
				t.Errorf("%s written while another process holds the write lock", what)
			}
		}()
	}
	bounce := func(name string) {
		// The milter's budget for one message (filter.Config.Timeout).
		run("bounce "+name, 30*time.Second, func(ctx context.Context) error {
			_, err := db.RecordBounce(ctx, Bounce{Received: time.Now(), QueueID: name, Verdict: VerdictNoMatch, Report: "null"}, nil)
			return err
		})
	}
	bounce("A") // a batch of its own
	time.Sleep(200 * time.Millisecond)
	bounce("B") // B, C, D wait for the next batch
	bounce("C")
	bounce("D")
	time.Sleep(200 * time.Millisecond)
	run("sign-up copy", 2*time.Second, func(ctx context.Context) error {
		return db.StoreRegistrations(ctx, []Registration{{UserID: 1, Username: "u", Email: "u@example.net", Created: time.Now(), Synced: time.Now()}})
	})
	wg.Wait()

	const slack = 5 * time.Second // a loaded machine
	if d := took["sign-up copy"]; d > 2*time.Second+slack {
		t.Errorf("the sign-up copy with a 2 s budget waited %v for the write lock", d.Round(time.Second))
	}
	// B, C and D wait for A's batch and fail with their own: two busy
	// timeouts, never one per record.
	for _, name := range []string{"A", "B", "C", "D"} {
		if d := took["bounce "+name]; d > 2*busyTimeout+slack {
			t.Errorf("bounce %s answered after %v: one failed write per busy timeout, not one per record of its batch", name, d.Round(time.Second))
		}
	}
}

// TestLockedRegistryHonoursDeadline: SQLite's busy handler does not heed
// the interrupt of a cancelled context, so a write with a budget shorter
// than the busy timeout waited the whole busy timeout for another
// process's lock. It waits until its deadline, and its connection gets the
// full busy timeout back for the writes after it. A bounce whose caller
// gave up while its batch waited for the lock (and delivered it) is not
// journalled once the lock is free.
func TestLockedRegistryHonoursDeadline(t *testing.T) {
	t.Parallel()
	db, unlock := lockedByOther(t)
	db.SQL().SetMaxOpenConns(1) // the write's connection is the one read after it
	writes := []struct {
		name  string
		write func(ctx context.Context) error
	}{
		{"Tx", func(ctx context.Context) error {
			return db.StoreRegistrations(ctx, []Registration{{UserID: 1, Username: "u", Email: "u@example.net", Created: time.Now(), Synced: time.Now()}})
		}},
		{"exec", func(ctx context.Context) error { return db.SetState(ctx, "k", "v") }},
		{"group commit", func(ctx context.Context) error {
			_, err := db.RecordBounce(ctx, Bounce{Received: time.Now(), QueueID: "Q", Verdict: VerdictNoMatch, Report: "null"}, nil)
			return err
		}},
	}
	for _, w := range writes {
		const budget = time.Second
		ctx, cancel := context.WithTimeout(context.Background(), budget)
		start := time.Now()
		err := w.write(ctx)
		cancel()
		if d := time.Since(start); d > budget+3*time.Second { // the busy timeout is 10 s
			t.Errorf("%s with a budget of %v answered after %v", w.name, budget, d.Round(100*time.Millisecond))
		}
		if err == nil {
			t.Errorf("%s written while another process holds the write lock", w.name)
		}
		if w.name == "group commit" {
			// The batcher still waits for the lock: the caller was told
			// the fate of its bounce is unknown, and delivers it.
			if !errors.Is(err, context.DeadlineExceeded) {
				t.Errorf("group commit: %v, want the caller's deadline", err)
			}
			continue
		}
		// Tx and exec run on the caller's goroutine: done with it.
		var ms int64
		if err := db.SQL().QueryRow(`PRAGMA busy_timeout`).Scan(&ms); err != nil {
			t.Fatal(err)
		}
		if ms != busyTimeout.Milliseconds() {
			t.Errorf("after %s the connection's busy timeout is %d ms, want %d", w.name, ms, busyTimeout.Milliseconds())
		}
	}

	unlock()
	// Written in the batch after the abandoned one's.
	if _, err := db.RecordBounce(context.Background(), Bounce{Received: time.Now(), QueueID: "R", Verdict: VerdictNoMatch, Report: "null"}, nil); err != nil {
		t.Fatal(err)
	}
	var queued []string
	rows, err := db.SQL().Query(`SELECT queue_id FROM bounces`)
	if err != nil {
		t.Fatal(err)
	}
	defer rows.Close()
	for rows.Next() {
		var q string
		if err := rows.Scan(&q); err != nil {
			t.Fatal(err)
		}
		queued = append(queued, q)
	}
	if len(queued) != 1 || queued[0] != "R" {
		t.Errorf("journalled bounces %q, want only R: the abandoned Q was delivered", queued)
	}
}
