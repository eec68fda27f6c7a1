package session

import (
	"bytes"
	"cmp"
	"context"
	"debug/elf"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/sctrace/sctrace/fixtures/linuxinit"
	"github.com/sctrace/sctrace/gdbremote"
	"github.com/sctrace/sctrace/internal/testenv"
	"github.com/sctrace/sctrace/mechanism"
	"github.com/sctrace/sctrace/qemu"
	"github.com/sctrace/sctrace/x86"
	"golang.org/x/arch/x86/x86asm"
)

// TestLinuxCompat traces getppid by the three ways into a 64-bit Linux
// kernel from a 32-bit process, on Debian's 6.1 and 6.12 (built with IA32
// emulation): int $0x80, back by iretq to the next instruction; sysenter
// on an Intel-vendor CPU (entry_SYSENTER_compat) and syscall on an
// AMD-vendor one (entry_SYSCALL_compat, through CSTAR), made the way the
// 32-bit vDSO's __kernel_vsyscall makes them (testdata/compat32.s), which
// start at the program's instruction (its ELF symbol) and return with
// sysretl to the vDSO's int80_landing_pad (the bytes vdso32/system_call.S
// puts there) on the stack the program left. Each starts in compatibility
// mode, names no finding, and has as many instructions as gdb's stepi
// counts on the same guest.
func TestLinuxCompat(t *testing.T) {
	intEntries := []string{"entry_INT80_compat", "asm_int80_emulation"}
	tests := []struct {
		series  string
		m       mechanism.Mechanism
		cpu     string // what ChooseMechanism picks ("" leaves QEMU's default)
		entries []string
		exit    string // Intel syntax
		op      x86asm.Op
		insn    []byte
		label   string // the program's symbol on the instruction; "" for any
	}{
		{"6.1", mechanism.Int80, "", intEntries, "iretq", x86asm.INT, []byte{0xcd, 0x80}, ""},
		{"6.1", mechanism.Sysenter, IntelCPU, []string{"entry_SYSENTER_compat"}, "sysret", x86asm.SYSENTER, []byte{0x0f, 0x34}, "compat32_sysenter"},
		{"6.1", mechanism.Syscall, AMDCPU, []string{"entry_SYSCALL_compat"}, "sysret", x86asm.SYSCALL, []byte{0x0f, 0x05}, "compat32_syscall"},
		{"6.12", mechanism.Int80, "", intEntries, "iretq", x86asm.INT, []byte{0xcd, 0x80}, ""},
		{"6.12", mechanism.Sysenter, IntelCPU, []string{"entry_SYSENTER_compat"}, "sysret", x86asm.SYSENTER, []byte{0x0f, 0x34}, "compat32_sysenter"},
		{"6.12", mechanism.Syscall, AMDCPU, []string{"entry_SYSCALL_compat"}, "sysret", x86asm.SYSCALL, []byte{0x0f, 0x05}, "compat32_syscall"},
	}
	bin := testenv.BuildCompat32(t)
	site := elfSymbols(t, bin)
	getppid := unistd32(t, "getppid")
	for _, tt := range tests {
		t.Run(tt.series+"/"+string(tt.m), func(t *testing.T) {
			testenv.NeedTools(t, "gdb") // it counts the path sctrace records
			prog, err := linuxinit.LoadProgram(bin, []string{string(tt.m)})
			if err != nil {
				t.Fatal(err)
			}
			ctx, cancel := context.WithTimeout(context.Background(), 240*time.Second)
			defer cancel()
			o := LinuxOptions{Options: Options{Accel: "tcg", Keep: true}, Kernel: testenv.LinuxKernel(t, tt.series), Program: prog}
			m, err := o.ChooseMechanism(tt.m, true)
			if err != nil {
				t.Fatal(err)
			}
			if m != tt.m || o.CPU != tt.cpu {
				t.Fatalf("ChooseMechanism chose %s on -cpu %q, want %s on %q", m, o.CPU, tt.m, tt.cpu)
			}
			s, err := StartLinux(ctx, o)
			if err != nil {
				t.Fatal(err)
			}
			kept(t, s)
			tr, err := s.RoundTrip(ctx, m)
			if err != nil {
				t.Fatal(err)
			}
			if want := cmp.Or(tt.cpu, qemu.DefaultCPU); tr.Header.CPUModel != want {
				t.Errorf("header names the CPU model %q, want %q", tr.Header.CPUModel, want)
			}
			first := tr.Step(0)
			if first.Op != tt.op || (tt.label != "" && uint64(first.RIP) != site[tt.label]) || !first.Regs.Sys.CompatMode() {
				t.Fatalf("step 0 is %s at %#x (compatibility mode %v), want the program's %s (%s) in compatibility mode",
					first.Mnemonic, uint64(first.RIP), first.Regs.Sys.CompatMode(), tt.op, cmp.Or(tt.label, "any"))
			}
			if tr.Header.Syscall != nil {
				t.Errorf("the header names an x86-64 call for an i386 one: %v", tr.Header.Syscall)
			}
			if txt := stepText(first); !strings.Contains(txt, "from compatibility mode") || (tt.m == mechanism.Syscall && !strings.Contains(txt, "from CSTAR")) {
				t.Errorf("step 0 does not explain the compatibility-mode entry:\n%s", txt)
			}
			rip := tr.Final.Val(x86.RIP)
			if got := first.Regs.Val(x86.RAX); got != getppid {
				t.Errorf("EAX = %d at the %s, want getppid's i386 number %d", got, tt.m, getppid)
			}
			if tt.m == mechanism.Int80 {
				checkLinuxTrace(t, tr, tt.entries, tt.exit, tt.insn)
			} else {
				checkLinuxPath(t, tr, tt.entries, tt.exit, tt.insn)
				last := tr.Step(tr.Len() - 1)
				if last.Op != x86asm.SYSRET || last.Mnemonic != "sysretl" || !strings.HasPrefix(last.Symbol, "entry_SYSRETL_compat") {
					t.Errorf("the last step is %s in %s, want sysretl in entry_SYSRETL_compat_unsafe_stack (entry_64_compat.S), the return to compatibility mode", last.Mnemonic, last.Symbol)
				}
				if txt := stepText(last); !strings.Contains(txt, "int80_landing_pad") || !strings.Contains(txt, "do_fast_syscall_32") {
					t.Errorf("the sysretl step does not explain the return to the vDSO:\n%s", txt)
				}
				// Back in the 32-bit vDSO (vdso32/system_call.S): int
				// $0x80, then int80_landing_pad: pop %ebp, pop %edx, pop
				// %ecx, ret; on the stack the program left, its pushes
				// still on it. The program has not run the vDSO's code
				// before, so its page may not be mapped yet: let the
				// instruction fetch fault it in and come back to it.
				code, err := s.Target.ReadMemory(ctx, rip-2, 6)
				if err != nil {
					code = readAfterFault(t, ctx, s, rip, 6)
				}
				if want := []byte{0xcd, 0x80, 0x5d, 0x5a, 0x59, 0xc3}; !bytes.Equal(code, want) {
					t.Errorf("back in user mode at %#x, bytes around it % x, want the vDSO's int80_landing_pad (% x from 2 bytes before)", rip, code, want)
				}
				if got, want := tr.Final.Val(x86.RSP), first.Regs.Val(x86.RSP); got != want {
					t.Errorf("back in user mode with RSP %#x, want %#x, the stack at the %s", got, want, tt.m)
				}
			}
			entry := ""
			for _, st := range tr.All() {
				if name, _, _ := strings.Cut(st.Symbol, "+"); slices.Contains(tt.entries, name) {
					entry = name
					break
				}
			}
			if err := s.Close(); err != nil {
				t.Fatal(err)
			}
			counts, _ := gdbStepiCount(ctx, t, s.QEMU.GDBAddr, uint64(first.RIP), 1)
			n := counts[0]
			if n != tr.Len() {
				t.Errorf("sctrace recorded %d instructions, gdb's stepi counted %d on the same path", tr.Len(), n)
			}
			t.Logf("%s %s: %d instructions (gdb stepi %d) through %s, back at %#x", tt.series, tt.m, tr.Len(), n, entry, rip)
		})
	}
}

// readAfterFault steps the guest, stopped at the user instruction at rip
// whose page is not mapped yet, into the page fault the fetch raises, runs
// it back to rip with a hardware breakpoint and reads n bytes from rip-2.
func readAfterFault(t *testing.T, ctx context.Context, s *Session, rip uint64, n int) []byte {
	t.Helper()
	if _, err := s.Target.Step(ctx); err != nil {
		t.Fatal(err)
	}
	if err := s.Target.Conn.SetBreakpoint(ctx, gdbremote.Hardware, rip, 1); err != nil {
		t.Fatal(err)
	}
	defer s.Target.Conn.ClearBreakpoint(context.WithoutCancel(ctx), gdbremote.Hardware, rip, 1)
	if _, err := s.Target.Conn.Continue(ctx); err != nil {
		t.Fatal(err)
	}
	code, err := s.Target.ReadMemory(ctx, rip-2, n)
	if err != nil {
		t.Fatalf("at %#x after its page fault: %v", rip, err)
	}
	return code
}

// elfSymbols returns the symbols of the ELF file at path by name.
func elfSymbols(t *testing.T, path string) map[string]uint64 {
	t.Helper()
	f, err := elf.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	syms, err := f.Symbols()
	if err != nil {
		t.Fatal(err)
	}
	out := map[string]uint64{}
	for _, s := range syms {
		out[s.Name] = s.Value
	}
	return out
}
