//go:build unix

package dsnfiles

import (
	"bytes"
	"errors"
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
	var r reader
	defer r.close()
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
	if got, err := readFile(fifo, &r); err != nil || string(got) != "part\npart\npart\n" {
		t.Errorf("fifo: %q, %v", got, err)
	}
}

// TestReadFile reads files of every kind through one reused buffer, as a
// worker does: each read gives the file's bytes, the buffer grows for a
// larger file but never keeps more than maxReuse, and what is not a small
// regular file is read as os.ReadFile reads it.
func TestReadFile(t *testing.T) {
	dir := t.TempDir()
	write := func(name string, size int) string {
		b := make([]byte, size)
		for i := range b {
			b[i] = byte('a' + i%26)
		}
		path := filepath.Join(dir, name)
		if err := os.WriteFile(path, b, 0o644); err != nil {
			t.Fatal(err)
		}
		return path
	}
	small, empty := write("small", 100), write("empty", 0)
	mid, exact := write("mid", 100<<10), write("exact", maxReuse)
	full := write("full", firstBuffer) // exactly the first buffer
	big := write("big", maxReuse+1)
	var r reader
	defer r.close()
	for _, name := range []string{small, full, small, mid, empty, small, exact, big, small, "/dev/null"} {
		got, err := readFile(name, &r)
		want, werr := os.ReadFile(name)
		if err != nil || werr != nil || !bytes.Equal(got, want) {
			t.Fatalf("%s: read %d bytes, %v; want %d bytes, %v", name, len(got), err, len(want), werr)
		}
		if cap(r.buf) > maxReuse+1 {
			t.Fatalf("%s: the buffer kept holds %d bytes", name, cap(r.buf))
		}
	}
	if _, err := readFile(dir, &r); err == nil {
		t.Error("a directory: no error")
	}
	if _, err := readFile(filepath.Join(dir, "missing"), &r); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("a missing file: %v", err)
	}
}

// TestReaderDirectories reads files of several directories through one
// reader, which keeps the last directory open: names in alternating
// directories, a name without one, a directory replaced after it was
// opened (the file is read from the new one), and names whose reading
// fails, with the error a plain open gives.
func TestReaderDirectories(t *testing.T) {
	dir := t.TempDir()
	t.Chdir(dir)
	write := func(name, text string) {
		os.MkdirAll(filepath.Dir(name), 0o755)
		if err := os.WriteFile(name, []byte(text), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	write("a/1", "a1")
	write("a/2", "a2")
	write("b/1", "b1")
	write("top", "top")
	write(filepath.Join(dir, "c", "1"), "c1")
	var r reader
	defer r.close()
	read := func(name, want string) {
		t.Helper()
		got, err := readFile(name, &r)
		if err != nil || string(got) != want {
			t.Errorf("%s: %q, %v; want %q", name, got, err, want)
		}
	}
	read("a/1", "a1")
	read("b/1", "b1")
	read("a/2", "a2")
	read("a/../b/1", "b1")
	read("top", "top")
	read("./top", "top")
	read(filepath.Join(dir, "c", "1"), "c1")
	read("a/1", "a1")
	if err := os.RemoveAll("a"); err != nil {
		t.Fatal(err)
	}
	write("a/1", "new a1")
	read("a/1", "new a1")
	for _, name := range []string{"a/missing", "top/1", "missing/1", "a/1/", "/"} {
		_, err := readFile(name, &r)
		_, want := os.ReadFile(name)
		if err == nil || want == nil || err.Error() != want.Error() {
			t.Errorf("%s: error %v, want %v", name, err, want)
		}
	}
}
