package accesslog

import (
	"bufio"
	"bytes"
	"compress/gzip"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"sort"
)

// ErrGarbled: most lines at the start of a log could not be parsed; it is
// probably not an access log in a format this package reads.
var ErrGarbled = errors.New("accesslog: not a log in combined or sign-up format")

// startLines is how many lines at the start of a file judge whether it is
// a log in a format read here: a log in another one fails on nearly every
// line, so the file is refused when more than half of them do. Only its
// start, and only by a majority: were a client able to write lines that do
// not parse (as a user name with a space was), a few of them could
// otherwise stop every read. Lines longer than maxLine, which a client can
// cause (a request line and headers of 8 KiB each, escaped as \xHH), are
// not counted: they say nothing of the format.
const startLines = 100

// maxLine bounds one log line; longer ones are counted as malformed and
// skipped. Web servers cap request lines at 8 KiB by default.
const maxLine = 64 << 10

// headLen bounds the fingerprint of a file's first line.
const headLen = 1024

// Position is how far a log has been read, and which file that was: its
// device and inode, and a hash of its first line, so that a rotated,
// truncated or replaced file is told from the one read before.
type Position struct {
	Dev     uint64 `json:"dev"`
	Ino     uint64 `json:"ino"`
	Offset  int64  `json:"offset"`
	Head    string `json:"head,omitempty"` // hex SHA-256 of the first HeadLen bytes
	HeadLen int    `json:"head_len,omitempty"`
}

// Stats counts what one Read saw.
type Stats struct {
	Lines     int      // lines read
	Malformed int      // lines that did not parse
	Bytes     int64    // bytes read
	Files     []string // files read, predecessors first
	// Lost is set when the log was rotated and the rotated file holding the
	// unread remainder was not found: entries may have been missed.
	Lost bool

	lastConsumed int64 // bytes consumed of the file read last
	// Of the file read last, when read from its start: its first lines
	// (up to startLines) and how many of those did not parse.
	startRead, startMalformed int
}

// Read reads what was added to the log at path since pos and calls fn for
// each entry, in order, and returns the position to resume from.
//
// Rotation is followed: when path is a new file (renamed away by
// logrotate's default) or was truncated (copytruncate), the remainder of the
// previous file is read first from path.1, path.1.gz, or a dated name
// (logrotate's dateext; see predecessor), whichever is that file. At the
// first read (zero pos) the newest of them is read whole before path, so
// that sign-ups shortly before a rotation are found. Only complete lines are
// consumed: a line still being written is read at the next call. When the
// file that was being read cannot be found any more (rotated twice between
// two reads), Stats.Lost says that entries may have been missed.
//
// Lines that do not parse are skipped and counted in Stats.Malformed, for
// the caller to warn about. But when more than half of the first lines of
// a file read from its start do not parse, it is not a log in a format
// read here (a wrong path, say): Read returns an error wrapping ErrGarbled,
// and the caller should then not store the position.
func Read(ctx context.Context, path string, pos Position, fn func(Entry)) (Position, Stats, error) {
	var st Stats
	fi, err := os.Stat(path)
	if err != nil {
		return pos, st, fmt.Errorf("read log: %w", err)
	}
	dev, ino := fileID(fi)
	start := int64(0)
	switch {
	case pos == (Position{}):
		if pred := predecessor(path, func(string, os.FileInfo) bool { return true }); pred != "" {
			if err := readFile(ctx, pred, 0, true, fn, &st); err != nil {
				return pos, st, err
			}
		}
	case dev == pos.Dev && ino == pos.Ino && fi.Size() >= pos.Offset && headMatches(path, pos):
		start = pos.Offset
	default:
		// Replaced or truncated: finish the file we were reading.
		pred := predecessor(path, func(p string, pfi os.FileInfo) bool {
			if d, i := fileID(pfi); d == pos.Dev && i == pos.Ino && pfi.Size() >= pos.Offset && headMatches(p, pos) {
				return true
			}
			return pos.HeadLen > 0 && headMatches(p, pos)
		})
		if pred == "" {
			st.Lost = pos.Offset > 0
		} else if err := readFile(ctx, pred, pos.Offset, true, fn, &st); err != nil {
			return pos, st, err
		}
	}
	next := Position{Dev: dev, Ino: ino}
	if err := readFile(ctx, path, start, false, fn, &st); err != nil {
		return pos, st, err
	}
	next.Offset = start + st.lastConsumed
	if head, n, err := fileHead(path, next.Offset); err == nil {
		next.Head, next.HeadLen = head, n
	} else {
		return pos, st, fmt.Errorf("read log %s: %w", path, err)
	}
	return next, st, nil
}

// predecessor returns the newest rotated file of path for which ok holds,
// or "". Candidates, in order: path.1 and path.1.gz (logrotate's default
// names, with delaycompress or without), then the files named path-DATE or
// path-DATE.gz (logrotate's dateext), newest first.
func predecessor(path string, ok func(string, os.FileInfo) bool) string {
	type cand struct {
		path string
		fi   os.FileInfo
	}
	var cands []cand
	for _, p := range []string{path + ".1", path + ".1.gz"} {
		if fi, err := os.Stat(p); err == nil && fi.Mode().IsRegular() {
			cands = append(cands, cand{p, fi})
		}
	}
	dated, _ := filepath.Glob(path + "-[0-9]*")
	var ds []cand
	for _, p := range dated {
		if fi, err := os.Stat(p); err == nil && fi.Mode().IsRegular() {
			ds = append(ds, cand{p, fi})
		}
	}
	sort.Slice(ds, func(i, j int) bool { return ds[i].fi.ModTime().After(ds[j].fi.ModTime()) })
	if len(ds) > 4 {
		ds = ds[:4]
	}
	for _, c := range append(cands, ds...) {
		if ok(c.path, c.fi) {
			return c.path
		}
	}
	return ""
}

// openLog opens a log, decompressing a .gz one.
func openLog(path string) (io.ReadCloser, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	if !isGzip(path) {
		return f, nil
	}
	zr, err := gzip.NewReader(f)
	if err != nil {
		f.Close()
		return nil, err
	}
	return struct {
		io.Reader
		io.Closer
	}{zr, f}, nil
}

func isGzip(path string) bool {
	return len(path) > 3 && path[len(path)-3:] == ".gz"
}

// fileHead fingerprints the first line of path (up to headLen bytes), once
// that line is complete within the first limit bytes.
func fileHead(path string, limit int64) (string, int, error) {
	r, err := openLog(path)
	if err != nil {
		return "", 0, err
	}
	defer r.Close()
	buf := make([]byte, min(int64(headLen), limit))
	n, err := io.ReadFull(r, buf)
	if err != nil && !errors.Is(err, io.ErrUnexpectedEOF) && !errors.Is(err, io.EOF) {
		return "", 0, err
	}
	buf = buf[:n]
	if i := bytes.IndexByte(buf, '\n'); i >= 0 {
		buf = buf[:i+1]
	} else if n < headLen {
		return "", 0, nil // first line still incomplete
	}
	sum := sha256.Sum256(buf)
	return hex.EncodeToString(sum[:]), len(buf), nil
}

func headMatches(path string, pos Position) bool {
	if pos.HeadLen == 0 {
		return pos.Offset == 0
	}
	r, err := openLog(path)
	if err != nil {
		return false
	}
	defer r.Close()
	buf := make([]byte, pos.HeadLen)
	if _, err := io.ReadFull(r, buf); err != nil {
		return false
	}
	sum := sha256.Sum256(buf)
	return hex.EncodeToString(sum[:]) == pos.Head
}

// readFile parses path from offset on. whole: the file is finished (a
// rotated predecessor), so a last line without newline is read too.
// st.lastConsumed is set to the bytes consumed from offset. Read from its
// start, a file whose first lines mostly do not parse is refused.
func readFile(ctx context.Context, path string, offset int64, whole bool, fn func(Entry), st *Stats) error {
	st.startRead, st.startMalformed = 0, 0
	if err := readLines(ctx, path, offset, whole, fn, st); err != nil {
		return err
	}
	if offset == 0 && st.startMalformed*2 > st.startRead {
		return fmt.Errorf("read log %s: %d of its first %d lines malformed: %w", path, st.startMalformed, st.startRead, ErrGarbled)
	}
	return nil
}

// readLines does readFile's reading.
func readLines(ctx context.Context, path string, offset int64, whole bool, fn func(Entry), st *Stats) error {
	r, err := openLog(path)
	if err != nil {
		return fmt.Errorf("read log: %w", err)
	}
	defer r.Close()
	st.Files = append(st.Files, path)
	st.lastConsumed = 0
	if offset > 0 {
		short, err := skip(r, offset)
		if err != nil {
			return fmt.Errorf("read log %s: skip to %d: %w", path, offset, err)
		}
		if short {
			// A predecessor that copytruncate copied before we read lines
			// written after the copy: nothing is left in it, and what was
			// written between our read and the truncation is gone.
			st.Lost = true
			return nil
		}
	}
	br := bufio.NewReaderSize(r, 64<<10)
	var long bool // inside a line longer than maxLine
	for n := 0; ; n++ {
		if n%8192 == 0 {
			if err := ctx.Err(); err != nil {
				return err
			}
		}
		chunk, err := br.ReadSlice('\n')
		complete := err == nil
		if errors.Is(err, bufio.ErrBufferFull) {
			st.lastConsumed += int64(len(chunk))
			st.Bytes += int64(len(chunk))
			long = true
			continue
		}
		if err != nil && !errors.Is(err, io.EOF) {
			return fmt.Errorf("read log %s: %w", path, err)
		}
		if !complete && !whole {
			return nil // leave a partial last line for next time
		}
		st.lastConsumed += int64(len(chunk))
		st.Bytes += int64(len(chunk))
		if len(chunk) > 0 || long {
			st.parse(lineBytes(chunk), long, offset == 0, fn)
			long = false
		}
		if !complete {
			return nil
		}
	}
}

// skip moves r to offset; short: r holds fewer bytes.
func skip(r io.Reader, offset int64) (short bool, err error) {
	if f, ok := r.(*os.File); ok {
		fi, err := f.Stat()
		if err != nil {
			return false, err
		}
		if fi.Size() < offset {
			return true, nil
		}
		_, err = f.Seek(offset, io.SeekStart)
		return false, err
	}
	// A compressed file is skipped by reading it.
	if _, err := io.CopyN(io.Discard, r, offset); err != nil {
		if errors.Is(err, io.EOF) {
			return true, nil
		}
		return false, err
	}
	return false, nil
}

// parse parses a line read and counts it. tooLong: it was longer than
// maxLine, and line is its tail; atStart: its file is read from its start.
func (st *Stats) parse(line []byte, tooLong, atStart bool, fn func(Entry)) {
	malformed := tooLong
	if !tooLong {
		if len(bytes.TrimSpace(line)) == 0 {
			return // not a line to count
		}
		e, err := ParseLine(string(line))
		if malformed = err != nil; !malformed {
			fn(e)
		}
	}
	st.Lines++
	if malformed {
		st.Malformed++
	}
	if atStart && !tooLong && st.startRead < startLines {
		st.startRead++
		if malformed {
			st.startMalformed++
		}
	}
}
