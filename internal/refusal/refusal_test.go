package refusal_test

import (
	"errors"
	"fmt"
	"testing"

	"github.com/bouncemilter/bouncemilter/internal/refusal"
)

func TestIs(t *testing.T) {
	errVerified := refusal.New("verified")
	wrapped := fmt.Errorf("ban user 7: %w", errVerified)
	for _, tc := range []struct {
		err  error
		want bool
	}{
		{errVerified, true},
		{wrapped, true},
		{fmt.Errorf("two: %w, %w", errors.New("down"), errVerified), true},
		{refusal.Wrap(errors.New("dry run")), true},
		{errors.New("connection refused"), false},
		{nil, false},
	} {
		if got := refusal.Is(tc.err); got != tc.want {
			t.Errorf("Is(%v) = %v, want %v", tc.err, got, tc.want)
		}
	}
	if !errors.Is(wrapped, errVerified) {
		t.Error("a sentinel refusal is not found by errors.Is")
	}
	if refusal.Wrap(nil) != nil {
		t.Error("Wrap(nil) != nil")
	}
}
