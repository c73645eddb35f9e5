package banner

import (
	"bufio"
	"context"
	"fmt"
	"net/netip"
	"os"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"
	"unicode/utf8"
)

// MaxReason is the longest reason, in bytes, that LogFile writes; a longer
// one is cut (at a character boundary) so that a line stays short enough for
// a single write and for fail2ban.
const MaxReason = 256

// LogFile bans an address by appending one line to a file that a fail2ban
// jail watches (contrib/fail2ban):
//
//	2026-11-26T01:02:03Z bouncemilter: ban 203.0.113.7 reason="5.1.1 user unknown"
//
// The time is UTC, the reason a Go-quoted string: whatever it holds, the
// line stays one line that the filter's anchored expression reads exactly.
//
// The file is opened for each line, with O_APPEND, and the line written with
// one write: rotation (logrotate's rename or copytruncate) needs no signal,
// and lines from several processes do not interleave. Bans are rare enough
// that the open costs nothing.
type LogFile struct {
	// Unbanner lifts bans, which a log line cannot express; usually a
	// Fail2banClient for the jail that reads the log. When nil, Unban
	// returns ErrUnbanUnsupported.
	Unbanner Banner

	path string
	now  func() time.Time
	mu   sync.Mutex // one writer at a time in this process
}

// NewLogFile returns a LogFile appending to path. It creates the file, mode
// 0640, if it does not exist (fail2ban refuses to start a jail whose log is
// missing) and checks that it can be written. The directory must exist.
func NewLogFile(path string) (*LogFile, error) {
	l := &LogFile{path: path, now: time.Now}
	f, err := l.open()
	if err != nil {
		return nil, err
	}
	if err := f.Close(); err != nil {
		return nil, fmt.Errorf("ban log %s: %w", path, err)
	}
	return l, nil
}

// Path returns the file the bans are written to.
func (l *LogFile) Path() string { return l.path }

func (l *LogFile) open() (*os.File, error) {
	// O_NOFOLLOW: whoever can write in the log's directory must not be able
	// to point the milter's appends at another file (fail2ban reads the
	// log as root).
	f, err := os.OpenFile(l.path, os.O_WRONLY|os.O_APPEND|os.O_CREATE|syscall.O_NOFOLLOW, 0o640)
	if err != nil {
		return nil, fmt.Errorf("ban log: %w", err)
	}
	return f, nil
}

// Ban appends the ban line for ip and syncs it to disk: once Ban returns, the
// ban survives a crash.
func (l *LogFile) Ban(ctx context.Context, ip netip.Addr, reason string) error {
	return l.BanNet(ctx, single(ip), reason)
}

// BanNet appends the ban line for p, in CIDR form unless it is one address
// (the filter of contrib/fail2ban reads both).
func (l *LogFile) BanNet(ctx context.Context, p netip.Prefix, reason string) error {
	p = netip.PrefixFrom(normalize(p.Addr()), p.Bits()).Masked()
	ip := p.Addr()
	if err := check(ip, nil); err != nil {
		return err
	}
	if err := ctx.Err(); err != nil {
		return fmt.Errorf("ban %s: %w", netString(p), err)
	}
	line := formatLine(l.now(), netString(p), reason)

	l.mu.Lock()
	defer l.mu.Unlock()
	f, err := l.open()
	if err != nil {
		return fmt.Errorf("ban %s: %w", netString(p), err)
	}
	_, err = f.Write(line)
	if err == nil {
		err = f.Sync()
	}
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		return fmt.Errorf("ban %s: ban log %s: %w", netString(p), l.path, err)
	}
	return nil
}

// BannedSince reports whether the file holds a ban line for ip written at
// since or later (to the second, the lines' resolution). It reads the whole
// file, so it is for the rare check after a crash, not for every ban; a
// line already rotated away is not found, and the ban is then written
// again, which fail2ban takes as the same ban.
func (l *LogFile) BannedSince(ctx context.Context, ip netip.Addr, since time.Time) (bool, error) {
	return l.BannedNetSince(ctx, single(ip), since)
}

// BannedNetSince is BannedSince for a network's line.
func (l *LogFile) BannedNetSince(ctx context.Context, p netip.Prefix, since time.Time) (bool, error) {
	f, err := os.OpenFile(l.path, os.O_RDONLY|syscall.O_NOFOLLOW, 0)
	if err != nil {
		return false, fmt.Errorf("ban log %s: %w", l.path, err)
	}
	defer f.Close()
	since = since.UTC().Truncate(time.Second)
	want := " bouncemilter: ban " + netString(p) + " "
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		line := sc.Text()
		stamp, rest, ok := strings.Cut(line, " ")
		if !ok || !strings.HasPrefix(" "+rest, want) {
			continue
		}
		t, err := time.Parse("2006-01-02T15:04:05Z", stamp)
		if err == nil && !t.Before(since) {
			return true, nil
		}
		if err := ctx.Err(); err != nil {
			return false, err
		}
	}
	if err := sc.Err(); err != nil {
		return false, fmt.Errorf("ban log %s: %w", l.path, err)
	}
	return false, nil
}

// Unban lifts the ban through Unbanner, or returns ErrUnbanUnsupported.
func (l *LogFile) Unban(ctx context.Context, ip netip.Addr) error {
	if l.Unbanner == nil {
		return fmt.Errorf("unban %s: %w", normalize(ip), ErrUnbanUnsupported)
	}
	return l.Unbanner.Unban(ctx, ip)
}

// UnbanNet lifts the ban of p through Unbanner, or returns
// ErrUnbanUnsupported.
func (l *LogFile) UnbanNet(ctx context.Context, p netip.Prefix) error {
	nb, ok := l.Unbanner.(NetBanner)
	if !ok {
		if p.IsSingleIP() {
			return l.Unban(ctx, p.Addr())
		}
		return fmt.Errorf("unban %s: %w", netString(p), ErrUnbanUnsupported)
	}
	return nb.UnbanNet(ctx, p)
}

// FormatLine returns the line LogFile writes for a ban of ip at time t,
// newline included. The reason is cut to MaxReason bytes and quoted.
func FormatLine(t time.Time, ip netip.Addr, reason string) []byte {
	return formatLine(t, normalize(ip).String(), reason)
}

func formatLine(t time.Time, target, reason string) []byte {
	if len(reason) > MaxReason {
		n := MaxReason
		for n > 0 && !utf8.RuneStart(reason[n]) {
			n--
		}
		reason = reason[:n]
	}
	b := make([]byte, 0, 64+len(reason))
	b = t.UTC().AppendFormat(b, "2006-01-02T15:04:05Z")
	b = append(b, " bouncemilter: ban "...)
	b = append(b, target...)
	b = append(b, " reason="...)
	// strconv.Quote escapes quotes, backslashes, control characters
	// (newlines included) and invalid UTF-8: the reason cannot end the
	// line or the quoted string early.
	b = strconv.AppendQuote(b, reason)
	return append(b, '\n')
}
