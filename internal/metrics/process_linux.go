package metrics

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"os"
	"strconv"
	"strings"
	"sync"
	"syscall"
)

// userHZ is the unit of the clock-tick fields of /proc/PID/stat: fixed at
// 100 by the kernel's ABI, whatever the kernel's own HZ.
const userHZ = 100

// bootTime is when the machine booted, in Unix seconds: constant, so read
// once.
var bootTime = sync.OnceValues(readBootTime)

// processFamilies reads the process_* metrics of this process from /proc,
// with the names and help texts of Prometheus's Go client. A metric that
// cannot be read is left out and its error returned.
func processFamilies() ([]family, error) {
	var fams []family
	var errs []error
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		errs = append(errs, fmt.Errorf("getrusage: %w", err))
	} else {
		cpu := float64(ru.Utime.Sec+ru.Stime.Sec) + float64(ru.Utime.Usec+ru.Stime.Usec)/1e6
		fams = append(fams, family{name: "process_cpu_seconds_total", help: "Total user and system CPU time spent in seconds.",
			typ: typeCounter, samples: []sample{{value: formatFloat(cpu)}}})
	}
	if st, err := readStat(); err != nil {
		errs = append(errs, err)
	} else {
		fams = append(fams,
			gauge("process_virtual_memory_bytes", "Virtual memory size in bytes.", float64(st.vsize)),
			gauge("process_resident_memory_bytes", "Resident memory size in bytes.", float64(st.rss*uint64(os.Getpagesize()))))
		if boot, err := bootTime(); err != nil {
			errs = append(errs, err)
		} else {
			fams = append(fams, gauge("process_start_time_seconds", "Start time of the process since unix epoch in seconds.",
				boot+float64(st.startTicks)/userHZ))
		}
	}
	if fds, err := openFDs(); err != nil {
		errs = append(errs, err)
	} else {
		fams = append(fams, gauge("process_open_fds", "Number of open file descriptors.", float64(fds)))
	}
	var lim syscall.Rlimit
	if err := syscall.Getrlimit(syscall.RLIMIT_NOFILE, &lim); err != nil {
		errs = append(errs, fmt.Errorf("getrlimit: %w", err))
	} else {
		fams = append(fams, gauge("process_max_fds", "Maximum number of open file descriptors.", float64(lim.Cur)))
	}
	return fams, errors.Join(errs...)
}

type procStat struct{ startTicks, vsize, rss uint64 }

// readStat reads the fields of /proc/self/stat that are needed.
func readStat() (procStat, error) {
	b, err := os.ReadFile("/proc/self/stat")
	if err != nil {
		return procStat{}, err
	}
	st, err := parseStat(b)
	if err != nil {
		return procStat{}, fmt.Errorf("/proc/self/stat: %w", err)
	}
	return st, nil
}

// parseStat reads starttime (field 22), vsize (23) and rss (24) of a
// /proc/PID/stat line. The command name (field 2) is in parentheses and
// may itself hold spaces and parentheses, so the fields are counted from
// its last ')'.
func parseStat(b []byte) (procStat, error) {
	i := bytes.LastIndexByte(b, ')')
	if i < 0 {
		return procStat{}, errors.New("no ')' after the command name")
	}
	f := strings.Fields(string(b[i+1:])) // f[0] is field 3
	const first = 3
	if len(f) < 24-first+1 {
		return procStat{}, fmt.Errorf("%d fields, want at least 24", len(f)+first-1)
	}
	var st procStat
	for _, x := range []struct {
		field int
		dst   *uint64
	}{{22, &st.startTicks}, {23, &st.vsize}, {24, &st.rss}} {
		n, err := strconv.ParseUint(f[x.field-first], 10, 64)
		if err != nil {
			return procStat{}, fmt.Errorf("field %d: %w", x.field, err)
		}
		*x.dst = n
	}
	return st, nil
}

// openFDs counts the entries of /proc/self/fd. Like Prometheus's Go
// client, it counts the descriptor it reads the directory with.
func openFDs() (int, error) {
	d, err := os.Open("/proc/self/fd")
	if err != nil {
		return 0, err
	}
	defer d.Close()
	n := 0
	for {
		names, err := d.Readdirnames(256)
		n += len(names)
		if errors.Is(err, io.EOF) {
			return n, nil
		}
		if err != nil {
			return 0, err
		}
	}
}

// readBootTime reads when the machine booted from /proc/stat's btime line.
func readBootTime() (float64, error) {
	b, err := os.ReadFile("/proc/stat")
	if err != nil {
		return 0, err
	}
	for line := range strings.Lines(string(b)) {
		if v, ok := strings.CutPrefix(line, "btime "); ok {
			n, err := strconv.ParseUint(strings.TrimSpace(v), 10, 64)
			if err != nil {
				return 0, fmt.Errorf("/proc/stat btime: %w", err)
			}
			return float64(n), nil
		}
	}
	return 0, errors.New("/proc/stat: no btime line")
}
