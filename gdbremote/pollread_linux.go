package gdbremote

import (
	"io"
	"net"
	"os"
	"sync/atomic"
	"syscall"
	"time"
	"unsafe"
)

// pollSlice bounds one wait in poll(2), and so how long a cancelled context
// or Close takes to be noticed by a blocked read.
const pollSlice = 10 * time.Millisecond

// A pollReader reads from a socket by blocking its thread in ppoll(2), as a
// C debugger does, rather than parking the goroutine in the runtime's network
// poller. A single step takes the stub a few hundred microseconds, and waking
// a parked goroutine costs a measurable part of that. Deadlines are kept
// here, not in the net.Conn, and checked between waits.
type pollReader struct {
	rc       syscall.RawConn
	closed   *atomic.Bool
	deadline atomic.Int64 // Unix nanoseconds; 0 means none

	// State of the Read in progress, kept here so that a Read allocates
	// nothing: wait is bound once, buf/n/err carry its arguments and
	// results, pfd and ts are ppoll's.
	wait func(fd uintptr) bool
	buf  []byte
	n    int
	err  error
	pfd  pollFd
	ts   syscall.Timespec
}

// newPollReader returns a pollReader for nc, or nil if nc has no file
// descriptor to poll.
func newPollReader(nc net.Conn, closed *atomic.Bool) *pollReader {
	sc, ok := nc.(syscall.Conn)
	if !ok {
		return nil
	}
	rc, err := sc.SyscallConn()
	if err != nil {
		return nil
	}
	r := &pollReader{rc: rc, closed: closed}
	r.wait = r.readOrWait
	return r
}

func (r *pollReader) setDeadline(t time.Time) {
	if t.IsZero() {
		r.deadline.Store(0)
		return
	}
	r.deadline.Store(t.UnixNano())
}

type pollFd struct {
	fd      int32
	events  int16
	revents int16
}

const pollIn = 0x1

// Read reads from the socket, waiting in ppoll until there is something to
// read, the deadline passes or the Conn is closed.
func (r *pollReader) Read(p []byte) (int, error) {
	if len(p) == 0 {
		return 0, nil
	}
	r.buf, r.n, r.err = p, 0, nil
	rerr := r.rc.Read(r.wait)
	n, err := r.n, r.err
	r.buf = nil
	switch {
	case rerr != nil:
		return 0, rerr
	case err != nil:
		return 0, err
	case n == 0:
		return 0, io.EOF
	}
	return n, nil
}

// readOrWait reads into r.buf, waiting in ppoll while there is nothing to
// read, in slices of at most pollSlice, until data comes, the deadline
// passes or the Conn is closed. It always reports that it is done.
func (r *pollReader) readOrWait(fd uintptr) bool {
	for {
		n, err := syscall.Read(int(fd), r.buf)
		switch err {
		case nil:
			r.n = n
			return true
		case syscall.EINTR:
			continue
		case syscall.EAGAIN:
		default:
			r.err = err
			return true
		}
		if r.closed.Load() {
			r.err = net.ErrClosed
			return true
		}
		wait := pollSlice
		if dl := r.deadline.Load(); dl != 0 {
			left := time.Duration(dl - time.Now().UnixNano())
			if left <= 0 {
				r.err = os.ErrDeadlineExceeded
				return true
			}
			wait = min(wait, left)
		}
		r.pfd = pollFd{fd: int32(fd), events: pollIn}
		r.ts = syscall.NsecToTimespec(int64(wait))
		syscall.Syscall6(syscall.SYS_PPOLL, uintptr(unsafe.Pointer(&r.pfd)), 1, uintptr(unsafe.Pointer(&r.ts)), 0, 0, 0)
	}
}
