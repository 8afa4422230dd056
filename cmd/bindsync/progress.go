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
	width := func() int {
		w, _, err := term.GetSize(int(f.Fd()))
		if err != nil {
			return 0
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

// renderProgress formats the live progress line: users finished/known per
// service ("+" while the service's users are still being listed), then
// the bindings read, their rate, the retries and the time left. The line
// is cut to fit width columns (0: no limit), leaving the last column free
// so that the terminal never wraps it.
func renderProgress(s worker.StatsSnapshot, width int) string {
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
	if len(s.PerService) == 0 {
		fmt.Fprintf(&b, "users %d/%d  ", s.Finished(), s.UsersTotal)
	}
	fmt.Fprintf(&b, "│ %s  %.0f/s  %s  ", plural(s.Bindings, "binding", "bindings"), s.Rate(), plural(s.Retries, "retry", "retries"))
	switch eta := s.ETA(); {
	case s.Listing:
		b.WriteString("listing users…")
	case eta > 0 && eta < time.Second:
		b.WriteString("ETA <1s")
	case eta > 0:
		fmt.Fprintf(&b, "ETA %s", eta.Round(time.Second))
	case s.UsersTotal > 0 && s.Finished() >= s.UsersTotal:
		b.WriteString("finishing…")
	default:
		b.WriteString("ETA unknown")
	}
	return truncate(b.String(), width-1)
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
