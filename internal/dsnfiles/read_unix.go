//go:build unix

package dsnfiles

import (
	"os"
	"syscall"
)

// readSmall reads the regular file name into *buf when it holds at most
// maxReuse bytes; ok is false (and nothing read) for anything else. It uses
// the system calls directly: os.Open registers every file with the
// runtime's poller (a system call that fails for a regular file) and sets
// up a finalizer, which costs more than reading a typical bounce, and
// os.ReadFile reads once more to see the end.
func readSmall(name string, buf *[]byte) (b []byte, ok bool, err error) {
	var fd int
	for {
		fd, err = syscall.Open(name, syscall.O_RDONLY|syscall.O_CLOEXEC, 0)
		if err != syscall.EINTR {
			break
		}
	}
	if err != nil {
		return nil, false, &os.PathError{Op: "open", Path: name, Err: err}
	}
	defer syscall.Close(fd)
	var st syscall.Stat_t
	if err := syscall.Fstat(fd, &st); err != nil || st.Mode&syscall.S_IFMT != syscall.S_IFREG || st.Size > maxReuse {
		return nil, false, nil
	}
	// One byte more than the file holds: a read that does not fill the
	// buffer has reached the end (a regular file is read in full up to
	// its end), and a file that grew since fstat is read on.
	if want := int(st.Size) + 1; cap(*buf) < want {
		*buf = make([]byte, max(want, 16<<10))
	}
	b = (*buf)[:cap(*buf)]
	n := 0
	for {
		k, err := syscall.Read(fd, b[n:])
		if err == syscall.EINTR {
			continue
		}
		if err != nil {
			return nil, false, &os.PathError{Op: "read", Path: name, Err: err}
		}
		n += k
		if k == 0 || n < len(b) {
			break
		}
		if len(b) > maxReuse {
			return nil, false, nil
		}
		b = append(b, 0)[:cap(b)]
		*buf = b
	}
	return b[:n], true, nil
}
