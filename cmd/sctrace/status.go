package main

import (
	"fmt"
	"io"
	"sync"
	"time"
)

// statusEvery is how often a statusLine's Update rewrites the line at
// most.
const statusEvery = 250 * time.Millisecond

// statusLine is a one-line status (booting, waiting, steps recorded so
// far) on a terminal, rewritten in place and erased when the work is done.
// Off a terminal it writes nothing, so that pipes and logs see only what
// sctrace prints anyway. Its methods are safe for concurrent use and do
// nothing on a nil *statusLine.
type statusLine struct {
	mu    sync.Mutex
	w     io.Writer
	shown bool      // a line is on the terminal
	last  time.Time // when the line was last written
	now   func() time.Time
}

// newStatusLine returns a status line on w, or nil when w is not a
// terminal.
func newStatusLine(w io.Writer, terminal bool) *statusLine {
	if !terminal {
		return nil
	}
	return &statusLine{w: w, now: time.Now}
}

// Show replaces the line with msg.
func (l *statusLine) Show(msg string) {
	if l == nil {
		return
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	l.write(msg)
}

// Update replaces the line with msg unless it was written less than
// statusEvery ago: for counts that change with every step.
func (l *statusLine) Update(msg string) {
	if l == nil {
		return
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.shown && l.now().Sub(l.last) < statusEvery {
		return
	}
	l.write(msg)
}

// Clear erases the line, if one is shown, leaving the cursor at the start
// of the line for what is printed next.
func (l *statusLine) Clear() {
	if l == nil {
		return
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.shown {
		// Carriage return, then erase to the end of the line (ECMA-48 EL).
		fmt.Fprint(l.w, "\r\x1b[K")
		l.shown = false
	}
}

func (l *statusLine) write(msg string) {
	fmt.Fprintf(l.w, "\r\x1b[Ksctrace: %s", msg)
	l.shown, l.last = true, l.now()
}
