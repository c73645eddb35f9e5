// Package dsn reads bounce messages: RFC 3464 delivery status notifications
// (RFC 6522 multipart/report, RFC 6533 internationalized reports) and the
// common non-standard formats that real mail servers send instead (qmail,
// Exim, Sendmail, Exchange and Office 365, Gmail, Yahoo, Amazon SES, Google
// Groups, and plain-text bounces of other systems).
//
// It turns one message into a Report: whether it is a bounce at all, and for
// each recipient the address, action, status (RFC 3463), reason (in
// Sisimai's vocabulary) and whether the failure is permanent, plus the
// headers of the returned message when they are there. Auto-replies (RFC
// 3834), abuse reports (RFC 5965) and success notifications are recognised
// as such and are not bounces.
//
// A Parser holds limits (bytes read, recipients, MIME depth and parts), so
// that hostile input costs bounded time and memory; Parse and ParseAll use
// the defaults. ParseAll also reads files of several messages in mbox form.
//
// A message is read in place: its header blocks and MIME parts (RFC 5322,
// RFC 2045, RFC 2046) are slices of it, and a part is copied only to be
// decoded. ParseBytes neither copies nor changes the bytes it is given,
// which must not change while it runs, and no Report refers to them once
// it returns. What a parse does copy (the header fields it keeps, the text
// a person would read) goes to an arena that the next message reuses; the
// Report is copied out of it into memory of its own before it is returned.
//
// It does no I/O beyond reading the io.Reader it is given, and decides
// nothing: whether a bounce is authentic or should lead to any action is for
// the caller.
package dsn

// Report is what one bounce message says.
type Report struct {
	// Bounce is true when the message reports at least one failed or
	// delayed recipient. Success notifications, auto-replies (RFC 3834) and
	// abuse reports (RFC 5965) are not bounces.
	Bounce bool `json:"bounce"`
	// Kind is "bounce", "delivered", "vacation", "feedback" or "" (not a
	// report of any kind).
	Kind string `json:"kind,omitempty"`
	// Format names the recogniser that read the message: "rfc3464"
	// (also RFC 6533), "rfc3464-inline" (report fields in the text),
	// "qmail", "exim", "sendmail", "exchange", "gmail", "yahoo",
	// "amazonses", "googlegroups", "text" (any other plain-text bounce),
	// "returned-to" (only the returned message's To names the
	// recipient), "arf", "rfc3834", and "forwarded/..." for a bounce
	// attached to another message.
	Format string `json:"format,omitempty"`
	// ReportingMTA is the Reporting-MTA field (RFC 3464 section 2.2.2),
	// without its type.
	ReportingMTA string      `json:"reporting_mta,omitempty"`
	Recipients   []Recipient `json:"recipients"`
	// Original holds the headers of the returned message, when the bounce
	// includes them (message/rfc822 or text/rfc822-headers part, or quoted
	// text).
	Original Original `json:"original"`
	// Truncated is set when a limit of the Parser (size, recipients, MIME
	// depth or parts) cut the reading short: the report may be incomplete.
	Truncated bool `json:"truncated,omitempty"`
}

// Recipient is one per-recipient section of a report.
type Recipient struct {
	// Address is the failed address (Final-Recipient, RFC 3464 section
	// 2.3.2), lowercased domain, without angle brackets or address type.
	Address string `json:"address"`
	// OriginalAddress is the Original-Recipient field (section 2.3.1), if any.
	OriginalAddress string `json:"original_address,omitempty"`
	// Literal is true when Address is exactly what the report wrote in
	// its Final-Recipient or Original-Recipient field (for a report with
	// no delivery-status part, exactly what the recogniser read), after
	// nothing but removing the address type and angle brackets and
	// lowercasing the domain. An address the parser derived, cleaned,
	// decoded or guessed is shown but is never literal, and callers that
	// act on a bounce must act only on literal addresses.
	Literal bool `json:"literal"`
	// OriginalLiteral is Literal for OriginalAddress.
	OriginalLiteral bool `json:"original_literal,omitempty"`
	// FromOriginal is true when the report wrote no usable
	// Final-Recipient (none, or a pipe, a file, a source route) and
	// Address is its Original-Recipient: the address the message was
	// for, not the one that failed.
	FromOriginal bool `json:"-"`
	// Action is "failed", "delayed", "delivered", "relayed" or "expanded"
	// (section 2.3.3).
	Action string `json:"action"`
	// Status is the enhanced status code (RFC 3463), e.g. "5.1.1".
	Status string `json:"status"`
	// Reason is the cause in Sisimai's vocabulary: "userunknown",
	// "hostunknown", "mailboxfull", "filtered", "rejected", "blocked",
	// "expired", "suspend", "policyviolation", "spamdetected", ...
	Reason string `json:"reason"`
	// Permanent is true for a permanent failure (status class 5, or the
	// equivalent when there is no status).
	Permanent bool `json:"permanent"`
	// Diagnostic is the Diagnostic-Code text (section 2.3.6) or the remote
	// server's reply, without its type.
	Diagnostic string `json:"diagnostic,omitempty"`
	// RemoteMTA is the Remote-MTA field (section 2.3.5), without its type.
	RemoteMTA string `json:"remote_mta,omitempty"`
}

// Original is the header of the message that bounced.
type Original struct {
	MessageID string `json:"message_id,omitempty"`
	From      string `json:"from,omitempty"`
	To        string `json:"to,omitempty"`
	Subject   string `json:"subject,omitempty"`
	Date      string `json:"date,omitempty"`
}
