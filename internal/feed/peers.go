package feed

import (
	"bufio"
	"fmt"
	"io"
	"net/url"
	"strconv"
	"strings"
)

// ParsePeers reads a peers file: one peer a line, `NAME URL PUBLIC-KEY
// [WEIGHT]`, where URL is the peer's feed.json (http or https), PUBLIC-KEY
// the base64 line of its minisign public key, and WEIGHT a positive number
// (default 1). Blank lines and lines starting with # are ignored.
func ParsePeers(r io.Reader) ([]Peer, error) {
	var (
		peers []Peer
		names = map[string]bool{}
		sc    = bufio.NewScanner(r)
		n     int
	)
	for sc.Scan() {
		n++
		line := strings.TrimSpace(sc.Text())
		if line == "" || strings.HasPrefix(line, "#") {
			continue
		}
		f := strings.Fields(line)
		if len(f) != 3 && len(f) != 4 {
			return nil, fmt.Errorf("peers line %d: want NAME URL PUBLIC-KEY [WEIGHT], got %d fields", n, len(f))
		}
		p := Peer{Name: f[0], URL: f[1], Weight: 1}
		if !nameRE().MatchString(p.Name) || len(p.Name) > maxName {
			return nil, fmt.Errorf("peers line %d: %q is not a name", n, p.Name)
		}
		if names[p.Name] {
			return nil, fmt.Errorf("peers line %d: peer %s named twice", n, p.Name)
		}
		names[p.Name] = true
		u, err := url.Parse(p.URL)
		if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
			return nil, fmt.Errorf("peers line %d: %q is not an http(s) URL", n, p.URL)
		}
		if p.Key, err = ParsePublicKey(f[2]); err != nil {
			return nil, fmt.Errorf("peers line %d: %w", n, err)
		}
		if len(f) == 4 {
			w, err := strconv.ParseFloat(f[3], 64)
			if err != nil || w <= 0 || w > 1000 {
				return nil, fmt.Errorf("peers line %d: weight %q is not a positive number", n, f[3])
			}
			p.Weight = w
		}
		peers = append(peers, p)
	}
	if err := sc.Err(); err != nil {
		return nil, fmt.Errorf("read peers: %w", err)
	}
	return peers, nil
}
