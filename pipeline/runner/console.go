package runner

import (
	"fmt"
	"io"
	"sync"
	"time"

	"github.com/schollz/progressbar/v3"
)

// console prints stage progress: a progress bar with ETA on a terminal,
// plain lines at most every few seconds otherwise.
type console struct {
	mu  sync.Mutex
	w   io.Writer
	tty bool
}

func newConsole(w io.Writer, tty bool) *console {
	if w == nil {
		w = io.Discard
	}
	return &console{w: w, tty: tty}
}

func (c *console) printf(format string, args ...any) {
	c.mu.Lock()
	defer c.mu.Unlock()
	fmt.Fprintf(c.w, format, args...)
}

func (c *console) stageLine(stage, format string, args ...any) {
	c.printf("[%s] %s\n", stage, fmt.Sprintf(format, args...))
}

type stageProgress struct {
	c     *console
	stage string
	bar   *progressbar.ProgressBar
	last  time.Time
	total int64
}

func (c *console) progress(stage string) *stageProgress {
	return &stageProgress{c: c, stage: stage}
}

func (p *stageProgress) update(done, total int64, unit string) {
	if p.c.tty {
		p.c.mu.Lock()
		defer p.c.mu.Unlock()
		if p.bar == nil || total != p.total {
			if p.bar != nil {
				p.bar.Finish()
			}
			p.total = total
			max := total
			if max <= 0 {
				max = -1
			}
			p.bar = progressbar.NewOptions64(max,
				progressbar.OptionSetWriter(p.c.w),
				progressbar.OptionSetDescription(fmt.Sprintf("[%s]", p.stage)),
				progressbar.OptionShowCount(),
				progressbar.OptionSetItsString(unit),
				progressbar.OptionShowIts(),
				progressbar.OptionSetPredictTime(true),
				progressbar.OptionThrottle(100*time.Millisecond),
				progressbar.OptionClearOnFinish(),
			)
		}
		p.bar.Set64(done)
		return
	}
	if time.Since(p.last) < 5*time.Second && done != total {
		return
	}
	p.last = time.Now()
	if total > 0 {
		p.c.stageLine(p.stage, "%d/%d %s (%.0f%%)", done, total, unit, 100*float64(done)/float64(total))
	} else {
		p.c.stageLine(p.stage, "%d %s", done, unit)
	}
}

func (p *stageProgress) println(msg string) {
	p.c.mu.Lock()
	if p.bar != nil {
		p.bar.Clear()
	}
	fmt.Fprintf(p.c.w, "[%s] %s\n", p.stage, msg)
	if p.bar != nil {
		p.bar.RenderBlank()
	}
	p.c.mu.Unlock()
}

// close removes the bar; it may be called more than once.
func (p *stageProgress) close() {
	p.c.mu.Lock()
	defer p.c.mu.Unlock()
	if p.bar != nil {
		p.bar.Finish()
		p.bar = nil
	}
}
