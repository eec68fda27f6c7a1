package session

import (
	"bytes"
	"cmp"
	"context"
	"debug/elf"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/sctrace/sctrace/annotate"
	"github.com/sctrace/sctrace/fixtures/kernel"
	"github.com/sctrace/sctrace/fixtures/linuxinit"
	"github.com/sctrace/sctrace/internal/scratch"
	"github.com/sctrace/sctrace/kallsyms"
	"github.com/sctrace/sctrace/linux"
	"github.com/sctrace/sctrace/mechanism"
	"github.com/sctrace/sctrace/qemu"
	"github.com/sctrace/sctrace/symbols"
	"github.com/sctrace/sctrace/syscalls"
	"github.com/sctrace/sctrace/target"
	"github.com/sctrace/sctrace/x86"
)

// LinuxOptions configure a session on a Linux kernel booted by sctrace.
type LinuxOptions struct {
	Options
	Kernel string // the bzImage to boot (required)
	// NoPTI boots with pti=off instead of pti=on; KASLR drops nokaslr.
	NoPTI, KASLR bool
	// Mode is what /init loops on (see linuxinit.Modes); "" follows
	// Options.Mechanism (int80 for int80, mmap for pagefault, int3 and
	// gpfault for themselves, syscall otherwise).
	Mode string
	// Memory is QEMU's -m (default 256M).
	Memory string
	// BootTimeout bounds the wait for /init to start looping (default 120s).
	BootTimeout time.Duration
	// Program, when set, is packed into the initramfs and run by /init
	// again and again (mode exec); the trace waits for its system calls.
	Program *linuxinit.Program
}

// ChooseMechanism checks that m is an entry mechanism Linux's /init uses
// (syscall, int80, vdso, pagefault, int3 or gpfault; "" for any; irq, the timer's
// interrupt, comes whatever it loops on) and pairs it with o.Mode, what
// /init loops on, the one following the other: a vDSO loop makes no system
// call to wait for, so tracing vdso makes /init loop on the vDSO, tracing
// pagefault makes it loop on mmap, whose first write to the fresh page
// faults, tracing int3 or gpfault makes it loop on the mode of that name,
// whose exception Linux answers with a signal, and an /init looping on the
// vDSO, on int $0x80, on int3 or on a #GP is traced by that mechanism
// unless the user chose one (chosen): the signal loops' syscall is their
// handlers' rt_sigreturn, which --syscall rt_sigreturn or -m syscall
// traces. A call named by o.Syscall is waited for at
// the syscall instruction, and without a mode or a program /init loops on
// it when one of its modes makes it. A Program makes the mode exec; an
// i386 one is traced at int $0x80 unless sysenter or syscall is chosen
// (see chooseCompat). A mechanism the loop never uses, or a
// call no loop makes, is refused: there would be nothing to wait for. It
// sets o.Mechanism and returns it.
func (o *LinuxOptions) ChooseMechanism(m mechanism.Mechanism, chosen bool) (mechanism.Mechanism, error) {
	if m.Compat() {
		return "", fmt.Errorf("mechanism %s is the teaching kernel's 32-bit code; under Linux a 32-bit program is in compatibility mode itself: give --exec with a static i386 program and -m %s", m, m.Native())
	}
	if o.Program == nil && o.Mode == linuxinit.Exec {
		return "", errors.New("--init exec runs the program --exec gives: give --exec PROGRAM instead")
	}
	if o.Program != nil {
		if o.Mode != "" && o.Mode != linuxinit.Exec {
			return "", fmt.Errorf("--exec runs your program, --init %s a built-in loop: give one of them", o.Mode)
		}
		o.Mode = linuxinit.Exec
		if o.Program.Machine == elf.EM_X86_64 && len(o.Program.Sites) == 0 {
			// linuxinit.NewProgram refuses such a program (a static-pie,
			// or one with no syscall instruction): a call caught
			// elsewhere could be any process's.
			return "", errors.New("--exec: no syscall instruction of the program is known to break on (a position-independent program is refused: build it with -static)")
		}
		if o.Program.Machine == elf.EM_386 {
			return o.chooseCompat(m, chosen)
		}
	}
	if m == mechanism.Sysenter {
		what := "Linux's /init is an x86-64 program"
		if o.Program != nil {
			what = "the program is an x86-64 one"
		}
		return "", fmt.Errorf("mechanism sysenter: Linux takes sysenter only from 32-bit code (compatibility mode, on an Intel CPU; in 64-bit mode it is not an entry Linux sets up), and %s: give --exec with a static i386 program that makes it", what)
	}
	switch m {
	case "", mechanism.Syscall, mechanism.Int80, mechanism.Vdso, mechanism.IRQ: // irq: the timer interrupts any loop
	case mechanism.PageFault:
		if o.Program != nil {
			return "", errors.New("mechanism pagefault: the page fault traced is the one /init's mmap loop makes, not a program's: drop --exec")
		}
	case mechanism.Int3, mechanism.GPFault:
		if o.Program != nil {
			return "", fmt.Errorf("mechanism %s: the exception traced is the one /init's %s loop raises, not a program's: drop --exec", m, m)
		}
	default:
		return "", fmt.Errorf("mechanism %s: Linux's /init uses syscall, int80, vdso, pagefault, int3 or gpfault (and irq comes in any loop)", m)
	}
	if o.Syscall != "" {
		if chosen && m != mechanism.Syscall {
			return "", fmt.Errorf("--syscall waits for the syscall instruction; mechanism %s is not it (x86-64 numbers mean nothing to int $0x80, which takes the i386 ones)", cmp.Or(string(m), "any"))
		}
		m = mechanism.Syscall
		c, err := syscalls.ABI().Parse(o.Syscall)
		if err != nil {
			return "", err
		}
		if o.Mode == "" {
			mode, ok := linuxinit.ModeFor(c.Name)
			if !ok {
				return "", fmt.Errorf("no built-in /init loop makes %s: give --exec PROGRAM (a static program that makes it), or --init MODE if you know that loop makes it", syscalls.ABI().Name(c.Nr))
			}
			o.Mode = mode
		}
	}
	switch {
	case o.Syscall != "":
		// --syscall decided: the syscall instruction.
	case m == mechanism.Vdso && o.Mode == "":
		o.Mode = linuxinit.Vdso
	case m == mechanism.PageFault && o.Mode == "":
		o.Mode = linuxinit.PageFaultMode
	case m.Signal() && o.Mode == "":
		o.Mode = string(m) // the loop that raises it: int3 or gpfault
	case !chosen && (o.Mode == linuxinit.Int3 || o.Mode == linuxinit.GPFault):
		m = mechanism.Mechanism(o.Mode)
	case !chosen && o.Mode == linuxinit.Vdso:
		m = mechanism.Vdso
	case !chosen && o.Mode == linuxinit.Int80:
		m = mechanism.Int80
	}
	if o.Mode != "" && m != "" && m != mechanism.IRQ {
		if err := linuxinit.CheckMode(o.Mode); err != nil {
			return "", err
		}
		if made := linuxinit.Mechanisms(o.Mode); len(made) > 0 && !slices.Contains(made, m) {
			return "", fmt.Errorf("mechanism %s: /init in mode %s never uses it (it uses %s), so there would be nothing to wait for", m, o.Mode, joinMechanisms(made))
		}
	}
	o.Mechanism = m
	return m, nil
}

// The guest CPUs a 32-bit program's entry needs: QEMU, like the CPUs it
// models, decides by the vendor string whether SYSENTER and SYSCALL are
// legal outside 64-bit mode. Intel's SYSENTER works from compatibility
// mode, AMD's raises #UD in long mode; AMD's SYSCALL works from
// compatibility mode (to the CSTAR entry), Intel's raises #UD outside
// 64-bit mode.
const (
	IntelCPU = qemu.DefaultCPU
	AMDCPU   = "qemu64,vendor=AuthenticAMD"
)

// CPUVendor returns the vendor a -cpu model string names: "GenuineIntel",
// "AuthenticAMD", or "" when it names none (QEMU then takes the model's
// own, AMD for qemu64).
func CPUVendor(cpu string) string {
	for _, f := range strings.Split(cpu, ",")[1:] {
		if v, ok := strings.CutPrefix(f, "vendor="); ok {
			return v
		}
	}
	return ""
}

// givenVendor returns the vendor a -cpu the user gave runs with: the one
// it names, AuthenticAMD for a plain qemu64 (its own vendor), "" for none
// given or a model whose vendor is not known here.
func givenVendor(cpu string) string { return x86.ModelVendor(cpu) }

// chooseCompat chooses how an i386 program is traced: by int $0x80 unless
// the user chose sysenter or syscall, which a 64-bit kernel takes from
// compatibility mode on one vendor's CPUs only. With no -cpu given, it
// picks the CPU that runs the instruction (Intel for sysenter, AMD for
// syscall). A -cpu whose vendor raises #UD on it is refused with the
// reason; a program with no such
// instruction in its code is refused too, as there would be nothing to
// break on.
func (o *LinuxOptions) chooseCompat(m mechanism.Mechanism, chosen bool) (mechanism.Mechanism, error) {
	if o.Syscall != "" {
		return "", errors.New("--syscall names x86-64 system calls; an i386 program's calls use the i386 numbers: trace it with -m int80, sysenter or syscall")
	}
	if !chosen || m == "" {
		m = mechanism.Int80
	}
	var want, refuse string
	switch m {
	case mechanism.Int80:
		o.Mechanism = m
		return m, nil
	case mechanism.Sysenter:
		want, refuse = IntelCPU, "AuthenticAMD"
	case mechanism.Syscall:
		want, refuse = AMDCPU, "GenuineIntel"
	default:
		return "", fmt.Errorf("mechanism %s: an i386 program enters the kernel by int80, sysenter or syscall", m)
	}
	if len(o.Program.Compat[m]) == 0 {
		return "", fmt.Errorf("mechanism %s: the program has no %s instruction in its code to break on (one reached through the vDSO's __kernel_vsyscall is not traced): use -m int80, or make the call with your own %s", m, m.Instruction(), m.Instruction())
	}
	vendor := givenVendor(o.CPU)
	switch {
	case o.CPU == "":
		o.CPU = want
	case vendor == refuse:
		if m == mechanism.Sysenter {
			return "", fmt.Errorf("mechanism sysenter with -cpu %s: an AMD CPU raises #UD on sysenter in long mode, compatibility mode included, so the program would die of SIGILL before entering the kernel; leave -cpu out (sctrace then runs %s)", o.CPU, IntelCPU)
		}
		return "", fmt.Errorf("mechanism syscall from compatibility mode with -cpu %s: an Intel CPU raises #UD on syscall outside 64-bit mode, and Linux, knowing it, leaves CSTAR (the compatibility-mode entry point) unset on Intel CPUs; QEMU's TCG before 9.1 does not raise that #UD but jumps to CSTAR = 0 in ring 0, which crashes the kernel. Leave -cpu out (sctrace then runs %s, whose syscall enters entry_SYSCALL_compat) or trace -m sysenter, the Intel way", o.CPU, AMDCPU)
	}
	o.Mechanism = m
	return m, nil
}

// joinMechanisms spells a list of mechanisms as "syscall, int80 and vdso".
func joinMechanisms(ms []mechanism.Mechanism) string {
	s := make([]string, len(ms))
	for i, m := range ms {
		s[i] = string(m)
	}
	if len(s) < 2 {
		return strings.Join(s, "")
	}
	return strings.Join(s[:len(s)-1], ", ") + " and " + s[len(s)-1]
}

// LinuxDefaultAppend is the start of the kernel command line StartLinux
// gives, before --no-pti and --kaslr change it: the serial console, no
// address randomisation (so addresses match between runs), page table
// isolation forced on (so the CR3 switches are there to see), no boot
// messages, and no_timer_check: the kernel's boot-time check that the
// timer interrupt ticks through the IO-APIC counts ticks against a
// busy-wait, which an emulated CPU on a loaded host can fail ("MP-BIOS
// bug: 8254 timer not connected to IO-APIC"), after which Linux 6.1 was
// seen to hang; virtual machines' kernels are commonly booted with it.
const LinuxDefaultAppend = "console=ttyS0 nokaslr pti=on quiet no_timer_check"

// CommandLine returns the kernel command line for o: the defaults as
// --no-pti and --kaslr change them, o.Append, and "-- MODE" for /init.
func (o LinuxOptions) CommandLine() string {
	var words []string
	for _, w := range strings.Fields(LinuxDefaultAppend) {
		switch {
		case w == "nokaslr" && o.KASLR:
			continue
		case w == "pti=on" && o.NoPTI:
			w = "pti=off"
		}
		words = append(words, w)
	}
	if o.Append != "" {
		words = append(words, o.Append)
	}
	return strings.Join(append(words, "--", o.mode()), " ")
}

func (o LinuxOptions) mode() string {
	switch {
	case o.Program != nil:
		return linuxinit.Exec
	case o.Mode != "":
		return o.Mode
	case o.Mechanism == mechanism.Int80:
		return linuxinit.Int80
	case o.Mechanism == mechanism.PageFault:
		return linuxinit.PageFaultMode
	case o.Mechanism.Signal():
		return string(o.Mechanism)
	}
	return linuxinit.Syscall
}

// linuxState is what a session knows of a Linux guest.
type linuxState struct {
	boot    <-chan struct{}    // closed once /init loops; nil when attached
	mode    string             // what sctrace's /init loops on; "" when attached
	prog    *linuxinit.Program // the user's program /init runs (mode exec)
	bootMax time.Duration
	cmdline string         // the kernel command line sctrace booted with
	tab     *symbols.Table // kallsyms, without the per-CPU copies
	res     *kallsyms.Result
	gsBase  uint64
	fixed   []annotate.Region      // TSS, entry and IST stacks, per-CPU area, GDT, IDT
	perCPU  map[uint64]perCPUNames // by kernel GS base, on a guest with several vCPUs
	// Timings, for reports.
	Booted, Ready time.Duration
	started       time.Time
}

// Linux describes what a session found of a Linux guest.
type Linux struct {
	Kallsyms kallsyms.Layout
	GSBase   uint64
	// BootTime is the time from starting QEMU until /init looped (zero when
	// attached); ReadyTime until symbols and regions were ready.
	BootTime, ReadyTime time.Duration
}

// Linux returns what the session found of a Linux guest, or nil when the
// guest is not Linux (or was not recognised).
func (s *Session) Linux() *Linux {
	if s.linux == nil || s.linux.res == nil {
		return nil
	}
	return &Linux{Kallsyms: s.linux.res.Layout, GSBase: s.linux.gsBase, BootTime: s.linux.Booted, ReadyTime: s.linux.Ready}
}

// CheckKernelImage checks that path is something QEMU can boot as an
// x86-64 Linux kernel: a bzImage (the "HdrS" boot header at 0x202, with the
// 64-bit entry flag), or an x86-64 ELF (a vmlinux with a PVH note). It says
// what the file is otherwise, instead of QEMU's less direct complaints.
func CheckKernelImage(path string) error {
	f, err := os.Open(path)
	if err != nil {
		return fmt.Errorf("kernel: %w", err)
	}
	defer f.Close()
	hdr := make([]byte, 0x240)
	n, _ := io.ReadFull(f, hdr)
	hdr = hdr[:n]
	switch {
	case bytes.HasPrefix(hdr, []byte(elf.ELFMAG)):
		ef, err := elf.NewFile(f)
		if err != nil {
			return fmt.Errorf("kernel %s: a corrupt ELF file: %w", path, err)
		}
		defer ef.Close()
		if ef.Class != elf.ELFCLASS64 || ef.Machine != elf.EM_X86_64 {
			return fmt.Errorf("kernel %s: an ELF for %v %v, not an x86-64 kernel", path, ef.Class, ef.Machine)
		}
		return nil
	case len(hdr) >= 0x238 && x86.IsBzImage(hdr):
		// xloadflags (0x236) bit 0: the kernel has a 64-bit entry point.
		if hdr[0x236]&1 == 0 {
			return fmt.Errorf("kernel %s: a bzImage without a 64-bit entry point (a 32-bit kernel?); sctrace traces x86-64 kernels", path)
		}
		// The setup sectors (0x1f1; 0 means 4) and the 32-bit part
		// (syssize at 0x1f4, in 16-byte units) make up the file: a
		// shorter file is cut off, and its guest dies silently early on.
		setup := int64(hdr[0x1f1])
		if setup == 0 {
			setup = 4
		}
		want := (setup+1)*512 + int64(binary.LittleEndian.Uint32(hdr[0x1f4:]))*16
		if st, err := f.Stat(); err == nil && st.Size() < want {
			return fmt.Errorf("kernel %s: a truncated bzImage: its boot header says %d bytes, the file has %d", path, want, st.Size())
		}
		return nil
	}
	return fmt.Errorf("kernel %s: not a Linux bzImage (no \"HdrS\" boot header at 0x202) nor an x86-64 ELF", path)
}

// StartLinux boots a Linux bzImage under QEMU with a generated initramfs
// whose /init loops on a system call, waits until it loops, stops the CPU
// where kernel memory is mapped, reads the kernel's symbols from its
// kallsyms tables and the system-call regions from TR's base and the
// per-CPU area, and prepares a recorder. The caller must Close the session.
func StartLinux(ctx context.Context, o LinuxOptions) (*Session, error) {
	started := time.Now()
	if o.Kernel == "" {
		return nil, errors.New("no kernel given (fetch one with scripts/fetch-kernel.sh)")
	}
	if err := CheckKernelImage(o.Kernel); err != nil {
		return nil, err
	}
	if err := linuxinit.CheckMode(o.mode()); err != nil {
		return nil, err
	}
	if err := o.CheckOnCPU(); err != nil {
		return nil, err
	}
	choice, err := o.chooseAccel(ctx)
	if err != nil {
		return nil, err
	}
	if err := o.checkAccel(choice.Name); err != nil {
		return nil, err
	}
	tmp, err := scratch.Dir("linux-")
	if err != nil {
		return nil, err
	}
	img, err := linuxinit.InitramfsWith(o.Program)
	if err != nil {
		os.RemoveAll(tmp)
		return nil, fmt.Errorf("initramfs: %w", err)
	}
	initrd := filepath.Join(tmp, "initramfs.cpio")
	if err := os.WriteFile(initrd, img, 0o644); err != nil {
		os.RemoveAll(tmp)
		return nil, fmt.Errorf("write the initramfs: %w", err)
	}
	serial := &SerialLog{}
	w := newBannerWatch(serial, linuxinit.Banner)
	cpu := o.CPU
	inst, err := qemu.Start(ctx, qemu.Config{
		Binary: o.QEMU, Kernel: o.Kernel, Initrd: initrd, Append: o.CommandLine(), Accel: choice.Name, AccelNote: choice.Note, CPU: cpu, SMP: o.SMP,
		Memory: cmp.Or(o.Memory, "256M"), GDB: true, GDBTCP: o.GDBTCP, Stopped: true, Serial: w, Keep: o.Keep,
		Extra: o.linuxQEMUExtra(choice.Name),
	})
	if err != nil {
		os.RemoveAll(tmp)
		return nil, err
	}
	s := &Session{QEMU: inst, Serial: serial, Kernel: "Linux " + filepath.Base(o.Kernel), keep: o.Keep, tmp: tmp,
		linux: &linuxState{boot: w.seen, mode: o.mode(), prog: o.Program, bootMax: o.BootTimeout, cmdline: o.CommandLine(), started: started}}
	if err := s.started(); err != nil {
		return nil, err
	}
	if o.Program != nil {
		s.syscallSites = o.Program.Sites
		s.compatSites = o.Program.Compat
	}
	if err := s.attach(ctx, inst.GDBAddr, o.Options); err != nil {
		err = s.explain(err) // before Close ends QEMU
		s.Close()
		return nil, err
	}
	return s, nil
}

// bannerWatch copies the guest console to a SerialLog and closes seen when
// a line holding want has arrived.
type bannerWatch struct {
	log  *SerialLog
	want string
	seen chan struct{}
	once sync.Once
}

func newBannerWatch(log *SerialLog, want string) *bannerWatch {
	return &bannerWatch{log: log, want: want, seen: make(chan struct{})}
}

func (b *bannerWatch) Write(p []byte) (int, error) {
	n, err := b.log.Write(p)
	select {
	case <-b.seen:
		// Seen already: a program that prints in a loop (--exec) must
		// not make each write scan all the console said before.
		return n, err
	default:
	}
	if strings.Contains(b.log.String(), b.want) {
		b.once.Do(func() { close(b.seen) })
	}
	return n, err
}

// enterSteps bounds the single steps taken to reach kernel context.
const enterSteps = 20000

// prepareLinux runs between the connection and the recorder: for a Linux
// guest sctrace booted, it lets the guest run until /init loops; for an
// attached guest without symbols it checks whether the guest is Linux. It
// then reads kallsyms and the regions. An attached guest that is not
// recognised is left as it is.
func (s *Session) prepareLinux(ctx context.Context, o Options) error {
	if s.noSymbols {
		return nil
	}
	if s.linux == nil {
		if s.Symbols != nil && !IsLinuxTable(s.Symbols) {
			return nil
		}
		s.linux = &linuxState{started: time.Now()}
		if err := s.readLinux(ctx); err != nil {
			s.linux = nil
			if s.given {
				s.Notes = append(s.Notes, fmt.Sprintf("the symbols name a Linux kernel, but its stacks and per-CPU area could not be found: %v", err))
				return nil
			}
			if s.Symbols == nil && s.useBundled(ctx) {
				return nil
			}
			s.Kernel = "unknown kernel (not recognised as Linux: " + err.Error() + ")"
		}
		return nil
	}
	if s.linux.boot != nil {
		if err := s.bootLinux(ctx); err != nil {
			return err
		}
	}
	return s.readLinux(ctx)
}

// useBundled takes the bundled teaching kernel's symbols when the guest
// runs that kernel (see Bundled).
func (s *Session) useBundled(ctx context.Context) bool {
	tab, ok := Bundled(ctx, s.Target)
	if !ok {
		return false
	}
	s.Symbols, s.Kernel = tab, KernelDescription
	return true
}

// Bundled returns the bundled teaching kernel's symbols when the guest
// runs that kernel: its entry code is in guest memory where the ELF puts
// it, byte for byte (a QEMU that `sctrace run --keep` left running, say).
func Bundled(ctx context.Context, t *target.Target) (*symbols.Table, bool) {
	tab, err := symbols.FromELF(bytes.NewReader(kernel.ELF))
	if err != nil {
		return nil, false
	}
	addr, ok := tab.Addr("entry_SYSCALL_64")
	if !ok {
		return nil, false
	}
	want, ok := kernel.Code(addr, 64)
	if !ok {
		return nil, false
	}
	got, err := t.ReadMemory(ctx, addr, len(want))
	if err != nil || !bytes.Equal(got, want) {
		return nil, false
	}
	tab.Source = "ELF symtab of the bundled teaching kernel (recognised in guest memory)"
	return tab, true
}

// bootLinux runs the guest until /init prints its banner, then stops it.
func (s *Session) bootLinux(ctx context.Context) error {
	max := s.linux.bootMax
	if max <= 0 {
		max = 120 * time.Second
	}
	bctx, cancel := context.WithTimeout(ctx, max)
	defer cancel()
	go func() {
		select {
		case <-s.linux.boot:
			cancel()
		case <-s.QEMU.Done():
			cancel()
		case <-bctx.Done():
		}
	}()
	_, err := s.Conn.Continue(bctx)
	select {
	case <-s.linux.boot:
		s.linux.Booted = time.Since(s.linux.started)
		return nil
	default:
	}
	switch {
	case ctx.Err() != nil:
		return fmt.Errorf("boot interrupted: %w", ctx.Err())
	case errors.Is(bctx.Err(), context.DeadlineExceeded):
		return s.explainAlways(fmt.Errorf("linux did not reach /init within %s (%s)", max, s.bootHint()))
	case err != nil:
		return s.explain(fmt.Errorf("boot linux: %w", err))
	}
	// The guest stopped by itself: QEMU is probably ending.
	s.QEMU.Exited(2 * time.Second)
	return s.explainAlways(errors.New("the guest stopped before /init looped"))
}

// bootHint says what to try when Linux did not reach /init in time.
func (s *Session) bootHint() string {
	hint := "a slow or loaded host may need a longer --boot-timeout"
	words := strings.Fields(s.linux.cmdline)
	if s.Serial != nil && strings.TrimSpace(s.Serial.String()) == "" && slices.Contains(words, "quiet") && !slices.Contains(words, "ignore_loglevel") {
		hint += `; the console is empty because the command line has "quiet": --append "loglevel=8 ignore_loglevel" shows how far the boot got`
	}
	return hint
}

// readLinux stops the CPU where kernel memory is mapped and reads the
// symbols, the banner and the regions.
func (s *Session) readLinux(ctx context.Context) error {
	sys, err := s.Target.SysRegs(ctx)
	if err != nil {
		return err
	}
	// The IDT is mapped under user page tables too: find the kernel text
	// first, then step until it can be read.
	anchor, err := linux.Anchor(ctx, s.Target, sys.IDTBase)
	if err != nil {
		return err
	}
	st, err := linux.EnterKernel(ctx, s.Target, anchor, enterSteps)
	if err != nil {
		return err
	}
	var (
		tab *symbols.Table
		res *kallsyms.Result
	)
	if s.given {
		// A System.map or vmlinux the user gave: its per-CPU symbols are
		// link-time offsets, placed at the GS base below like kallsyms'.
		tab = s.Symbols
	} else {
		tab, res, err = linux.Symbols(ctx, s.Target, anchor)
		if err != nil {
			return err
		}
		if _, ok := tab.Addr("entry_SYSCALL_64"); !ok {
			return fmt.Errorf("kallsyms at %#x has no entry_SYSCALL_64", res.Layout.TokenTable)
		}
		if s.refused != "" {
			tab.Source += " (" + s.refused + ")"
		}
	}
	gs, _ := linux.KernelGSBase(st)
	if banner, err := linux.Banner(ctx, s.Target, tab); err == nil {
		s.Kernel = banner
	}
	fixed, err := linux.Regions(ctx, s.Target, tab, sys, gs)
	if err != nil {
		return err
	}
	l := s.linux
	l.tab, l.res, l.gsBase, l.fixed = tab, res, gs, fixed
	if s.Symbols, err = s.linuxSymbols(gs); err != nil {
		return err
	}
	if task, err := linux.TaskStack(ctx, kernelMemory{s.Target}, tab, gs); err == nil {
		s.linuxTask = task
	}
	l.Ready = time.Since(l.started)
	return nil
}

// linuxSymbols returns the kernel's symbols with its per-CPU symbols
// placed at gs, one CPU's per-CPU area, and the labels of the program
// traced: the --exec program's own symbols, or sctrace's /init's.
func (s *Session) linuxSymbols(gs uint64) (*symbols.Table, error) {
	l := s.linux
	tab := l.tab
	if gs != 0 {
		tab = linux.WithPerCPU(tab, gs)
	}
	switch {
	case l.prog != nil && l.prog.Type == elf.ET_EXEC:
		// The user's program is the one traced: its symbols, where it
		// has them, name its code (/init's would name the same
		// addresses).
		if prog, err := symbols.FromELF(bytes.NewReader(l.prog.ELF)); err == nil {
			prog.Source = "ELF symtab of the program given to --exec"
			tab = tab.Merge(prog)
		}
	case l.mode != "" && l.prog == nil:
		// sctrace's own /init: its labels mark the loop's system call.
		init, err := linuxinit.Symbols(l.mode)
		if err != nil {
			return nil, err
		}
		tab = tab.Merge(init)
	}
	return tab, nil
}

// IsLinuxTable reports whether tab names a Linux kernel: it has the entry
// point entry_SYSCALL_64 and the version string linux_banner (the teaching
// kernel has the first only).
func IsLinuxTable(tab *symbols.Table) bool {
	_, entry := tab.Addr("entry_SYSCALL_64")
	_, banner := tab.Addr("linux_banner")
	return entry && banner
}

// linuxRegions returns the Linux regions found so far.
func (s *Session) linuxRegions() []annotate.Region {
	if s.linux == nil {
		return nil
	}
	out := append([]annotate.Region(nil), s.linux.fixed...)
	if s.linuxTask.End != 0 {
		out = append(out, s.linuxTask)
	}
	return out
}

// kernelMemory reads kernel memory whatever page tables the CPU is on:
// under the current CR3 where it maps the address, else, when the CPU is on
// the user half of a KPTI page-table pair (CR3 bit 12 set), under the
// kernel half (bit 12 clear) through physical memory. With pti=on the
// per-CPU data that names the running task's stack is not mapped in user
// mode, where a round trip starts.
type kernelMemory struct{ t *target.Target }

// KernelMemory returns a reader of a Linux guest's kernel memory whatever
// page tables the CPU is on: under the current CR3 where it maps the
// address, else, on the user half of a KPTI pair, under the kernel half
// (through physical memory).
func KernelMemory(t *target.Target) linux.Memory { return kernelMemory{t} }

func (k kernelMemory) ReadMemory(ctx context.Context, addr uint64, n int) ([]byte, error) {
	b, err := k.t.ReadMemory(ctx, addr, n)
	if err == nil {
		return b, nil
	}
	st, serr := k.t.State(ctx)
	if serr != nil || st.Val(x86.CR3)&0x1000 == 0 {
		return nil, err
	}
	return k.t.ReadUnder(ctx, st.Val(x86.CR3)&^0x1fff, addr, n)
}

// refreshLinux finds the task stack again at the start of a round trip:
// it belongs to the task now running, which the regions must name.
func (s *Session) refreshLinux(ctx context.Context) {
	if s.linux == nil || s.linux.tab == nil {
		return
	}
	moved := s.followCPU(ctx)
	task, err := linux.TaskStack(ctx, kernelMemory{s.Target}, s.linux.tab, s.linux.gsBase)
	if err == nil && task != s.linuxTask {
		s.linuxTask, moved = task, true
	}
	if !moved || s.Recorder == nil {
		return
	}
	s.Regions = append(Regions(s.Symbols), s.linuxRegions()...)
	s.Recorder.SetNames(s.Symbols, s.Regions)
}

// followCPU names the per-CPU data after the vCPU that made the call, on
// a guest with several: its kernel GS base (the per-CPU area; GS base or
// KERNEL_GS_BASE at the stop) places the per-CPU symbols, and its TSS
// (TR's base, read with the monitor showing that vCPU) gives its entry
// and IST stacks and cpu_tss_rw. What was found for each vCPU is kept.
// It reports whether the names changed.
func (s *Session) followCPU(ctx context.Context) bool {
	l := s.linux
	if !s.Target.SMP() || s.Recorder == nil {
		return false
	}
	st := s.Recorder.Current()
	if st == nil {
		return false
	}
	gs, ok := st.KernelGS()
	if !ok || gs == l.gsBase {
		return false
	}
	pc, ok := l.perCPU[gs]
	if !ok {
		sys := s.Recorder.Trace().Header.Sys
		if sys == nil {
			return false
		}
		fixed, err := linux.Regions(ctx, kernelMemory{s.Target}, l.tab, sys, gs)
		if err != nil {
			s.Notes = append(s.Notes, fmt.Sprintf("the regions of the vCPU with GS base %#x: %v", gs, err))
			return false
		}
		tab, err := s.linuxSymbols(gs)
		if err != nil {
			return false
		}
		pc = perCPUNames{tab: tab, fixed: fixed}
		if l.perCPU == nil {
			l.perCPU = map[uint64]perCPUNames{}
		}
		l.perCPU[gs] = pc
	}
	if _, seen := l.perCPU[l.gsBase]; !seen && l.gsBase != 0 {
		if l.perCPU == nil {
			l.perCPU = map[uint64]perCPUNames{}
		}
		l.perCPU[l.gsBase] = perCPUNames{tab: s.Symbols, fixed: l.fixed}
	}
	l.gsBase, l.fixed, s.Symbols = gs, pc.fixed, pc.tab
	return true
}

// perCPUNames are the names of one vCPU's per-CPU data.
type perCPUNames struct {
	tab   *symbols.Table    // symbols with the per-CPU ones at its GS base
	fixed []annotate.Region // its TSS, entry and IST stacks, per-CPU area
}

func lastLines(s string, n int) string {
	lines := strings.Split(strings.TrimRight(s, "\n"), "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return strings.Join(lines, "\n")
}
