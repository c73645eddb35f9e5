package dsn

import (
	"bytes"
	"encoding/base64"
	"fmt"
	"math/rand"
	"runtime"
	"strings"
	"syscall"
	"testing"
)

// BenchmarkHostile compares what hostile messages cost with a genuine
// bounce of the same size: Postfix's report returning a message with a
// photo attached. Each is read with Parse from a bytes.Reader, as the
// milter's bounce handler does, copy of the input included. Every hostile input must stay within 4x the genuine
// bounce's time (ns/op) and memory (B/op) at each size, up to the milter's
// largest message (10 MB, filter.DefaultMaxSize). Run:
//
//	go test -run '^$' -bench Hostile -benchtime 3x ./internal/dsn
func BenchmarkHostile(b *testing.B) {
	for _, size := range []int{256 << 10, 1 << 20, 10<<20 - 64<<10} {
		for _, h := range hostileInputs {
			b.Run(fmt.Sprintf("%s/%dK", h.name, size>>10), func(b *testing.B) {
				msg := h.make(size)
				// Every input starts from the same heap: the
				// garbage of building it is not charged to it.
				runtime.GC()
				// CPU time of this thread, beside the wall time
				// that other load on the machine inflates.
				runtime.LockOSThread()
				defer runtime.UnlockOSThread()
				b.ReportAllocs()
				b.ResetTimer()
				start := threadCPU()
				for i := 0; i < b.N; i++ {
					if _, err := Parse(bytes.NewReader(msg)); err != nil {
						b.Fatal(err)
					}
				}
				b.ReportMetric(float64(threadCPU()-start)/float64(b.N), "cpu-ns/op")
			})
		}
	}
}

// threadCPU returns the CPU time the calling thread used, in nanoseconds.
func threadCPU() int64 {
	var ru syscall.Rusage
	if err := syscall.Getrusage(rusageThread, &ru); err != nil {
		return 0
	}
	return ru.Utime.Nano() + ru.Stime.Nano()
}

// rusageThread is RUSAGE_THREAD of getrusage(2) (Linux).
const rusageThread = 1

// TestHostileInputsParse checks that each hostile input is read without
// error and that what it reports stays within the limits; the benchmark
// measures their cost.
func TestHostileInputsParse(t *testing.T) {
	for _, h := range hostileInputs {
		rep, err := Parse(bytes.NewReader(h.make(200 << 10)))
		if err != nil {
			t.Errorf("%s: %v", h.name, err)
			continue
		}
		if len(rep.Recipients) > DefaultMaxRecipients {
			t.Errorf("%s: %d recipients", h.name, len(rep.Recipients))
		}
		for _, r := range rep.Recipients {
			if len(r.Diagnostic) > maxDiagnostic {
				t.Errorf("%s: diagnostic of %d bytes", h.name, len(r.Diagnostic))
			}
		}
		if h.name == "genuine" && (!rep.Bounce || len(rep.Recipients) != 1) {
			t.Errorf("genuine: %+v", rep)
		}
	}
}

const hostileHeader = "Return-Path: <>\r\nFrom: MAILER-DAEMON@mx.example.org (Mail Delivery System)\r\n" +
	"To: notice@media.example.org\r\nSubject: Undelivered Mail Returned to Sender\r\n"

var hostileInputs = []struct {
	name string
	make func(size int) []byte
}{
	{"genuine", genuineWithPhoto},
	{"addresses-one-line", func(n int) []byte { return packedAddresses(n, 1) }},
	{"addresses-few-lines", func(n int) []byte { return packedAddresses(n, 4) }},
	{"recipient-lines", recipientLinesInput},
	{"many-recipients", manyRecipients},
	{"forwarded-chain", forwardedChain},
	{"deep-mime", deepMIME},
	{"long-headers", longHeaders},
}

// genuineWithPhoto is Postfix's bounce of a message carrying a photo.
func genuineWithPhoto(size int) []byte {
	var b bytes.Buffer
	b.WriteString(hostileHeader + "MIME-Version: 1.0\r\nContent-Type: multipart/report; report-type=delivery-status; boundary=\"R\"\r\n\r\n" +
		"--R\r\nContent-Type: text/plain\r\n\r\nThis is the mail system at host mx.example.org.\r\n\r\n" +
		"I'm sorry to have to inform you that your message could not\r\nbe delivered to one or more recipients.\r\n\r\n" +
		"<nosuchuser@example.net>: host mx.example.net[192.0.2.1] said: 550 5.1.1\r\n    <nosuchuser@example.net>: Recipient address rejected: User unknown\r\n\r\n" +
		"--R\r\nContent-Type: message/delivery-status\r\n\r\nReporting-MTA: dns; mx.example.org\r\n\r\n" +
		"Final-Recipient: rfc822; nosuchuser@example.net\r\nAction: failed\r\nStatus: 5.1.1\r\n" +
		"Diagnostic-Code: smtp; 550 5.1.1 <nosuchuser@example.net>: Recipient address rejected: User unknown\r\n\r\n" +
		"--R\r\nContent-Type: message/rfc822\r\n\r\nFrom: someone@media.example.org\r\nTo: nosuchuser@example.net\r\nSubject: photo\r\n" +
		"MIME-Version: 1.0\r\nContent-Type: multipart/mixed; boundary=\"P\"\r\n\r\n--P\r\nContent-Type: text/plain\r\n\r\nHere it is.\r\n" +
		"--P\r\nContent-Type: image/jpeg\r\nContent-Transfer-Encoding: base64\r\n\r\n")
	writeBase64(&b, size-b.Len()-40)
	b.WriteString("\r\n--P--\r\n\r\n--R--\r\n")
	return b.Bytes()
}

// writeBase64 writes about n bytes of random base64 in 76-column lines.
func writeBase64(b *bytes.Buffer, n int) {
	raw := make([]byte, max(n, 0)*3/4*76/78) // 76 columns and CRLF
	rand.New(rand.NewSource(1)).Read(raw)
	s := base64.StdEncoding.EncodeToString(raw)
	for len(s) > 76 {
		b.WriteString(s[:76])
		b.WriteString("\r\n")
		s = s[76:]
	}
	b.WriteString(s)
}

// packedAddresses is a plain-text "bounce" whose text packs addresses next
// to failure words on one or a few lines.
func packedAddresses(size, lines int) []byte {
	var b bytes.Buffer
	b.WriteString(hostileHeader + "\r\n")
	per := (size - b.Len()) / lines
	for l := 0; l < lines; l++ {
		start := b.Len()
		b.WriteString("There was an error delivering your mail to: 550 5.1.1 user unknown ")
		for i := 0; b.Len()-start < per; i++ {
			fmt.Fprintf(&b, "u%d@example.net <x%d@example.net> ", i, i)
		}
		b.WriteString("\r\n")
	}
	return b.Bytes()
}

// recipientLinesInput names a recipient on each line, qmail's way.
func recipientLinesInput(size int) []byte {
	var b bytes.Buffer
	b.WriteString(hostileHeader + "\r\nHi. This is the qmail-send program at mx.example.org.\r\n" +
		"I'm afraid I wasn't able to deliver your message to the following addresses.\r\n\r\n")
	for i := 0; b.Len() < size; i++ {
		fmt.Fprintf(&b, "<u%d@example.net>: 550 5.1.1 user unknown %s\r\n", i, strings.Repeat("x", i%200))
	}
	return b.Bytes()
}

// manyRecipients is a delivery-status part with a recipient every few
// lines.
func manyRecipients(size int) []byte {
	var b bytes.Buffer
	b.WriteString(hostileHeader + "Content-Type: multipart/report; report-type=delivery-status; boundary=R\r\n\r\n" +
		"--R\r\nContent-Type: message/delivery-status\r\n\r\nReporting-MTA: dns; mx.example.org\r\n\r\n")
	for i := 0; b.Len() < size-20; i++ {
		fmt.Fprintf(&b, "Final-Recipient: rfc822; u%d@example.net\r\nAction: failed\r\nStatus: 5.1.1\r\n"+
			"Diagnostic-Code: smtp; 550 5.1.1 user unknown\r\n\r\n", i)
	}
	b.WriteString("--R--\r\n")
	return b.Bytes()
}

// forwardedChain is a message forwarding a message forwarding ... (12
// levels), the innermost carrying filler, none of them a bounce.
func forwardedChain(size int) []byte {
	const depth = 12
	var head, tail strings.Builder
	for i := 0; i < depth; i++ {
		fmt.Fprintf(&head, "From: a%d@example.org\r\nSubject: Fwd: undelivered\r\nMIME-Version: 1.0\r\n"+
			"Content-Type: multipart/mixed; boundary=\"F%d\"\r\n\r\n--F%d\r\nContent-Type: text/plain\r\n\r\nsee attached\r\n"+
			"--F%d\r\nContent-Type: message/rfc822\r\n\r\n", i, i, i, i)
		tail.WriteString(fmt.Sprintf("\r\n--F%d--\r\n", depth-1-i))
	}
	var b bytes.Buffer
	b.WriteString(hostileHeader)
	b.WriteString("MIME-Version: 1.0\r\nContent-Type: multipart/mixed; boundary=\"T\"\r\n\r\n--T\r\nContent-Type: message/rfc822\r\n\r\n")
	b.WriteString(head.String())
	b.WriteString("Subject: filler\r\n\r\n")
	writeBase64(&b, size-b.Len()-tail.Len()-10)
	b.WriteString(tail.String())
	b.WriteString("\r\n--T--\r\n")
	return b.Bytes()
}

// deepMIME nests multiparts a thousand deep around filler.
func deepMIME(size int) []byte {
	const depth = 1000
	var b bytes.Buffer
	b.WriteString(hostileHeader)
	for i := 0; i < depth; i++ {
		fmt.Fprintf(&b, "Content-Type: multipart/mixed; boundary=\"b%d\"\r\n\r\n--b%d\r\n", i, i)
	}
	b.WriteString("Content-Type: text/plain\r\n\r\n")
	var tail strings.Builder
	for i := depth - 1; i >= 0; i-- {
		fmt.Fprintf(&tail, "\r\n--b%d--\r\n", i)
	}
	for b.Len() < size-tail.Len() {
		b.WriteString("<victim@example.net>: 550 5.1.1 user unknown\r\n")
	}
	b.WriteString(tail.String())
	return b.Bytes()
}

// longHeaders has one huge folded X-Failed-Recipients field and a long
// Subject.
func longHeaders(size int) []byte {
	var b bytes.Buffer
	b.WriteString(hostileHeader + "Subject: " + strings.Repeat("undeliverable ", 1000) + "\r\nX-Failed-Recipients: a@example.net")
	for i := 0; b.Len() < size-100; i++ {
		fmt.Fprintf(&b, ",\r\n u%d@example.net", i)
	}
	b.WriteString("\r\n\r\nDelivery failed: 550 5.1.1 user unknown\r\n")
	return b.Bytes()
}
