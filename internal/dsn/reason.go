package dsn

import (
	"strings"
	"sync"
)

// This file names the cause of a failure in Sisimai's vocabulary
// (https://libsisimai.org/en/reason/), from the status code (RFC 3463) and
// the words of the diagnostic. Callers act on "userunknown" and
// "hostunknown" (the address or its domain does not exist), so those are
// decided first and most carefully.

// reasonByStatus maps status codes whose meaning is unambiguous.
var reasonByStatus = map[string]string{
	"1.1":  "userunknown", // bad destination mailbox address (RFC 3463 3.2)
	"1.2":  "hostunknown", // bad destination system address
	"1.3":  "userunknown", // bad destination mailbox address syntax
	"1.6":  "hasmoved",    // destination mailbox has moved
	"1.10": "hostunknown", // null MX (RFC 7505 section 4.2)
	"2.2":  "mailboxfull",
	"2.3":  "mesgtoolarge",
	"3.1":  "systemfull",
	"3.4":  "mesgtoolarge",
	"4.7":  "expired", // delivery time expired
	"7.26": "authfailure",
	"7.23": "authfailure",
	"7.25": "requireptr",
}

// reasonByClass maps a status subject (RFC 3463 section 3.2 ff.) when the
// detail is not in reasonByStatus and the text says nothing specific.
var reasonBySubject = map[string]string{
	"1": "userunknown",
	"2": "mailboxfull",
	"3": "systemerror",
	"4": "networkerror",
	"5": "systemerror",
	"6": "contenterror",
	"7": "securityerror",
}

// reasonPhrases are looked for, in this order, in the lowercased
// diagnostic; the first match wins.
var reasonPhrases = []struct {
	reason  string
	phrases []string
}{
	// The sender, not the recipient, was refused: these must never read
	// as "userunknown" below.
	{"rejected", []string{"sender address rejected", "domain of sender address", "after mail from",
		"in reply to mail from command", "sender rejected", "sender verify failed", "sender domain",
		"mailfrom domain", "sender address is not allowed"}},
	{"mailboxfull", []string{"mailbox full", "mailbox is full", "mailbox quota", "over quota", "overquota",
		"quota exceeded", "exceeded storage", "exceeds quota", "quota exceed", "storage quota", "insufficient disk space",
		"full mailbox", "mailbox size limit", "disk quota", "is over its quota", "user is over", "mailbox has exceeded",
		"not enough storage", "mailfolder is full", "account is full", "recipient's mailbox is full", "mailbox exceeded"}},
	{"mesgtoolarge", []string{"message too large", "message too big", "message is too large", "message is too big",
		"message size exceeds", "exceeds size limit", "message exceeds", "size limit", "too large for", "message length exceeds",
		"mail size exceeds", "message size too large", "exceeds the maximum size", "exceeded the maximum size"}},
	{"hostunknown", []string{"host unknown", "unknown host", "host not found", "domain not found", "no such domain",
		"domain does not exist", "domain doesn't exist", "unrouteable mail domain", "unroutable mail domain",
		"host or domain name not found", "unknown domain", "domain unknown", "nxdomain",
		"no mx record", "invalid domain", "domain name not found", "domain is not valid", "dns error: domain", "null mx",
		"host does not exist", "unrouteable domain", "no route to host for domain",
		"domain isn't in my list of allowed rcpthosts", "the domain name does not exist"}},
	{"suspend", []string{"account disabled", "mailbox disabled", "account has been disabled", "suspended",
		"is disabled", "account is disabled", "mailbox is disabled", "deactivated", "inactive", "account expired",
		"mailbox is inactive", "account is locked", "has been temporarily disabled", "currently suspended",
		"not active", "mailbox unavailable or access denied", "blocked for abuse", "temporary locked",
		"temporarily locked", "account locked"}},
	{"userunknown", []string{"user unknown", "unknown user", "no such user", "no such mailbox", "user not found",
		"mailbox not found", "recipient not found", "does not exist", "doesn't exist", "unknown recipient",
		"recipient unknown", "invalid recipient", "invalid mailbox", "not a valid mailbox", "no mailbox",
		"unrouteable address", "unroutable address", "no such recipient", "unknown local part", "address unknown",
		"user invalid", "invalid user", "bad destination mailbox", "unknown address", "no account", "mailbox does not exist",
		"addressee unknown", "user does not exist", "unknown or illegal alias", "no such account", "user doesn't exist",
		"recipient address rejected: user unknown", "not our customer", "no such person", "unknown mailbox",
		"mailbox unavailable", "mailbox not available", "invalid address", "address does not exist",
		"couldn't find any host named", "no valid recipients", "recipient is not exist", "user unknown in",
		"account is unavailable", "email account that you tried to reach does not exist", "not a known user",
		"no such local user", "this user doesn't have", "user no longer exists", "unknown account", "address not found",
		"mailbox unknown", "recipient rejected", "bad recipient", "invalid-recipient", "not listed in",
		"the recipient was not found", "mailbox name not allowed", "user does not have", "unknown e-mail address",
		"destination address doesn't exist", "no mailbox here", "recipient does not exist", "rcpt unknown",
		"the email address you entered couldn't be found", "not found in directory",
		"no longer exists", "account has been closed", "account is closed", "account closed",
		// Office 365's directory-based edge blocking refuses unknown
		// recipients with 5.4.1 and these words.
		"recipient address rejected: access denied"}},
	{"hasmoved", []string{"has moved", "has been moved"}},
	{"norelaying", []string{"relay access denied", "relaying denied", "not permitted to relay", "relay not permitted",
		"unable to relay", "relaying not allowed", "relay denied", "we do not relay", "not allowed to relay",
		"relaying mail to", "relay prohibited", "no relaying"}},
	{"virusdetected", []string{"virus", "malware", "infected"}},
	{"blocked", []string{"blacklist", "black list", "blocklist", "block list", "blocked", "dnsbl", "rbl", "spamhaus",
		"listed at", "listed in", "poor reputation", "bad reputation", "client host rejected", "refused to talk",
		"connection refused", "access denied", "not allowed to send", "reverse dns", "ptr record", "rejected by ip",
		"ip address rejected", "your ip"}},
	{"spamdetected", []string{"spam", "junk mail", "uce ", "unsolicited", "bulk mail"}},
	{"expired", []string{"delivery time expired", "message expired", "retry timeout", "retry time", "too long",
		"giving up", "could not be delivered within", "have not been able to deliver", "has not been delivered",
		"undeliverable for", "expired"}},
	{"securityerror", []string{"authentication required", "tls required", "must issue a starttls", "starttls",
		"authentication failed", "encryption required", "spf", "dkim", "dmarc"}},
	{"policyviolation", []string{"policy", "not allowed", "prohibited", "violat"}},
	{"filtered", []string{"filtered", "content filter", "rejected by"}},
	{"networkerror", []string{"network", "connection timed out", "timed out", "lost connection", "unreachable",
		"conversation with", "dns", "mx"}},
	{"systemfull", []string{"system full", "out of disk", "insufficient system storage"}},
	{"toomanyconn", []string{"too many connections", "too many concurrent"}},
	{"exceedlimit", []string{"exceeds the limit", "limit exceeded", "too many recipients", "rate limit"}},
	{"contenterror", []string{"content", "header", "8-bit", "8bit"}},
	{"systemerror", []string{"system error", "local error", "internal error", "temporary failure", "mail loop",
		"loops back", "too many hops", "configuration error", "server error"}},
	{"rejected", []string{"rejected", "refused", "denied", "not accepted", "sender address"}},
}

// dataStage are the words of a reply to DATA or to the end of the message
// text (RFC 5321 section 4.1.1.4). A "user unknown" there comes from a
// content filter (Japanese mobile carriers do this), not from the address,
// so Sisimai calls it "filtered".
var dataStage = []string{"after end of data", "in reply to end of data command", "in reply to data command",
	"after data", ">>> data", "did not like our final data", "did not like our data"}

// classify names the reason for a failure with the given status (maybe
// "") and diagnostic text d, ASCII-lowercased (asciiLower) by the caller,
// which can often take it from a lowercased copy it already has.
func classify(status, d string) string {
	r := classifyText(status, d)
	if r == "userunknown" {
		for _, p := range dataStage {
			if strings.Contains(d, p) {
				return "filtered"
			}
		}
	}
	return r
}

// classifyText is classify of the lowercased diagnostic d, before the
// data-stage words are looked at.
func classifyText(status, d string) string {
	sub := ""
	if status != "" {
		sub = status[strings.IndexByte(status, '.')+1:]
		switch sub {
		case "1.10":
			// RFC 7505 section 4.2 gives 5.1.10 to a null MX;
			// Microsoft uses it for "recipient not found".
			if strings.Contains(d, "null mx") {
				return "hostunknown"
			}
			return "userunknown"
		case "1.7", "1.8":
			// Bad sender mailbox or system address: the
			// recipient may well exist.
			return "rejected"
		case "1.1", "1.2", "2.2", "1.6":
			// These codes are unambiguous and the diagnostic often
			// carries words ("rejected", "policy") that would mislead.
			return reasonByStatus[sub]
		}
	}
	if i := firstPhraseGroup(d); i >= 0 {
		if i == len(reasonPhrases)-1 && strings.HasPrefix(sub, "1.") {
			// A bare "rejected" of a destination address (x.1.x,
			// RFC 3463 section 3.2).
			return "userunknown"
		}
		return reasonPhrases[i].reason
	}
	if sub == "" {
		if d == "" {
			return "undefined"
		}
		return "onhold"
	}
	if r, ok := reasonByStatus[sub]; ok {
		return r
	}
	if strings.HasSuffix(sub, ".0") || sub == "0.0" {
		return "undefined"
	}
	if r, ok := reasonBySubject[sub[:strings.IndexByte(sub, '.')]]; ok {
		return r
	}
	return "undefined"
}

// firstPhraseGroup returns the index of the first group of reasonPhrases
// with a phrase that occurs in d, or -1: what looking for each phrase of
// each group in turn finds, in one pass over d instead of one per phrase
// (there are some two hundred).
func firstPhraseGroup(d string) int {
	return phraseIndex().firstGroup(d)
}

// firstGroup returns the lowest group with a phrase that occurs in d, or
// -1, in one pass over d: at each position, only the phrases that start
// with its byte, and only where the two bytes there start one.
func (idx *phraseTable) firstGroup(d string) int {
	best := idx.groups
	for i := 0; i < len(d) && best > 0; i++ {
		// Most positions start no phrase: their first two bytes say
		// so without looking at the phrases.
		if i+1 < len(d) && !idx.bigram(d[i], d[i+1]) {
			continue
		}
		for _, r := range idx.first[d[i]] {
			if r.group < best && strings.HasPrefix(d[i:], r.phrase) {
				best = r.group
			}
		}
	}
	if best == idx.groups {
		return -1
	}
	return best
}

type phraseRef struct {
	phrase string
	group  int
}

// phraseTable lists groups of phrases (reasonPhrases, delayPhrases, the
// recognisers' signatures) by their first byte, and marks the pairs of
// bytes they start with.
type phraseTable struct {
	first   [256][]phraseRef
	bigrams [1 << 16 / 64]uint64
	groups  int // groups are numbered 0 to groups-1
}

// newPhraseTable indexes the phrases (none empty) of each group.
func newPhraseTable(groups ...[]string) *phraseTable {
	t := &phraseTable{groups: len(groups)}
	for g, phrases := range groups {
		for _, p := range phrases {
			t.add(p, g)
		}
	}
	return t
}

func (t *phraseTable) bigram(a, b byte) bool {
	k := int(a)<<8 | int(b)
	return t.bigrams[k/64]&(1<<(k%64)) != 0
}

// phraseIndex builds the phraseTable of reasonPhrases once, a group a
// reason.
var phraseIndex = sync.OnceValue(func() *phraseTable {
	groups := make([][]string, len(reasonPhrases))
	for g, rp := range reasonPhrases {
		groups[g] = rp.phrases
	}
	return newPhraseTable(groups...)
})

// add indexes the phrase p (not empty) as group g. A phrase of one byte
// marks every pair that starts with it.
func (t *phraseTable) add(p string, g int) {
	t.first[p[0]] = append(t.first[p[0]], phraseRef{p, g})
	for b := 0; b < 256; b++ {
		if len(p) > 1 && b != int(p[1]) {
			continue
		}
		k := int(p[0])<<8 | b
		t.bigrams[k/64] |= 1 << (k % 64)
	}
}
