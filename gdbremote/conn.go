// Package gdbremote is a client for the GDB remote serial protocol as QEMU's
// x86-64 system-mode gdbstub speaks it.
//
// Dial connects and performs the handshake: it negotiates features with
// qSupported, asks once for the stop reason, and reads the target
// description (target.xml and the documents it includes), from which it
// learns the register layout of the 'g' reply. The Conn then reads and writes
// registers and memory, steps, continues, sets breakpoints and watchpoints,
// and passes monitor commands to QEMU.
//
// Every request has a deadline: the caller's context's, or the Conn's
// timeout (WithTimeout) when the context has none. Errors are typed: match
// ErrTimeout and ErrClosed with errors.Is, and *StubError ("Exx" replies),
// *UnsupportedError (empty replies) and *MalformedError with errors.As.
//
// A Conn is used by one goroutine at a time, except that Close and Interrupt
// may be called from any goroutine at any time.
package gdbremote

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"
)

// DefaultTimeout is how long a request waits for its reply when neither the
// context nor WithTimeout says otherwise.
const DefaultTimeout = 5 * time.Second

// qSupportedRequest is the feature list the client offers.
const qSupportedRequest = "qSupported:multiprocess+;swbreak+;hwbreak+;qRelocInsn+;fork-events+;vfork-events+;exec-events+;vContSupported+;QThreadEvents+;no-resumed+;xmlRegisters=i386"

const (
	// defaultPacketSize is assumed when the stub does not send PacketSize.
	defaultPacketSize = 400
	// minPacketSize is the smallest PacketSize honoured; smaller values
	// leave no room for a memory request.
	minPacketSize = 64
	// maxRetries bounds retransmissions after bad checksums and nacks.
	maxRetries = 3
	// maxPacketBytes bounds the raw size of one received packet.
	maxPacketBytes = 1 << 20
	// maxAnnexBytes bounds the size of one target description document.
	maxAnnexBytes = 1 << 20
	// interruptWait bounds the wait for the stop reply after an interrupt.
	interruptWait = 2 * time.Second
	// drainWait is how long stale input is drained after a timeout.
	drainWait = 20 * time.Millisecond
)

type config struct {
	timeout time.Duration
	wireLog io.Writer
}

// An Option configures Dial.
type Option func(*config)

// WithTimeout sets how long each request waits for its reply when its
// context has no deadline. The default is DefaultTimeout. d <= 0 is ignored.
func WithTimeout(d time.Duration) Option {
	return func(c *config) {
		if d > 0 {
			c.timeout = d
		}
	}
}

// WithWireLog writes every packet sent and received to w, one line each with
// a timestamp and the direction ("->" sent, "<-" received). Nacks, interrupts
// and skipped garbage are logged too; acks are not.
func WithWireLog(w io.Writer) Option {
	return func(c *config) { c.wireLog = w }
}

// A Conn is a connection to a gdbstub.
type Conn struct {
	nc   net.Conn
	rd   *bufio.Reader
	addr string
	cfg  config

	wmu       sync.Mutex // serialises writes: packets, acks, interrupts
	wdl       time.Time  // write deadline, guarded by wmu
	logmu     sync.Mutex // serialises wire log lines
	closeOnce sync.Once
	closeErr  error
	closed    atomic.Bool // Close was called

	noAck      bool
	features   map[string]string
	packetSize int
	layout     *layout
	initial    StopReply
	lastThread string // the thread of the last stop reply that named one
	vcont      string // reply to "vCont?", once asked
	vcontAsked bool

	req     []byte  // payload of the request in flight
	out     []byte  // framed request, kept for retransmission
	body    []byte  // raw body of the packet being read
	in      []byte  // decoded payload of the last packet read
	monitor *[]byte // where 'O' output goes during Monitor
	console []string
	stale   bool  // a request timed out: its reply may still arrive
	broken  error // the stub closed the connection
}

// Dial connects to the gdbstub at addr and performs the handshake. addr is
// "host:port", ":port" (meaning 127.0.0.1:port), or "unix:/path". ctx bounds
// the whole of Dial; each step also has the Conn's timeout.
func Dial(ctx context.Context, addr string, opts ...Option) (*Conn, error) {
	cfg := config{timeout: DefaultTimeout}
	for _, o := range opts {
		o(&cfg)
	}
	network, address := "tcp", addr
	switch {
	case addr != "" && strings.Trim(addr, "0123456789") == "":
		return nil, fmt.Errorf("gdbremote: address %q is a port alone: write :%s for a stub on this machine (QEMU's -s is :1234), HOST:PORT, or unix:PATH", addr, addr)
	case strings.HasPrefix(addr, "unix:"):
		network, address = "unix", strings.TrimPrefix(addr, "unix:")
	case strings.HasPrefix(addr, ":"):
		address = "127.0.0.1" + addr
	}
	if stillAttached(ctx, network, address) {
		return nil, fmt.Errorf("gdbremote: %s: %w (a connection to it is established); QEMU's gdbstub serves one debugger at a time: detach that one first", addr, ErrBusy)
	}
	d := net.Dialer{Timeout: cfg.timeout}
	nc, err := d.DialContext(ctx, network, address)
	if err != nil {
		if errors.Is(err, syscall.ECONNREFUSED) || errors.Is(err, syscall.ENOENT) {
			return nil, fmt.Errorf("gdbremote: dial %s: %w (nothing is listening there: is QEMU running with -gdb or -s?)", addr, err)
		}
		return nil, fmt.Errorf("gdbremote: dial %s: %w", addr, err)
	}
	c := newConn(nc, addr, cfg)
	if err := c.handshake(ctx); err != nil {
		// Close at once: a connection left open would stay queued at the
		// stub and stop the guest when the stub gets to it.
		c.Close()
		if errors.Is(err, ErrTimeout) && c.features == nil {
			return nil, fmt.Errorf("gdbremote: handshake with %s: %w; %s", addr, err, busyHint)
		}
		return nil, fmt.Errorf("gdbremote: handshake with %s: %w", addr, err)
	}
	return c, nil
}

func newConn(nc net.Conn, addr string, cfg config) *Conn {
	c := &Conn{
		nc:         nc,
		addr:       addr,
		cfg:        cfg,
		packetSize: defaultPacketSize,
		req:        make([]byte, 0, 256),
		out:        make([]byte, 0, 256),
		body:       make([]byte, 0, 4096),
		in:         make([]byte, 0, 4096),
	}
	c.rd = bufio.NewReaderSize(nc, 16<<10)
	return c
}

// setReadDeadline sets the deadline for reads from the stub.
func (c *Conn) setReadDeadline(t time.Time) { c.nc.SetReadDeadline(t) }

func (c *Conn) handshake(ctx context.Context) error {
	// GDB opens with an ack; stubs ignore it when idle.
	if err := c.write([]byte{ack}); err != nil {
		return c.transportErr(err)
	}
	reply, err := c.requestString(ctx, qSupportedRequest)
	if err != nil {
		return err
	}
	if _, perr := ParseStopReply(reply); perr == nil {
		// QEMU stops a running guest when a debugger connects and may
		// announce it with a stop reply before it answers: skip it.
		if err := c.readReply(); err != nil {
			if isTimeout(err) && !c.closed.Load() {
				return &timeoutError{request: qSupportedRequest, after: c.cfg.timeout.String(), cause: err}
			}
			return c.transportErr(err)
		}
		reply = string(c.in)
		if err := c.replyErr(c.in); err != nil {
			return err
		}
	}
	c.features = parseFeatures(reply)
	if s, ok := c.features["PacketSize"]; ok {
		n, ok := parseHexUint(s)
		if !ok || n > maxPacketBytes {
			return &MalformedError{Request: "qSupported", Reply: reply, Reason: "bad PacketSize"}
		}
		c.packetSize = max(int(n), minPacketSize)
	}
	if c.features["QStartNoAckMode"] == "+" {
		c.setRequest("QStartNoAckMode")
		reply, err := c.roundTrip(ctx, waitReply)
		if err != nil {
			return err
		}
		// An empty reply means acks stay on, as with QEMU 7.2.
		if string(reply) == "OK" {
			c.noAck = true
		}
	}
	reply, err = c.requestString(ctx, "?")
	if err != nil {
		return err
	}
	if c.initial, err = ParseStopReply(reply); err != nil {
		return withRequest(err, "?")
	}
	if c.features["qXfer:features:read"] == "+" {
		regs, err := ParseTargetXML("target.xml", func(annex string) ([]byte, error) {
			return c.readAnnex(ctx, annex)
		})
		if err != nil {
			return err
		}
		c.layout = newLayout(regs)
	}
	return nil
}

// parseFeatures parses a qSupported reply: "name=value" maps name to value,
// "name+", "name-" and "name?" map name to "+", "-" and "?".
func parseFeatures(reply string) map[string]string {
	f := make(map[string]string)
	for _, item := range strings.Split(reply, ";") {
		if item == "" {
			continue
		}
		if name, val, ok := strings.Cut(item, "="); ok {
			f[name] = val
			continue
		}
		switch last := item[len(item)-1]; last {
		case '+', '-', '?':
			f[item[:len(item)-1]] = string(last)
		default:
			f[item] = ""
		}
	}
	return f
}

// readAnnex reads one document of the target description with
// qXfer:features:read, in as many chunks as the stub needs.
func (c *Conn) readAnnex(ctx context.Context, annex string) ([]byte, error) {
	var doc []byte
	for {
		c.req = append(c.req[:0], "qXfer:features:read:"...)
		c.req = append(c.req, annex...)
		c.req = append(c.req, ':')
		c.req = appendHexUint(c.req, uint64(len(doc)))
		c.req = append(c.req, ",fff"...)
		reply, err := c.request(ctx)
		if err != nil {
			return nil, err
		}
		if len(reply) == 0 || (reply[0] != 'm' && reply[0] != 'l') {
			return nil, c.malformed(reply, "qXfer reply does not start with 'm' or 'l'")
		}
		doc = append(doc, reply[1:]...)
		if reply[0] == 'l' {
			return doc, nil
		}
		if len(reply) == 1 {
			return nil, c.malformed(reply, "qXfer reply 'm' with no data")
		}
		if len(doc) > maxAnnexBytes {
			return nil, c.malformed(nil, "target description larger than 1 MiB")
		}
	}
}

// Close closes the connection. It unblocks any request in progress, which
// then fails with ErrClosed. It returns promptly and may be called more than
// once, from any goroutine.
func (c *Conn) Close() error {
	c.closeOnce.Do(func() {
		c.closed.Store(true)
		c.closeErr = c.nc.Close()
	})
	return c.closeErr
}

// Features returns a copy of the features the stub announced in its
// qSupported reply: "PacketSize" -> "1000", "qXfer:features:read" -> "+".
func (c *Conn) Features() map[string]string {
	f := make(map[string]string, len(c.features))
	for k, v := range c.features {
		f[k] = v
	}
	return f
}

// PacketSize returns the largest packet the stub accepts, in bytes.
func (c *Conn) PacketSize() int { return c.packetSize }

// Layout returns a copy of the register layout read from the target
// description, in 'g' reply order. It is empty if the stub has no
// qXfer:features:read.
func (c *Conn) Layout() []Register {
	if c.layout == nil {
		return nil
	}
	return append([]Register(nil), c.layout.regs...)
}

// Addr returns the address Dial was given.
func (c *Conn) Addr() string { return c.addr }

// InitialStop returns the stub's answer to the '?' request Dial sent.
func (c *Conn) InitialStop() StopReply { return c.initial }

// StoppedThread returns the thread named by the last stop reply that named
// one (the initial stop's before any resume), or "". QEMU stops every vCPU
// at once and names the one that caused the stop; its register reads apply
// to that one until an Hg says otherwise.
func (c *Conn) StoppedThread() string {
	if c.lastThread != "" {
		return c.lastThread
	}
	return c.initial.Thread
}

// Console returns the console output ('O' packets) received since the last
// call, one string per packet, and forgets it.
func (c *Conn) Console() []string {
	s := c.console
	c.console = nil
	return s
}

// Interrupt sends the interrupt byte (0x03), which stops a running target;
// the stop reply goes to the Continue or Step waiting for it. It may be
// called from any goroutine.
func (c *Conn) Interrupt() error {
	if c.closed.Load() {
		return fmt.Errorf("gdbremote: interrupt: %w", &closedError{by: "Close"})
	}
	err := c.write([]byte{interrupt})
	if c.cfg.wireLog != nil {
		c.logLine("->", []byte("^C (interrupt)"))
	}
	if err != nil {
		return fmt.Errorf("gdbremote: interrupt: %w", c.transportErr(err))
	}
	return nil
}

// Exchange sends packet (its payload, without framing) and returns the
// reply as sent, with no interpretation: an "Exx" or empty reply is not an
// error. Console output that arrives before the reply goes to Console.
func (c *Conn) Exchange(ctx context.Context, packet string) (string, error) {
	c.setRequest(packet)
	reply, err := c.roundTrip(ctx, waitReply)
	if err != nil {
		return "", fmt.Errorf("gdbremote: exchange: %w", err)
	}
	return string(reply), nil
}

func (c *Conn) setRequest(s string) { c.req = append(c.req[:0], s...) }

// requestString is request for a constant request; it returns a copy.
func (c *Conn) requestString(ctx context.Context, req string) (string, error) {
	c.setRequest(req)
	reply, err := c.request(ctx)
	return string(reply), err
}

// request sends c.req and returns the reply, turning "Exx" replies into
// *StubError and empty replies into *UnsupportedError. The reply is valid
// until the next request.
func (c *Conn) request(ctx context.Context) ([]byte, error) {
	reply, err := c.roundTrip(ctx, waitReply)
	if err != nil {
		return nil, err
	}
	if err := c.replyErr(reply); err != nil {
		return nil, err
	}
	return reply, nil
}

// requestOK is request for requests whose only good answer is "OK".
func (c *Conn) requestOK(ctx context.Context) error {
	reply, err := c.request(ctx)
	if err != nil {
		return err
	}
	if string(reply) != "OK" {
		return c.malformed(reply, "expected OK")
	}
	return nil
}

// replyErr returns the error an "Exx" or empty reply stands for, or nil.
func (c *Conn) replyErr(reply []byte) error {
	if len(reply) == 0 {
		return &UnsupportedError{Request: string(c.req)}
	}
	if len(reply) == 3 && reply[0] == 'E' {
		if code, ok := parseHexUint(reply[1:]); ok {
			return &StubError{Code: int(code), Request: string(c.req)}
		}
	}
	return nil
}

func (c *Conn) malformed(reply []byte, reason string) error {
	return &MalformedError{Request: string(c.req), Reply: string(reply), Reason: reason}
}

// withRequest fills in the request of a *MalformedError.
func withRequest(err error, req string) error {
	var me *MalformedError
	if errors.As(err, &me) && me.Request == "" {
		me.Request = req
	}
	return err
}

var aLongTimeAgo = time.Unix(1, 0)

// wait says how long roundTrip waits for a reply.
type wait int

const (
	waitReply wait = iota // an ordinary request
	waitStep              // a single step: bounded, interrupted on timeout
	waitRun               // a continue: as long as a cancellable context allows
)

// roundTrip sends c.req and reads its reply, collecting console output on
// the way. The reply is valid until the next request.
//
// The deadline is the context's, else the Conn's timeout. A continue
// (waitRun) whose context can be cancelled and has no deadline waits
// without one: the guest may run as long as the user likes. A single step
// (waitStep) always has one, since one instruction never takes long: a
// stub that does not answer (QEMU frozen, a guest halted with interrupts
// masked) must not hang the caller. When a step or continue runs out of
// time or its context ends, roundTrip interrupts the target and waits,
// briefly, for the stop reply: it returns that reply together with the
// error.
func (c *Conn) roundTrip(ctx context.Context, w wait) ([]byte, error) {
	resume := w != waitReply
	if c.closed.Load() {
		return nil, &closedError{request: string(c.req), by: "Close"}
	}
	if c.broken != nil {
		return nil, c.broken
	}
	if err := ctx.Err(); err != nil {
		return nil, fmt.Errorf("%q not sent: %w", c.req, err)
	}
	if c.stale {
		c.drain()
	}
	dl, hasDeadline := ctx.Deadline()
	if !hasDeadline && !(w == waitRun && ctx.Done() != nil) {
		dl = time.Now().Add(c.cfg.timeout)
	}
	c.setReadDeadline(dl)

	var stop func() bool
	var fired chan struct{}
	if ctx.Done() != nil {
		fired = make(chan struct{})
		stop = context.AfterFunc(ctx, func() {
			c.setReadDeadline(aLongTimeAgo)
			close(fired)
		})
	}

	err := c.send()
	if err == nil {
		err = c.readReply()
	}
	if stop != nil && !stop() {
		<-fired // the deadline was moved: wait until it is in place
	}
	if err == nil {
		return c.in, nil
	}
	if !isTimeout(err) || c.closed.Load() {
		return nil, c.transportErr(err)
	}

	// Out of time, or the context ended.
	// The connection's deadline may pass a moment before the context's
	// timer marks the context done.
	var cause error
	switch cerr := ctx.Err(); {
	case cerr == context.DeadlineExceeded || (cerr == nil && hasDeadline):
		cause = &timeoutError{request: string(c.req), cause: context.DeadlineExceeded}
	case cerr == nil:
		cause = &timeoutError{request: string(c.req), after: c.cfg.timeout.String(), cause: os.ErrDeadlineExceeded}
	default:
		cause = fmt.Errorf("%q: %w", c.req, cerr)
	}
	if !resume {
		c.stale = true
		return nil, cause
	}
	if err := c.Interrupt(); err != nil {
		c.stale = true
		return nil, fmt.Errorf("%w; then %w", cause, err)
	}
	c.setReadDeadline(time.Now().Add(min(c.cfg.timeout, interruptWait)))
	if err := c.readReply(); err != nil {
		c.stale = true
		if isTimeout(err) {
			return nil, fmt.Errorf("%w; no stop reply after the interrupt either", cause)
		}
		return nil, fmt.Errorf("%w; then %w", cause, c.transportErr(err))
	}
	return c.in, cause
}

func isTimeout(err error) bool {
	return errors.Is(err, os.ErrDeadlineExceeded)
}

// drain discards input left over from a request that timed out, so that a
// late reply is not taken for the answer to the next request.
func (c *Conn) drain() {
	c.stale = false
	c.setReadDeadline(time.Now().Add(drainWait))
	for {
		n := c.rd.Buffered()
		if n == 0 {
			if _, err := c.rd.Peek(1); err != nil {
				return
			}
			continue
		}
		b, _ := c.rd.Peek(n)
		if c.cfg.wireLog != nil {
			c.logLine("<-", append([]byte("stale input discarded: "), b...))
		}
		c.rd.Discard(n)
	}
}

// transportErr classifies an error from the connection.
func (c *Conn) transportErr(err error) error {
	var me *MalformedError
	if errors.As(err, &me) {
		if me.Request == "" {
			me.Request = string(c.req)
		}
		return err
	}
	req := string(c.req)
	switch {
	case c.closed.Load() || errors.Is(err, net.ErrClosed):
		return &closedError{request: req, by: "Close"}
	case errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF):
		c.broken = &closedError{request: req, by: "the stub"}
		return c.broken
	case errors.Is(err, syscall.ECONNRESET) || errors.Is(err, syscall.EPIPE):
		c.broken = &closedError{request: req, by: "the stub", cause: err}
		return c.broken
	}
	return fmt.Errorf("%q: %w", req, err)
}

// send frames c.req into c.out and writes it.
func (c *Conn) send() error {
	c.out = appendPacket(c.out[:0], c.req)
	if c.cfg.wireLog != nil {
		c.logLine("->", c.req)
	}
	return c.write(c.out)
}

// write writes b to the stub. Writes have a deadline between half the
// timeout and the timeout ahead, moved only when it gets closer than that:
// writes of small packets do not block in practice, and moving the deadline
// on every request would cost a runtime timer update each time.
func (c *Conn) write(b []byte) error {
	c.wmu.Lock()
	defer c.wmu.Unlock()
	if now := time.Now(); now.Add(c.cfg.timeout / 2).After(c.wdl) {
		c.wdl = now.Add(c.cfg.timeout)
		c.nc.SetWriteDeadline(c.wdl)
	}
	_, err := c.nc.Write(b)
	return err
}

var (
	ackByte  = []byte{ack}
	nackByte = []byte{nack}
)

// readReply reads packets until one that is not console output, and leaves
// its payload in c.in. Console output goes to c.monitor during Monitor and
// to c.console otherwise.
func (c *Conn) readReply() error {
	for {
		if err := c.readPacket(); err != nil {
			return err
		}
		if len(c.in) < 3 || c.in[0] != 'O' || !isHex(c.in[1:]) {
			return nil
		}
		text := make([]byte, (len(c.in)-1)/2)
		decodeHex(text, c.in[1:])
		if c.monitor != nil {
			*c.monitor = append(*c.monitor, text...)
		} else {
			c.console = append(c.console, string(text))
		}
	}
}

// readPacket reads one packet, acknowledges it, and leaves its decoded
// payload in c.in. It skips acks and garbage between packets, answers a bad
// checksum with a nack, and retransmits c.out when the stub nacks; both at
// most maxRetries times.
func (c *Conn) readPacket() error {
	badSums, nacks := 0, 0
	var garbage []byte
	for {
		b, err := c.rd.ReadByte()
		if err != nil {
			return err
		}
		switch b {
		case pktStart:
		case ack:
			continue
		case nack:
			if c.noAck {
				continue
			}
			nacks++
			if c.cfg.wireLog != nil {
				c.logLine("<-", []byte("- (nack)"))
			}
			if nacks > maxRetries {
				return &MalformedError{Request: string(c.req), Reason: "the stub rejected the request " + strconv.Itoa(nacks) + " times"}
			}
			if c.cfg.wireLog != nil {
				c.logLine("->", append([]byte("retransmit "), c.req...))
			}
			if err := c.write(c.out); err != nil {
				return err
			}
			continue
		default:
			if c.cfg.wireLog != nil && len(garbage) < 256 {
				garbage = append(garbage, b)
			}
			continue
		}
		if len(garbage) > 0 {
			c.logLine("<-", append([]byte("garbage skipped: "), garbage...))
			garbage = garbage[:0]
		}

		c.body = c.body[:0]
		for {
			chunk, err := c.rd.ReadSlice(pktEnd)
			c.body = append(c.body, chunk...)
			if err == nil {
				break
			}
			if err != bufio.ErrBufferFull {
				return err
			}
			if len(c.body) > maxPacketBytes {
				return &MalformedError{Request: string(c.req), Reply: string(c.body[:64]), Reason: "packet longer than 1 MiB"}
			}
		}
		body := c.body[:len(c.body)-1]
		if i := bytes.LastIndexByte(body, pktStart); i >= 0 {
			// A packet was cut short and a new one began.
			body = body[i+1:]
		}
		hi, err := c.rd.ReadByte()
		if err != nil {
			return err
		}
		lo, err := c.rd.ReadByte()
		if err != nil {
			return err
		}
		sum := unhexTable[hi]<<4 | unhexTable[lo]
		if unhexTable[hi] == 0xff || unhexTable[lo] == 0xff || sum != checksum(body) {
			if c.cfg.wireLog != nil {
				c.logLine("<-", append(append([]byte("bad checksum: "), body...), '#', hi, lo))
			}
			if c.noAck {
				return &MalformedError{Request: string(c.req), Reply: string(body), Reason: "bad checksum"}
			}
			badSums++
			if badSums > maxRetries {
				return &MalformedError{Request: string(c.req), Reply: string(body), Reason: "bad checksum " + strconv.Itoa(badSums) + " times"}
			}
			if c.cfg.wireLog != nil {
				c.logLine("->", []byte("- (nack)"))
			}
			if err := c.write(nackByte); err != nil {
				return err
			}
			continue
		}
		if !c.noAck {
			if err := c.write(ackByte); err != nil {
				return err
			}
		}
		if c.cfg.wireLog != nil {
			c.logLine("<-", body)
		}
		c.in, err = decodePacket(c.in[:0], body)
		if err != nil {
			return &MalformedError{Request: string(c.req), Reply: string(body), Reason: err.Error()}
		}
		return nil
	}
}

// logLine writes one wire log line: time, direction and the packet, with
// bytes that are not printable ASCII written as \xNN.
func (c *Conn) logLine(dir string, p []byte) {
	line := make([]byte, 0, len(p)+32)
	line = time.Now().AppendFormat(line, "15:04:05.000000")
	line = append(line, ' ')
	line = append(line, dir...)
	line = append(line, ' ')
	for _, b := range p {
		if b < 0x20 || b > 0x7e || b == '\\' {
			line = append(line, '\\', 'x', hexDigits[b>>4], hexDigits[b&0xf])
			continue
		}
		line = append(line, b)
	}
	line = append(line, '\n')
	c.logmu.Lock()
	c.cfg.wireLog.Write(line)
	c.logmu.Unlock()
}
