// Package proxy sits between gdb (or any client of the GDB remote serial
// protocol) and QEMU's gdbstub, forwards every byte each way unchanged, and
// records the instructions the client single-steps as a trace.
//
// The client works as when connected directly: its packets, acks and
// interrupts reach the stub as sent, and the stub's replies reach it as
// sent. When the client asks for a single step ('s', 'S', or vCont with an
// s action), the proxy, before forwarding the request, reads what the
// stepping recorder reads before an instruction (the registers, the
// instruction's bytes, the memory its operands name); when the stub
// answers with a stop, it reads the state after the instruction before
// forwarding the stop reply, and appends the annotated step to the trace
// (trace.Recorder's Begin and Finish, as the recorder does for its own
// steps). When the client continues, the trace notes a gap.
//
// The proxy's own requests are chosen so that they change nothing the
// client relies on: it reads registers with 'g' (QEMU answers for the vCPU
// that stopped, or the one the client selected with Hg; the proxy never
// sends H), reads memory with 'm', reads the single-step flags without
// setting them and never sends '?' (which makes QEMU drop breakpoints). It
// follows the session's state from what passes: the features the stub
// offered (packet size, target description), whether acks were turned off
// (QStartNoAckMode), and whether the client switched memory accesses to
// physical addresses (Qqemu.PhyMemMode, which the proxy turns off around
// its reads and back on). With acks on, the proxy acknowledges a stop
// reply it holds back itself and absorbs the client's ack of it, resending
// the reply itself when the client asks for it again ('-'), so that the
// stub never sees a second ack nor resends one of the proxy's replies.
package proxy

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"strings"
	"sync"
	"time"

	"github.com/sctrace/sctrace/annotate"
	"github.com/sctrace/sctrace/gdbremote"
	"github.com/sctrace/sctrace/session"
	"github.com/sctrace/sctrace/symbols"
	"github.com/sctrace/sctrace/target"
	"github.com/sctrace/sctrace/trace"
	"github.com/sctrace/sctrace/x86"
)

// Config configures a proxy.
type Config struct {
	// To is the stub's address: HOST:PORT, :PORT (loopback) or unix:PATH.
	To string
	// Symbols names addresses; nil looks for the bundled teaching kernel
	// in guest memory at the first step.
	Symbols *symbols.Table
	// Timeout bounds each of the proxy's own exchanges with the stub and
	// each write (default gdbremote.DefaultTimeout).
	Timeout time.Duration
	// StackWords, when non-zero, reads that many words at RSP before each
	// step, as the stepping recorder does for stack panels.
	StackWords int
	// Listing, when set, gets each step as text as it is recorded, and a
	// line for each gap.
	Listing io.Writer
	Syntax  trace.Syntax
	// Warn, when set, is told of what the proxy could not do (a step it
	// could not read, say); gdb's session goes on regardless.
	Warn func(msg string)
	// Recorded, when set, is called after each step or gap is added to
	// the trace, on the proxy's goroutine: it must return at once (take
	// a View of the trace to save it elsewhere).
	Recorded func(t *trace.Trace)
}

// Side names an end of the proxy.
type side int

const (
	fromClient side = iota
	fromStub
)

// event is a frame read from one side, or the error that ended that side.
type event struct {
	f   gdbremote.Frame
	err error
}

// Proxy is one client's session through the proxy.
type Proxy struct {
	cfg    Config
	client net.Conn
	stub   net.Conn
	stubCh chan event
	lent   *lentConn

	// What passes, followed.
	features   string // the stub's qSupported reply
	noAck      bool   // QStartNoAckMode was accepted
	phys       bool   // the client switched m/M to physical addresses
	lastReq    []byte // the client's last packet payload
	askNoAck   bool
	askPhys    int // -1 none, else the mode asked for
	stepping   bool
	running    bool
	heldReply  []byte // a stop reply forwarded after the proxy acked it
	swallowAck int    // client acks of such replies still to absorb

	// Recording.
	conn      *gdbremote.Conn
	connAck   bool // the no-ack state conn was made with
	tgt       *target.Target
	rec       *trace.Recorder
	pend      *trace.Pending
	lastStop  *x86.State // the state at the last stop, while unchanged
	failed    string     // why the last step could not be recorded
	nameTries int        // attempts at reading the guest's kallsyms
	lastWarn  string
	listedGap string
	closed    chan struct{}
	stopOnce  sync.Once
}

// Serve accepts one client on ln, connects to the stub at cfg.To, and
// forwards between them until the client or the stub hangs up or ctx ends.
// It returns the trace recorded (nil when nothing was stepped) and why the
// session ended: nil when the client disconnected or detached.
func Serve(ctx context.Context, ln net.Listener, cfg Config) (*trace.Trace, error) {
	client, err := accept(ctx, ln)
	if err != nil {
		return nil, err
	}
	defer client.Close()
	if cfg.Timeout <= 0 {
		cfg.Timeout = gdbremote.DefaultTimeout
	}
	stub, err := dial(ctx, cfg.To, cfg.Timeout)
	if err != nil {
		return nil, err
	}
	defer stub.Close()
	p := newProxy(cfg, client, stub)
	err = p.run(ctx)
	return p.trace(), err
}

// accept waits for one connection on ln, or for ctx to end.
func accept(ctx context.Context, ln net.Listener) (net.Conn, error) {
	stop := context.AfterFunc(ctx, func() { ln.Close() })
	defer stop()
	c, err := ln.Accept()
	if err != nil {
		if ctx.Err() != nil {
			return nil, fmt.Errorf("waiting for gdb to connect: %w", ctx.Err())
		}
		return nil, fmt.Errorf("waiting for gdb to connect: %w", err)
	}
	return c, nil
}

// dial connects to the stub: HOST:PORT, :PORT (loopback) or unix:PATH.
func dial(ctx context.Context, addr string, timeout time.Duration) (net.Conn, error) {
	network, address := "tcp", addr
	switch {
	case strings.HasPrefix(addr, "unix:"):
		network, address = "unix", strings.TrimPrefix(addr, "unix:")
	case strings.HasPrefix(addr, ":"):
		address = "127.0.0.1" + addr
	}
	d := net.Dialer{Timeout: timeout}
	c, err := d.DialContext(ctx, network, address)
	if err != nil {
		return nil, fmt.Errorf("connect to the stub at %s: %w (is QEMU running with -s or -gdb?)", addr, err)
	}
	return c, nil
}

func newProxy(cfg Config, client, stub net.Conn) *Proxy {
	p := &Proxy{cfg: cfg, client: client, stub: stub, stubCh: make(chan event, 16), askPhys: -1, closed: make(chan struct{})}
	p.lent = &lentConn{Conn: stub, ch: p.stubCh, kick: make(chan struct{}, 1)}
	return p
}

// read sends the frames of r to ch until r fails or the proxy ends.
func (p *Proxy) read(r io.Reader, ch chan<- event) {
	fr := gdbremote.NewFrameReader(r)
	for {
		f, err := fr.Next()
		select {
		case ch <- event{f: f, err: err}:
		case <-p.closed:
			return
		}
		if err != nil {
			return
		}
	}
}

func (p *Proxy) run(ctx context.Context) error {
	defer p.stopOnce.Do(func() { close(p.closed) })
	clientCh := make(chan event, 16)
	go p.read(p.client, clientCh)
	go p.read(p.stub, p.stubCh)
	// Closing both ends on ctx's end unblocks any write in progress.
	stop := context.AfterFunc(ctx, func() {
		p.client.SetDeadline(time.Now())
		p.stub.SetDeadline(time.Now())
	})
	defer stop()
	for {
		if p.lent.dead != nil {
			return p.stubGone(p.lent.dead)
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case e := <-clientCh:
			if e.err != nil {
				switch {
				case ctx.Err() != nil:
					return ctx.Err()
				case e.err == io.EOF || errors.Is(e.err, net.ErrClosed):
					return nil
				}
				return fmt.Errorf("gdb's connection: %w", e.err)
			}
			if err := p.fromClient(ctx, e.f); err != nil {
				return err
			}
		case e := <-p.stubCh:
			if e.err != nil {
				if ctx.Err() != nil {
					return ctx.Err()
				}
				return p.stubGone(e.err)
			}
			if err := p.fromStub(ctx, e.f); err != nil {
				return err
			}
		}
	}
}

func (p *Proxy) stubGone(err error) error {
	if req := string(p.lastReq); req == "k" || strings.HasPrefix(req, "vKill") {
		return nil // gdb killed the guest: QEMU ends, as asked
	}
	if err == io.EOF {
		return errors.New("the stub closed the connection (QEMU ended?)")
	}
	return fmt.Errorf("the stub's connection: %w", err)
}

// send writes raw bytes to one side, with a deadline.
func (p *Proxy) send(c net.Conn, b []byte) error {
	c.SetWriteDeadline(time.Now().Add(p.cfg.Timeout))
	_, err := c.Write(b)
	if err != nil {
		if c == p.client {
			return fmt.Errorf("write to gdb: %w", err)
		}
		return fmt.Errorf("write to the stub: %w", err)
	}
	return nil
}

// fromClient handles a frame from the client: it notes what the client
// asks for, reads the state before a single step, and forwards the frame.
func (p *Proxy) fromClient(ctx context.Context, f gdbremote.Frame) error {
	switch f.Kind {
	case gdbremote.FrameAck:
		if p.swallowAck > 0 {
			p.swallowAck--
			return nil
		}
	case gdbremote.FrameNack:
		if p.swallowAck > 0 {
			// The client asks again for the stop reply the proxy
			// acknowledged: the stub would resend its own last reply,
			// one of the proxy's, so the proxy resends it.
			return p.send(p.client, p.heldReply)
		}
	case gdbremote.FramePacket:
		if f.Bad == nil {
			p.request(ctx, f.Payload)
		}
	}
	return p.send(p.stub, f.Raw)
}

// request follows a well-formed packet from the client.
func (p *Proxy) request(ctx context.Context, req []byte) {
	p.lastReq = append(p.lastReq[:0], req...)
	p.askNoAck = string(req) == "QStartNoAckMode"
	p.askPhys = -1
	switch kind := classify(req); kind {
	case reqStep:
		p.stepping, p.running = true, false
		p.beginStep(ctx)
	case reqResume:
		p.stepping, p.running, p.pend = false, true, nil
		p.lastStop = nil
	case reqWriteRegs, reqThread:
		p.lastStop = nil
	case reqWriteMem:
		p.lastStop = nil
		if p.tgt != nil {
			p.tgt.InvalidateCode()
		}
	case reqPhysOn:
		p.askPhys = 1
	case reqPhysOff:
		p.askPhys = 0
	}
}

// fromStub handles a frame from the stub: a stop that ends a single step
// is held until the step is recorded.
func (p *Proxy) fromStub(ctx context.Context, f gdbremote.Frame) error {
	if f.Kind == gdbremote.FramePacket && f.Bad == nil {
		switch {
		case p.askNoAck && string(f.Payload) == "OK":
			p.noAck, p.askNoAck = true, false
		case p.askPhys >= 0 && string(f.Payload) == "OK":
			p.phys, p.askPhys = p.askPhys == 1, -1
		case bytes.HasPrefix(p.lastReq, []byte("qSupported")) && !isStop(f.Payload):
			p.features = string(f.Payload)
			p.lastReq = p.lastReq[:0]
		}
		stop := isStop(f.Payload)
		switch {
		case stop && p.stepping:
			p.stepping = false
			if err := p.ackHeld(f.Raw); err != nil {
				return err
			}
			p.endStep(ctx, f.Payload)
		case stop && p.running:
			p.running = false
			if err := p.ackHeld(f.Raw); err != nil {
				return err
			}
			p.endRun(ctx, f.Payload)
		case p.stepping && !isConsole(f.Payload):
			// The step was refused (an error reply): nothing ran.
			p.stepping, p.pend = false, nil
		}
	}
	return p.send(p.client, f.Raw)
}

// ackHeld acknowledges, with acks on, a stop reply the proxy is about to
// hold while it sends requests of its own: the stub must not be left
// waiting for the client's ack, which the proxy will absorb instead.
func (p *Proxy) ackHeld(raw []byte) error {
	if p.noAck {
		return nil
	}
	p.heldReply = append(p.heldReply[:0], raw...)
	p.swallowAck++
	return p.send(p.stub, []byte{'+'})
}

// beginStep reads the state before the step the client asked for.
func (p *Proxy) beginStep(ctx context.Context) {
	p.pend, p.failed = nil, ""
	err := p.inject(ctx, func(ctx context.Context) error {
		before := p.lastStop
		if before == nil {
			st, err := p.tgt.State(ctx)
			if err != nil {
				return err
			}
			before = st
		}
		if stage := trace.BootStage(before); stage != "" {
			// The recorder decodes 64-bit code only.
			return fmt.Errorf("the CPU is in %s", stage)
		}
		pend, err := p.rec.Begin(ctx, before)
		if err != nil {
			return err
		}
		p.pend = pend
		return nil
	})
	if err != nil {
		p.failed = err.Error()
		p.warn("gdb's steps cannot be recorded here: %v", err)
	}
}

// endStep records the step that the stop reply stop ended.
func (p *Proxy) endStep(ctx context.Context, stop []byte) {
	pend := p.pend
	p.pend, p.lastStop = nil, nil
	if exited(stop) {
		p.note("the guest ended (%s) on a single step", stop)
		return
	}
	err := p.inject(ctx, func(ctx context.Context) error {
		after, err := p.tgt.State(ctx)
		if err != nil {
			return err
		}
		p.lastStop = after
		if pend == nil {
			p.note("gdb stepped where sctrace cannot record (%s)", p.failed)
			return nil
		}
		before := pend.Before()
		if after.R == before.R && after.Known == before.Known {
			// QEMU now and then reports a single step before the
			// instruction ran: nothing executed, nothing to record.
			p.rec.Trace().Header.SpuriousStops++
			p.lastStop = before
			return nil
		}
		mid, ranOn := pend.PauseRanOn(after)
		if ranOn {
			after = mid
		}
		s := p.rec.Finish(ctx, pend, after)
		if p.cfg.Listing != nil {
			trace.WriteStepText(p.cfg.Listing, s, p.cfg.Syntax)
		}
		if ranOn {
			p.rec.NoteGap(fmt.Sprintf("gdb's single step over the pause at %s ran on past the next instruction (QEMU's TCG raises no single-step stop after a pause), which is not recorded", s.Where()))
		}
		p.recorded()
		// Here, with gdb waiting for a stop reply (as long as it takes)
		// rather than for the ack of a request (a few seconds).
		p.findLinux(ctx, after)
		return nil
	})
	if err != nil {
		p.warn("the step gdb made cannot be recorded: %v", err)
		p.note("gdb stepped, and the state after the step could not be read: %v", err)
	}
}

// endRun notes the gap a continue left in the recording.
func (p *Proxy) endRun(ctx context.Context, stop []byte) {
	if p.rec == nil {
		return // nothing recorded yet: no gap to speak of
	}
	if exited(stop) {
		p.note("gdb let the guest run, and it ended (%s)", stop)
		return
	}
	where := "an unknown place"
	err := p.inject(ctx, func(ctx context.Context) error {
		st, err := p.tgt.State(ctx)
		if err != nil {
			return err
		}
		p.findLinux(ctx, st)
		p.lastStop, where = st, p.where(st)
		return nil
	})
	if err != nil {
		p.warn("reading where the guest stopped: %v", err)
	}
	p.note("gdb let the guest run; it stopped (%s) at %s", stopWhy(stop), where)
}

// note records a gap in the trace and lists it, once for each reason.
func (p *Proxy) note(format string, args ...any) {
	if p.rec == nil {
		return
	}
	g := p.rec.NoteGap(fmt.Sprintf(format, args...))
	if p.cfg.Listing != nil && g.What != p.listedGap {
		p.listedGap = g.What
		trace.WriteGapText(p.cfg.Listing, g)
	}
	p.recorded()
}

// recorded tells Config.Recorded that the trace grew.
func (p *Proxy) recorded() {
	if p.cfg.Recorded != nil {
		p.cfg.Recorded(p.rec.Trace())
	}
}

// warn tells the user what the proxy could not do, once until it changes.
func (p *Proxy) warn(format string, args ...any) {
	msg := fmt.Sprintf(format, args...)
	if p.cfg.Warn != nil && msg != p.lastWarn {
		p.lastWarn = msg
		p.cfg.Warn(msg)
	}
}

func (p *Proxy) where(st *x86.State) string {
	rip := st.Val(x86.RIP)
	if p.rec != nil {
		if s := p.rec.Symbols.Symbolize(rip); s != "" {
			return fmt.Sprintf("%#x <%s>", rip, s)
		}
	}
	return fmt.Sprintf("%#x", rip)
}

// inject runs do with the stub lent to the proxy's own connection: the
// client's frames wait (they are not read meanwhile), and the stub's
// replies go to the proxy. The connection is made at the first use, and
// the recorder with it.
func (p *Proxy) inject(ctx context.Context, do func(ctx context.Context) error) (err error) {
	ctx, cancel := context.WithTimeout(ctx, 4*p.cfg.Timeout)
	defer cancel()
	if p.conn == nil || p.connAck != p.noAck {
		if err := p.join(ctx); err != nil {
			return err
		}
	}
	if p.phys {
		if err := p.conn.SetPhysicalMemoryMode(ctx, false); err != nil {
			return err
		}
		defer func() {
			if perr := p.conn.SetPhysicalMemoryMode(ctx, true); perr != nil && err == nil {
				err = fmt.Errorf("put gdb's physical memory mode back: %w", perr)
			}
		}()
	}
	if p.rec == nil {
		if err := p.record(ctx); err != nil {
			return err
		}
	}
	return do(ctx)
}

// join makes the proxy's connection on the session gdb opened.
func (p *Proxy) join(ctx context.Context) error {
	conn, err := gdbremote.Join(ctx, p.lent, p.cfg.To, gdbremote.Joined{Features: p.features, NoAck: p.noAck}, gdbremote.WithTimeout(p.cfg.Timeout))
	if err != nil {
		return err
	}
	p.conn, p.connAck = conn, p.noAck
	if p.tgt != nil {
		// The no-ack state changed: same target, new connection.
		p.tgt.Conn = conn
		return nil
	}
	p.tgt = target.New(conn)
	return nil
}

// record makes the recorder, once the connection is there and memory
// reads are virtual.
func (p *Proxy) record(ctx context.Context) error {
	syms := p.cfg.Symbols
	kernel := "unknown kernel"
	if syms == nil {
		if tab, ok := session.Bundled(ctx, p.tgt); ok {
			syms, kernel = tab, session.KernelDescription
		}
	} else {
		kernel = "kernel with symbols from " + syms.Source
	}
	var regions []annotate.Region
	if syms != nil {
		regions = session.Regions(syms)
	}
	rec := trace.NewRecorder(p.tgt, syms, regions, trace.Header{Target: "qemu gdbstub at " + p.cfg.To + ", stepped by gdb through sctrace proxy", Kernel: kernel})
	rec.StackWords = p.cfg.StackWords
	if err := rec.Observe(ctx, "gdb through sctrace proxy"); err != nil {
		return err
	}
	p.rec = rec
	if p.cfg.Listing != nil {
		h := rec.Trace().Header
		fmt.Fprintf(p.cfg.Listing, "sctrace proxy: %s, %s\nsymbols: %s\nstepping: %s\n\n", h.Target, h.Kernel, orNone(h.Symbols), h.Stepping)
	}
	return nil
}

func orNone(s string) string {
	if s == "" {
		return "none"
	}
	return s
}

// trace returns the recording, nil when nothing was recorded.
func (p *Proxy) trace() *trace.Trace {
	if p.rec == nil {
		return nil
	}
	t := p.rec.Trace()
	if t.Len() == 0 {
		return nil
	}
	if t.Header.Stop == "" {
		t.Header.Stop = "gdb's session ended"
	}
	return t
}
