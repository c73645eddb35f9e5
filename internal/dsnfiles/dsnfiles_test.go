package dsnfiles

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"reflect"
	"testing"

	"github.com/bouncemilter/bouncemilter/internal/dsn"
)

// TestParseFilesOrder parses many files on several workers and checks that
// the results come back in the order of the input, a missing file in its
// place with its error.
func TestParseFilesOrder(t *testing.T) {
	samples, err := filepath.Glob(filepath.Join("..", "..", "testdata", "dsn", "*.eml"))
	if err != nil || len(samples) == 0 {
		t.Fatalf("no samples: %v", err)
	}
	var names []string
	for i := 0; i < 500; i++ {
		names = append(names, samples[i%len(samples)])
		if i == 123 {
			names = append(names, filepath.Join(t.TempDir(), "missing.eml"))
		}
	}
	for _, workers := range []int{1, 3, 8} {
		var got []Result
		err := ParseFiles(context.Background(), &dsn.Parser{}, names, workers, func(r Result) error {
			got = append(got, r)
			return nil
		})
		if err != nil {
			t.Fatal(err)
		}
		if len(got) != len(names) {
			t.Fatalf("workers %d: %d results for %d files", workers, len(got), len(names))
		}
		for i, r := range got {
			if r.File != names[i] {
				t.Fatalf("workers %d: result %d is %s, want %s", workers, i, r.File, names[i])
			}
			if want := ParseFile(&dsn.Parser{}, names[i]); !reflect.DeepEqual(r, want) {
				t.Fatalf("workers %d: result %d = %+v, want %+v", workers, i, r, want)
			}
		}
		if got[124].Error == "" {
			t.Errorf("missing file: no error")
		}
	}
}

// TestParseFilesStops checks that an error of emit, and a cancelled
// context, stop the run.
func TestParseFilesStops(t *testing.T) {
	name := filepath.Join("..", "..", "testdata", "dsn", "postfix-userunknown.eml")
	if _, err := os.Stat(name); err != nil {
		t.Fatal(err)
	}
	names := make([]string, 1000)
	for i := range names {
		names[i] = name
	}
	stop := errors.New("stop")
	n := 0
	err := ParseFiles(context.Background(), &dsn.Parser{}, names, 2, func(Result) error {
		n++
		if n == 10 {
			return stop
		}
		return nil
	})
	if !errors.Is(err, stop) || n != 10 {
		t.Errorf("err = %v after %d results; want stop after 10", err, n)
	}
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	err = ParseFiles(ctx, &dsn.Parser{}, names, 2, func(Result) error { return nil })
	if !errors.Is(err, context.Canceled) {
		t.Errorf("cancelled: err = %v", err)
	}
}
