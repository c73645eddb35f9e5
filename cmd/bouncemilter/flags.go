package main

import (
	"fmt"
	"net/netip"
	"strings"
)

// listFlag is a repeatable string flag.
type listFlag []string

func (l *listFlag) String() string     { return strings.Join(*l, ",") }
func (l *listFlag) Set(v string) error { *l = append(*l, v); return nil }

// prefixFlag is a repeatable address or CIDR flag.
type prefixFlag []netip.Prefix

func (p *prefixFlag) String() string {
	var s []string
	for _, x := range *p {
		s = append(s, x.String())
	}
	return strings.Join(s, ",")
}

func (p *prefixFlag) Set(v string) error {
	if a, err := netip.ParseAddr(v); err == nil {
		*p = append(*p, netip.PrefixFrom(a.Unmap(), a.Unmap().BitLen()))
		return nil
	}
	pr, err := netip.ParsePrefix(v)
	if err != nil {
		return fmt.Errorf("not an address or CIDR prefix: %q", v)
	}
	*p = append(*p, pr.Masked())
	return nil
}

// wordsFlag is a command and its arguments in one flag, split at spaces.
type wordsFlag struct{ words *[]string }

func (w wordsFlag) String() string {
	if w.words == nil || len(*w.words) == 0 {
		return "postconf"
	}
	return strings.Join(*w.words, " ")
}

func (w wordsFlag) Set(v string) error {
	*w.words = strings.Fields(v)
	if len(*w.words) == 0 {
		return fmt.Errorf("empty command")
	}
	return nil
}
