package dsn

// This file reads Exim's plain-text bounce (Exim's "bounce_message_text",
// the default text of spec chapter 48, "Customizing bounce and warning
// messages"), which Exim sends unless configured for RFC 3464:
//
//	X-Failed-Recipients: user@example.net
//	Subject: Mail delivery failed: returning message to sender
//
//	This message was created automatically by mail delivery software.
//
//	A message that you sent could not be delivered to one or more of its
//	recipients. This is a permanent error. The following address(es) failed:
//
//	  user@example.net
//	    SMTP error from remote mail server after RCPT TO:<user@example.net>:
//	    host mx.example.net [192.0.2.1]: 550 5.1.1 User unknown
//
//	------ This is a copy of the message, including all the headers. ------
//
// The delay warning says "has not yet been delivered" and "No action is
// required on your part". X-Failed-Recipients names the failed addresses
// even when the text is translated (cPanel, Mail.ru, 1&1).

var eximSignatures = []string{
	"this message was created automatically by mail delivery software",
	"a message that you sent could not be delivered",
	"a message that you sent has not yet been delivered",
	"the following address(es) failed",
	"this message was created automatically by mail delivery system",
}

func parseExim(m *msg) []Recipient {
	rs := signedRecipients(m, eximSignatures)
	failed := failedRecipientsHeader(m)
	if len(rs) > 0 || len(failed) == 0 {
		return rs
	}
	text := m.body()
	for _, r := range failedOrder(m) {
		r.Diagnostic = firstDiagnostic(text)
		rs = append(rs, r)
	}
	markDelayed(m, rs, text)
	return rs
}
