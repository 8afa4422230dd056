package main

import (
	"fmt"
	"io"
	"os"
	"strings"
	"sync"
	"time"
	"unicode/utf8"

	"golang.org/x/term"

	"github.com/bindsync/bindsync/config"
	"github.com/bindsync/bindsync/worker"
)

// Terminal control: return to the start of the line and erase it.
const clearLine = "\r\x1b[2K"

// progressRedraw is how often the live line is redrawn.
const progressRedraw = 250 * time.Millisecond

// servicesShown bounds the services on the live line; the rest are counted.
const servicesShown = 4

// liveProgress shares a terminal between log lines and a progress line
// redrawn in place. Log lines are written through it (it is the logger's
// output): each one clears the progress line, is written, and the line is
// drawn again below it, so that the two never mix on one line.
//
// A nil *liveProgress is valid and does nothing, which is what a run whose
// stderr is not a terminal gets.
type liveProgress struct {
	out   io.Writer
	width func() int    // terminal columns; 0 when unknown
	every time.Duration // redraw period

	mu    sync.Mutex
	stats *worker.Stats // nil until begin and after end
	drawn bool          // a progress line is on screen

	stop chan struct{}
	done chan struct{}
}

// liveOutput decides where the logs of a run go. When stderr is a terminal
// and the logs are console lines (log.format auto or console), it returns
// a liveProgress writing to stderr, and sets cfg.Log.Format to console,
// since the logger could no longer tell that its output is a terminal.
// Otherwise it returns stderr and nil, and the run keeps its periodic
// progress log lines.
func liveOutput(cfg *config.Config, stderr io.Writer) (io.Writer, *liveProgress) {
	if !isTerminal(stderr) || cfg.Log.Format == "json" {
		return stderr, nil
	}
	cfg.Log.Format = "console"
	f := stderr.(*os.File)
	// The width is asked at every redraw: a resized terminal gets a line
	// that fits it. A terminal that does not say is taken as 80 columns.
	width := func() int {
		w, _, err := term.GetSize(int(f.Fd()))
		if err != nil || w <= 0 {
			return 80
		}
		return w
	}
	lp := newLiveProgress(stderr, width)
	return lp, lp
}

func newLiveProgress(out io.Writer, width func() int) *liveProgress {
	return &liveProgress{out: out, width: width, every: progressRedraw}
}

// Write passes one log entry to the terminal without mixing it with the
// progress line.
func (p *liveProgress) Write(b []byte) (int, error) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.drawn {
		io.WriteString(p.out, clearLine)
		p.drawn = false
	}
	n, err := p.out.Write(b)
	if err == nil && p.stats != nil && len(b) > 0 && b[len(b)-1] == '\n' {
		p.drawLocked()
	}
	return n, err
}

// begin starts redrawing the progress line of stats and returns the
// interval to give the run for progress log lines: 0, since the live line
// replaces them. On a nil p it returns logInterval unchanged.
func (p *liveProgress) begin(stats *worker.Stats, logInterval time.Duration) time.Duration {
	if p == nil {
		return logInterval
	}
	p.mu.Lock()
	p.stats = stats
	p.drawLocked()
	p.mu.Unlock()
	stop, done := make(chan struct{}), make(chan struct{})
	p.stop, p.done = stop, done
	go func() {
		defer close(done)
		t := time.NewTicker(p.every)
		defer t.Stop()
		for {
			select {
			case <-t.C:
				p.draw()
			case <-stop:
				return
			}
		}
	}()
	return 0
}

// end stops the redrawing and erases the progress line, so that the
// run's summary starts on a clean line.
func (p *liveProgress) end() {
	if p == nil || p.stop == nil {
		return
	}
	close(p.stop)
	<-p.done
	p.stop = nil
	p.mu.Lock()
	defer p.mu.Unlock()
	p.stats = nil
	if p.drawn {
		io.WriteString(p.out, clearLine)
		p.drawn = false
	}
}

func (p *liveProgress) draw() {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.drawLocked()
}

func (p *liveProgress) drawLocked() {
	if p.stats == nil {
		return
	}
	io.WriteString(p.out, clearLine+renderProgress(p.stats.Snapshot(), p.width()))
	p.drawn = true
}

// renderProgress formats the live progress line: users finished/known
// (per service, or in all), the bindings read, their rate, the retries and
// the time left. A "+" after a user count means its users are still being
// listed: the count is of the users listed so far, and the time left,
// estimated from the pace of users so far, is a lower bound ("ETA ≥…").
//
// The line fits width columns (0: no limit), leaving the last column free
// so that the terminal never wraps it: when the full line is too long it
// gives up detail in this order: services one by one (aggregated into
// totals), exact numbers (170.3k), the rate, and only then, in a terminal
// too narrow for even that, the end of the line.
func renderProgress(s worker.StatsSnapshot, width int) string {
	e := progressETA(s)
	exact := func(n int64) string { return fmt.Sprint(n) }
	forms := []func() string{
		func() string {
			return perService(s) + "│ " + progressTail(s, e, exact, true, true)
		},
		func() string {
			return perService(s) + "│ " + progressTail(s, e, compact, true, false)
		},
		func() string {
			return totalUsers(s, exact) + "  │ " + progressTail(s, e, exact, true, true)
		},
		func() string {
			return totalUsers(s, exact) + "  │ " + progressTail(s, e, compact, true, false)
		},
		func() string {
			return totalUsers(s, compact) + " │ " + progressTail(s, e, compact, false, false)
		},
		func() string {
			return fmt.Sprintf("%s %sb %dr %s", usersFigure(s, compact), compact(s.Bindings), s.Retries, e)
		},
	}
	if width < 1 {
		return forms[0]()
	}
	var line string
	for _, form := range forms {
		if line = form(); utf8.RuneCountInString(line) <= width-1 {
			return line
		}
	}
	return truncate(line, width-1)
}

// perService is the users finished/known of every service (up to
// servicesShown; the rest are counted), or the totals when the run has no
// service counters.
func perService(s worker.StatsSnapshot) string {
	if len(s.PerService) == 0 {
		return totalUsers(s, func(n int64) string { return fmt.Sprint(n) }) + "  "
	}
	var b strings.Builder
	for i, svc := range s.PerService {
		if i == servicesShown {
			fmt.Fprintf(&b, "+%d more  ", len(s.PerService)-servicesShown)
			break
		}
		more := ""
		if svc.Listing {
			more = "+"
		}
		fmt.Fprintf(&b, "%s %d/%d%s  ", shortSID(svc.SID), svc.UsersFinished, svc.UsersTotal, more)
	}
	return b.String()
}

func totalUsers(s worker.StatsSnapshot, num func(int64) string) string {
	return "users " + usersFigure(s, num)
}

// usersFigure is finished/known users of every service, "+" while some
// are still being listed.
func usersFigure(s worker.StatsSnapshot, num func(int64) string) string {
	more := ""
	if s.Listing {
		more = "+"
	}
	return num(s.Finished()) + "/" + num(s.UsersTotal) + more
}

// progressTail is the part of the line after the users: bindings, rate
// (withRate), retries and the time left e, with "(listing)" after it
// while users are being listed (withListing).
func progressTail(s worker.StatsSnapshot, e string, num func(int64) string, withRate, withListing bool) string {
	var b strings.Builder
	b.WriteString(num(s.Bindings))
	if s.Bindings == 1 {
		b.WriteString(" binding  ")
	} else {
		b.WriteString(" bindings  ")
	}
	if withRate {
		fmt.Fprintf(&b, "%s/s  ", num(int64(s.Rate()+0.5)))
	}
	if s.Retries == 1 {
		b.WriteString("1 retry  ")
	} else {
		fmt.Fprintf(&b, "%s retries  ", num(s.Retries))
	}
	b.WriteString(e)
	if withListing && s.Listing && strings.HasPrefix(e, "ETA") {
		b.WriteString(" (listing)")
	}
	return b.String()
}

// progressETA estimates the time left from the pace of the users finished
// in this run. While users are still being listed, more users than those
// known will come, so the estimate is a lower bound: "ETA ≥…".
func progressETA(s worker.StatsSnapshot) string {
	fresh := s.UsersDone + s.UsersGone + s.UsersNotFound + s.UsersFailed
	left := s.UsersTotal - s.Finished()
	switch {
	case s.Elapsed <= 0 || fresh == 0:
		if s.Listing {
			return "listing users…"
		}
		if s.UsersTotal > 0 && left <= 0 {
			return "finishing…"
		}
		return "ETA unknown"
	case left <= 0 && s.Listing:
		return "listing users…"
	case left <= 0:
		return "finishing…"
	}
	eta := s.Elapsed / time.Duration(fresh) * time.Duration(left)
	mark := ""
	if s.Listing {
		mark = "≥"
	}
	if eta < time.Second {
		if s.Listing {
			return "ETA ≥0s"
		}
		return "ETA <1s"
	}
	return "ETA " + mark + eta.Round(time.Second).String()
}

// compact writes a count in at most 6 columns: 9999, 170.3k, 12.5M.
func compact(n int64) string {
	switch {
	case n < 10_000:
		return fmt.Sprint(n)
	case n < 1_000_000:
		return fmt.Sprintf("%.1fk", float64(n)/1e3)
	default:
		return fmt.Sprintf("%.1fM", float64(n)/1e6)
	}
}

// shortSID keeps a SID recognisable in little room: IS12…ab.
func shortSID(sid string) string {
	if len(sid) <= 8 {
		return sid
	}
	return sid[:4] + "…" + sid[len(sid)-2:]
}

// truncate cuts s to at most n runes; n < 1 means no limit.
func truncate(s string, n int) string {
	if n < 1 || utf8.RuneCountInString(s) <= n {
		return s
	}
	return string([]rune(s)[:n])
}
