package session

import (
	"bytes"
	"cmp"
	"context"
	"encoding/binary"
	"fmt"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/sctrace/sctrace/fixtures/kernel"
	"github.com/sctrace/sctrace/internal/testenv"
	"github.com/sctrace/sctrace/mechanism"
	"github.com/sctrace/sctrace/qemu"
	"github.com/sctrace/sctrace/trace"
	"github.com/sctrace/sctrace/x86"
	"golang.org/x/arch/x86/x86asm"
)

// TestFixtureCompat traces the teaching kernel's three calls from 32-bit
// code: getpid by int $0x80 (the same gate as from 64-bit code, back by
// iretq), by sysenter on an Intel-vendor CPU (entry_SYSENTER_compat, back
// by the 32-bit sysexit) and by syscall on an AMD-vendor one
// (entry_SYSCALL_compat through CSTAR, back by sysretl); and, on QEMU 10,
// whose TCG raises #UD as an Intel CPU does, syscall from compatibility
// mode on an Intel vendor, through the #UD handler. Each starts at its
// labelled 32-bit instruction in compatibility mode (CS 0x23, a descriptor
// with L = 0 and D = 1 in the guest's GDT), runs at CPL 0 from its entry
// symbol, leaves by the exit instruction at its ELF label (the bytes the
// ELF has there: no REX.W, so back to 32-bit code), switches stacks, names
// no finding, ends at CPL 3 in compatibility mode at the instruction after
// the call with the stack it had, and has as many instructions as gdb's
// stepi counts on the same guest.
func TestFixtureCompat(t *testing.T) {
	testenv.NeedTools(t, "gdb") // it counts the path sctrace records
	tests := []struct {
		name   string
		m      mechanism.Mechanism
		cpu    string // given; "" lets StartFixture choose
		want   string // the CPU model the header must name
		qemu10 bool
		// qemu72 runs QEMU 7.2 ($PATH's, skipped when it is 9.1 or
		// newer), whose TCG takes an Intel vendor's compatibility-mode
		// syscall to CSTAR; finding is then the one finding expected.
		qemu72  bool
		finding string
		entry   string
		exit    string
		op      x86asm.Op
		skip    int // round trips recorded before the one checked
		stacks  []string
	}{
		// The CPU moves an int $0x80, a sysenter (SYSENTER_ESP) and a #UD
		// to the entry stack, the entry code to the kernel stack; a
		// syscall stays on the user stack until the entry code loads the
		// kernel's; every way out leaves from the entry stack (entry.S).
		{"int80", mechanism.Int80Compat, "", IntelCPU, false, false, "", "entry_INT80", "int80_iretq_insn", x86asm.IRETQ, 0, viaEntryStack},
		{"sysenter", mechanism.SysenterCompat, "", IntelCPU, false, false, "", "entry_SYSENTER_compat", "sysexitl_insn", x86asm.SYSEXIT, 0, viaEntryStack},
		{"syscall", mechanism.SyscallCompat, "", AMDCPU, false, false, "", "entry_SYSCALL_compat", "entry_SYSRETL_compat_insn", x86asm.SYSRET, 0,
			[]string{"user stack", "kernel stack", "entry stack", "user stack"}},
		// The first #UD prints the kernel's report on the console: the
		// second round trip is the path every later one takes.
		{"syscall-UD-intel-qemu10", mechanism.SyscallCompat, IntelCPU, IntelCPU, true, false, "", "asm_exc_invalid_op", "ud_iretq_insn", x86asm.IRETQ, 1, viaEntryStack},
		// The SDM's Intel CPU raises #UD there (SYSCALL: #UD if CS.L ≠
		// 1): going to CSTAR on an Intel vendor is a finding.
		{"syscall-CSTAR-intel-qemu72", mechanism.SyscallCompat, IntelCPU, IntelCPU, false, true, "on an Intel CPU a SYSCALL in compatibility mode raises #UD", "entry_SYSCALL_compat", "entry_SYSRETL_compat_insn", x86asm.SYSRET, 0,
			[]string{"user stack", "kernel stack", "entry stack", "user stack"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			o := Options{Mechanism: tt.m, CPU: tt.cpu, Accel: "tcg", Keep: true}
			if tt.qemu10 {
				o.QEMU = testenv.QEMU10(t)
			}
			testenv.NeedQEMU(t)
			if tt.qemu72 {
				needQEMUBefore91(t)
			}
			ctx, cancel := context.WithTimeout(context.Background(), 240*time.Second)
			defer cancel()
			s, err := StartFixture(ctx, o)
			if err != nil {
				t.Fatal(err)
			}
			kept(t, s)
			addr := func(name string) uint64 {
				a, ok := s.Symbols.Addr(name)
				if !ok {
					t.Fatalf("the teaching kernel has no symbol %s", name)
				}
				return a
			}
			var tr *trace.Trace
			for range tt.skip + 1 {
				if tr, err = s.RoundTrip(ctx, tt.m); err != nil {
					t.Fatal(err)
				}
			}
			if tr.Header.CPUModel != tt.want {
				t.Errorf("header names the CPU model %q, want %q", tr.Header.CPUModel, tt.want)
			}

			first := tr.Step(0)
			site := addr(tt.m.UserLabel())
			if uint64(first.RIP) != site || first.CPL != 3 || first.Regs.Val(x86.CS) != kernel.User32CS || !first.Regs.Sys.CompatMode() {
				t.Fatalf("step 0 is %s at %#x, CPL %d, cs %#x (compatibility mode %v); want %s at %#x, CPL 3, cs %#x in compatibility mode",
					first.Mnemonic, uint64(first.RIP), first.CPL, first.Regs.Val(x86.CS), first.Regs.Sys.CompatMode(), tt.m.UserLabel(), site, kernel.User32CS)
			}
			if got := first.Regs.Val(x86.RAX); got != kernel.SysGetpid {
				t.Errorf("EAX = %d at the %s, want getpid's number %d", got, tt.m, kernel.SysGetpid)
			}
			checkUser32Descriptor(t, ctx, s, first.Regs.Sys)

			if st1 := tr.Step(1); uint64(st1.RIP) != addr(tt.entry) || st1.CPL != 0 {
				t.Errorf("step 1 at %s %#x, CPL %d; want %s %#x at CPL 0", st1.Symbol, uint64(st1.RIP), st1.CPL, tt.entry, addr(tt.entry))
			}
			last := tr.Step(tr.Len() - 1)
			exitBytes, ok := kernel.Code(addr(tt.exit), len(last.Bytes))
			if last.Op != tt.op || uint64(last.RIP) != addr(tt.exit) || last.CPL != 0 || !ok || !bytes.Equal(last.Bytes, exitBytes) {
				t.Errorf("last step %s (% x) at %s, CPL %d; want %s at %s (% x in the ELF) at CPL 0",
					last.Mnemonic, last.Bytes, last.Symbol, last.CPL, tt.op, tt.exit, exitBytes)
			}

			if tr.Header.Stop != string(trace.StopUser) || tr.Final.CPL() != 3 {
				t.Errorf("stopped: %s at CPL %d, want back in user mode", tr.Header.Stop, tr.Final.CPL())
			}
			if got, want := tr.Final.Val(x86.RIP), addr(tt.m.UserReturnLabel()); got != want || want != site+uint64(len(first.Bytes)) {
				t.Errorf("back at %#x, want %s %#x, right after the %d-byte %s", got, tt.m.UserReturnLabel(), want, len(first.Bytes), first.Mnemonic)
			}
			if got := tr.Final.Val(x86.CS); got != kernel.User32CS {
				t.Errorf("back with cs %#x, want %#x: compatibility mode", got, kernel.User32CS)
			}
			if got, want := tr.Final.Val(x86.RSP), first.Regs.Val(x86.RSP); got != want {
				t.Errorf("back with rsp %#x, want %#x, the stack at the %s", got, want, tt.m.Instruction())
			}

			ev := countEvents(tr)
			if ev.swapgs != 2 || ev.cr3 != 2 || !ev.kernelStack || !ev.cplZero {
				t.Errorf("events: %+v; want 2 swapgs, 2 CR3 writes, CPL 0 and the kernel stack", ev)
			}
			if stacks := trace.Summarize(tr).Stacks; !slices.Equal(stacks, tt.stacks) {
				t.Errorf("stacks visited %q, want %q", stacks, tt.stacks)
			}
			switch findings := trace.Summarize(tr).Findings; {
			case tt.finding != "":
				if len(findings) != 1 || !strings.Contains(findings[0], "step 0 (") || !strings.Contains(findings[0], tt.finding) {
					t.Errorf("findings %q, want one at step 0 saying %q", findings, tt.finding)
				}
			case len(findings) != 0:
				for _, f := range findings {
					t.Log(f)
				}
				t.Errorf("%d findings on a correct kernel", len(findings))
			}

			if err := s.Close(); err != nil {
				t.Fatal(err)
			}
			counts, _ := gdbStepiCount(ctx, t, s.QEMU.GDBAddr, site, 1)
			if counts[0] != tr.Len() {
				t.Errorf("sctrace recorded %d instructions, gdb's stepi counted %d on the same path", tr.Len(), counts[0])
			}
			t.Logf("%s on %s (QEMU %s): %d instructions (gdb stepi %d), %s → %s, stacks %q",
				tt.m, tr.Header.CPUModel, cmp.Or(o.QEMU, "on $PATH"), tr.Len(), counts[0], tt.entry, tt.exit, tt.stacks)
		})
	}
}

// needQEMUBefore91 skips t unless $PATH's QEMU is older than 9.1, whose
// TCG started raising #UD on an Intel vendor's syscall outside 64-bit
// mode.
func needQEMUBefore91(t *testing.T) {
	t.Helper()
	v, err := qemu.Version(context.Background(), qemu.BinaryName)
	if err != nil {
		t.Fatal(err)
	}
	var major, minor int
	if i := strings.Index(v, "version "); i < 0 {
		t.Fatalf("cannot read the version in %q", v)
	} else if _, err := fmt.Sscanf(v[i+len("version "):], "%d.%d", &major, &minor); err != nil {
		t.Fatalf("cannot read the version in %q: %v", v, err)
	}
	if major > 9 || major == 9 && minor >= 1 {
		t.Skipf("%s raises #UD there, as an Intel CPU does", v)
	}
}

// viaEntryStack is the stacks of a round trip the CPU starts on the entry
// stack (TSS.RSP0 or SYSENTER_ESP).
var viaEntryStack = []string{"user stack", "entry stack", "kernel stack", "entry stack", "user stack"}

// checkUser32Descriptor reads GDT entry 4 (selector 0x23) from the guest and
// checks it is what compatibility mode needs (SDM vol. 3, 3.4.5): a present
// code segment of DPL 3 with L (bit 53) clear and D (bit 54) set.
func checkUser32Descriptor(t *testing.T, ctx context.Context, s *Session, sys *x86.SysRegs) {
	t.Helper()
	if sys == nil {
		t.Fatal("no system registers read at step 0")
	}
	b, err := s.Target.ReadMemory(ctx, sys.GDTBase+kernel.User32CS&^7, 8)
	if err != nil {
		t.Fatalf("read GDT entry 4: %v", err)
	}
	d := binary.LittleEndian.Uint64(b)
	present, dpl, code := d>>47&1 == 1, d>>45&3, d>>43&1 == 1
	l, db := d>>53&1, d>>54&1
	if !present || dpl != 3 || !code || l != 0 || db != 1 {
		t.Errorf("GDT entry 4 = %#016x: present %v, DPL %d, code %v, L %d, D %d; want a present DPL-3 code segment with L 0, D 1", d, present, dpl, code, l, db)
	}
}

// TestChooseCompatCPU checks the CPU the teaching kernel gets for a call
// from compatibility mode: syscall-compat an AMD vendor unless one is
// given, sysenter-compat refused on an AMD vendor (a plain qemu64 is one).
func TestChooseCompatCPU(t *testing.T) {
	tests := []struct {
		m       mechanism.Mechanism
		cpu     string
		want    string
		refusal string // "" when accepted
	}{
		{mechanism.SyscallCompat, "", AMDCPU, ""},
		{mechanism.SyscallCompat, IntelCPU, IntelCPU, ""},
		{mechanism.SysenterCompat, "", "", ""},
		{mechanism.SysenterCompat, IntelCPU, IntelCPU, ""},
		{mechanism.SysenterCompat, "qemu64", "", "an AMD CPU has no sysenter in long mode"},
		{mechanism.SysenterCompat, AMDCPU, "", "an AMD CPU has no sysenter in long mode"},
		{mechanism.Int80Compat, "qemu64", "qemu64", ""},
		{mechanism.Syscall, "", "", ""},
	}
	for _, tt := range tests {
		o := Options{Mechanism: tt.m, CPU: tt.cpu}
		err := o.chooseCompatCPU()
		switch {
		case tt.refusal != "" && (err == nil || !strings.Contains(err.Error(), tt.refusal)):
			t.Errorf("%s on %q: error %v, want one saying %q", tt.m, tt.cpu, err, tt.refusal)
		case tt.refusal == "" && (err != nil || o.CPU != tt.want):
			t.Errorf("%s on %q: CPU %q, error %v; want %q", tt.m, tt.cpu, o.CPU, err, tt.want)
		}
	}
}

// TestLogRecorderCompat records each call from the teaching kernel's
// 32-bit code twice, on two guests booted alike: by single steps, and with
// the way in stepped and the rest from QEMU's instruction log (which dumps
// 32-bit code in a layout without the 64-bit registers, so the entering
// instruction cannot come from it). The two must agree step for step (see
// traceDiffs).
func TestLogRecorderCompat(t *testing.T) {
	for _, m := range []mechanism.Mechanism{mechanism.Int80Compat, mechanism.SysenterCompat, mechanism.SyscallCompat} {
		t.Run(string(m), func(t *testing.T) {
			ctx, cancel := context.WithTimeout(context.Background(), 90*time.Second)
			defer cancel()
			st, err := startFixture(t, Options{Mechanism: m}).RoundTrip(ctx, m)
			if err != nil {
				t.Fatal(err)
			}
			lt, err := startFixture(t, Options{Mechanism: m, Record: RecordLog, LogAfter: 1}).RoundTrip(ctx, m)
			if err != nil {
				t.Fatal(err)
			}
			if a, b := lt.Header.RecorderOf(0), lt.Header.RecorderOf(1); a != trace.RecorderStep || b != trace.RecorderLog {
				t.Errorf("steps 0 and 1 recorded by %q and %q, want %q and %q", a, b, trace.RecorderStep, trace.RecorderLog)
			}
			diffs, effects := traceDiffs(st, lt)
			for _, d := range diffs {
				t.Error(d)
			}
			for _, e := range effects {
				t.Log(e)
			}
			t.Logf("%s: %d steps stepped, %d with the log; %d differences", m, st.Len(), lt.Len(), len(diffs))
		})
	}
}

// TestRecordFastCompat asks for the log recorder at the teaching kernel's
// 32-bit int $0x80, before it runs: refused with the reason, nothing
// recorded; one step later, in the kernel, it records the rest.
func TestRecordFastCompat(t *testing.T) {
	s := startFixture(t, Options{Mechanism: mechanism.Int80Compat})
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	if err := s.ToEntry(ctx, mechanism.Int80Compat); err != nil {
		t.Fatal(err)
	}
	tr, err := s.RecordFast(ctx)
	if err == nil || !strings.Contains(err.Error(), "dumps 32-bit code (compatibility mode, here) without the 64-bit registers") || tr.Len() != 0 {
		t.Fatalf("RecordFast in 32-bit code: %d steps, error %v; want none and the reason", tr.Len(), err)
	}
	if _, err := s.Recorder.Step(ctx); err != nil {
		t.Fatal(err)
	}
	if tr, err = s.RecordFast(ctx); err != nil || tr.Header.Stop != string(trace.StopUser) {
		t.Fatalf("RecordFast from the kernel: stop %q, error %v", tr.Header.Stop, err)
	}
}
