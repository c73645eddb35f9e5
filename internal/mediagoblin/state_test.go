package mediagoblin_test

import (
	"context"
	"reflect"
	"testing"

	"github.com/bouncemilter/bouncemilter/internal/mediagoblin"
	"github.com/bouncemilter/bouncemilter/internal/mediagoblin/mgtest"
)

func TestState(t *testing.T) {
	backends(t, func(t *testing.T, inst *mgtest.Instance) {
		ctx := context.Background()
		bot := inst.AddUser(t, mgtest.User{Username: "bot", Email: "bot@nowhere.example"})
		real := inst.AddUser(t, mgtest.User{Username: "real", Email: "real@example.net", Verified: true, Moderator: true})
		inst.Ban(t, bot, "bounced")
		cfg, err := mediagoblin.LoadConfig(inst.IniPath)
		if err != nil {
			t.Fatal(err)
		}
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
