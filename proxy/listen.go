package proxy

import (
	"errors"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"strings"

	"github.com/sctrace/sctrace/internal/scratch"
)

// Listener is where the proxy waits for gdb.
type Listener struct {
	net.Listener
	// Target is what to give gdb's `target remote`: a socket path or
	// HOST:PORT.
	Target string
	// Open, when set, says that others than the user can connect: a TCP
	// port on an address other than loopback.
	Open string
	dir  string // a private directory made for the socket
}

// Listen listens where addr says: "" for a Unix socket in a new private
// directory (0700), "unix:PATH" for a socket at PATH (0600), ":PORT" or
// "localhost:PORT" for a loopback port, or HOST:PORT, which anyone who can
// reach HOST may connect to (Open says so). Port 0 picks a free port.
func Listen(addr string) (*Listener, error) {
	switch {
	case addr == "":
		dir, err := scratch.Dir("proxy-")
		if err != nil {
			return nil, err
		}
		l, err := listenUnix(filepath.Join(dir, "gdb.sock"))
		if err != nil {
			os.RemoveAll(dir)
			return nil, err
		}
		l.dir = dir
		return l, nil
	case strings.HasPrefix(addr, "unix:"):
		path := strings.TrimPrefix(addr, "unix:")
		if path == "" {
			return nil, errors.New("--listen unix: needs a path, as in unix:/tmp/gdb.sock")
		}
		return listenUnix(path)
	}
	host, port, err := net.SplitHostPort(addr)
	if err != nil {
		return nil, fmt.Errorf("--listen %q: want unix:PATH, :PORT or HOST:PORT: %w", addr, err)
	}
	loopback := host == "" || host == "localhost"
	if ip := net.ParseIP(host); ip != nil && ip.IsLoopback() {
		loopback = true
	}
	if host == "" || host == "localhost" {
		host = "127.0.0.1"
	}
	ln, err := net.Listen("tcp", net.JoinHostPort(host, port))
	if err != nil {
		return nil, fmt.Errorf("listen for gdb: %w", err)
	}
	l := &Listener{Listener: ln, Target: ln.Addr().String()}
	if !loopback {
		l.Open = fmt.Sprintf("listening on %s, which anyone who can reach that address may connect to; whoever connects controls the guest and, through QEMU's monitor commands, can make QEMU run programs as you", l.Target)
	}
	return l, nil
}

// listenUnix listens on a Unix socket at path, readable and writable by
// the user only.
func listenUnix(path string) (*Listener, error) {
	ln, err := net.Listen("unix", path)
	if err != nil {
		return nil, fmt.Errorf("listen for gdb: %w", err)
	}
	if err := os.Chmod(path, 0o600); err != nil {
		ln.Close()
		return nil, fmt.Errorf("listen for gdb: %w", err)
	}
	return &Listener{Listener: ln, Target: path}, nil
}

// Close stops listening and removes the socket and the directory made for
// it.
func (l *Listener) Close() error {
	err := l.Listener.Close()
	if l.dir != "" {
		os.RemoveAll(l.dir)
	}
	return err
}
