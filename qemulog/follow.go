package qemulog

import (
	"io"
	"sync"
	"time"
)

// Follower reads a log that QEMU is still writing, as `tail -f` does: at
// the end of what is written so far, Read waits for more instead of
// returning io.EOF, until End says the writer has finished (the log is
// switched off, so QEMU has flushed and closed it). A Reader over a
// Follower then turns the log into records while the guest runs; a record
// cut off at the current end waits for the rest of its lines, and a log
// that ends mid-record only counts as cut off once End is called.
type Follower struct {
	r    io.Reader
	poll time.Duration
	end  chan struct{}
	once sync.Once
}

// Follow returns a Follower of r, a file being written, that looks for
// more every poll (5ms when 0) while it is at the end.
func Follow(r io.Reader, poll time.Duration) *Follower {
	if poll <= 0 {
		poll = 5 * time.Millisecond
	}
	return &Follower{r: r, poll: poll, end: make(chan struct{})}
}

// End says that the writer has finished: Read returns io.EOF at the end
// of the file from now on. It may be called more than once, from any
// goroutine.
func (f *Follower) End() { f.once.Do(func() { close(f.end) }) }

// Read reads what is written, waiting for more at the end of the file
// until End.
func (f *Follower) Read(p []byte) (int, error) {
	var tick *time.Timer
	for {
		n, err := f.r.Read(p)
		if n > 0 || err != io.EOF {
			return n, err
		}
		select {
		case <-f.end:
			// What was written before End is there to read.
			return f.r.Read(p)
		default:
		}
		if tick == nil {
			tick = time.NewTimer(f.poll)
			defer tick.Stop()
		} else {
			tick.Reset(f.poll)
		}
		select {
		case <-f.end:
		case <-tick.C:
		}
	}
}
