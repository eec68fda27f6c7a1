package gdbremote

import (
	"bufio"
	"context"
	"fmt"
	"net"
	"os"
	"strconv"
	"strings"
	"time"
)

// ErrBusy is matched (with errors.Is) by Dial's error when the stub already
// has a client. QEMU's gdbstub serves one debugger at a time: a second
// connection waits unanswered in its queue, and when the first debugger
// leaves, QEMU takes the queued one, which stops the guest again.
var ErrBusy = busyError("another debugger is attached")

type busyError string

func (e busyError) Error() string { return string(e) }

// busyHint explains a handshake that got no answer at all.
const busyHint = "the stub accepted the connection but did not answer: another debugger (gdb, another sctrace) is probably attached, and QEMU's gdbstub serves one at a time; detach it first"

// busyGrace is how long Dial lets a stub's last client go before it calls
// the stub busy: when a debugger has just detached, QEMU closes its end of
// that connection only when its main loop next looks, a moment later.
const busyGrace = 500 * time.Millisecond

// stillAttached reports whether a local stub has a client now and still
// has one after busyGrace (or when ctx ends).
func stillAttached(ctx context.Context, network, address string) bool {
	if !attachedClient(network, address) {
		return false
	}
	deadline := time.NewTimer(busyGrace)
	defer deadline.Stop()
	tick := time.NewTicker(20 * time.Millisecond)
	defer tick.Stop()
	for {
		select {
		case <-deadline.C:
			return true
		case <-ctx.Done():
			return true
		case <-tick.C:
			if !attachedClient(network, address) {
				return false
			}
		}
	}
}

// attachedClient reports whether a local stub at network/address already
// has a client, from the kernel's socket tables, so that Dial can refuse
// before it queues a connection behind it. It says false when it cannot
// tell (a remote host, no /proc).
func attachedClient(network, address string) bool {
	switch network {
	case "unix":
		return unixConnected(address)
	case "tcp":
		host, port, err := net.SplitHostPort(address)
		if err != nil {
			return false
		}
		ip := net.ParseIP(host)
		if host == "localhost" {
			ip = net.IPv4(127, 0, 0, 1)
		}
		if ip == nil || !ip.IsLoopback() {
			return false
		}
		p, err := strconv.Atoi(port)
		if err != nil {
			return false
		}
		return tcpEstablished("/proc/net/tcp", p) || tcpEstablished("/proc/net/tcp6", p)
	}
	return false
}

// unixConnected reports whether /proc/net/unix lists a connected socket
// bound to path: the server's end of an accepted connection carries the
// listening socket's path.
func unixConnected(path string) bool {
	f, err := os.Open("/proc/net/unix")
	if err != nil {
		return false
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		// Num RefCount Protocol Flags Type St Inode Path
		fields := strings.Fields(sc.Text())
		if len(fields) >= 8 && fields[5] == "03" && strings.Join(fields[7:], " ") == path {
			return true
		}
	}
	return false
}

// tcpEstablished reports whether table (/proc/net/tcp or tcp6) holds an
// established connection whose local port is port: a client of the server
// listening there.
func tcpEstablished(table string, port int) bool {
	f, err := os.Open(table)
	if err != nil {
		return false
	}
	defer f.Close()
	want := fmt.Sprintf(":%04X", port)
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		fields := strings.Fields(sc.Text())
		if len(fields) > 3 && strings.HasSuffix(fields[1], want) && fields[3] == "01" {
			return true
		}
	}
	return false
}
