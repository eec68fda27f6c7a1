package proxy

import (
	"io"
	"net"
	"os"
	"sync"
	"time"
)

// lentConn is the stub's connection as the proxy's own gdbremote.Conn sees
// it while the proxy sends requests of its own: reads take the stub's
// frames from the channel the proxy's reader fills (so that no byte is
// read by two readers), writes go to the stub. Close does not close the
// stub's connection, which the proxy owns.
type lentConn struct {
	net.Conn // the stub's connection: writes, addresses, write deadlines
	ch       <-chan event
	pending  []byte
	dead     error // the stub's side ended while lent

	mu       sync.Mutex
	deadline time.Time
	kick     chan struct{} // the read deadline moved
}

// Read returns bytes of the next frame from the stub, waiting until the
// read deadline.
func (l *lentConn) Read(b []byte) (int, error) {
	if len(l.pending) > 0 {
		n := copy(b, l.pending)
		l.pending = l.pending[n:]
		return n, nil
	}
	if l.dead != nil {
		return 0, l.dead
	}
	for {
		n, again, err := l.wait(b)
		if !again {
			return n, err
		}
	}
}

// wait waits once for a frame, the deadline, or a moved deadline (again).
func (l *lentConn) wait(b []byte) (n int, again bool, err error) {
	l.mu.Lock()
	dl := l.deadline
	l.mu.Unlock()
	var expire <-chan time.Time
	if !dl.IsZero() {
		d := time.Until(dl)
		if d <= 0 {
			return 0, false, os.ErrDeadlineExceeded
		}
		t := time.NewTimer(d)
		defer t.Stop()
		expire = t.C
	}
	select {
	case e := <-l.ch:
		if e.err != nil {
			l.dead = e.err
			if e.err == io.ErrUnexpectedEOF {
				l.dead = io.EOF
			}
			return 0, false, l.dead
		}
		n := copy(b, e.f.Raw)
		l.pending = e.f.Raw[n:]
		return n, false, nil
	case <-expire:
		return 0, false, os.ErrDeadlineExceeded
	case <-l.kick:
		return 0, true, nil
	}
}

// SetReadDeadline sets the deadline for Read; it may be called from any
// goroutine (gdbremote moves it when a context ends).
func (l *lentConn) SetReadDeadline(t time.Time) error {
	l.mu.Lock()
	l.deadline = t
	l.mu.Unlock()
	select {
	case l.kick <- struct{}{}:
	default:
	}
	return nil
}

// SetDeadline sets both deadlines.
func (l *lentConn) SetDeadline(t time.Time) error {
	l.SetReadDeadline(t)
	return l.Conn.SetWriteDeadline(t)
}

// Close leaves the stub's connection open: the proxy owns it.
func (l *lentConn) Close() error { return nil }
