package trace

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"slices"
	"strconv"
	"strings"
	"time"

	"golang.org/x/arch/x86/x86asm"

	"github.com/sctrace/sctrace/annotate"
	"github.com/sctrace/sctrace/gdbremote"
	"github.com/sctrace/sctrace/qemulog"
	"github.com/sctrace/sctrace/target"
	"github.com/sctrace/sctrace/x86"
)

// The recorders a RecorderSpan names.
const (
	RecorderStep = "step" // single steps through the gdbstub (Recorder)
	RecorderLog  = "log"  // QEMU's instruction log (LogRecorder)
)

// RecorderSpan says which recorder produced the steps From to To-1.
type RecorderSpan struct {
	From     int    `json:"from"`
	To       int    `json:"to"`
	Recorder string `json:"recorder"` // RecorderStep or RecorderLog
	// Detail says how the recorder worked: for the log, what came from
	// the log, what from guest memory afterwards, and what it lacks.
	Detail string `json:"detail,omitempty"`
}

// RecorderOf returns the recorder that produced step i: RecorderStep for
// a step no span names (every step of a trace recorded by single-stepping
// alone).
func (h *Header) RecorderOf(i int) string {
	for _, s := range h.Recorders {
		if i >= s.From && i < s.To {
			return s.Recorder
		}
	}
	return RecorderStep
}

// RecorderLines says, a line per span, which recorder produced which
// steps: "steps 0-1999 (2000): single steps through the gdbstub", then
// the log's span with its Detail. A trace without spans (single-stepped
// throughout) has none.
func (h *Header) RecorderLines() []string {
	var out []string
	for _, s := range h.Recorders {
		what := "single steps through the gdbstub"
		if s.Recorder == RecorderLog {
			what = "QEMU's instruction log"
		}
		l := fmt.Sprintf("steps %d-%d (%d): %s", s.From, s.To-1, s.To-s.From, what)
		if s.To <= s.From {
			l = fmt.Sprintf("no steps: %s", what)
		}
		switch {
		case strings.HasPrefix(s.Detail, what):
			l = strings.Replace(l, what, s.Detail, 1)
		case s.Detail != "":
			l += ": " + s.Detail
		}
		out = append(out, l)
	}
	return out
}

// NotCaptured is what a log-recorded step's annotations say of memory they
// needed and the log does not hold (stack words, frames the CPU pushed or
// popped).
const NotCaptured = "not captured by the log recorder"

// LogRecorder records with QEMU's instruction log instead of single
// steps: from the current stop it switches the log on through the
// monitor, lets the guest run to the user instruction after the one that
// entered the kernel (with the stack pointer it had there), switches the
// log off and turns each logged instruction into a Step of the same Trace,
// annotated as the stepping Recorder annotates. It runs at QEMU's speed
// (two orders of magnitude faster than single-stepping) and needs TCG.
//
// What the steps hold: every register of QEMU's CPU dump as the log gives
// it before each instruction; KERNEL_GS_BASE and CR8, which the dump lacks,
// carried from the stop through swapgs and wrmsr; instruction bytes,
// descriptor tables and the TSS read from guest memory after the run (under
// each step's CR3); stack memory not at all (annotations that need it say
// NotCaptured). Interrupts are not masked while the guest runs free: by
// default their handlers are left out of the trace and the interrupted
// step says so, as the stepping Recorder does where QEMU cannot mask them;
// with AllowIRQ they are recorded.
//
// Logging slows the guest about tenfold; a guest whose clock follows the
// host's (QEMU without -icount) then takes that many more timer interrupts
// per instruction, and the kernel reschedules more often inside a long
// call. QEMU started with `-icount shift=0,sleep=off` keeps guest time in
// step with instructions: an execve of Linux 6.1 then logs about as many
// instructions as single-stepping records (with one timer interrupt),
// against six times as many without it.
//
// The Recorder's Budget bounds the instructions the guest runs with the
// log on, those of interrupt handlers left out included, and the steps
// kept. A run ends at the first return to user mode: at the breakpoint,
// or wherever the log shows CPL 3 again (execve returns to a new
// program), the guest then stopped a moment later.
//
// Init, ToEntry, Step and ProbeMSRs are the embedded Recorder's: steps
// before a Run are single steps, and so are the first After steps of each
// Run.
type LogRecorder struct {
	*Recorder
	// After, when positive, single-steps that many instructions of each
	// Run before handing over to the log, for full detail where a round
	// trip is short.
	After int
	// Poll is how often the log's growth is checked against the budget
	// while the guest runs (20ms when 0).
	Poll time.Duration
	// PauseAfter is how long the guest runs with the log on before the
	// log is turned into steps alongside: the instructions' bytes are read
	// from guest memory, which needs the guest stopped, so a run that
	// lasts longer is paused at each page read for the first time
	// (DefaultPauseAfter when 0; never when negative, when the log is
	// turned into steps only as far as memory read before allows until the
	// guest stops).
	PauseAfter time.Duration

	pages map[pageKey][]byte // guest pages read, by CR3 and address
	final *x86.State         // the state after the last step, when the guest ran past it
}

type pageKey struct{ cr3, page uint64 }

const pageSize = 4096

// NewLogRecorder returns a LogRecorder around r, which must be set up
// (NewRecorder, Init) as for stepping.
func NewLogRecorder(r *Recorder) *LogRecorder {
	return &LogRecorder{Recorder: r, pages: make(map[pageKey][]byte)}
}

// Trace returns the trace recorded so far.
func (l *LogRecorder) Trace() *Trace {
	t := l.Recorder.Trace()
	if l.final != nil && t.Len() > 0 {
		t.Final = l.final
	}
	return t
}

// Step records one instruction by single-stepping (see Recorder.Step).
func (l *LogRecorder) Step(ctx context.Context) (*Step, error) {
	l.final = nil
	return l.Recorder.Step(ctx)
}

// LogUnavailableError is returned by LogRecorder.Run when QEMU's
// instruction log could not be switched on (a guest under KVM, a monitor
// that refuses the commands, a log file that cannot be made): nothing ran
// with the log on, the guest is stopped where it was, and the steps
// recorded before stay in the trace, so a caller can go on by single
// steps.
type LogUnavailableError struct{ Err error }

func (e *LogUnavailableError) Error() string { return "log recorder: " + e.Err.Error() }

func (e *LogUnavailableError) Unwrap() error { return e.Err }

// ErrNothingTraced is returned (wrapped) by LogRecorder.Run when the log
// holds no instruction of the traced code although the guest came back to
// user mode: an interrupt came before its first one and the log never
// showed the CPU back. The guest has run on; the steps recorded before
// stay in the trace.
var ErrNothingTraced = errors.New("the log holds no instruction of the traced code")

// errBudget is the cause with which the run is stopped once the log holds
// the budget's worth of instructions.
var errBudget = errors.New("instruction budget reached")

// Run records until the return to user mode, or until one of until says
// stop, the budget runs out or ctx is cancelled (a stop, not an error). The
// guest runs to the user instruction after the one that entered the kernel
// (the trace's first step, or the instruction at the current stop), so
// conditions other than the return to user mode cut the trace where they
// say stop while the guest has run on; the recorder's span says how far.
func (l *LogRecorder) Run(ctx context.Context, until ...Until) (StopReason, error) {
	r := l.Recorder
	if r.Over > 0 {
		return "", errors.New("the log recorder records every instruction: stepping over calls needs the stepping recorder")
	}
	l.final = nil
	budget := r.Budget
	if budget <= 0 {
		budget = DefaultBudget
	}
	start := r.trace.Len()
	if l.After > 0 {
		r.Budget = min(l.After, budget)
		why, err := r.Run(ctx, until...)
		r.Budget = budget
		if err != nil || why != StopBudget || l.After >= budget {
			return why, err
		}
		budget -= r.trace.Len() - start
	}
	t0 := time.Now()
	defer func() { r.busy += time.Since(t0) }()
	if r.trace.Len() == 0 {
		r.trace.Header.Recorded = time.Now().UTC()
	}
	ret, rsp, err := l.returnPoint(ctx)
	if err != nil {
		return "", err
	}
	// Guest memory may change between round trips: read it afresh, and
	// the first instruction's page now, under page tables that may not
	// outlive the run.
	l.pages = make(map[pageKey][]byte)
	direct := func(cr3, page uint64) ([]byte, error) { return l.readPage(ctx, cr3, page, r.cur) }
	if _, err := l.read(r.cur.Val(x86.CR3), r.cur.Val(x86.RIP), 15, direct); err != nil {
		return "", fmt.Errorf("log recorder: instruction at %s: %w", r.name(r.cur.Val(x86.RIP)), err)
	}
	logging, err := qemulog.Enable(ctx, r.T.Conn)
	if err != nil {
		return "", &LogUnavailableError{Err: err}
	}
	why, err := l.record(ctx, logging, ret, rsp, budget, until)
	if derr := logging.Disable(context.WithoutCancel(ctx)); derr != nil {
		err = errors.Join(err, fmt.Errorf("log recorder: %w", derr))
	}
	if err != nil {
		r.stop("error: " + StopReason(err.Error()))
		return "", err
	}
	return r.stop(why), nil
}

// returnPoint is where the round trip comes back to user mode: the
// instruction after the trace's first step, with the stack pointer it
// had, or after the instruction at the current stop when nothing is
// recorded yet.
func (l *LogRecorder) returnPoint(ctx context.Context) (ret, rsp uint64, err error) {
	r := l.Recorder
	if r.trace.Len() > 0 {
		s := r.trace.Step(0)
		return uint64(s.RIP) + uint64(len(s.Bytes)), s.Regs.Val(x86.RSP), nil
	}
	inst, _, err := r.Decode(ctx, r.cur)
	if err != nil {
		return 0, 0, err
	}
	return r.cur.Val(x86.RIP) + uint64(inst.Len), r.cur.Val(x86.RSP), nil
}

// record runs the guest with the log on and turns the log into steps as
// QEMU writes it: a goroutine follows the growing file with the converter
// while this one runs the guest and, since the stub can do one thing at a
// time, reads for the converter the guest memory it needs, pausing the
// guest for it (see runLogged). After the run it serves the converter's
// last reads, with the guest stopped, until the log is all turned into
// steps.
func (l *LogRecorder) record(ctx context.Context, logging *qemulog.Logging, ret, rsp uint64, budget int, until []Until) (StopReason, error) {
	r := l.Recorder
	f, err := os.Open(logging.Path)
	if err != nil {
		return "", fmt.Errorf("log recorder: %w", err)
	}
	defer f.Close()
	from := r.trace.Len()
	if from > 0 && len(r.trace.Header.Recorders) == 0 {
		r.trace.Header.Recorders = append(r.trace.Header.Recorders, RecorderSpan{From: 0, To: from, Recorder: RecorderStep})
	}
	follow := qemulog.Follow(f, 0)
	defer follow.End()
	cctx, stopConv := context.WithCancel(context.WithoutCancel(ctx))
	defer stopConv()
	c := &converter{l: l, rd: qemulog.NewReader(follow), file: f, until: until, budget: from + budget, reqs: make(chan *pageRequest)}
	var (
		cwhy StopReason
		cerr error
	)
	convDone := make(chan struct{})
	t0 := time.Now()
	go func() {
		defer close(convDone)
		cwhy, cerr = c.run(cctx)
	}()
	why, live, held, err := l.runLogged(ctx, logging.Path, ret, rsp, budget, c)
	c.ran = time.Since(t0)
	if err == nil {
		if oerr := logging.Off(context.WithoutCancel(ctx)); oerr != nil {
			err = fmt.Errorf("log recorder: %w", oerr)
		}
	}
	if err != nil {
		// The guest's state is unknown: the converter stops at its next
		// read of guest memory, and what it made is kept.
		stopConv()
		follow.End()
		<-convDone
		l.addLogSpan(c, from, logging)
		return "", err
	}
	// The log is complete: the converter finishes it, with the guest
	// stopped where it is.
	c.live = live
	follow.End()
	sctx := context.WithoutCancel(ctx)
	if held != nil {
		l.answer(sctx, held, live)
	}
	t1 := time.Now()
wait:
	for {
		select {
		case req := <-c.reqs:
			l.answer(sctx, req, live)
		case <-convDone:
			break wait
		}
	}
	c.after = time.Since(t1)
	err = cerr
	if errors.Is(err, ErrNothingTraced) && why != StopUser {
		err = nil // stopped by the budget or ctrl-c before the traced code ran again
	}
	l.addLogSpan(c, from, logging)
	r.cur = live
	if err != nil {
		return "", err
	}
	if c.truncated != nil {
		return "", fmt.Errorf("log recorder: %w", c.truncated)
	}
	if cwhy != "" {
		return cwhy, nil
	}
	return why, nil
}

// addLogSpan says that the steps from from on came from the log.
func (l *LogRecorder) addLogSpan(c *converter, from int, logging *qemulog.Logging) {
	t := l.Recorder.trace
	span := RecorderSpan{From: from, To: t.Len(), Recorder: RecorderLog, Detail: c.detail(logging)}
	t.Header.Recorders = append(t.Header.Recorders, span)
}

// pageRequest asks the goroutine that holds the stub for a page of guest
// memory (see LogRecorder.readPage), and for the kernel pages in more
// while it is at it.
type pageRequest struct {
	cr3, page uint64
	more      []uint64
	reply     chan pageReply // buffered: the answer never waits
}

type pageReply struct {
	b    []byte
	err  error
	more [][]byte // for each of the request's more, the page or nil
}

// answer reads the pages req asks for under live, the state of the
// stopped guest.
func (l *LogRecorder) answer(ctx context.Context, req *pageRequest, live *x86.State) {
	b, err := l.readPage(ctx, req.cr3, req.page, live)
	rep := pageReply{b: b, err: err, more: make([][]byte, len(req.more))}
	for i, p := range req.more {
		if mb, err := l.readPage(ctx, req.cr3, p, live); err == nil {
			rep.more[i] = mb
		}
	}
	req.reply <- rep
}

// maxAhead bounds the pages read along with one the converter needs, and
// aheadBytes the log looked at for them at a time.
const (
	maxAhead   = 128
	aheadBytes = 4 << 20
)

// ahead returns kernel pages, other than page, that the log after the
// current record runs code in and that are not read yet: kernel pages are
// the same under every page table, so they can be read with the one
// needed now, in the same pause of the guest, and the converter is not
// stopped for them again. It looks at the log as far as QEMU has written
// it, each part once.
func (c *converter) ahead(page uint64) []uint64 {
	if c.file == nil {
		return nil
	}
	from := max(c.scanned, c.rd.Bytes)
	if c.scanBuf == nil {
		c.scanBuf = make([]byte, aheadBytes)
	}
	n, _ := c.file.ReadAt(c.scanBuf, from)
	b := c.scanBuf[:n]
	var out []uint64
	pos := 0
	for len(out) < maxAhead {
		i := bytes.Index(b[pos:], ripLine)
		if i < 0 || pos+i+len(ripLine)+16 > len(b) {
			// Up to the line not written whole yet, to be looked at
			// next time.
			if i < 0 {
				pos = max(pos, len(b)-len(ripLine))
			} else {
				pos += i
			}
			break
		}
		pos += i + len(ripLine)
		rip, err := strconv.ParseUint(string(b[pos:pos+16]), 16, 64)
		if err != nil || !x86.KernelHalf(rip) {
			continue
		}
		p := rip &^ (pageSize - 1)
		if _, ok := c.l.pages[pageKey{kernelPages, p}]; ok || p == page || slices.Contains(out, p) {
			continue
		}
		out = append(out, p)
	}
	c.scanned = from + int64(max(pos, 0))
	return out
}

// pageFunc returns how the converter reads a page: by asking the
// goroutine that runs the guest (record), along with the kernel pages the
// next records need.
func (c *converter) pageFunc(ctx context.Context) func(cr3, page uint64) ([]byte, error) {
	return func(cr3, page uint64) ([]byte, error) {
		req := &pageRequest{cr3: cr3, page: page, more: c.ahead(page), reply: make(chan pageReply, 1)}
		select {
		case c.reqs <- req:
		case <-ctx.Done():
			return nil, ctx.Err()
		}
		select {
		case rep := <-req.reply:
			for i, p := range req.more {
				if rep.more[i] != nil {
					c.l.pages[pageKey{kernelPages, p}] = rep.more[i]
				}
			}
			return rep.b, rep.err
		case <-ctx.Done():
			return nil, ctx.Err()
		}
	}
}

// DefaultPauseAfter is LogRecorder.PauseAfter's default.
const DefaultPauseAfter = 100 * time.Millisecond

// errPause is the cause with which a run is interrupted to read guest
// memory for the converter.
var errPause = errors.New("paused to read guest memory")

// runLogged lets the guest run to ret with RSP rsp (a hardware breakpoint,
// continued past while the stack pointer differs), stopping it early once
// the log holds budget instructions or ctx is cancelled, and returns the
// state where it stopped. While the guest runs it serves the converter c's
// reads of guest memory: once the run has lasted PauseAfter, a read
// interrupts the guest, is answered under the state where it stopped, and
// the guest continues (the guest's clock stands still meanwhile, and the
// log shows a block left before it ran at most, which the Reader drops).
// A read that comes at the end of the run is returned as held, for the
// caller to answer.
func (l *LogRecorder) runLogged(ctx context.Context, path string, ret, rsp uint64, budget int, c *converter) (why StopReason, live *x86.State, held *pageRequest, err error) {
	r := l.Recorder
	if err := r.T.Conn.SetBreakpoint(ctx, gdbremote.Hardware, ret, 1); err != nil {
		return "", nil, nil, fmt.Errorf("log recorder: breakpoint at %s: %w", r.name(ret), err)
	}
	defer r.clearBreakpoint(ctx, ret, &err)
	rctx, cancel := context.WithCancelCause(ctx)
	defer cancel(nil)
	done := make(chan struct{})
	defer func() { <-done }()
	go l.watch(rctx, cancel, done, path, budget, l.cur.Val(x86.RIP))
	defer cancel(nil)
	pauseAfter := l.PauseAfter
	if pauseAfter == 0 {
		pauseAfter = DefaultPauseAfter
	}
	pauseAt := time.Now().Add(pauseAfter)
	for {
		// Only the followed vCPU runs: the log then holds its
		// instructions alone, and no other vCPU reaches the breakpoint.
		pctx, pause := context.WithCancelCause(rctx)
		var pausedAt time.Time // when the run was interrupted for a read, read after taken
		stop, taken := make(chan struct{}), make(chan *pageRequest, 1)
		go func() {
			var req *pageRequest
			defer func() { taken <- req }()
			if pauseAfter < 0 {
				return
			}
			select {
			case req = <-c.reqs:
			case <-stop:
				return
			}
			if d := time.Until(pauseAt); d > 0 {
				t := time.NewTimer(d)
				defer t.Stop()
				select {
				case <-t.C:
				case <-stop:
					return
				}
			}
			pausedAt = time.Now()
			pause(errPause)
		}()
		sr, cerr := r.T.ContinueFollowed(pctx)
		close(stop)
		held = <-taken
		paused := errors.Is(context.Cause(pctx), errPause)
		pause(nil)
		if cerr != nil {
			switch {
			case errors.Is(context.Cause(rctx), errBudget):
				why = StopBudget
			case errors.Is(context.Cause(rctx), errReturned):
				why = StopUser
			case ctx.Err() != nil:
				why = StopCancel
			case paused:
			default:
				return "", nil, held, fmt.Errorf("log recorder: run to %s: %w", r.name(ret), cerr)
			}
		} else if sr.Kind == 'W' || sr.Kind == 'X' {
			return "", nil, held, fmt.Errorf("log recorder: run to %s: %w (%s)", r.name(ret), target.ErrExited, sr)
		}
		st, err := r.T.State(context.WithoutCancel(ctx))
		if err != nil {
			return "", nil, held, err
		}
		st.Sys = r.tables
		switch {
		case why != "":
			return why, st, held, nil
		case st.Val(x86.RIP) == ret && st.Val(x86.RSP) == rsp:
			return StopUser, st, held, nil
		case held != nil:
			// Paused for the converter (or stopped while it asked):
			// answer it and go on.
			l.answer(context.WithoutCancel(ctx), held, st)
			held = nil
			c.pauses++
			c.paused += time.Since(pausedAt)
		case paused || st.Val(x86.RIP) == ret:
		default:
			return "", nil, nil, fmt.Errorf("log recorder: run to %s: stopped at %s instead (%s)", r.name(ret), r.name(st.Val(x86.RIP)), sr)
		}
	}
}

// watch reads the growing log every Poll and stops the run (cancel) with
// errBudget once it holds budget records, or with errReturned once a
// record is back at CPL 3 after one at CPL 0: the return to user mode
// somewhere other than the breakpoint (execve starts a new program, exit
// never returns). A return to start, the user instruction the run began
// at, is an interrupt taken before it ran, not the end.
func (l *LogRecorder) watch(ctx context.Context, cancel context.CancelCauseFunc, done chan<- struct{}, path string, budget int, start uint64) {
	defer close(done)
	poll := l.Poll
	if poll <= 0 {
		poll = 20 * time.Millisecond
	}
	f, err := os.Open(path)
	if err != nil {
		return
	}
	defer f.Close()
	tick := time.NewTicker(poll)
	defer tick.Stop()
	sc := logScan{start: fmt.Appendf(nil, "%016x", start)}
	buf := make([]byte, 1<<20)
	carry := copy(buf, "\n") // the first record has no newline before it
	for {
		select {
		case <-ctx.Done():
			return
		case <-tick.C:
		}
		for {
			k, err := f.Read(buf[carry:])
			if k == 0 || err != nil {
				break
			}
			b := buf[:carry+k]
			last := bytes.LastIndexByte(b, '\n')
			sc.scan(b[:last])
			carry = copy(buf, b[last:]) // an unfinished line, led by its newline
			if carry == len(buf) {
				return // a line of 1 MiB: not QEMU's log; the reader will say so
			}
		}
		switch {
		case sc.records >= budget:
			cancel(errBudget)
			return
		case sc.returned:
			cancel(errReturned)
			return
		}
	}
}

// errReturned is the cause with which the run is stopped once the log
// shows the CPU back in user mode.
var errReturned = errors.New("back in user mode")

// logScan follows a log as it grows, by the bytes of its lines: QEMU's
// dumps put "Trace " at the start of each record's first line and the CPL
// at a fixed column of its RIP line.
type logScan struct {
	start    []byte // the RIP the run began at, as the dump prints it
	records  int
	entered  bool // a dump at CPL 0 was seen
	returned bool // then one at CPL 3
}

var (
	recordStart = []byte("\nTrace ")
	ripLine     = []byte("\nRIP=")
)

// cplColumn is where the CPL digit is in a RIP line, counting its leading
// newline: "RIP=%016lx RFL=%08x [%c%c%c%c%c%c%c] CPL=%d".
const cplColumn = 1 + len("RIP=0000000000000000 RFL=00000000 [-------] CPL=")

// scan takes whole lines, each led by its newline.
func (sc *logScan) scan(b []byte) {
	sc.records += bytes.Count(b, recordStart)
	for i := 0; ; {
		j := bytes.Index(b[i:], ripLine)
		if j < 0 {
			return
		}
		i += j
		if i+cplColumn < len(b) {
			switch b[i+cplColumn] {
			case '0':
				sc.entered = true
			case '3':
				rip := b[i+len(ripLine) : i+len(ripLine)+16]
				sc.returned = sc.returned || sc.entered && !bytes.Equal(rip, sc.start)
			}
		}
		i += len(ripLine)
	}
}

// converter turns a log's records into steps.
type converter struct {
	l      *LogRecorder
	rd     *qemulog.Reader
	live   *x86.State // where the guest stopped
	until  []Until
	budget int                      // the trace length at which the budget is spent
	insns  map[pageKey]*decodedInsn // instructions decoded, by CR3 (or kernelPages) and RIP

	stopped    bool              // a condition said stop; the rest is only counted
	ranOn      int               // records after that stop
	irqs       int               // interrupts whose handlers were left out
	skipped    int               // records of those handlers, and of what they switched to
	records    int               // records read
	reqs       chan *pageRequest // reads of guest memory, answered by record's goroutine
	file       *os.File          // the log, looked ahead in (ahead)
	scanned    int64             // how far ahead has looked
	scanBuf    []byte
	pauses     int           // times the guest was paused for them
	paused     time.Duration // how long those pauses lasted
	ran        time.Duration // the guest's run with the log on
	after      time.Duration // turning the rest of the log into steps after the run
	truncated  error
	unfinished bool   // the last instruction was left out: the guest stopped inside an interrupt handler after it
	kgsLost    bool   // KERNEL_GS_BASE could not be carried
	kgsCheck   string // how the carried KERNEL_GS_BASE compared with the stop
	tablesSeen *x86.SysRegs
}

// pending is a decoded instruction waiting for the state after it.
type pending struct {
	before *x86.State
	d      *decodedInsn // the instruction decoded, with its texts
	notes  []string     // interrupts taken after it
	line   int64        // its record's line in the log
}

// irqReturn is where an interrupt handler being left out returns: records are passed over
// until the CPU is back at the interrupted instruction with its stack.
type irqReturn struct {
	cs, rip, rsp uint64
}

func (c *converter) run(ctx context.Context) (StopReason, error) {
	r := c.l.Recorder
	saved := r.Ctx.Unread
	r.Ctx.Unread = NotCaptured
	defer func() { r.Ctx.Unread = saved }()

	var (
		cur     *pending // the last traced instruction, waiting for the state after it
		slot    pending  // where cur is: one at a time, finished before the next
		prev    = r.cur  // the state before the previous record's instruction
		prevIns x86asm.Inst
		prevOK  bool
		skips   []irqReturn // interrupt handlers being left out, innermost last
		notes   []string    // notes for the next step, from an interrupt before it
		why     StopReason
		seen    bool // a record was read
		started bool // the first traced record was checked against the stop
	)
	for {
		rec, err := c.rd.Next()
		if err == io.EOF {
			break
		}
		if err == nil {
			c.records++
		}
		var te *qemulog.TruncatedError
		if errors.As(err, &te) {
			c.truncated = te
			break
		}
		if err != nil {
			return "", fmt.Errorf("log recorder: %w", err)
		}
		// An exception on fetching the instruction after cur (its page
		// not present yet: the first instruction of a new program) has
		// no record of its own; its interrupt line's dump is the state
		// before it, and so after cur.
		for i := range rec.Before {
			in := &rec.Before[i]
			if in.External() || !in.HasState || cur == nil || c.stopped || len(skips) > 0 || in.RIP == cur.before.Val(x86.RIP) {
				continue
			}
			v := in.State
			v.Sys = cur.before.Sys
			carryRegs(cur.before, cur.d.inst, true, nil, &v)
			if why = c.finish(ctx, cur, &v); why != "" {
				c.stopped, c.l.final, cur = true, &v, nil
				continue
			}
			vd, verr := c.decoded(ctx, &v)
			if verr != nil {
				return "", fmt.Errorf("log recorder: line %d: %w", in.Line, verr)
			}
			cur = &slot // cur is finished: its slot is free
			*cur = pending{before: &v, d: vd, line: in.Line}
			prev, prevIns, prevOK = &v, vd.inst, true
		}
		var st *x86.State
		if !seen {
			// Nothing ran between the stop and the first record.
			st = c.state(rec, prev, x86asm.Inst{}, false)
			for _, reg := range []x86.Reg{x86.KernelGSBase, x86.CR8} {
				if v, ok := prev.Get(reg); ok {
					st.Set(reg, v)
				}
			}
			seen = true
		} else {
			st = c.state(rec, prev, prevIns, prevOK)
		}
		for _, in := range rec.Before {
			if !in.External() {
				continue // an exception or int n: the step that raised it shows it
			}
			if len(skips) > 0 {
				// Nested in a handler already left out.
				skips = append(skips, irqReturn{cs: uint64(in.CS), rip: in.RIP, rsp: in.RSP})
				continue
			}
			what := fmt.Sprintf("interrupt taken during the log: %s at %s, not caused by this instruction", annotate.VectorName(in.Vector), r.name(in.RIP))
			if r.AllowIRQ {
				what += "; its handler is recorded"
			} else {
				skips = append(skips, irqReturn{cs: uint64(in.CS), rip: in.RIP, rsp: in.RSP})
				what += fmt.Sprintf("; its handler ran to the return to %s and is left out", r.name(in.RIP))
				r.trace.Header.IRQs++
				c.irqs++
			}
			if cur != nil {
				cur.notes = append(cur.notes, what)
			} else {
				notes = append(notes, what+"; it came before the instruction")
			}
		}
		var (
			inst x86asm.Inst
			d    *decodedInsn
			derr error
		)
		if len(skips) > 0 || c.stopped {
			// Passed over: decoded only when it may be one of the
			// instructions carryRegs follows, all of which have an
			// 0x0f opcode byte.
			inst, derr = c.carryOp(ctx, st)
		} else {
			d, derr = c.decoded(ctx, st)
			if derr == nil {
				inst = d.inst
			}
		}
		prev, prevIns, prevOK = st, inst, derr == nil
		if n := len(skips); n > 0 {
			s := skips[n-1]
			if st.Val(x86.RIP) != s.rip || st.Val(x86.RSP) != s.rsp || st.Val(x86.CS) != s.cs {
				c.skipped++
				continue
			}
			if skips = skips[:n-1]; len(skips) > 0 {
				c.skipped++
				continue
			}
			if !c.stopped {
				// Back from the handlers: the instruction they
				// interrupted is traced, with its bytes.
				d, derr = c.decoded(ctx, st)
				if derr == nil {
					inst = d.inst
				}
				prevIns, prevOK = inst, derr == nil
			}
		}
		if c.stopped {
			c.ranOn++
			continue
		}
		if !started {
			if err := sameAsStop(r.cur, st); err != nil {
				return "", fmt.Errorf("log recorder: line %d: %w", rec.Line, err)
			}
			started = true
		}
		if cur != nil {
			if why = c.finish(ctx, cur, st); why != "" {
				c.stopped, c.l.final, cur = true, st, nil
				c.ranOn++
				continue
			}
		}
		if derr != nil {
			return "", fmt.Errorf("log recorder: line %d: %w", rec.Line, derr)
		}
		cur = &slot
		*cur = pending{before: st, d: d, notes: notes, line: rec.Line}
		notes = nil
	}
	if !started {
		return "", fmt.Errorf("log recorder: %w (%d logged instructions, all in interrupt handlers and the tasks they switched to)%s", ErrNothingTraced, c.skipped, c.truncatedNote())
	}
	// The last interrupt left out may have returned to where the guest
	// stopped: the breakpoint caught the CPU back at the interrupted
	// instruction before it ran again.
	for n := len(skips); n > 0; n-- {
		s := skips[n-1]
		if c.live.Val(x86.RIP) != s.rip || c.live.Val(x86.RSP) != s.rsp || c.live.Val(x86.CS) != s.cs {
			break
		}
		skips = skips[:n-1]
	}
	if cur != nil && !c.stopped {
		if c.truncated != nil {
			// The log was cut off (QEMU killed, the disk full): what
			// came after cur is unknown.
			c.unfinished = true
			return why, nil
		}
		if len(skips) > 0 {
			c.unfinished = true // the guest stopped inside a handler: the state after cur is unknown
			return why, nil
		}
		c.carryKGS(prev, prevIns, prevOK)
		why = c.finish(ctx, cur, c.live)
	}
	return why, nil
}

// carryKGS compares the KERNEL_GS_BASE carried through the log with the
// stub's reading at the stop.
func (c *converter) carryKGS(prev *x86.State, inst x86asm.Inst, ok bool) {
	want, wok := c.live.Get(x86.KernelGSBase)
	if !wok || prev == nil {
		return
	}
	var carried x86.State
	carryRegs(prev, inst, ok, nil, &carried)
	got, gok := carried.Get(x86.KernelGSBase)
	switch {
	case !gok:
		c.kgsCheck = "k_gs_base could not be carried to the stop"
	case got != want:
		c.kgsCheck = fmt.Sprintf("the k_gs_base carried through the log (%#x) differs from the stub's at the stop (%#x)", got, want)
	default:
		c.kgsCheck = "the k_gs_base carried through the log matches the stub's at the stop"
	}
}

// state is the State before a record's instruction: the log's registers,
// KERNEL_GS_BASE and CR8 carried from the state before the previous
// record's instruction, and the descriptor-table registers.
func (c *converter) state(rec *qemulog.Record, prev *x86.State, inst x86asm.Inst, ok bool) *x86.State {
	st := rec.State
	st.Sys = c.tables(rec)
	if prev != nil {
		carryRegs(prev, inst, ok, rec, &st)
	}
	return &st
}

// carryRegs sets in next the registers the dump lacks, from prev and the
// instruction that ran between them: SWAPGS exchanges GS base and
// KERNEL_GS_BASE, WRMSR to 0xC0000102 writes it, a move to CR8 makes CR8
// unknown. An instruction that raised an exception (rec shows one) changed
// neither.
func carryRegs(prev *x86.State, inst x86asm.Inst, ok bool, rec *qemulog.Record, next *x86.State) {
	faulted := false
	if rec != nil {
		for _, in := range rec.Before {
			if !in.External() {
				faulted = true
			}
		}
	}
	if v, known := prev.Get(x86.KernelGSBase); known && ok {
		switch {
		case faulted:
		case inst.Op == x86asm.SWAPGS && prev.CPL() == 0:
			v = prev.Val(x86.GSBase)
		case inst.Op == x86asm.WRMSR && prev.CPL() == 0 && uint32(prev.Val(x86.RCX)) == 0xC0000102:
			v = prev.Val(x86.RDX)<<32 | prev.Val(x86.RAX)&0xffffffff
		}
		next.Set(x86.KernelGSBase, v)
	}
	if v, known := prev.Get(x86.CR8); known && ok && !writesCR8(inst) {
		next.Set(x86.CR8, v)
	}
}

func writesCR8(inst x86asm.Inst) bool {
	return inst.Op == x86asm.MOV && inst.Args[0] == x86asm.CR8
}

// tables returns the descriptor-table registers, TR and LDT for a record's
// state: the Recorder's while the log agrees with them, a new one from the
// log where it does not.
func (c *converter) tables(rec *qemulog.Record) *x86.SysRegs {
	t := c.l.tables
	if c.tablesSeen != nil {
		t = c.tablesSeen
	}
	if t != nil && t.GDTBase == rec.GDT.Base && t.GDTLimit == rec.GDT.Limit && t.IDTBase == rec.IDT.Base &&
		t.IDTLimit == rec.IDT.Limit && t.Segments["TR"] == rec.Segs[qemulog.TR] && t.Segments["LDT"] == rec.Segs[qemulog.LDT] {
		return t
	}
	n := rec.SysRegs()
	n.CPL = -1
	n.DR = [8]uint64{}
	for k := range n.Segments {
		if k != "TR" && k != "LDT" {
			delete(n.Segments, k)
		}
	}
	c.tablesSeen = n
	return n
}

// sameAsStop checks that the log starts where the stub said the CPU
// stopped, in every register the dump carries.
func sameAsStop(stop, first *x86.State) error {
	for reg := x86.Reg(0); reg < x86.NumRegs; reg++ {
		v, ok := first.Get(reg)
		if !ok {
			continue
		}
		if w, wok := stop.Get(reg); wok && w != v {
			return fmt.Errorf("the log's first instruction does not start from the stop: %s is %#x in the log, %#x at the stop", reg, v, w)
		}
	}
	return nil
}

// decodedInsn is an instruction decoded once and rendered once, for every
// step that runs it (a path of 10^5 instructions runs the same loops
// many times).
type decodedInsn struct {
	inst                     x86asm.Inst
	code                     []byte
	symbol, intel, att, mnem string
	line                     lineHint // its line in the trace's search index
}

// decoded returns the instruction at st's RIP under its CR3, decoding and
// rendering it the first time.
func (c *converter) decoded(ctx context.Context, st *x86.State) (*decodedInsn, error) {
	rip := st.Val(x86.RIP)
	k := pageKey{st.Val(x86.CR3) & x86CR3Frame, rip}
	if x86.KernelHalf(rip) {
		k.cr3 = kernelPages
	}
	if d, ok := c.insns[k]; ok {
		return d, nil
	}
	code, err := c.l.read(st.Val(x86.CR3), rip, 15, c.pageFunc(ctx))
	if err != nil {
		return nil, fmt.Errorf("instruction at %s: %w", c.l.name(rip), err)
	}
	inst, n, err := annotate.Decode(code)
	if err != nil {
		return nil, fmt.Errorf("decode at %s (% x): %w", c.l.name(rip), code[:min(len(code), 8)], err)
	}
	code = code[:n]
	syms := c.l.Symbols
	ops := annotate.OperandSymbols(inst, syms)
	d := &decodedInsn{
		inst: inst, code: code, symbol: syms.Symbolize(rip),
		intel: Disasm(inst, code, rip, ops, Intel),
		att:   Disasm(inst, code, rip, ops, ATT),
		mnem:  annotate.CanonicalMnemonic(inst, code),
	}
	if c.insns == nil {
		c.insns = make(map[pageKey]*decodedInsn)
	}
	c.insns[k] = d
	return d, nil
}

// carryOp decodes the instruction at st's RIP when carryRegs might need
// it; for other instructions it returns the zero Inst.
func (c *converter) carryOp(ctx context.Context, st *x86.State) (x86asm.Inst, error) {
	code, err := c.l.read(st.Val(x86.CR3), st.Val(x86.RIP), 15, c.pageFunc(ctx))
	if err != nil {
		return x86asm.Inst{}, err
	}
	if bytes.IndexByte(code[:min(len(code), 5)], 0x0f) < 0 {
		return x86asm.Inst{}, nil
	}
	inst, _, err := annotate.Decode(code)
	return inst, err
}

// finish makes the pending instruction a step, with after the state after
// it, appends it, and checks the stop conditions.
func (c *converter) finish(ctx context.Context, p *pending, after *x86.State) StopReason {
	r := c.l.Recorder
	before, d := p.before, p.d
	inst, code := d.inst, d.code
	rip := before.Val(x86.RIP)
	s := Step{
		RIP:      Hex(rip),
		Symbol:   d.symbol,
		CPL:      before.CPL(),
		Bytes:    Bytes(code),
		Intel:    d.intel,
		ATT:      d.att,
		Op:       inst.Op,
		Mnemonic: d.mnem,
		Regs:     before,
	}
	var mem []annotate.Memory
	for _, rg := range annotate.MemoryBefore(inst, rip, before) {
		if b, ok := c.static(ctx, rg, before, inst); ok {
			mem = append(mem, annotate.Memory{Addr: rg.Addr, Data: b})
		}
	}
	for _, rg := range annotate.MemoryAfter(inst, rip, before, after) {
		if b, ok := c.static(ctx, rg, after, inst); ok {
			mem = append(mem, annotate.Memory{Addr: rg.Addr, Data: b, After: true})
		}
	}
	s.Mem = mem
	for _, reg := range before.Changed(after) {
		if reg == x86.RIP {
			continue
		}
		s.Changed = append(s.Changed, Change{Reg: reg.String(), Old: Hex(before.Val(reg)), New: Hex(after.Val(reg))})
	}
	as := annotate.Step{Index: r.trace.Len(), Addr: rip, Bytes: code, Inst: inst, Before: before, After: after, Mem: mem}
	s.Effects = annotate.Annotate(as, r.Ctx)
	for _, what := range p.notes {
		s.Effects = append(s.Effects, annotate.Effect{Kind: annotate.KindControl, Text: what, Event: annotate.EventIRQ})
	}
	s.Events = annotate.Events(as, s.Effects, r.Ctx)
	st := r.trace.appendLine(s, &d.line)
	for _, cond := range c.until {
		if why := cond(st, after); why != "" {
			return why
		}
	}
	if r.trace.Len() >= c.budget {
		return StopBudget
	}
	return ""
}

// static returns guest memory an annotation asked for when it is memory
// that a read after the run gives as it was during it: the instruction
// bytes a jmp skips, the GDT, the IDT and the TSS. Anything else (stack
// words, frames) is not captured.
func (c *converter) static(ctx context.Context, rg annotate.Range, st *x86.State, inst x86asm.Inst) ([]byte, bool) {
	if rg.Len <= 0 {
		return nil, false
	}
	end := rg.Addr + uint64(rg.Len)
	within := func(base uint64, limit uint32) bool {
		return rg.Addr >= base && end <= base+uint64(limit)+1
	}
	sys := st.Sys
	ok := rg.Addr == st.Val(x86.RIP)+uint64(inst.Len) // the code a jmp skips (st is before it)
	if sys != nil {
		tr := sys.TR()
		ok = ok || within(sys.GDTBase, sys.GDTLimit) || within(sys.IDTBase, sys.IDTLimit) || within(tr.Base, tr.Limit)
	}
	if !ok {
		return nil, false
	}
	b, err := c.l.read(st.Val(x86.CR3), rg.Addr, rg.Len, c.pageFunc(ctx))
	if err != nil || len(b) < rg.Len {
		return nil, false
	}
	return b, true
}

// read returns n bytes of guest memory at addr as mapped under cr3, read a
// page at a time with fetch (readPage, directly or by way of the goroutine
// that runs the guest) and cached. Fewer than n bytes come back when a
// page after the first cannot be read.
func (l *LogRecorder) read(cr3, addr uint64, n int, fetch func(cr3, page uint64) ([]byte, error)) ([]byte, error) {
	out := make([]byte, 0, n)
	for len(out) < n {
		a := addr + uint64(len(out))
		page := a &^ (pageSize - 1)
		k := pageKey{cr3 & x86CR3Frame, page}
		if x86.KernelHalf(page) {
			k.cr3 = kernelPages
		}
		b, ok := l.pages[k]
		if !ok {
			var err error
			if b, err = fetch(cr3, page); err != nil {
				if len(out) > 0 {
					return out, nil
				}
				return nil, err
			}
			l.pages[k] = b
		}
		off := a - page
		out = append(out, b[off:min(uint64(len(b)), off+uint64(n-len(out)))]...)
	}
	return out, nil
}

// kernelPages is the pageKey.cr3 of kernel-half pages, which every page
// table maps alike (cached once, whatever CR3 a step ran under).
const kernelPages = ^uint64(0)

// readPage reads the page at page as the CPU saw it under cr3, after the
// run. The page tables a step ran under may be gone by then (execve frees
// the old program's), so kernel-half pages, mapped alike by all of them,
// are read under the page tables in force at the stop, or under the
// kernel's half of a KPTI pair when the stop is in user mode; user pages
// are read under cr3 itself (target.ReadUnder when it is not the CR3 of
// the stop). The first instruction's page is read before the run (see
// Run), while its page tables surely exist.
func (l *LogRecorder) readPage(ctx context.Context, cr3, page uint64, live *x86.State) ([]byte, error) {
	liveCR3 := live.Val(x86.CR3)
	kernel := x86.KernelHalf(page)
	if kernel || liveCR3&x86CR3Frame == cr3&x86CR3Frame {
		b, err := l.T.ReadMemory(ctx, page, pageSize)
		if err == nil && len(b) == pageSize {
			return b, nil
		}
		if !kernel {
			return nil, err
		}
	}
	if kernel && liveCR3&x86.KPTIUserBit != 0 {
		if b, err := l.T.ReadUnder(ctx, liveCR3&^x86.KPTIUserBit, page, pageSize); err == nil {
			return b, nil
		}
	}
	return l.T.ReadUnder(ctx, cr3, page, pageSize)
}

// x86CR3Frame keeps the page-table base of a CR3 value.
const x86CR3Frame = 0x000f_ffff_ffff_f000

// truncatedNote says that the log was cut off, when it was.
func (c *converter) truncatedNote() string {
	if c.truncated == nil {
		return ""
	}
	return "; " + c.truncated.Error()
}

// detail describes how the log recorder made its steps, for the span.
func (c *converter) detail(logging *qemulog.Logging) string {
	d := fmt.Sprintf("QEMU's instruction log (monitor %s on; log %s): registers from the log; "+
		"k_gs_base and cr8 carried from the stop through swapgs and wrmsr; "+
		"instruction bytes, descriptor tables and the TSS read from guest memory with the guest stopped, paused during the run or after it; "+
		"stack memory %s; interrupts not masked", logging.OneInsn, qemulog.Items, NotCaptured)
	switch {
	case c.irqs > 0:
		d += fmt.Sprintf(", %d taken and their handlers left out (%d logged instructions, with the tasks they switched to)", c.irqs, c.skipped)
	case c.l.AllowIRQ:
		d += ", their handlers recorded"
	}
	if c.kgsCheck != "" {
		d += "; " + c.kgsCheck
	}
	d += fmt.Sprintf("; the guest ran %d logged instructions in %.3fs, paused %d times to read memory (%.3fs), the last steps made %.3fs after it stopped", c.records, c.ran.Seconds(), c.pauses, c.paused.Seconds(), c.after.Seconds())
	if c.ranOn > 0 {
		d += fmt.Sprintf("; the guest ran %d more logged instructions after the stop condition, not kept", c.ranOn)
	}
	switch {
	case c.unfinished && c.truncated != nil:
		d += "; the last logged instruction is left out: the log ends before the state after it"
	case c.unfinished:
		d += "; the last logged instruction is left out: the guest stopped inside an interrupt handler that followed it"
	}
	if c.rd.Dropped > 0 {
		d += fmt.Sprintf("; %d logged blocks left before they ran (an interrupt first) were dropped", c.rd.Dropped)
	}
	return d + c.truncatedNote()
}
