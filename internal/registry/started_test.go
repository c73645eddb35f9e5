package registry

import (
	"context"
	"errors"
	"testing"
	"time"
)

// An attempt marked started and never booked shows as Started when the
// action is read again (after a crash); booking the attempt clears it.
func TestMarkStarted(t *testing.T) {
	for _, tc := range []struct {
		name string
		book func(db *DB, id int64) error
		want ActionState
	}{
		{"interrupted", func(db *DB, id int64) error { return nil }, Pending},
		{"applied", func(db *DB, id int64) error { return db.MarkApplied(context.Background(), id, t0, "") }, Applied},
		{"failed", func(db *DB, id int64) error {
			return db.MarkFailed(context.Background(), id, errors.New("down"), t0)
		}, Pending},
		{"refused", func(db *DB, id int64) error {
			return db.MarkRefused(context.Background(), id, errors.New("verified"), t0)
		}, Refused},
	} {
		t.Run(tc.name, func(t *testing.T) {
			ctx := context.Background()
			db := openTest(t)
			seed(t, db, Registration{UserID: 7, Username: "vandal", Email: "v@x.example", Created: t0, IP: "198.51.100.4", Synced: t0})
			ban := []Action{{UserID: 7, Kind: BanIP, Target: "198.51.100.4", Reason: "5.1.1"}}
			if _, err := db.RecordBounce(ctx, Bounce{Received: t0, QueueID: "ABC", Verdict: VerdictActed, Report: "{}"}, ban); err != nil {
				t.Fatal(err)
			}
			due, err := db.DueActions(ctx, t0, 10)
			if err != nil || len(due) != 1 || !due[0].Started.IsZero() {
				t.Fatalf("due = %+v, %v", due, err)
			}
			started := t0.Add(3 * time.Second)
			if err := db.MarkStarted(ctx, due[0].ID, started); err != nil {
				t.Fatal(err)
			}
			if err := tc.book(db, due[0].ID); err != nil {
				t.Fatal(err)
			}
			acts, err := db.Actions(ctx, 7)
			if err != nil || len(acts) != 1 {
				t.Fatalf("actions = %+v, %v", acts, err)
			}
			a := acts[0]
			if a.State != tc.want {
				t.Errorf("state = %s, want %s", a.State, tc.want)
			}
			if interrupted := tc.name == "interrupted"; interrupted != a.Started.Equal(started) || interrupted == a.Started.IsZero() {
				t.Errorf("Started = %v after %s", a.Started, tc.name)
			}
		})
	}
}
