package dsn

import (
	"encoding/json"
	"strings"
)

// This file reads Amazon SES notifications delivered by e-mail through SNS
// (https://docs.aws.amazon.com/ses/latest/dg/notification-contents.html):
// the body is a JSON object,
//
//	{"notificationType": "Bounce",
//	 "bounce": {"bounceType": "Permanent",
//	            "bouncedRecipients": [{"emailAddress": "a@b", "action": "failed",
//	                                   "status": "5.1.1", "diagnosticCode": "smtp; 550 ..."}],
//	            "reportingMTA": "dsn; a27-23.smtp-out.us-west-2.amazonses.com"},
//	 "mail": {...}}
//
// "Complaint" and "Delivery" notifications are not bounces. The JSON may be
// wrapped in an SNS envelope ({"Type": "Notification", "Message": "<JSON>"}).

type sesNotification struct {
	NotificationType string `json:"notificationType"`
	EventType        string `json:"eventType"`
	Bounce           struct {
		BounceType        string `json:"bounceType"`
		ReportingMTA      string `json:"reportingMTA"`
		BouncedRecipients []struct {
			EmailAddress   string `json:"emailAddress"`
			Action         string `json:"action"`
			Status         string `json:"status"`
			DiagnosticCode string `json:"diagnosticCode"`
		} `json:"bouncedRecipients"`
	} `json:"bounce"`
	// SNS envelope.
	Type    string `json:"Type"`
	Message string `json:"Message"`
}

// sesJSON returns the notification in m's text, if there is one.
func sesJSON(m *msg) (*sesNotification, bool) {
	i := strings.IndexByte(m.text, '{')
	if i < 0 || !strings.Contains(m.text, "notificationType") && !strings.Contains(m.text, "eventType") {
		return nil, false
	}
	j := strings.LastIndexByte(m.text, '}')
	if j < i {
		return nil, false
	}
	// Mail gateways break the long JSON line with "!" + CRLF + space
	// (RFC 5322 section 2.1.1's 998-byte limit).
	s := strings.NewReplacer("!\n ", "", "\n ", "", "\n", "").Replace(m.text[i : j+1])
	var n sesNotification
	if err := json.NewDecoder(strings.NewReader(s)).Decode(&n); err != nil {
		return nil, false
	}
	if n.Type == "Notification" && n.Message != "" {
		var inner sesNotification
		if err := json.Unmarshal([]byte(n.Message), &inner); err != nil {
			return nil, false
		}
		n = inner
	}
	return &n, n.NotificationType != "" || n.EventType != ""
}

// parseSES is the recogniser for bounce notifications.
func parseSES(m *msg) []Recipient {
	n, ok := sesJSON(m)
	if !ok || n.NotificationType != "Bounce" && n.EventType != "Bounce" {
		return nil
	}
	var rs []Recipient
	for _, b := range n.Bounce.BouncedRecipients {
		r := Recipient{
			Address:    normalizeAddress(cleanAddress(b.EmailAddress)),
			Action:     strings.ToLower(b.Action),
			Status:     findStatus(b.Status),
			Diagnostic: stripType(b.DiagnosticCode),
			RemoteMTA:  stripType(n.Bounce.ReportingMTA),
		}
		// Literal only as the JSON text has it, not after decoding
		// its escapes.
		r.Literal = isLiteral(b.EmailAddress, r.Address) &&
			(strings.Contains(m.text, `"`+b.EmailAddress+`"`) || strings.Contains(m.text, `"`+b.EmailAddress+`\"`))
		if r.Action == "" {
			r.Action = "failed"
			if n.Bounce.BounceType == "Transient" {
				r.Action = "delayed"
			}
		}
		rs = append(rs, r)
	}
	return rs
}

// sesOther reports SES notifications that are not bounces (complaints,
// deliveries), so that no other recogniser reads their JSON as text.
func sesOther(m *msg) string {
	n, ok := sesJSON(m)
	if !ok {
		return ""
	}
	switch t := n.NotificationType + n.EventType; t {
	case "Complaint":
		return "feedback"
	case "Delivery":
		return "delivered"
	}
	return ""
}
