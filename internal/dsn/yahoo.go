package dsn

// This file reads Yahoo! Mail's bounce, a qmail descendant with its own
// wording:
//
//	Sorry, we were unable to deliver your message to the following address.
//
//	<user@example.net>:
//	Remote host said: 550 5.1.1 <user@example.net>... User Unknown [RCPT_TO]
//
//	--- Below this line is a copy of the message.

var yahooSignatures = []string{
	"sorry, we were unable to deliver your message to the following address",
	"we were unable to deliver your message to the following address",
}

func parseYahoo(m *msg) []Recipient {
	return signedRecipients(m, yahooSignatures)
}
