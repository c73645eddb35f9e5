package filter

import (
	"context"

	"github.com/bouncemilter/bouncemilter/internal/bounce"
)

// Guard decides, before MediaGoblin's mail leaves, whether it goes to
// addresses that cannot receive it (see package guard). It reports true
// when it has journalled what the bounce would have led to and the message
// is to be discarded.
type Guard interface {
	Stop(ctx context.Context, env bounce.Envelope) (bool, error)
}

// stopped asks the guard about the outgoing message; on any error of its
// own the message goes.
func (s *session) stopped(ctx context.Context) bool {
	if s.f.cfg.Guard == nil {
		return false
	}
	stop, err := s.f.cfg.Guard.Stop(ctx, s.env)
	if err != nil {
		s.f.log.Error("guarding outgoing mail failed; sending it", "queue_id", s.env.QueueID, "err", err)
		return false
	}
	return stop
}
