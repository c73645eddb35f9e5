package dsn

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"io"
)

// This file splits mbox files (the "mboxo"/"mboxrd" family described in
// RFC 4155): messages one after another, each starting with a line
// "From sender date". A separator counts at the start of the input and
// after a blank line, as RFC 4155 section 2 and every mbox writer have it,
// and before a header field (some tools concatenate messages without the
// blank line).

// maxMessages bounds how many messages one ParseAll call returns.
const maxMessages = 100000

// maxSeparator is the longest "From " line that separates messages: RFC
// 5322's line limit. A real one ("From sender date") is far shorter, and
// ParseAll's reader sees a line this long whole, and the line after it.
const maxSeparator = 1000

// ParseAll reads r as one message, or as several in mbox form when it
// starts with a "From " line, and returns one report per message. Each
// message is held to MaxBytes: the rest of an oversized message is skipped
// (its report marked Truncated) and reading goes on with the next. The
// error is non-nil only when r fails or on ErrInternal; the reports are
// returned with it.
func (p *Parser) ParseAll(r io.Reader) ([]*Report, error) {
	// Look at the first five bytes without a buffered reader: a single
	// message (the common case) is then read once, into one buffer.
	var head [5]byte
	n, err := io.ReadFull(r, head[:])
	if err != nil && err != io.ErrUnexpectedEOF && err != io.EOF {
		return nil, fmt.Errorf("read message: %w", err)
	}
	if l, ok := r.(interface{ Len() int }); ok {
		// Keep the length known, for readAll.
		r = sizedReader{io.MultiReader(bytes.NewReader(head[:n]), r), n + l.Len()}
	} else {
		r = io.MultiReader(bytes.NewReader(head[:n]), r)
	}
	if string(head[:n]) != "From " {
		return single(p.Parse(r))
	}
	br := bufio.NewReader(r)
	limit := p.maxBytes()
	s := mboxSplit{p: p}
	var (
		buf  bytes.Buffer
		over bool
		// from holds a copy of a "From " line: line is in br's
		// buffer, which looking at the next line may move.
		from []byte
		// piece is set while a line longer than br's buffer comes in
		// pieces: the next one goes on with it, neither a separator
		// nor a blank line.
		piece bool
		// lineStart is where the current line starts in buf: a line
		// that comes in pieces and goes over MaxBytes in a later one
		// is dropped whole, as ParseAllBytes keeps whole lines only
		// (an address cut there must not be read as one).
		lineStart int
	)
	for {
		line, err := readLine(br)
		more := piece
		piece = len(line) > 0 && line[len(line)-1] != '\n'
		if !more {
			lineStart = buf.Len()
		}
		if !more && bytes.HasPrefix(line, []byte("From ")) {
			from = append(from[:0], line...)
			line = from
		}
		if len(line) > 0 {
			if !more && s.separator(line, func() []byte { next, _ := br.Peek(80); return next }) {
				s.emit(buf.Bytes(), over)
				buf.Reset()
				over = false
				if err := s.start(); err != nil {
					return s.reports, err
				}
			} else if int64(buf.Len()+len(line)) > limit {
				buf.Truncate(lineStart)
				over = true
			} else if !over {
				buf.Write(line)
			}
		}
		if err == io.EOF {
			s.emit(buf.Bytes(), over)
			return s.reports, s.firstErr
		}
		if err != nil {
			s.emit(buf.Bytes(), over)
			return s.reports, fmt.Errorf("read mbox: %w", err)
		}
	}
}

// ParseAllBytes is ParseAll of messages already in memory, which it reads
// in place, without copying them.
func (p *Parser) ParseAllBytes(b []byte) ([]*Report, error) {
	if !bytes.HasPrefix(b, []byte("From ")) {
		return single(p.ParseBytes(b))
	}
	limit := p.maxBytes()
	s := mboxSplit{p: p}
	// start is where the current message starts, fit where its last line
	// that fits in limit ends.
	start, fit := 0, 0
	for off := 0; off < len(b); {
		next := len(b)
		if i := bytes.IndexByte(b[off:], '\n'); i >= 0 {
			next = off + i + 1
		}
		if s.separator(b[off:next], func() []byte { return b[next:] }) {
			s.emit(b[start:fit], fit < off)
			if err := s.start(); err != nil {
				return s.reports, err
			}
			start, fit = next, next
		} else if fit == off && int64(next-start) <= limit {
			fit = next
		}
		off = next
	}
	s.emit(b[start:fit], fit < len(b))
	return s.reports, s.firstErr
}

// mboxSplit is what ParseAll and ParseAllBytes share of splitting an mbox:
// the rule for separators and the reports of the messages split off.
type mboxSplit struct {
	p       *Parser
	reports []*Report
	// firstErr is the first ErrInternal; splitting goes on.
	firstErr error
	// afterText is set when the last line was not blank: a "From " line
	// there separates only when a header field follows. started is set
	// at each separator: every "From " line starts a message, even an
	// empty one, which gets an empty report.
	afterText, started bool
}

// separator reports whether line (with its newline) starts a message:
// a "From " line at the start, after a blank line, or followed by a header
// field (next returns what follows line; line must stay as it is when next
// is called).
func (s *mboxSplit) separator(line []byte, next func() []byte) bool {
	if len(line) <= maxSeparator && bytes.HasPrefix(line, []byte("From ")) && (!s.afterText || headerFollows(next())) {
		s.afterText = true
		return true
	}
	s.afterText = len(bytes.TrimRight(line, "\r\n")) > 0
	return false
}

// emit parses msg, the message that ends here (the part of it that fits
// in MaxBytes; truncated when more was skipped), unless it is empty and no
// separator started it.
func (s *mboxSplit) emit(msg []byte, truncated bool) {
	if !s.started && len(msg) == 0 && !truncated {
		return
	}
	s.started = false
	rep, err := s.p.parseBytes(msg)
	if err != nil && s.firstErr == nil {
		s.firstErr = err
	}
	rep.Truncated = rep.Truncated || truncated
	s.reports = append(s.reports, rep)
}

// start marks the start of a message at a separator, or refuses one more
// than maxMessages.
func (s *mboxSplit) start() error {
	if len(s.reports) >= maxMessages {
		return fmt.Errorf("more than %d messages: %w", maxMessages, ErrTooLarge)
	}
	s.started = true
	return nil
}

// single is ParseAll's answer for a file of one message: a message over
// MaxBytes is no error there, its report is marked Truncated.
func single(rep *Report, err error) ([]*Report, error) {
	if rep == nil {
		return nil, err
	}
	if errors.Is(err, ErrTooLarge) {
		err = nil
	}
	return []*Report{rep}, err
}

// sizedReader is a reader that knows how many bytes it holds.
type sizedReader struct {
	io.Reader
	n int
}

func (s sizedReader) Len() int { return s.n }

// headerFollows reports whether next, what follows a line, starts
// with a header field, which makes a "From " line that does not follow a
// blank line a separator all the same (some tools concatenate messages
// without one).
func headerFollows(next []byte) bool {
	next = next[:min(len(next), 80)]
	if i := bytes.IndexByte(next, '\n'); i >= 0 {
		next = next[:i]
	}
	i := bytes.IndexByte(next, ':')
	if i <= 0 {
		return false
	}
	for _, c := range next[:i] {
		if !isAlnum(c) && c != '-' {
			return false
		}
	}
	return true
}

// readLine returns the next line with its newline. A line longer than the
// reader's buffer comes back in pieces, all but the last without a
// newline.
func readLine(br *bufio.Reader) ([]byte, error) {
	line, err := br.ReadSlice('\n')
	if err == bufio.ErrBufferFull {
		return line, nil
	}
	return line, err
}
