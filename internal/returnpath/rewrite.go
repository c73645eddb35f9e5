package returnpath

import "time"

// Rewrite returns the signed envelope sender for a message from sender to
// recipients, or "" when the message is to keep its sender: the tag names
// one recipient, so a message to several (which MediaGoblin's verification
// mail never is) cannot carry one, and an unsignable sender stays as it is.
func (s *Signer) Rewrite(sender string, recipients []string, now time.Time) string {
	if len(recipients) != 1 {
		return ""
	}
	signed, err := s.Sign(sender, recipients[0], now)
	if err != nil {
		return ""
	}
	return signed
}
