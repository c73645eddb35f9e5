package dsn

import "strings"

// This file reads Google Groups' rejections: a message to a group that does
// not exist or does not accept the sender comes back from
// mailer-daemon@googlemail.com, in the sender's language, naming the group
// only in X-Failed-Recipients:
//
//	From: Mail Delivery Subsystem <mailer-daemon@googlemail.com>
//	X-Failed-Recipients: group@googlegroups.com
//	Subject: Delivery Status Notification (Failure)
//
//	Hello user@example.com,
//	We're writing to let you know that the group you tried to contact
//	(group) may not exist, or you may not have permission to post messages
//	to the group. ...

// parseGoogleGroups is the recogniser for them.
func parseGoogleGroups(m *msg) []Recipient {
	if !m.headerOK {
		return nil
	}
	var rs []Recipient
	for _, f := range failedOrder(m) {
		if !strings.HasSuffix(strings.ToLower(f.Address), "@googlegroups.com") {
			continue
		}
		rs = append(rs, Recipient{
			Address: f.Address,
			Literal: f.Literal,
			Action:  "failed",
			// Sisimai's reading: the group refused the sender.
			Reason:     "rejected",
			Diagnostic: strings.TrimSpace(firstParagraph(m.text)),
		})
	}
	return rs
}

// firstParagraph returns the text up to its first blank line after some
// text, capped.
func firstParagraph(s string) string {
	s = strings.TrimLeft(s, "\n ")
	if i := strings.Index(s, "\n\n"); i >= 0 {
		s = s[:i]
	}
	if len(s) > 500 {
		s = s[:500]
	}
	return s
}
