package banner

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os/exec"
	"strings"
	"time"
)

// DefaultCommandTimeout is how long one run of fail2ban-client or nft may
// take. fail2ban-client waits on the server's socket without a time limit:
// a server that accepts connections and does not answer (stopped, swapped
// out, stuck in a long reload) would hold a ban, and the worker behind it,
// for as long as it stays so. A run that takes longer is killed and the ban
// fails, to be retried later.
const DefaultCommandTimeout = 30 * time.Second

// errNoAnswer is a command killed for taking longer than its timeout.
var errNoAnswer = errors.New("no answer")

// runCommand runs argv with stdin (none if empty) and returns what it wrote
// to standard output and standard error. It kills the command after timeout
// (DefaultCommandTimeout if zero), or when ctx ends.
func runCommand(ctx context.Context, timeout time.Duration, argv []string, stdin string) (stdout, stderr []byte, err error) {
	if timeout <= 0 {
		timeout = DefaultCommandTimeout
	}
	rctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	var out, errOut bytes.Buffer
	cmd := exec.CommandContext(rctx, argv[0], argv[1:]...)
	if stdin != "" {
		cmd.Stdin = strings.NewReader(stdin)
	}
	cmd.Stdout, cmd.Stderr = &out, &errOut
	// A child the command left behind may hold the pipes open: do not
	// wait for it past the kill.
	cmd.WaitDelay = time.Second
	err = cmd.Run()
	if err != nil && ctx.Err() == nil && errors.Is(rctx.Err(), context.DeadlineExceeded) {
		err = fmt.Errorf("%w within %v (%v)", errNoAnswer, timeout, err)
	}
	return out.Bytes(), errOut.Bytes(), err
}

// RunCommand runs argv (no stdin) as the banners run fail2ban-client and
// nft: killed after timeout (DefaultCommandTimeout if zero) or when ctx
// ends. It returns the standard output; a failure carries the command and
// all it printed, on one line.
func RunCommand(ctx context.Context, timeout time.Duration, argv ...string) ([]byte, error) {
	stdout, stderr, err := runCommand(ctx, timeout, argv, "")
	if err != nil {
		return nil, commandError(strings.Join(argv, " "), err, append(stderr, stdout...))
	}
	return stdout, nil
}

// commandError describes a command that failed, with what it printed on one
// line: the error ends up in one log line, and a second line would read as a
// record of its own.
func commandError(command string, err error, output []byte) error {
	var lines []string
	for line := range strings.Lines(string(output)) {
		if line = strings.TrimSpace(line); line != "" {
			lines = append(lines, line)
		}
	}
	if len(lines) == 0 {
		return fmt.Errorf("%s: %w", command, err)
	}
	return fmt.Errorf("%s: %w: %s", command, err, strings.Join(lines, " / "))
}
