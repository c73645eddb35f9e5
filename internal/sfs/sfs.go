// Package sfs reports confirmed vandals — the username, IP and address of
// a sign-up that this instance's own evidence proved fake, and whose bans
// took effect — to StopForumSpam's submission API, at a limited rate, and
// journals each report with the service's answer in the registry. It never
// reports a restored or allow-listed account (registry.DB.Unreported, and
// registry.DB.ClaimReport again right before each submission), nor what it
// only learnt from peers, nor, when two runs overlap, one account twice.
package sfs

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/url"
	"regexp"
	"strings"
	"sync"
	"time"

	"github.com/bouncemilter/bouncemilter/internal/defaults"
	"github.com/bouncemilter/bouncemilter/internal/registry"
)

// DefaultURL is StopForumSpam's submission endpoint.
const DefaultURL = "https://www.stopforumspam.com/add.php"

// Journal is what the reporter needs of the registry.
type Journal interface {
	Unreported(ctx context.Context, limit int, now time.Time) ([]registry.Vandal, error)
	ClaimReport(ctx context.Context, userID int64, now time.Time) (registry.Vandal, bool, error)
	ReleaseReport(ctx context.Context, userID int64) error
	Reported(ctx context.Context, v registry.Vandal, accepted bool, response string, now time.Time) error
}

// Reporter submits vandals to StopForumSpam.
type Reporter struct {
	Journal Journal
	Key     string // the API key
	URL     string // "" means DefaultURL
	Client  *http.Client
	// Interval is the least time between two submissions; MaxPerRun caps
	// the submissions of one Run (the rest wait for the next).
	Interval  time.Duration
	MaxPerRun int
	Log       *slog.Logger
	Now       func() time.Time
	// Sleep waits between submissions; nil means a timer that ctx can cut.
	Sleep func(ctx context.Context, d time.Duration) error
}

// Defaults for the Reporter's zero fields.
const (
	DefaultInterval  = 5 * time.Second
	DefaultMaxPerRun = 20
	requestTimeout   = 30 * time.Second
)

// Summary is what one Run did. Skipped counts the vandals listed at the
// start of the run and no longer to be reported when their turn came
// (restored, allow-listed, or being reported by another run).
type Summary struct{ Accepted, Refused, Failed, Skipped int }

func (s Summary) String() string {
	out := fmt.Sprintf("%d reported, %d refused, %d failed", s.Accepted, s.Refused, s.Failed)
	if s.Skipped > 0 {
		out += fmt.Sprintf(", %d skipped", s.Skipped)
	}
	return out
}

// Run reports the vandals not reported yet, up to MaxPerRun. A submission
// the service refuses (HTTP 403, with its reason) is journalled and not
// tried again; one that fails otherwise (network, other status) is tried
// again at the next Run. Submissions are spaced out over the run, so each
// vandal is checked again and claimed (registry.DB.ClaimReport) right
// before it is sent: an account restored or allow-listed meanwhile is not
// reported, nor one another run is reporting. It returns an error only
// when the registry fails or ctx ends.
func (r *Reporter) Run(ctx context.Context) (Summary, error) {
	var sum Summary
	if r.Key == "" {
		return sum, errors.New("sfs: no API key")
	}
	limit := r.MaxPerRun
	if limit <= 0 {
		limit = DefaultMaxPerRun
	}
	vandals, err := r.Journal.Unreported(ctx, limit, r.now())
	if err != nil {
		return sum, err
	}
	pause := false // a submission was made since the last pause
	for _, listed := range vandals {
		// Pause before the check, not between it and the submission:
		// the check is then at most one request old when the report
		// arrives.
		if pause {
			if err := r.sleep(ctx, r.interval()); err != nil {
				return sum, err
			}
			pause = false
		}
		v, ok, err := r.Journal.ClaimReport(ctx, listed.UserID, r.now())
		if err != nil {
			return sum, err
		}
		if !ok {
			sum.Skipped++
			r.log().Info("not reporting to StopForumSpam: restored, allow-listed or being reported by another run since the run began", "user", listed.Username)
			continue
		}
		pause = true
		accepted, answer, err := r.submit(ctx, v)
		if err != nil {
			if ctx.Err() != nil {
				// The report may have arrived: the claim stays, and
				// lapses (registry.DB.ClaimReport) before a retry.
				return sum, ctx.Err()
			}
			if err := r.Journal.ReleaseReport(ctx, v.UserID); err != nil {
				return sum, err
			}
			sum.Failed++
			r.log().Warn("reporting to StopForumSpam failed; will retry", "user", v.Username, "err", err)
			continue
		}
		if err := r.Journal.Reported(ctx, v, accepted, answer, r.now()); err != nil {
			return sum, err
		}
		if accepted {
			sum.Accepted++
			r.log().Info("reported to StopForumSpam", "user", v.Username, "ip", v.IP)
		} else {
			sum.Refused++
			r.log().Warn("StopForumSpam refused the report", "user", v.Username, "answer", answer)
		}
	}
	return sum, nil
}

// Compiled on first use, not at the start of every command.
var paragraph = sync.OnceValue(func() *regexp.Regexp { return regexp.MustCompile(`(?is)<p[^>]*>(.*?)</p>`) })

// submit posts one vandal. StopForumSpam answers 200 for an accepted
// submission and 403 with the reason in a paragraph for a refused one.
func (r *Reporter) submit(ctx context.Context, v registry.Vandal) (bool, string, error) {
	form := url.Values{
		"username": {v.Username},
		"ip_addr":  {v.IP},
		"email":    {v.Email},
		"evidence": {v.Evidence},
		"api_key":  {r.Key},
	}
	ctx, cancel := context.WithTimeout(ctx, requestTimeout)
	defer cancel()
	endpoint := r.URL
	if endpoint == "" {
		endpoint = DefaultURL
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, endpoint, strings.NewReader(form.Encode()))
	if err != nil {
		return false, "", err
	}
	req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	client := r.Client
	if client == nil {
		client = http.DefaultClient
	}
	resp, err := client.Do(req)
	if err != nil {
		// The error holds the URL, not the key: the form is the body.
		return false, "", err
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(io.LimitReader(resp.Body, 4<<10))
	answer := strings.TrimSpace(string(body))
	if m := paragraph().FindStringSubmatch(answer); m != nil {
		answer = strings.TrimSpace(m[1])
	}
	switch resp.StatusCode {
	case http.StatusOK:
		return true, answer, nil
	case http.StatusForbidden:
		return false, answer, nil
	}
	return false, "", fmt.Errorf("StopForumSpam answered %s", resp.Status)
}

func (r *Reporter) interval() time.Duration {
	if r.Interval > 0 {
		return r.Interval
	}
	return DefaultInterval
}

func (r *Reporter) sleep(ctx context.Context, d time.Duration) error {
	if r.Sleep != nil {
		return r.Sleep(ctx, d)
	}
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return ctx.Err()
	case <-t.C:
		return nil
	}
}

func (r *Reporter) now() time.Time { return defaults.Now(r.Now) }

func (r *Reporter) log() *slog.Logger { return defaults.Log(r.Log) }
