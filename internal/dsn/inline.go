package dsn

import "strings"

// This file reads RFC 3464 per-recipient fields that stand in the text
// rather than in a message/delivery-status part: reports whose MIME
// structure was lost (a boundary that never occurs), and mail systems that
// copy the fields into the human-readable part:
//
//	Final-Recipient: RFC822; <user@example.com>
//	Action: failed
//	Status: 5.5.0

// parseInlineStatus is the recogniser for such reports.
func parseInlineStatus(m *msg) []Recipient {
	low := m.lower()
	i := lineIndex(low, "final-recipient:")
	if i < 0 {
		return nil
	}
	// Start at the group the field belongs to (Original-Recipient may
	// come first) and read to the returned message.
	if j := strings.LastIndex(low[:i], "\n\n"); j >= 0 {
		i = j + 2
	}
	text := m.text[i : i+returnedCut(low[i:])]
	var rep Report
	parseDeliveryStatus(&rep, text, m.maxRecipients+1, m.arena)
	return rep.Recipients
}

// lineIndex returns the index of the first occurrence of sub at the start
// of a line of s, or -1.
func lineIndex(s, sub string) int {
	for off := 0; ; {
		i := strings.Index(s[off:], sub)
		if i < 0 {
			return -1
		}
		i += off
		if i == 0 || s[i-1] == '\n' {
			return i
		}
		off = i + len(sub)
	}
}
