package gdbremote

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"slices"
	"strconv"
	"strings"
)

// ReadRegisters reads the whole register file with 'g' and decodes it
// against the layout.
func (c *Conn) ReadRegisters(ctx context.Context) (Values, error) {
	c.req = append(c.req[:0], 'g')
	reply, err := c.request(ctx)
	if err != nil {
		return Values{}, fmt.Errorf("gdbremote: read registers: %w", err)
	}
	v, ok := decodeValues(c.layout, reply)
	if !ok {
		return Values{}, fmt.Errorf("gdbremote: read registers: %w", c.malformed(reply, "not hex"))
	}
	// A reply shorter than the layout leaves the registers it does not
	// cover absent.
	return v, nil
}

// register looks up name in the layout.
func (c *Conn) register(name string) (Register, error) {
	r, ok := c.layout.lookup(name)
	if !ok {
		if c.layout == nil {
			return r, fmt.Errorf("no register %q: the stub gave no target description", name)
		}
		return r, fmt.Errorf("no register %q in the target description", name)
	}
	return r, nil
}

// ReadRegister reads one register with 'p' and returns its bytes in target
// (little-endian) order. If the stub sends the value as "xx" the error
// matches ErrUnknownValue. QEMU answers 'p' only after the target
// description was read, which Dial does.
func (c *Conn) ReadRegister(ctx context.Context, name string) ([]byte, error) {
	r, err := c.register(name)
	if err != nil {
		return nil, fmt.Errorf("gdbremote: read register: %w", err)
	}
	c.req = append(c.req[:0], 'p')
	c.req = appendHexUint(c.req, uint64(r.Regnum))
	reply, err := c.request(ctx)
	if err != nil {
		return nil, fmt.Errorf("gdbremote: read register %s: %w", name, err)
	}
	if len(reply) != 2*r.Size() {
		return nil, fmt.Errorf("gdbremote: read register %s: %w", name,
			c.malformed(reply, fmt.Sprintf("want %d hex digits for %d bits", 2*r.Size(), r.Bitsize)))
	}
	val := make([]byte, r.Size())
	unknown, ok := decodeHex(val, reply)
	if !ok {
		return nil, fmt.Errorf("gdbremote: read register %s: %w", name, c.malformed(reply, "not hex"))
	}
	if unknown {
		return nil, fmt.Errorf("gdbremote: read register %s: %w", name, ErrUnknownValue)
	}
	return val, nil
}

// WriteRegister writes one register with 'P'. val is in target
// (little-endian) order and must be exactly the register's size.
func (c *Conn) WriteRegister(ctx context.Context, name string, val []byte) error {
	r, err := c.register(name)
	if err != nil {
		return fmt.Errorf("gdbremote: write register: %w", err)
	}
	if len(val) != r.Size() {
		return fmt.Errorf("gdbremote: write register %s: %d bytes given, the register has %d", name, len(val), r.Size())
	}
	c.req = append(c.req[:0], 'P')
	c.req = appendHexUint(c.req, uint64(r.Regnum))
	c.req = append(c.req, '=')
	c.req = appendHex(c.req, val)
	if err := c.requestOK(ctx); err != nil {
		return fmt.Errorf("gdbremote: write register %s: %w", name, err)
	}
	return nil
}

// readChunk is the most bytes one 'm' request asks for: the hex reply and
// its framing must fit in a packet.
func (c *Conn) readChunk() int { return (c.packetSize - 4) / 2 }

// writeChunk is the most bytes one 'M' request carries.
func (c *Conn) writeChunk() int {
	const header = len("M,:") + 16 + 8 + 4 // address, length, framing
	return (c.packetSize - header) / 2
}

// ReadMemory reads n bytes at addr with 'm', in as many requests as
// PacketSize requires. Addresses are virtual, translated with the current
// page tables, unless SetPhysicalMemoryMode is on. On error it returns the
// bytes read before the failing request; an unmapped address gives a
// *StubError whose NotMapped method reports true.
func (c *Conn) ReadMemory(ctx context.Context, addr uint64, n int) ([]byte, error) {
	if n < 0 {
		return nil, fmt.Errorf("gdbremote: read %#x: negative length %d", addr, n)
	}
	out := make([]byte, 0, n)
	chunk := c.readChunk()
	for len(out) < n {
		a := addr + uint64(len(out))
		k := min(n-len(out), chunk)
		c.req = append(c.req[:0], 'm')
		c.req = appendHexUint(c.req, a)
		c.req = append(c.req, ',')
		c.req = appendHexUint(c.req, uint64(k))
		reply, err := c.request(ctx)
		if err != nil {
			return out, fmt.Errorf("gdbremote: read %#x: %w", a, err)
		}
		got := len(reply) / 2
		if got > k || got == 0 {
			return out, fmt.Errorf("gdbremote: read %#x: %w", a, c.malformed(reply, fmt.Sprintf("%d bytes for a request of %d", got, k)))
		}
		out = out[:len(out)+got]
		unknown, ok := decodeHex(out[len(out)-got:], reply)
		if !ok || unknown {
			out = out[:len(out)-got]
			return out, fmt.Errorf("gdbremote: read %#x: %w", a, c.malformed(reply, "not hex"))
		}
	}
	return out, nil
}

// WriteMemory writes data at addr with 'M', in as many requests as
// PacketSize requires.
func (c *Conn) WriteMemory(ctx context.Context, addr uint64, data []byte) error {
	chunk := c.writeChunk()
	for off := 0; off < len(data); {
		a := addr + uint64(off)
		k := min(len(data)-off, chunk)
		c.req = append(c.req[:0], 'M')
		c.req = appendHexUint(c.req, a)
		c.req = append(c.req, ',')
		c.req = appendHexUint(c.req, uint64(k))
		c.req = append(c.req, ':')
		c.req = appendHex(c.req, data[off:off+k])
		if err := c.requestOK(ctx); err != nil {
			return fmt.Errorf("gdbremote: write %#x: %w", a, err)
		}
		off += k
	}
	return nil
}

// Step executes one instruction with 's' and returns the stop reply. If the
// step does not finish in time (a 'hlt' with interrupts masked never does)
// or ctx ends, Step interrupts the target and returns the stop reply that
// follows together with the error.
func (c *Conn) Step(ctx context.Context) (StopReply, error) {
	c.req = append(c.req[:0], 's')
	sr, err := c.resume(ctx, waitStep)
	if err != nil {
		return sr, fmt.Errorf("gdbremote: step: %w", err)
	}
	return sr, nil
}

// StepVCont steps with "vCont;s", or "vCont;s:thread" when thread is not
// empty, so that only that thread (vCPU) moves. It fails with
// *UnsupportedError if the stub does not offer vCont steps.
//
// Observed on QEMU 7.2 and 10.0.2 with -smp 2 under TCG (Linux 6.1 with
// idle=poll, so that an idle vCPU keeps executing): over 3 rounds of 30
// "vCont;s:p01.01" the other vCPU's RIP never moved, and every stop reply
// named thread p01.01. A plain 's' (Step), even after Hc, resumes every
// vCPU while the selected one steps: the other vCPU's RIP moved after
// 20-26 of 30 steps on 7.2 and 8-14 of 30 on 10.0.2. A thread the stub
// does not have is refused with E22.
func (c *Conn) StepVCont(ctx context.Context, thread string) (StopReply, error) {
	sr, err := c.vCont(ctx, 's', thread, waitStep)
	if err != nil {
		return sr, fmt.Errorf("gdbremote: step: %w", err)
	}
	return sr, nil
}

// ContinueVCont resumes with "vCont;c", or "vCont;c:thread" when thread is
// not empty, so that only that thread (vCPU) runs while the others stay
// stopped, and waits as Continue does. It fails with *UnsupportedError if
// the stub does not offer vCont continues.
func (c *Conn) ContinueVCont(ctx context.Context, thread string) (StopReply, error) {
	sr, err := c.vCont(ctx, 'c', thread, waitRun)
	if err != nil {
		return sr, fmt.Errorf("gdbremote: continue: %w", err)
	}
	return sr, nil
}

// vCont sends "vCont;ACTION[:thread]" once the stub has said (vCont?) that
// it knows the action.
func (c *Conn) vCont(ctx context.Context, action byte, thread string, w wait) (StopReply, error) {
	if !c.vcontAsked {
		c.setRequest("vCont?")
		reply, err := c.roundTrip(ctx, waitReply)
		if err != nil {
			return StopReply{}, err
		}
		c.vcont, c.vcontAsked = string(reply), true
	}
	if !strings.Contains(c.vcont+";", ";"+string(action)+";") {
		return StopReply{}, &UnsupportedError{Request: "vCont;" + string(action)}
	}
	c.req = append(c.req[:0], "vCont;"...)
	c.req = append(c.req, action)
	if thread != "" {
		c.req = append(c.req, ':')
		c.req = append(c.req, thread...)
	}
	return c.resume(ctx, w)
}

// Continue resumes the target with 'c' and waits for it to stop. It waits
// until ctx is done; if ctx can never be done it waits for the Conn's
// timeout. When the wait ends first, Continue interrupts the target, waits
// briefly for the stop reply and returns it with ctx.Err() (or ErrTimeout).
func (c *Conn) Continue(ctx context.Context) (StopReply, error) {
	c.req = append(c.req[:0], 'c')
	sr, err := c.resume(ctx, waitRun)
	if err != nil {
		return sr, fmt.Errorf("gdbremote: continue: %w", err)
	}
	return sr, nil
}

// resume sends the resume request in c.req and parses the stop reply.
func (c *Conn) resume(ctx context.Context, w wait) (StopReply, error) {
	reply, err := c.roundTrip(ctx, w)
	if reply == nil {
		return StopReply{}, err
	}
	if rerr := c.replyErr(reply); rerr != nil {
		return StopReply{}, rerr
	}
	sr, perr := ParseStopReply(string(reply))
	if perr != nil {
		perr = withRequest(perr, string(c.req))
		if err != nil {
			return StopReply{}, fmt.Errorf("%w; then %w", err, perr)
		}
		return StopReply{}, perr
	}
	if sr.Thread != "" {
		c.lastThread = sr.Thread
	}
	return sr, err
}

// StopReason asks the stub why the target stopped ('?'). QEMU also resets
// its view of the session on '?' and drops breakpoints; Dial has already
// asked once (see InitialStop).
func (c *Conn) StopReason(ctx context.Context) (StopReply, error) {
	c.req = append(c.req[:0], '?')
	reply, err := c.request(ctx)
	if err != nil {
		return StopReply{}, fmt.Errorf("gdbremote: stop reason: %w", err)
	}
	sr, err := ParseStopReply(string(reply))
	if err != nil {
		return StopReply{}, fmt.Errorf("gdbremote: stop reason: %w", withRequest(err, "?"))
	}
	return sr, nil
}

// A BreakKind is the type of a breakpoint or watchpoint, the digit after 'Z'.
type BreakKind int

// Breakpoint and watchpoint kinds.
const (
	Software    BreakKind = 0 // software breakpoint (Z0)
	Hardware    BreakKind = 1 // hardware breakpoint (Z1)
	WriteWatch  BreakKind = 2 // write watchpoint (Z2)
	ReadWatch   BreakKind = 3 // read watchpoint (Z3)
	AccessWatch BreakKind = 4 // access watchpoint (Z4)
)

// String returns the kind's name, "hardware breakpoint" for Hardware.
func (k BreakKind) String() string {
	switch k {
	case Software:
		return "software breakpoint"
	case Hardware:
		return "hardware breakpoint"
	case WriteWatch:
		return "write watchpoint"
	case ReadWatch:
		return "read watchpoint"
	case AccessWatch:
		return "access watchpoint"
	}
	return "BreakKind(" + strconv.Itoa(int(k)) + ")"
}

// SetBreakpoint inserts a breakpoint or watchpoint with 'Z'. size is the
// breakpoint kind (1 for x86 breakpoints) or the watched length.
func (c *Conn) SetBreakpoint(ctx context.Context, k BreakKind, addr uint64, size int) error {
	if err := c.breakpoint(ctx, 'Z', k, addr, size); err != nil {
		return fmt.Errorf("gdbremote: set %v at %#x: %w", k, addr, err)
	}
	return nil
}

// ClearBreakpoint removes a breakpoint or watchpoint with 'z'.
func (c *Conn) ClearBreakpoint(ctx context.Context, k BreakKind, addr uint64, size int) error {
	if err := c.breakpoint(ctx, 'z', k, addr, size); err != nil {
		return fmt.Errorf("gdbremote: clear %v at %#x: %w", k, addr, err)
	}
	return nil
}

func (c *Conn) breakpoint(ctx context.Context, op byte, k BreakKind, addr uint64, size int) error {
	if k < Software || k > AccessWatch {
		return fmt.Errorf("unknown kind %d", int(k))
	}
	if size <= 0 {
		return fmt.Errorf("bad size %d", size)
	}
	c.req = append(c.req[:0], op, byte('0'+k), ',')
	c.req = appendHexUint(c.req, addr)
	c.req = append(c.req, ',')
	c.req = appendHexUint(c.req, uint64(size))
	return c.requestOK(ctx)
}

// Monitor runs a QEMU monitor command ("info registers", "info mem", ...)
// with qRcmd and returns its output, which arrives in 'O' packets before the
// final OK. A command the monitor does not know fails with
// ErrUnknownCommand.
func (c *Conn) Monitor(ctx context.Context, cmd string) (string, error) {
	c.req = append(c.req[:0], "qRcmd,"...)
	c.req = appendHex(c.req, []byte(cmd))
	var out []byte
	c.monitor = &out
	reply, err := c.request(ctx)
	c.monitor = nil
	if err != nil {
		return string(out), fmt.Errorf("gdbremote: monitor %q: %w", cmd, err)
	}
	if string(reply) != "OK" {
		// Some stubs send the output itself, hex encoded, as the reply.
		if !isHex(reply) {
			return string(out), fmt.Errorf("gdbremote: monitor %q: %w", cmd, c.malformed(reply, "expected OK or hex output"))
		}
		text := make([]byte, len(reply)/2)
		decodeHex(text, reply)
		out = append(out, text...)
	}
	if name, ok := unknownCommand(out); ok {
		return string(out), fmt.Errorf("gdbremote: monitor %q: %q is %w (this QEMU release does not have it)", cmd, name, ErrUnknownCommand)
	}
	return string(out), nil
}

// unknownCommand recognises the monitor's answer to a command it does not
// know, "unknown command: 'NAME'", and returns NAME.
func unknownCommand(out []byte) (string, bool) {
	rest, ok := bytes.CutPrefix(bytes.TrimSpace(out), []byte("unknown command: '"))
	if !ok {
		return "", false
	}
	name, _, ok := bytes.Cut(rest, []byte("'"))
	return string(name), ok
}

// Single-step flags of QEMU's gdbstub (qqemu.sstepbits), for StepFlags and
// SetStepFlags.
const (
	SStepEnable  = 1 // single-stepping is enabled
	SStepNoIRQ   = 2 // interrupts are masked while stepping
	SStepNoTimer = 4 // timers do not run while stepping
)

// StepFlags returns QEMU's single-step flags (qqemu.sstep), a combination of
// SStepEnable, SStepNoIRQ and SStepNoTimer.
func (c *Conn) StepFlags(ctx context.Context) (int, error) {
	reply, err := c.requestString(ctx, "qqemu.sstep")
	if err != nil {
		return 0, fmt.Errorf("gdbremote: step flags: %w", err)
	}
	s := strings.TrimPrefix(strings.TrimPrefix(reply, "0x"), "0X")
	v, ok := parseHexUint(s)
	if !ok {
		return 0, fmt.Errorf("gdbremote: step flags: %w", c.malformed([]byte(reply), "not a hex number"))
	}
	return int(v), nil
}

// SetStepFlags sets QEMU's single-step flags (Qqemu.sstep=N).
func (c *Conn) SetStepFlags(ctx context.Context, flags int) error {
	c.req = append(c.req[:0], "Qqemu.sstep="...)
	c.req = appendHexUint(c.req, uint64(flags))
	if err := c.requestOK(ctx); err != nil {
		return fmt.Errorf("gdbremote: set step flags: %w", err)
	}
	return nil
}

// StepBits returns the single-step flags QEMU knows (qqemu.sstepbits), by
// name: "ENABLE" -> 1, "NOIRQ" -> 2, "NOTIMER" -> 4.
func (c *Conn) StepBits(ctx context.Context) (map[string]int, error) {
	reply, err := c.requestString(ctx, "qqemu.sstepbits")
	if err != nil {
		return nil, fmt.Errorf("gdbremote: step flag names: %w", err)
	}
	bits := make(map[string]int)
	for _, item := range strings.Split(reply, ",") {
		name, val, ok := strings.Cut(item, "=")
		v, vok := parseHexUint(val)
		if !ok || !vok || name == "" {
			return nil, fmt.Errorf("gdbremote: step flag names: %w", c.malformed([]byte(reply), "expected NAME=hex pairs"))
		}
		bits[name] = int(v)
	}
	return bits, nil
}

// NegotiateStepFlags sets the strongest single-step flags the stub offers,
// out of want: the stub's qqemu.sstepbits is read first, and flags it does
// not list are dropped before anything is set. QEMU under TCG offers
// ENABLE, NOIRQ and NOTIMER; under KVM it offers no NOTIMER, and NOIRQ only
// where the host kernel has KVM_GUESTDBG_BLOCKIRQ, and answers E22 to a
// request for a flag it lacks. The candidates are tried in the order want,
// want without NOTIMER, ENABLE alone, so a stub that lists a flag it then
// refuses still ends up stepping. It returns the flags in force, or an
// *UnsupportedError when the stub has no qemu.sstep at all.
func (c *Conn) NegotiateStepFlags(ctx context.Context, want int) (int, error) {
	bits, err := c.StepBits(ctx)
	if err != nil {
		return 0, err
	}
	offered := 0
	for _, v := range bits {
		offered |= v
	}
	want |= SStepEnable
	var tried []int
	var last error
	for _, f := range []int{want & offered, want & offered &^ SStepNoTimer, SStepEnable} {
		if f&SStepEnable == 0 || slices.Contains(tried, f) {
			continue
		}
		tried = append(tried, f)
		err := c.SetStepFlags(ctx, f)
		if err == nil {
			return f, nil
		}
		var se *StubError
		if !errors.As(err, &se) {
			return 0, err
		}
		last = err
	}
	return 0, last
}

// StepFlagsString names a set of single-step flags, e.g. "ENABLE|NOIRQ".
func StepFlagsString(f int) string {
	var names []string
	for _, b := range []struct {
		bit  int
		name string
	}{{SStepEnable, "ENABLE"}, {SStepNoIRQ, "NOIRQ"}, {SStepNoTimer, "NOTIMER"}} {
		if f&b.bit != 0 {
			names = append(names, b.name)
		}
	}
	if len(names) == 0 {
		return "none"
	}
	return strings.Join(names, "|")
}

// SetPhysicalMemoryMode switches 'm' and 'M' between virtual addresses
// (off, the default) and physical addresses (on), with Qqemu.PhyMemMode.
func (c *Conn) SetPhysicalMemoryMode(ctx context.Context, on bool) error {
	req := "Qqemu.PhyMemMode:0"
	if on {
		req = "Qqemu.PhyMemMode:1"
	}
	c.setRequest(req)
	if err := c.requestOK(ctx); err != nil {
		return fmt.Errorf("gdbremote: physical memory mode: %w", err)
	}
	return nil
}

// SelectThread picks the thread (in QEMU, the vCPU) later requests apply
// to: op 'g' for register and memory access, 'c' for step and continue. tid
// -1 means all threads and 0 any thread.
func (c *Conn) SelectThread(ctx context.Context, op byte, tid int) error {
	id := "-1"
	if tid >= 0 {
		id = strconv.FormatUint(uint64(tid), 16)
	}
	return c.SelectThreadID(ctx, op, id)
}

// SelectThreadID is SelectThread with a thread id as the stub writes it,
// such as "p01.02" from a stop reply or Threads.
func (c *Conn) SelectThreadID(ctx context.Context, op byte, id string) error {
	if op != 'g' && op != 'c' {
		return fmt.Errorf("gdbremote: select thread: op %q is not 'g' or 'c'", op)
	}
	c.req = append(c.req[:0], 'H', op)
	c.req = append(c.req, id...)
	if err := c.requestOK(ctx); err != nil {
		return fmt.Errorf("gdbremote: select thread %s for %q: %w", id, op, err)
	}
	return nil
}

// Threads lists the threads (vCPUs) with qfThreadInfo and qsThreadInfo, in
// the stub's notation ("p01.01", "p01.02", ...).
func (c *Conn) Threads(ctx context.Context) ([]string, error) {
	var ids []string
	req := "qfThreadInfo"
	for range 4096 {
		reply, err := c.requestString(ctx, req)
		if err != nil {
			return nil, fmt.Errorf("gdbremote: threads: %w", err)
		}
		switch {
		case reply == "l":
			return ids, nil
		case strings.HasPrefix(reply, "m"):
			ids = append(ids, strings.Split(reply[1:], ",")...)
		default:
			return nil, fmt.Errorf("gdbremote: threads: %w", c.malformed([]byte(reply), "expected 'm' or 'l'"))
		}
		req = "qsThreadInfo"
	}
	return nil, fmt.Errorf("gdbremote: threads: %w", c.malformed(nil, "thread list does not end"))
}

// Detach ends the debugging session with 'D', leaving the target running,
// and closes the connection. With the multiprocess extensions (QEMU has
// them) it detaches from the process of the initial stop reply's thread.
// Remove breakpoints first: QEMU keeps them.
func (c *Conn) Detach(ctx context.Context) error {
	c.req = append(c.req[:0], 'D')
	if c.features["multiprocess"] == "+" {
		c.req = append(c.req, ';')
		c.req = append(c.req, c.pid()...)
	}
	err := c.requestOK(ctx)
	c.Close()
	if err != nil {
		return fmt.Errorf("gdbremote: detach: %w", err)
	}
	return nil
}

// Kill sends 'k', which ends QEMU, and closes the connection. The stub may
// close the connection at once or first send an exit reply; both are
// success.
func (c *Conn) Kill(ctx context.Context) error {
	defer c.Close()
	c.req = append(c.req[:0], 'k')
	reply, err := c.roundTrip(ctx, waitReply)
	switch {
	case errors.Is(err, ErrClosed):
		return nil
	case err != nil:
		return fmt.Errorf("gdbremote: kill: %w", err)
	case len(reply) > 0 && (reply[0] == 'W' || reply[0] == 'X' || string(reply) == "OK"):
		return nil
	}
	if rerr := c.replyErr(reply); rerr != nil {
		return fmt.Errorf("gdbremote: kill: %w", rerr)
	}
	return fmt.Errorf("gdbremote: kill: %w", c.malformed(reply, "expected the connection to close"))
}

// pid returns the process id of the initial stop reply's thread ("p01.01"
// gives "01"), or "1".
func (c *Conn) pid() string {
	t, ok := strings.CutPrefix(c.initial.Thread, "p")
	if !ok {
		return "1"
	}
	pid, _, _ := strings.Cut(t, ".")
	if _, ok := parseHexUint(pid); !ok {
		return "1"
	}
	return pid
}

// ThreadCPU returns the vCPU index of a QEMU gdbstub thread id: QEMU
// numbers its threads from 1 in the order of its CPUs (cpu_index + 1), so
// "p01.02" or "2" is vCPU 1, the second CPU, as `-smp` and the monitor's
// `cpu N` count them.
func ThreadCPU(id string) (int, error) {
	tid := id
	if rest, ok := strings.CutPrefix(id, "p"); ok {
		_, t, ok := strings.Cut(rest, ".")
		if !ok {
			return 0, fmt.Errorf("thread %q: no thread after the process", id)
		}
		tid = t
	}
	v, ok := parseHexUint(tid)
	if !ok || v == 0 || v > 1<<16 {
		return 0, fmt.Errorf("thread %q: not a vCPU thread id", id)
	}
	return int(v) - 1, nil
}
