package dsn

// This file reads Sendmail's bounce text (sendmail/savemail.c), which comes
// alone from old Sendmail (V5, V8 without DSN) and before the RFC 3464 part
// from newer ones:
//
//	The original message was received at Thu, 29 Apr 2010 23:34:45 +0900
//	from host.example.com [192.0.2.1]
//
//	   ----- The following addresses had permanent fatal errors -----
//	<user@example.net>
//	    (reason: 550 5.1.1 <user@example.net>... User unknown)
//
//	   ----- Transcript of session follows -----
//	... while talking to mx.example.net.:
//	>>> RCPT To:<user@example.net>
//	<<< 550 5.1.1 <user@example.net>... User unknown
//	550 5.1.1 <user@example.net>... User unknown
//
//	   ----- Unsent message follows -----
//
// V5 Sendmail has only the transcript, where "554 <user@example.net>...
// reason" lines name the recipients.

var sendmailSignatures = []string{
	"----- the following addresses had permanent fatal errors -----",
	"----- the following addresses had transient non-fatal errors -----",
	"----- the following addresses had delivery problems -----",
	"----- transcript of session follows -----",
	"---the following addresses had delivery errors---",
}

func parseSendmail(m *msg) []Recipient {
	return signedRecipients(m, sendmailSignatures)
}
