package dsn

// This file reads qmail's bounce (qmail-send's "bounce message format",
// https://cr.yp.to/proto/qsbmf.txt) and its descendants (netqmail,
// notqmail, Yahoo's and Mail.ru's older servers, vpopmail):
//
//	Hi. This is the qmail-send program at mx.example.com.
//	I'm afraid I wasn't able to deliver your message to the following addresses.
//	This is a permanent error; I've given up. Sorry it didn't work out.
//
//	<user@example.net>:
//	192.0.2.1 does not like recipient.
//	Remote host said: 550 5.1.1 <user@example.net>... User unknown
//	Giving up on 192.0.2.1.
//
//	--- Below this line is a copy of the message.
//
// Each recipient paragraph starts with "<address>:"; qmail's own status
// comes as "(#5.1.1)" at the end of the paragraph.

var qmailSignatures = []string{
	"this is the qmail-send program",
	"i'm afraid i wasn't able to deliver your message",
	"i'm not going to try again; this message has been in the queue too long",
	"this is the mail transfer agent at",
}

func parseQmail(m *msg) []Recipient {
	return signedRecipients(m, qmailSignatures)
}
