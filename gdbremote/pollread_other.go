//go:build !linux

package gdbremote

import (
	"net"
	"sync/atomic"
	"time"
)

// pollReader is used on Linux only; elsewhere reads go through the
// runtime's network poller.
type pollReader struct{}

func newPollReader(net.Conn, *atomic.Bool) *pollReader { return nil }

func (*pollReader) setDeadline(time.Time) {}

// Read is never called: newPollReader returns nil.
func (*pollReader) Read([]byte) (int, error) { return 0, nil }
