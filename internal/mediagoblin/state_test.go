package mediagoblin_test

import (
	"context"
	"errors"
	"fmt"
	"net/url"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/bouncemilter/bouncemilter/internal/mediagoblin"
	"github.com/bouncemilter/bouncemilter/internal/mediagoblin/mgtest"
	"github.com/bouncemilter/bouncemilter/internal/testenv"
)

func TestState(t *testing.T) {
	backends(t, func(t *testing.T, inst *mgtest.Instance) {
		ctx := context.Background()
		bot := inst.AddUser(t, mgtest.User{Username: "bot", Email: "bot@nowhere.example"})
		real := inst.AddUser(t, mgtest.User{Username: "real", Email: "real@example.net", Verified: true, Moderator: true})
		inst.Ban(t, bot, "bounced")
		cfg := inst.Config(t)
		cfg.ReadOnly = true // the review never writes
		db, err := mediagoblin.Open(ctx, cfg)
		if err != nil {
			t.Fatal(err)
		}
		defer db.Close()

		for _, tc := range []struct {
			id   int64
			want mediagoblin.LiveState
		}{
			{bot, mediagoblin.LiveState{Exists: true, Banned: true, BanReason: "bounced", Privileges: []string{"commenter", "reporter", "uploader"}}},
			{real, mediagoblin.LiveState{Exists: true, Verified: true, Privileges: []string{"active", "commenter", "moderator", "reporter", "uploader"}}},
			{real + 100, mediagoblin.LiveState{}},
		} {
			got, err := db.State(ctx, tc.id)
			if err != nil {
				t.Fatal(err)
			}
			if !reflect.DeepEqual(got, tc.want) {
				t.Errorf("state of %d = %+v, want %+v", tc.id, got, tc.want)
			}
		}
	})
}

// CheckRights names what a role of bouncemilter's own lacks, as doctor
// shows it: here the right to write core__user_bans.
func TestCheckRightsPostgres(t *testing.T) {
	ctx := context.Background()
	dbURL := testenv.Postgres(t)
	inst := mgtest.NewPostgres(t, dbURL, sender)
	role := fmt.Sprintf("bm_rights_%d", time.Now().UnixNano()%1e9)
	admin := inst.SQL()
	if _, err := admin.Exec(`CREATE ROLE ` + role + ` LOGIN PASSWORD 'pw'`); err != nil {
		testenv.Require(t, false, "the test role may not create roles: "+err.Error())
	}
	t.Cleanup(func() {
		admin.Exec(`DROP OWNED BY ` + role)
		admin.Exec(`DROP ROLE ` + role)
	})
	for _, q := range []string{
		`GRANT USAGE ON SCHEMA public TO ` + role,
		`GRANT SELECT ON core__users, core__local_users, core__privileges, core__privileges_users, core__user_bans TO ` + role,
	} {
		if _, err := admin.Exec(q); err != nil {
			t.Fatal(err)
		}
	}
	u, _ := url.Parse(dbURL)
	u.User = url.UserPassword(role, "pw")
	cfg := inst.Config(t)
	if err := cfg.UseDatabase(strings.Replace(u.String(), "postgres://", "postgresql://", 1)); err != nil {
		t.Fatal(err)
	}
	db, err := mediagoblin.Open(ctx, cfg)
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	err = db.CheckRights(ctx)
	if !errors.Is(err, mediagoblin.ErrNoRights) || !strings.Contains(err.Error(), "INSERT on core__user_bans, DELETE on core__user_bans") {
		t.Fatalf("CheckRights without the ban grants = %v", err)
	}
	if _, err := admin.Exec(`GRANT INSERT, DELETE ON core__user_bans TO ` + role); err != nil {
		t.Fatal(err)
	}
	if err := db.CheckRights(ctx); err != nil {
		t.Fatalf("CheckRights with every grant = %v", err)
	}
}

// On SQLite the check takes the write lock: a connection that may not
// write (here a read-only one) fails it.
func TestCheckRightsSQLite(t *testing.T) {
	ctx := context.Background()
	inst := mgtest.NewSQLite(t, sender)
	cfg := inst.Config(t)
	for _, ro := range []bool{false, true} {
		cfg.ReadOnly = ro
		db, err := mediagoblin.Open(ctx, cfg)
		if err != nil {
			t.Fatal(err)
		}
		err = db.CheckRights(ctx)
		db.Close()
		if got := errors.Is(err, mediagoblin.ErrNoRights); got != ro {
			t.Errorf("read-only %v: CheckRights = %v", ro, err)
		}
	}
}
