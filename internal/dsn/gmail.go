package dsn

// This file reads Gmail's and Google Workspace's plain-text bounces (before
// Google sent RFC 3464 reports, and still from some of its systems):
//
//	Delivery to the following recipient failed permanently:
//
//	     user@example.net
//
//	Technical details of permanent failure:
//	Google tried to deliver your message, but it was rejected by the server
//	for the recipient domain example.net by mx.example.net. [192.0.2.1].
//
//	The error that the other server returned was:
//	550 5.1.1 <user@example.net>... User Unknown
//
//	----- Original message -----
//
// "Delivery to the following recipient has been delayed" is the warning.

var gmailSignatures = []string{
	"delivery to the following recipient failed permanently",
	"delivery to the following recipients failed permanently",
	"delivery to the following recipient has been delayed",
	"delivery to the following recipients has been delayed",
	"delivery to the following recipient failed",
	"message not delivered",
}

func parseGmail(m *msg) []Recipient {
	return signedRecipients(m, gmailSignatures)
}
