package dsn

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"os"
	"strings"
	"testing"

	"github.com/emersion/go-message"
	// go-message decodes charsets only with this registered.
	_ "github.com/emersion/go-message/charset"
)

// The MIME reader of this package (rfc5322.go, rfc2046.go) reads messages
// in place, where go-message reads them from a stream. These tests hold it
// to go-message's reading: the same tree of parts, the same content of
// each, the same end of each multipart body, on the samples, the corpus
// and whatever the fuzzer makes.

// mimeTree describes how a message reads: one line per entity, with its
// depth, media type and content, and how each multipart body ended.
func mimeTree(b []byte) string {
	var out strings.Builder
	// The headers are read into an arena, as a parse reads them.
	a := getArena()
	defer putArena(a)
	var walk func(e *entity, depth int)
	walk = func(e *entity, depth int) {
		if depth > 5 {
			return
		}
		fmt.Fprintf(&out, "%d %q", depth, e.mediaType)
		if strings.HasPrefix(e.mediaType, "multipart/") {
			out.WriteString("\n")
			mr := newMultipartReader(e, true, a)
			for {
				part, err := mr.next()
				if part == nil {
					fmt.Fprintf(&out, "%d end %s\n", depth, endClass(err))
					return
				}
				walk(part, depth+1)
			}
		}
		fmt.Fprintf(&out, " %q\n", e.content(1<<20, nil))
	}
	h, n, err := readHeader(b, true, a)
	if err != nil {
		return "unreadable\n"
	}
	walk(newEntity(h, b[n:], a), 0)
	return out.String()
}

// goMessageTree is mimeTree as go-message reads the message.
func goMessageTree(b []byte) string {
	var out strings.Builder
	var walk func(e *message.Entity, depth int)
	walk = func(e *message.Entity, depth int) {
		if depth > 5 {
			return
		}
		t, _, err := e.Header.ContentType()
		if err != nil {
			t = e.Header.Get("Content-Type")
		}
		fmt.Fprintf(&out, "%d %q", depth, t)
		if mr := e.MultipartReader(); mr != nil {
			out.WriteString("\n")
			for {
				part, err := mr.NextPart()
				if part == nil || err != nil && !message.IsUnknownCharset(err) && !message.IsUnknownEncoding(err) {
					fmt.Fprintf(&out, "%d end %s\n", depth, endClass(err))
					return
				}
				walk(part, depth+1)
			}
		}
		body, _ := io.ReadAll(io.LimitReader(e.Body, 1<<20))
		fmt.Fprintf(&out, " %q\n", body)
	}
	e, err := message.Read(bytes.NewReader(b))
	if e == nil {
		return "unreadable\n"
	}
	_ = err // an unknown charset or encoding: readable all the same
	walk(e, 0)
	return out.String()
}

func endClass(err error) string {
	switch {
	case err == io.EOF:
		return "closed"
	case err == errEndedEarly || err != nil && endedEarly(err):
		return "ended early"
	default:
		return "broken"
	}
}

// endedEarly reports whether go-message's multipart error says only that
// the input ended before the closing boundary (it wraps the cause with %v,
// so only its text tells).
func endedEarly(err error) bool {
	return errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF) ||
		strings.HasSuffix(err.Error(), ": EOF") || strings.HasSuffix(err.Error(), ": unexpected EOF")
}

// comparable reports whether go-message reads b in a way this package
// deliberately does not copy: it fails on a line longer than its 4 KiB
// buffer between parts, and a header block that ends in a bare carriage
// return. Larger than the header bound is left to the limits tests.
func comparable(b []byte) bool {
	if len(b) > 64<<10 {
		return false
	}
	for _, l := range bytes.Split(b, []byte("\n")) {
		if len(l) >= 4000 {
			return false
		}
	}
	return !bytes.HasSuffix(b, []byte("\r"))
}

func TestMIMEReadsAsGoMessage(t *testing.T) {
	for _, f := range samplesAndCorpus(t) {
		b, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		b = skipFromLine(b)
		if !comparable(b) {
			continue
		}
		if got, want := mimeTree(b), goMessageTree(b); got != want {
			t.Errorf("%s: read as\n%s\ngo-message reads\n%s", f, got, want)
		}
	}
}

func FuzzMIMEReadsAsGoMessage(f *testing.F) {
	for _, s := range []string{
		"Content-Type: multipart/report; boundary=b\r\n\r\npre\r\n--b\r\nContent-Type: text/plain\r\n\r\nhi\r\n--b\r\nContent-Type: message/delivery-status\r\n\r\nAction: failed\r\n--b--\r\n",
		"Content-Type: multipart/mixed; boundary=\"x y\"\n\n--x y\n\nbody\n--x y \n\n--x y--",
		"Content-Type: multipart/mixed; boundary=b\n\n--b\nContent-Transfer-Encoding: base64\n\naGVsbG8=\n--bb\n--b-\n",
		"Content-Type: text/plain; charset=iso-8859-1\nContent-Transfer-Encoding: quoted-printable\n\ncaf=E9 =\nx\n",
		"Content-Type: multipart/alternative; boundary=q\r\n\r\n--q\r\nContent-Type: multipart/mixed; boundary=r\r\n\r\n--r\r\n\r\nin\r\n--r--\r\n--q\r\n",
		"Content-Type: multipart/mixed\n\n--\n\n",
		"Subject: x\n folded\n\t more\nContent-Type: text/plain; charset=us-ascii\n\n\xe9t\xe9\n",
	} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		if !comparable(b) {
			return
		}
		if got, want := mimeTree(b), goMessageTree(b); got != want {
			t.Errorf("read as\n%s\ngo-message reads\n%s", got, want)
		}
	})
}
