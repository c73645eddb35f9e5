package filter

import (
	"errors"
	"fmt"
	"net"
	"os"
	"os/user"
	"strconv"
	"strings"
	"syscall"
)

// Socket says who may connect to a unix socket that Listen makes: its
// owner (this process's user) and its group. Connecting needs write
// permission on the socket.
type Socket struct {
	// Group is the socket's group, a name or a number: Postfix's
	// ("postfix"), so that smtpd and cleanup can connect. Empty keeps the
	// process's group.
	Group string
	// Mode is the socket's permission bits; 0 means 0660: owner and group
	// only.
	Mode os.FileMode
}

// Listen opens the socket a milter spec names, in the forms Postfix's
// smtpd_milters and Sendmail's X= accept: "inet:HOST:PORT", "inet:PORT@HOST",
// "inet6:[HOST]:PORT", "unix:PATH" or "local:PATH". A stale unix socket left
// by a crash is replaced; a new one is made with sock's group and mode from
// the start, so that no other local user can connect to it even for a
// moment (a milter connection can feed it forged bounces from a trusted
// client).
func Listen(spec string, sock Socket) (net.Listener, error) {
	network, addr, err := ParseSpec(spec)
	if err != nil {
		return nil, err
	}
	if network != "unix" {
		ln, err := net.Listen(network, addr)
		if err != nil {
			return nil, fmt.Errorf("listen on %s: %w", spec, err)
		}
		return ln, nil
	}
	if fi, err := os.Lstat(addr); err == nil && fi.Mode()&os.ModeSocket != 0 {
		// Another bouncemilter still serving answers: refuse to steal its socket.
		if c, err := net.Dial("unix", addr); err == nil {
			c.Close()
			return nil, fmt.Errorf("listen on %s: another process is serving this socket", spec)
		}
		os.Remove(addr)
	}
	mode := sock.Mode.Perm()
	if mode == 0 {
		mode = 0o660
	}
	gid := -1
	if sock.Group != "" {
		g, err := user.LookupGroup(sock.Group)
		if err != nil {
			if g, err = user.LookupGroupId(sock.Group); err != nil {
				return nil, fmt.Errorf("listen on %s: socket group: %w", spec, err)
			}
		}
		if gid, err = strconv.Atoi(g.Gid); err != nil {
			return nil, fmt.Errorf("listen on %s: socket group %s: %w", spec, sock.Group, err)
		}
	}
	// The socket is born owner-only; chown and chmod then open it to the
	// group. The umask is the process's: serve calls Listen before it
	// starts anything else that makes files.
	old := syscall.Umask(0o177)
	ln, err := net.Listen("unix", addr)
	syscall.Umask(old)
	if err != nil {
		return nil, fmt.Errorf("listen on %s: %w", spec, err)
	}
	if err := os.Chown(addr, -1, gid); err != nil {
		ln.Close()
		return nil, fmt.Errorf("listen on %s: %w", spec, err)
	}
	if err := os.Chmod(addr, mode); err != nil {
		ln.Close()
		return nil, fmt.Errorf("listen on %s: %w", spec, err)
	}
	return ln, nil
}

// ErrBadSpec is returned for a milter socket spec that cannot be read.
var ErrBadSpec = errors.New("bad milter socket spec")

// ParseSpec splits a milter socket spec into a Go network and address.
func ParseSpec(spec string) (network, addr string, err error) {
	kind, rest, ok := strings.Cut(spec, ":")
	if !ok || rest == "" {
		return "", "", fmt.Errorf("%w %q: want inet:HOST:PORT or unix:PATH", ErrBadSpec, spec)
	}
	switch kind {
	case "unix", "local":
		return "unix", rest, nil
	case "inet", "inet6":
		network = "tcp4"
		if kind == "inet6" {
			network = "tcp6"
		}
		if port, host, ok := strings.Cut(rest, "@"); ok {
			rest = net.JoinHostPort(host, port)
		}
		if _, _, err := net.SplitHostPort(rest); err != nil {
			return "", "", fmt.Errorf("%w %q: %v", ErrBadSpec, spec, err)
		}
		return network, rest, nil
	}
	return "", "", fmt.Errorf("%w %q: unknown kind %q", ErrBadSpec, spec, kind)
}
