//go:build unix

package dsnfiles

import (
	"os"
	"path/filepath"
	"syscall"
	"testing"
	"time"
)

// TestReadFIFO checks that a named pipe, which a worker does not read into
// its buffer, is read to its end and not to what its first read returns.
func TestReadFIFO(t *testing.T) {
	dir := t.TempDir()
	var buf []byte
	fifo := filepath.Join(dir, "fifo")
	if err := syscall.Mkfifo(fifo, 0o600); err != nil {
		t.Fatal(err)
	}
	go func() {
		f, err := os.OpenFile(fifo, os.O_WRONLY, 0)
		if err != nil {
			return
		}
		defer f.Close()
		for range 3 {
			f.Write([]byte("part\n"))
			time.Sleep(10 * time.Millisecond)
		}
	}()
	if got, err := readFile(fifo, &buf); err != nil || string(got) != "part\npart\npart\n" {
		t.Errorf("fifo: %q, %v", got, err)
	}
}
