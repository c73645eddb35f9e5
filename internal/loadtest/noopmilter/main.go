// Command noopmilter is a milter that does nothing, built with the same
// library as bouncemilter (go-milter), for load benchmarks to measure the
// library's and the protocol's own cost beside bouncemilter's.
//
// With -accept-at mail it accepts every message at MAIL FROM, as
// bouncemilter does ordinary mail; with -accept-at eob it reads every
// message to its end, as bouncemilter does a bounce, and accepts it there.
//
//	noopmilter -listen 127.0.0.1:8892 -accept-at eob
package main

import (
	"errors"
	"flag"
	"fmt"
	"net"
	"os"
	"os/signal"
	"syscall"

	"github.com/emersion/go-milter"
)

func main() {
	listen := flag.String("listen", "127.0.0.1:8892", "TCP address to listen on")
	at := flag.String("accept-at", "eob", "where to accept each message: mail (MAIL FROM) or eob (end of message)")
	flag.Parse()
	if *at != "mail" && *at != "eob" {
		fmt.Fprintln(os.Stderr, "noopmilter: -accept-at must be mail or eob")
		os.Exit(2)
	}
	ln, err := net.Listen("tcp", *listen)
	if err != nil {
		fmt.Fprintln(os.Stderr, "noopmilter:", err)
		os.Exit(1)
	}
	srv := &milter.Server{
		NewMilter: func() milter.Milter { return &noop{atMail: *at == "mail"} },
		Actions:   milter.OptAddHeader | milter.OptChangeHeader,
	}
	go func() {
		sig := make(chan os.Signal, 1)
		signal.Notify(sig, syscall.SIGTERM, syscall.SIGINT)
		<-sig
		srv.Close()
	}()
	if err := srv.Serve(ln); err != nil && !errors.Is(err, milter.ErrServerClosed) {
		fmt.Fprintln(os.Stderr, "noopmilter:", err)
		os.Exit(1)
	}
}

// noop answers "continue" at every stage up to where it accepts.
type noop struct {
	milter.NoOpMilter
	atMail bool
}

func (n *noop) MailFrom(string, *milter.Modifier) (milter.Response, error) {
	if n.atMail {
		return milter.RespAccept, nil
	}
	return milter.RespContinue, nil
}

func (n *noop) Body(*milter.Modifier) (milter.Response, error) {
	return milter.RespAccept, nil
}
