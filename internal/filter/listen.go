package filter

import (
	"errors"
	"fmt"
	"net"
	"os"
	"strings"
)

// Listen opens the socket a milter spec names, in the forms Postfix's
// smtpd_milters and Sendmail's X= accept: "inet:HOST:PORT", "inet:PORT@HOST",
// "inet6:[HOST]:PORT", "unix:PATH" or "local:PATH". A stale unix socket left
// by a crash is replaced; a new one is made group-writable so that a Postfix
// in the socket's group can connect.
func Listen(spec string) (net.Listener, error) {
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
	ln, err := net.Listen("unix", addr)
	if err != nil {
		return nil, fmt.Errorf("listen on %s: %w", spec, err)
	}
	if err := os.Chmod(addr, 0o660); err != nil {
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
