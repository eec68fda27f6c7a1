package gdbremote

import (
	"errors"
	"fmt"
	"strconv"
)

// ErrTimeout is matched (with errors.Is) by the error of any request that got
// no complete reply before its deadline. The error also wraps the deadline
// that expired: context.DeadlineExceeded when it came from the caller's
// context, os.ErrDeadlineExceeded when it came from WithTimeout.
var ErrTimeout = errors.New("timeout")

// ErrClosed is matched (with errors.Is) by the error of any request made on,
// or cut short by, a closed connection. The message says whether Close or the
// stub closed it.
var ErrClosed = errors.New("connection closed")

// ErrUnknownValue is returned by ReadRegister when the stub sent the
// register's bytes as "xx": it does not know the value.
var ErrUnknownValue = errors.New("value unknown to the stub")

// ErrUnknownCommand is matched (with errors.Is) by the error of Monitor when
// QEMU's monitor does not know the command: it answers "unknown command:
// 'NAME'" as output and OK, so the command did nothing. Monitor commands
// come and go between QEMU releases ("singlestep" became "one-insn-per-tb"
// in 8.1, and QEMU 10 no longer knows the old name).
var ErrUnknownCommand = errors.New("unknown to QEMU's monitor")

// A StubError is an "Exx" error reply from the stub.
type StubError struct {
	Code    int    // the number after 'E', in hex on the wire
	Request string // the request the stub rejected
}

// Error names the code and the request, and says "address not mapped" for
// memory accesses the stub could not translate.
func (e *StubError) Error() string {
	msg := "stub error E" + hex2(e.Code) + " for " + strconv.Quote(shorten(e.Request))
	if e.NotMapped() {
		msg += ": address not mapped"
	}
	return msg
}

// NotMapped reports whether e is the stub's answer to a memory access at an
// address it could not translate (E14 to 'm' or 'M', as QEMU sends it).
func (e *StubError) NotMapped() bool {
	return e.Code == 0x14 && len(e.Request) > 0 && (e.Request[0] == 'm' || e.Request[0] == 'M')
}

// An UnsupportedError is the stub's empty reply: it does not implement the
// request.
type UnsupportedError struct {
	Request string
}

// Error names the unsupported request.
func (e *UnsupportedError) Error() string {
	return "stub does not support " + strconv.Quote(shorten(e.Request)) + " (empty reply)"
}

// A MalformedError is a reply that does not follow the protocol: bad framing,
// bad checksums that persisted across retransmissions, or content that does
// not parse as the answer to Request.
type MalformedError struct {
	Request string // the request being answered, if known
	Reply   string // the offending reply, or as much of it as was read
	Reason  string // what is wrong with it
}

// Error says what is wrong with which reply to which request.
func (e *MalformedError) Error() string {
	msg := "malformed reply"
	if e.Request != "" {
		msg += " to " + strconv.Quote(shorten(e.Request))
	}
	msg += ": " + e.Reason
	if e.Reply != "" {
		msg += " (reply " + strconv.Quote(shorten(e.Reply)) + ")"
	}
	return msg
}

// timeoutError is a request that ran out of time. It matches ErrTimeout and
// unwraps to the expired deadline.
type timeoutError struct {
	request string
	after   string // how long was allowed, when known
	cause   error
}

func (e *timeoutError) Error() string {
	msg := "no reply to " + strconv.Quote(shorten(e.request))
	if e.after != "" {
		msg += " within " + e.after
	}
	return msg + ": " + ErrTimeout.Error()
}

// Is makes the error match ErrTimeout.
func (e *timeoutError) Is(target error) bool { return target == ErrTimeout }

// Unwrap returns the deadline that passed.
func (e *timeoutError) Unwrap() error { return e.cause }

// closedError is a request that failed because the connection closed.
type closedError struct {
	request string
	by      string // "Close", "the stub", or ""
	cause   error
}

func (e *closedError) Error() string {
	msg := ""
	if e.request != "" {
		msg = strconv.Quote(shorten(e.request)) + ": "
	}
	msg += ErrClosed.Error()
	if e.by != "" {
		msg += " by " + e.by
	}
	if e.cause != nil {
		msg += " (" + e.cause.Error() + ")"
	}
	return msg
}

// Is makes the error match ErrClosed.
func (e *closedError) Is(target error) bool { return target == ErrClosed }

// Unwrap returns the socket error that revealed the closing, if any.
func (e *closedError) Unwrap() error { return e.cause }

// shorten limits s to a length fit for an error message.
func shorten(s string) string {
	const max = 64
	if len(s) <= max {
		return s
	}
	return s[:max] + fmt.Sprintf("...(%d bytes)", len(s))
}

func hex2(v int) string {
	if v < 0 || v > 0xff {
		return strconv.FormatInt(int64(v), 16)
	}
	return string([]byte{hexDigits[v>>4], hexDigits[v&0xf]})
}
