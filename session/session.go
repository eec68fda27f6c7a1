// Package session wires sctrace's parts into a debugging session: QEMU
// started with the bundled teaching kernel (or a gdbstub someone else
// started), the RSP connection, symbols, the memory regions annotations
// name, and a trace recorder. It owns the clean-up rules: breakpoints are
// removed on every path, and QEMU is ended when sctrace started it.
package session

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"strings"
	"sync"
	"time"

	"github.com/sctrace/sctrace/accel"
	"github.com/sctrace/sctrace/annotate"
	"github.com/sctrace/sctrace/fixtures/kernel"
	"github.com/sctrace/sctrace/gdbremote"
	"github.com/sctrace/sctrace/internal/scratch"
	"github.com/sctrace/sctrace/mechanism"
	"github.com/sctrace/sctrace/qemu"
	"github.com/sctrace/sctrace/symbols"
	"github.com/sctrace/sctrace/syscalls"
	"github.com/sctrace/sctrace/target"
	"github.com/sctrace/sctrace/trace"
)

// Options configure a session.
type Options struct {
	QEMU  string // QEMU binary; "" finds it on $PATH
	Accel string // tcg, kvm or auto (see package accel; auto is TCG here)
	// KVMCheck decides whether KVM works when it is asked for; nil runs
	// the teaching kernel's selftest under it (accel.Selftest).
	KVMCheck accel.Checker
	CPU      string // guest CPU model; "" is qemu.DefaultCPU
	// SMP is how many vCPUs a guest sctrace starts gets (QEMU's -smp); 0
	// or 1 is one. A system call is followed on the vCPU that makes it.
	SMP int
	// UserCPU is the vCPU the teaching kernel runs its user program on
	// (its cpu=N), or BothCPUs; 1 and BothCPUs need SMP of at least 2.
	UserCPU int
	// OnCPU, when not nil, is the vCPU (QEMU's index) whose call is
	// recorded: a call made first on another vCPU is let through. Nil
	// records the first call made on any.
	OnCPU     *int
	Mechanism mechanism.Mechanism // what the teaching kernel's trace mode calls; "" calls all in turn
	Append    string              // extra words for the teaching kernel's command line
	Keep      bool                // leave QEMU running at Close (detached, guest running)
	Timeout   time.Duration       // per-exchange deadline with the stub (default 5s)
	WireLog   io.Writer           // records every packet, when set
	Symbols   string              // a symbol file (ELF, System.map) for Attach
	Budget    int                 // recorder step budget
	Over      int                 // recorder step-over depth
	AllowIRQ  bool                // let interrupts run while stepping, and record their handlers
	// StepFlags, when not zero, are the QEMU single-step flags to ask for
	// instead of the default (see trace.Recorder.StepFlags).
	StepFlags  int
	StackWords int // words at RSP read each step
	// ProbeMSRs reads the system-call MSRs with rdmsr in the guest right
	// after the kernel is entered (see target.ProbeMSRs); off by default.
	ProbeMSRs bool
	// BootWait, for a guest someone else started that has not booted a
	// 64-bit kernel yet (QEMU's -S stops it at the reset vector), is how
	// long Attach lets it run until one is running; 0 attaches where the
	// CPU is, and says why no system call can be traced there.
	BootWait time.Duration
	// GDBTCP puts QEMU's gdbstub on a loopback TCP port instead of a
	// private Unix socket: any local user can then reach it (see
	// qemu.Config.GDBTCP).
	GDBTCP bool
	// Syscall, when set, is the system call ToEntry waits for, by name or
	// number (see syscalls.Table.Parse): the guest runs on through other
	// calls. Names come from the kernel's sys_call_table on Linux, else the
	// x86-64 ABI list.
	Syscall string
	// Record is the recorder: RecordStep ("" too), RecordLog or
	// RecordAuto. With log or auto, a QEMU sctrace starts under TCG gets
	// ICountArgs, and the budget is DefaultLogBudget unless Budget is set.
	Record string
	// LogAfter is how many instructions of a round trip are single-stepped
	// before the log takes over (RecordAuto: DefaultLogAfter is the usual
	// choice; RecordLog: 0, the log from the first instruction).
	LogAfter int
}

// Session is an attached target with a recorder.
type Session struct {
	QEMU     *qemu.Instance // nil when attached to a stub sctrace did not start
	Conn     *gdbremote.Conn
	Target   *target.Target
	Symbols  *symbols.Table
	Regions  []annotate.Region
	Recorder *trace.Recorder
	Serial   *SerialLog // the guest's console, when sctrace started QEMU
	Kernel   string     // a one-line description of the guest kernel
	// Notes says what sctrace decided while setting up that a user should
	// know, such as a symbol file it refused and what it used instead.
	Notes []string
	// Waiting, when set, is called once when ToEntry has waited a few
	// seconds for the guest to reach the entry: the guest may take its
	// time to make the call, or never make it.
	Waiting func(m mechanism.Mechanism)
	// Notice, when set, is told once what a user should know that
	// sctrace decided while recording, such as why --record auto
	// single-steps throughout.
	Notice func(msg string)

	// given is set when Symbols came from Options.Symbols; refused says
	// why a symbol file was not used.
	given   bool
	refused string

	rec       Recorder     // what round trips drive: Recorder, unless a test gives another
	log       *logRecorder // rec, when it records from the log (Options.Record)
	keep      bool
	probeMSRs bool
	tmp       string
	closeOnce sync.Once
	noSymbols bool            // Options.Symbols was NoSymbols
	linux     *linuxState     // set for a Linux guest (see linux.go)
	linuxTask annotate.Region // the running task's stack on Linux

	sysTable     *syscalls.Table // the kernel's system-call table; nil: the ABI list
	syscall      *syscalls.Call  // the call ToEntry waits for (Options.Syscall)
	syscallSites []uint64        // user syscall instructions known beforehand (--exec)
	// compatSites are an i386 program's sysenter and syscall instructions
	// (--exec), by mechanism.
	compatSites map[mechanism.Mechanism][]uint64
}

// SerialLog collects a guest's serial output safely across goroutines.
type SerialLog struct {
	mu sync.Mutex
	b  bytes.Buffer
}

// Write appends guest output.
func (l *SerialLog) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}

// String returns everything written so far.
func (l *SerialLog) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.String()
}

// KernelDescription names the bundled teaching kernel in trace headers.
const KernelDescription = "sctrace teaching kernel (bundled)"

// StartFixture boots the bundled teaching kernel in trace mode under QEMU,
// stopped, attaches to its gdbstub, and prepares a recorder. The caller
// must Close the session.
func StartFixture(ctx context.Context, o Options) (*Session, error) {
	if err := o.CheckUserCPU(); err != nil {
		return nil, err
	}
	if err := o.chooseCompatCPU(); err != nil {
		return nil, err
	}
	tmp, err := scratch.Dir("")
	if err != nil {
		return nil, err
	}
	path, err := kernel.WriteTemp(tmp)
	if err != nil {
		os.RemoveAll(tmp)
		return nil, err
	}
	syms, err := symbols.FromELF(bytes.NewReader(kernel.ELF))
	if err != nil {
		os.RemoveAll(tmp)
		return nil, fmt.Errorf("teaching kernel symbols: %w", err)
	}
	syms.Source = "ELF symtab of the bundled teaching kernel"
	cmdline := "trace"
	if o.Mechanism != "" {
		cmdline += " mech=" + string(o.Mechanism)
	}
	switch o.UserCPU {
	case 0:
	case BothCPUs:
		cmdline += " cpu=both"
	default:
		cmdline += fmt.Sprintf(" cpu=%d", o.UserCPU)
	}
	if o.Append != "" {
		cmdline += " " + o.Append
	}
	choice, err := o.chooseAccel(ctx)
	if err != nil {
		os.RemoveAll(tmp)
		return nil, err
	}
	if err := o.checkAccel(choice.Name); err != nil {
		os.RemoveAll(tmp)
		return nil, err
	}
	serial := &SerialLog{}
	inst, err := qemu.Start(ctx, qemu.Config{
		Binary: o.QEMU, Kernel: path, Append: cmdline, Accel: choice.Name, AccelNote: choice.Note, CPU: o.CPU, SMP: o.SMP,
		GDB: true, GDBTCP: o.GDBTCP, Stopped: true, ExitDevice: true, Serial: serial, Keep: o.Keep,
		Extra: o.qemuExtra(choice.Name),
	})
	if err != nil {
		os.RemoveAll(tmp)
		return nil, err
	}
	s := &Session{QEMU: inst, Symbols: syms, Serial: serial, Kernel: KernelDescription, keep: o.Keep, tmp: tmp}
	if err := s.started(); err != nil {
		return nil, err
	}
	if err := s.attach(ctx, inst.GDBAddr, o); err != nil {
		err = s.explain(err) // before Close ends QEMU
		s.Close()
		return nil, err
	}
	return s, nil
}

// chooseCompatCPU picks the guest CPU for the teaching kernel's calls from
// compatibility mode, which, like Linux's i386 programs (chooseCompat),
// work on one vendor's CPUs only: syscall-compat runs on AMDCPU unless a
// CPU is given (with an Intel one the syscall raises #UD, which the trace
// then shows; QEMU's TCG models that #UD from 9.1, 7.2 enters CSTAR all
// the same), and sysenter-compat is refused on an AMD CPU, which has no
// SYSENTER in long mode (the kernel's program would stop: QEMU's TCG lets
// the 32-bit sysenter in and then faults on the SYSEXIT).
func (o *Options) chooseCompatCPU() error {
	switch o.Mechanism {
	case mechanism.SyscallCompat:
		if o.CPU == "" {
			o.CPU = AMDCPU
		}
	case mechanism.SysenterCompat:
		if givenVendor(o.CPU) == "AuthenticAMD" {
			return fmt.Errorf("mechanism sysenter-compat with -cpu %s: an AMD CPU has no sysenter in long mode, compatibility mode included; leave --cpu out (the teaching kernel then runs on %s)", o.CPU, IntelCPU)
		}
	}
	return nil
}

// BothCPUs as Options.UserCPU runs the teaching kernel's program on CPU 0
// and CPU 1 at once (its cpu=both), each making the same system calls.
const BothCPUs = -1

// CheckUserCPU checks that the teaching kernel can run its program on
// o.UserCPU: CPU 0, or CPU 1 or both when the guest has a second vCPU;
// both not for pagefault and irq (the kernel has one demand page and one
// timer). It also checks o.OnCPU (CheckOnCPU).
func (o Options) CheckUserCPU() error {
	switch {
	case o.UserCPU == BothCPUs && max(o.SMP, 1) < 2:
		return fmt.Errorf("--user-cpu both needs a second vCPU: add --smp 2")
	case o.UserCPU == BothCPUs && (o.Mechanism == mechanism.PageFault || o.Mechanism == mechanism.IRQ):
		return fmt.Errorf("--user-cpu both with -m %s: the teaching kernel has one demand page and one timer, so it runs neither pagefault nor irq on both CPUs at once; use --user-cpu 0 or 1", o.Mechanism)
	case o.UserCPU == BothCPUs:
	case o.UserCPU != 0 && o.UserCPU != 1:
		return fmt.Errorf("--user-cpu %d: the teaching kernel runs its program on CPU 0 or CPU 1", o.UserCPU)
	case o.UserCPU >= max(o.SMP, 1):
		return fmt.Errorf("--user-cpu %d needs a second vCPU: add --smp 2", o.UserCPU)
	}
	return o.CheckOnCPU()
}

// CheckOnCPU checks that o.OnCPU, when set, names one of the o.SMP vCPUs
// of a guest sctrace starts.
func (o Options) CheckOnCPU() error {
	if n := max(o.SMP, 1); o.OnCPU != nil && (*o.OnCPU < 0 || *o.OnCPU >= n) {
		if n == 1 {
			return fmt.Errorf("--on-cpu %d: the guest has one vCPU, 0 (--smp gives it more)", *o.OnCPU)
		}
		return fmt.Errorf("--on-cpu %d: the guest's vCPUs are 0 to %d (--smp %d)", *o.OnCPU, n-1, n)
	}
	return nil
}

// chooseAccel picks the accelerator for a guest sctrace starts to trace:
// TCG unless KVM is asked for and works (see package accel).
func (o Options) chooseAccel(ctx context.Context) (accel.Choice, error) {
	return accel.Choose(ctx, o.Accel, accel.Trace, accel.CheckerFor(o.KVMCheck, o.QEMU))
}

// NoSymbols, given as Options.Symbols, attaches with no names at all:
// neither the guest's kallsyms nor the bundled teaching kernel's symbols
// are looked for.
const NoSymbols = "none"

// Attach connects to a gdbstub that someone else started. Symbols come from
// o.Symbols when given; Debian's placeholder System.map is refused (see
// Notes) and the guest's kallsyms used as when none is given. A guest whose
// symbols say it is Linux gets its per-CPU symbols and stack regions from
// the machine, whatever the symbol source.
func Attach(ctx context.Context, addr string, o Options) (*Session, error) {
	s := &Session{keep: true, Kernel: "unknown kernel"}
	if o.Symbols == NoSymbols {
		s.noSymbols = true
		s.Kernel = "unknown kernel (--symbols none: no names looked for)"
	} else if o.Symbols != "" {
		tab, err := symbols.Load(o.Symbols)
		switch {
		case errors.Is(err, symbols.ErrPlaceholder):
			// Debian's System.map names nothing: read the guest's own
			// kallsyms instead, and say so.
			s.refused = fmt.Sprintf("%s refused: %v", o.Symbols, err)
			s.Notes = append(s.Notes, s.refused+"; names come from the guest's kallsyms instead")
		case err != nil:
			return nil, err
		default:
			s.Symbols = tab
			s.given = true
			s.Kernel = "kernel with symbols from " + o.Symbols
		}
	}
	if err := s.attach(ctx, addr, o); err != nil {
		s.Close()
		return nil, err
	}
	return s, nil
}

// Dial connects to the gdbstub at addr ("host:port", ":port" or
// "unix:/path") with o's per-exchange deadline (5s when not set; twice
// that for connecting) and wire log. It only connects: it sets no
// breakpoint and reads no symbols. Attach and the sessions that start
// QEMU dial through it too.
func Dial(ctx context.Context, addr string, o Options) (*gdbremote.Conn, error) {
	conn, err := dial(ctx, addr, o)
	if err != nil {
		return nil, fmt.Errorf("attach %s: %w", addr, err)
	}
	return conn, nil
}

// dial is Dial without the address in the error.
func dial(ctx context.Context, addr string, o Options) (*gdbremote.Conn, error) {
	timeout := o.Timeout
	if timeout <= 0 {
		timeout = 5 * time.Second
	}
	opts := []gdbremote.Option{gdbremote.WithTimeout(timeout)}
	if o.WireLog != nil {
		opts = append(opts, gdbremote.WithWireLog(o.WireLog))
	}
	dctx, cancel := context.WithTimeout(ctx, 2*timeout)
	defer cancel()
	return gdbremote.Dial(dctx, addr, opts...)
}

func (s *Session) attach(ctx context.Context, addr string, o Options) error {
	conn, err := dial(ctx, addr, o)
	if err != nil {
		if s.QEMU != nil {
			return fmt.Errorf("attach to qemu's gdbstub at %s: %w", addr, err)
		}
		return fmt.Errorf("attach %s: %w", addr, err)
	}
	s.Conn = conn
	s.Target = target.New(conn)
	// On a guest with several vCPUs, registers, steps and the monitor
	// follow the one the stub stopped on, until a call comes on another.
	if err := s.Target.FollowStopped(ctx); err != nil {
		return err
	}
	prepare := s.prepareLinux
	if s.QEMU == nil {
		prepare = s.prepareAttached
	}
	if err := prepare(ctx, o); err != nil {
		return err
	}
	if err := s.setupSyscalls(ctx, o); err != nil {
		return err
	}
	s.Regions = append(Regions(s.Symbols), s.linuxRegions()...)
	hdr := trace.Header{
		Target:    "qemu gdbstub at " + addr,
		Kernel:    s.Kernel,
		Mechanism: string(o.Mechanism),
	}
	if s.QEMU != nil {
		hdr.Accel, hdr.CPUModel = s.QEMU.Note, s.QEMU.CPU
	}
	r := trace.NewRecorder(s.Target, s.Symbols, s.Regions, hdr)
	r.Budget, r.Over, r.AllowIRQ, r.StackWords, r.StepFlags = o.Budget, o.Over, o.AllowIRQ, o.StackWords, o.StepFlags
	r.OnCPU = o.OnCPU
	s.probeMSRs = o.ProbeMSRs
	if err := r.Init(ctx); err != nil {
		return err
	}
	s.useRecorder(r, o)
	return nil
}

// started finishes StartFixture's and StartLinux's launch of QEMU: a QEMU
// that is to outlive sctrace (Keep) holds the temporary directory too, so
// that the next start's clean-up leaves it alone while QEMU runs.
func (s *Session) started() error {
	if !s.keep {
		return nil
	}
	if err := scratch.AddHolder(s.tmp, s.QEMU.Pid()); err != nil {
		s.Close()
		return err
	}
	return nil
}

// explain adds to an error from the stub what happened to the QEMU that
// sctrace started: how it ended (status or signal) or that it is frozen,
// the last lines of its stderr and of the guest's console. A connection
// closed by the stub is usually QEMU's end, so it waits a moment for QEMU
// to be reaped. Errors of an interrupted context, and sessions on a stub
// someone else started, are left as they are.
func (s *Session) explain(err error) error {
	var done *explainedError
	if err == nil || s.QEMU == nil || errors.Is(err, context.Canceled) || errors.As(err, &done) {
		return err
	}
	closed := errors.Is(err, gdbremote.ErrClosed)
	if !closed && !errors.Is(err, gdbremote.ErrTimeout) && !s.QEMU.Exited(0) {
		return err
	}
	if closed {
		s.QEMU.Exited(2 * time.Second)
	}
	return s.explainAlways(err)
}

// explainAlways adds what happened to QEMU to err, whatever err is.
func (s *Session) explainAlways(err error) error {
	msg := s.QEMU.Report()
	if s.Serial != nil {
		if tail := strings.TrimSpace(lastLines(s.Serial.String(), 8)); tail != "" {
			msg += "; the guest's console ends:\n" + indent(tail)
		} else {
			msg += "; nothing on the guest's console"
		}
	}
	return &explainedError{err: err, msg: msg}
}

// explainedError is an error with what happened to QEMU.
type explainedError struct {
	err error
	msg string
}

func (e *explainedError) Error() string { return e.err.Error() + "\n" + e.msg }

func (e *explainedError) Unwrap() error { return e.err }

func indent(s string) string {
	return "  " + strings.ReplaceAll(s, "\n", "\n  ")
}

// Close ends the session: it detaches from the stub (which removes every
// breakpoint and lets the guest run) when the guest is to stay, and ends
// QEMU when sctrace started it and Keep is not set. It is safe to call more
// than once.
func (s *Session) Close() error {
	var errs []error
	s.closeOnce.Do(func() {
		if s.Conn != nil {
			ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
			if s.keep {
				if err := s.Conn.Detach(ctx); err != nil && !errors.Is(err, gdbremote.ErrClosed) {
					errs = append(errs, fmt.Errorf("detach: %w", err))
				}
			}
			cancel()
			s.Conn.Close()
		}
		if s.QEMU != nil && !s.keep {
			s.QEMU.Stop()
		}
		if s.tmp != "" && !s.keep {
			os.RemoveAll(s.tmp)
		}
	})
	return errors.Join(errs...)
}

// Regions derives the memory regions annotations name from symbols with
// sizes: the teaching kernel's stacks, per-CPU area, TSS, GDT and IDT.
func Regions(tab *symbols.Table) []annotate.Region {
	var out []annotate.Region
	for _, s := range tab.Symbols() {
		if s.Size == 0 {
			continue
		}
		kind, ok := regionKind(s.Name)
		if !ok {
			continue
		}
		r := annotate.Region{Name: strings.ReplaceAll(s.Name, "_", " "), Kind: kind, Start: s.Addr, End: s.Addr + s.Size}
		if kind == annotate.RegionKernelStack || kind == annotate.RegionEntryStack {
			r.FrameTop = r.End
		}
		out = append(out, r)
	}
	return out
}

func regionKind(name string) (annotate.RegionKind, bool) {
	// A second CPU's copies carry its number: percpu_cpu1, entry_stack_cpu1.
	if base, n, ok := strings.Cut(name, "_cpu"); ok && n != "" && strings.Trim(n, "0123456789") == "" {
		name = base
	}
	switch {
	case name == "user_stack":
		return annotate.RegionUserStack, true
	case name == "kernel_stack":
		return annotate.RegionKernelStack, true
	case name == "entry_stack":
		return annotate.RegionEntryStack, true
	case strings.HasPrefix(name, "ist_") && strings.HasSuffix(name, "_stack"):
		return annotate.RegionISTStack, true
	case name == "percpu":
		return annotate.RegionPerCPU, true
	case name == "tss":
		return annotate.RegionTSS, true
	case name == "gdt":
		return annotate.RegionGDT, true
	case name == "idt":
		return annotate.RegionIDT, true
	case name == "vdso_data":
		return annotate.RegionVDSO, true
	}
	return "", false
}
