package dsn

// This file reads the non-delivery reports of Microsoft Exchange (2003 and
// later) and Office 365 / Outlook.com when they come without a usable
// delivery-status part:
//
// Exchange 2003:
//
//	Your message
//	  To:      user@example.net
//	  Subject: ...
//	did not reach the following recipient(s):
//	user@example.net on Thu, 29 Apr 2010 00:00:00 -0000
//	    The recipient name is not recognized
//	    MSEXCH:IMS:...
//
// Exchange 2007 and later, Office 365:
//
//	Delivery has failed to these recipients or groups:
//	user@example.net (user@example.net)<mailto:user@example.net>
//	The email address you entered couldn't be found. ...
//	Diagnostic information for administrators:
//	Generating server: ...
//	Remote Server returned '550 5.1.1 RESOLVER.ADR.RecipNotFound; not found'

var exchangeSignatures = []string{
	"did not reach the following recipient(s)",
	"delivery has failed to these recipients or groups",
	"your message couldn't be delivered",
	"your message wasn't delivered",
	"rejected your message to the following email addresses",
	"the following recipient(s) cannot be reached",
	"your message did not reach some or all of the intended recipients",
	"delivery is delayed to these recipients or groups",
}

func parseExchange(m *msg) []Recipient {
	return signedRecipients(m, exchangeSignatures)
}
