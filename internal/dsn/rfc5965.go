package dsn

// This file recognises abuse feedback reports (ARF, RFC 5965): a
// multipart/report with report-type=feedback-report (section 2) and a
// message/feedback-report part (section 3). They say a recipient
// complained about a message, not that delivery failed, so they are never
// bounces.

// isFeedback reports whether m is an ARF report.
func isFeedback(m *msg) bool {
	return m.feedback || m.reportType == "feedback-report"
}
