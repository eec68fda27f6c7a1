package session

import (
	"context"
	"encoding/binary"
	"fmt"
	"strings"
	"testing"
	"time"

	"golang.org/x/arch/x86/x86asm"

	"github.com/sctrace/sctrace/annotate"
	"github.com/sctrace/sctrace/fixtures/linuxinit"
	"github.com/sctrace/sctrace/internal/testenv"
	"github.com/sctrace/sctrace/mechanism"
	"github.com/sctrace/sctrace/trace"
	"github.com/sctrace/sctrace/x86"
)

// TestLinuxSignal records, on Debian's kernels, an exception raised in user
// mode that Linux answers with a signal, and then the handler's return
// through rt_sigreturn. /init loops on int3 (mode int3) or on hlt at CPL 3
// (mode gpfault), with SA_SIGINFO handlers whose restorer is
// init_sigreturn (all from /init's ELF).
//
// The exception: the instruction delivers #BP (vector 3, a trap: the frame
// holds the next instruction) or #GP (vector 13, a fault with an error
// code, 0 for hlt: the frame holds the hlt itself) through the IDT to
// asm_exc_int3 or asm_exc_general_protection (kallsyms) at CPL 0 on the
// entry stack (neither gate has an IST), minus the 40- or 48-byte frame;
// the handler moves to the task stack and calls exc_int3 or
// exc_general_protection, which force a signal (do_trap,
// gp_user_force_sig_segv); on the way out
// arch_do_signal_or_restart and get_signal deliver it, and iretq returns at
// CPL 3 to the handler's first instruction with the signal number in RDI
// (the SA_SIGINFO calling convention), the restorer's address on top of a
// stack below the interrupted one, and no finding on the way. The
// annotator names the kernel's stores of the handler's address and the
// frame's into pt_regs->ip and ->sp.
//
// rt_sigreturn: the restorer's syscall (RAX 15, named rt_sigreturn in the
// trace header) returns to CPL 3 at the instruction after int3
// (init_int3_ret) or, since the SIGSEGV handler moved the saved RIP past
// the one-byte hlt, after hlt (init_gpfault_ret), with the stack pointer
// the exception interrupted.
//
// Both paths are then counted by a gdb stepi loop on the same guest.
func TestLinuxSignal(t *testing.T) {
	syms := initSymbols(t)
	tests := []struct {
		m                  mechanism.Mechanism
		insn, ret, handler string
		entry, via         string
		signal             uint64 // SIGTRAP, SIGSEGV (asm-generic/signal.h)
		frame              uint64 // bytes the CPU pushed: 5 words, and #GP's error code
	}{
		{mechanism.Int3, linuxinit.Int3Insn, linuxinit.Int3Ret, linuxinit.SigtrapHandler, "asm_exc_int3", "exc_int3", 5, 40},
		{mechanism.GPFault, linuxinit.GPFaultInsn, linuxinit.GPFaultRet, linuxinit.SigsegvHandler, "asm_exc_general_protection", "exc_general_protection", 11, 48},
	}
	for _, series := range []string{"6.1", "6.12"} {
		for _, tt := range tests {
			t.Run(series+"/"+string(tt.m), func(t *testing.T) {
				testenv.NeedTools(t, "gdb") // it counts the paths sctrace records
				kernel := testenv.LinuxKernel(t, series)
				ctx, cancel := context.WithTimeout(context.Background(), 600*time.Second)
				defer cancel()
				o := LinuxOptions{Options: Options{Accel: "tcg", Keep: true}, Kernel: kernel}
				m, err := o.ChooseMechanism(tt.m, true)
				if err != nil {
					t.Fatal(err)
				}
				s, err := StartLinux(ctx, o)
				if err != nil {
					t.Fatal(err)
				}
				kept(t, s)
				insn, ret, handler, sigret := syms[tt.insn], syms[tt.ret], syms[tt.handler], syms[linuxinit.SigreturnInsn]

				// The exception, up to the handler.
				tr, err := s.RoundTrip(ctx, m)
				if err != nil {
					t.Fatal(err)
				}
				t.Logf("%s: %d instructions from %s to the handler", s.Kernel, tr.Len(), tt.insn)
				checkSignalDelivery(ctx, t, s, tr, tt.entry, tt.via, insn, handler, tt.signal, tt.frame)
				userRSP := tr.Step(0).Regs.Val(x86.RSP)
				steady := steadyLength(ctx, t, s, m, insn)

				// The handler's return through rt_sigreturn.
				back, err := s.RoundTrip(ctx, mechanism.Syscall)
				if err != nil {
					t.Fatal(err)
				}
				t.Logf("%s: %d instructions from rt_sigreturn back to %s", s.Kernel, back.Len(), tt.ret)
				checkSigreturn(t, back, sigret, ret, userRSP)
				steadyBack := steadyLength(ctx, t, s, mechanism.Syscall, sigret)

				if err := s.Close(); err != nil {
					t.Fatal(err)
				}
				for _, c := range []struct {
					what      string
					site, end uint64
					want      int
				}{
					{tt.insn + " to the handler", insn, handler, steady},
					{"rt_sigreturn to " + tt.ret, sigret, ret, steadyBack},
				} {
					counts, ends := gdbStepiCount(ctx, t, s.QEMU.GDBAddr, c.site, 3)
					t.Logf("%s: sctrace %d, gdb stepi %v", c.what, c.want, counts)
					same := 0
					for i, n := range counts {
						if ends[i] != c.end {
							t.Fatalf("%s: gdb's stepi loop %d ended at %#x, not at %#x", c.what, i, ends[i], c.end)
						}
						if n == c.want {
							same++
						}
					}
					if same < 2 {
						t.Errorf("%s: sctrace recorded %d instructions, gdb's stepi counted %v on the next three", c.what, c.want, counts)
					}
				}
			})
		}
	}
}

// steadyLength records the path from site by m again until two recordings
// in a row agree, and returns that length: the first after boot, or one
// where a per-CPU counter crosses its threshold, runs a few instructions
// more (see TestLinuxPageFault).
func steadyLength(ctx context.Context, t *testing.T, s *Session, m mechanism.Mechanism, site uint64) int {
	t.Helper()
	steady := -1
	for try := 0; try < 5; try++ {
		tr, err := s.RoundTrip(ctx, m)
		if err != nil {
			t.Fatal(err)
		}
		if tr.Header.Stop != string(trace.StopUser) || uint64(tr.Step(0).RIP) != site {
			t.Fatalf("%s again: stopped %s after %d steps, starting at %#x, not %#x", m, tr.Header.Stop, tr.Len(), uint64(tr.Step(0).RIP), site)
		}
		n := tr.Len()
		t.Logf("%s again: %d instructions", m, n)
		if n == steady {
			return n
		}
		steady = n
	}
	t.Fatalf("%s: no two recordings in a row of the same length", m)
	return 0
}

// checkSignalDelivery checks a trace from a user instruction that raised
// an exception to the signal handler's first instruction.
func checkSignalDelivery(ctx context.Context, t *testing.T, s *Session, tr *trace.Trace, entry, via string, insn, handler, signal, frame uint64) {
	t.Helper()
	if tr.Header.Stop != string(trace.StopUser) || tr.Len() < 100 {
		t.Fatalf("stopped: %s after %d steps", tr.Header.Stop, tr.Len())
	}
	entryAddr, ok := s.Symbols.Addr(entry)
	if !ok {
		t.Fatalf("no %s in kallsyms", entry)
	}
	st0, st1 := tr.Step(0), tr.Step(1)
	if st0.CPL != 3 || uint64(st0.RIP) != insn || st1.CPL != 0 || uint64(st1.RIP) != entryAddr {
		t.Errorf("step 0 %#x at CPL %d, step 1 %s %#x at CPL %d; want %#x at CPL 3, then %s %#x at CPL 0",
			uint64(st0.RIP), st0.CPL, st1.Symbol, uint64(st1.RIP), st1.CPL, insn, entry, entryAddr)
	}
	rsp := st1.Regs.Val(x86.RSP)
	actx := &annotate.Context{Regions: tr.Header.Regions}
	if r, ok := actx.RegionOf(rsp); !ok || r.Kind != annotate.RegionEntryStack {
		t.Errorf("rsp at %s %#x is not on the entry stack (%+v)", entry, rsp, r)
	} else if want := r.End - frame; rsp != want {
		t.Errorf("rsp at %s %#x, want %#x: the entry stack's top minus the %d-byte frame", entry, rsp, want, frame)
	}
	seen := map[string]bool{}
	for _, st := range tr.All() {
		name, _, _ := strings.Cut(st.Symbol, "+")
		seen[name] = true
		if st.Index > 0 && st.CPL != 0 {
			t.Errorf("step %d %s at CPL %d: between the exception and iretq the CPU stays at CPL 0", st.Index, st.Symbol, st.CPL)
			break
		}
	}
	for _, fn := range []string{via, "arch_do_signal_or_restart", "get_signal"} {
		if !seen[fn] {
			t.Errorf("the trace never passes %s", fn)
		}
	}
	checkIretqPath(t, tr)
	// The handler runs as handler(signal, &siginfo, &ucontext) on a stack
	// the kernel made below the interrupted one, returning to the
	// restorer sa_restorer named.
	f := tr.Final
	if f.CPL() != 3 || f.Val(x86.RIP) != handler || f.Val(x86.RDI) != signal {
		t.Errorf("ended at %#x CPL %d with rdi %d; want the handler %#x at CPL 3 with the signal number %d", f.Val(x86.RIP), f.CPL(), f.Val(x86.RDI), handler, signal)
	}
	sp := f.Val(x86.RSP)
	if sp >= st0.Regs.Val(x86.RSP) || f.Val(x86.RSI) <= sp || f.Val(x86.RDX) <= sp {
		t.Errorf("handler's rsp %#x, siginfo %#x, ucontext %#x; want the frame below the interrupted rsp %#x, siginfo and ucontext above rsp",
			sp, f.Val(x86.RSI), f.Val(x86.RDX), st0.Regs.Val(x86.RSP))
	}
	top, err := s.Target.ReadMemory(ctx, sp, 8)
	if err != nil {
		t.Fatal(err)
	}
	if got, want := binary.LittleEndian.Uint64(top), initSymbols(t)["init_sigreturn"]; got != want {
		t.Errorf("return address on the handler's stack %#x, want init_sigreturn %#x (sa_restorer)", got, want)
	}
	// The annotator names the signal frame the kernel wrote into
	// pt_regs: the new user RIP, the handler.
	var namedIP, namedSP bool
	for _, st := range tr.All() {
		for _, e := range st.Effects {
			namedIP = namedIP || strings.HasPrefix(e.Text, "pt_regs->ip ") && strings.Contains(e.Text, fmt.Sprintf("→ %#x", handler))
			namedSP = namedSP || strings.HasPrefix(e.Text, "pt_regs->sp ") && strings.Contains(e.Text, fmt.Sprintf("→ %#x:", sp))
		}
	}
	var rewritten bool
	for _, e := range tr.Step(tr.Len() - 1).Effects {
		rewritten = rewritten || strings.Contains(e.Text, fmt.Sprintf("the popped RIP, not %#x where", uint64(st0.RIP)+uint64(len(st0.Bytes))*boolInt(tr.Header.Mechanism == string(mechanism.Int3))))
	}
	if !rewritten {
		t.Errorf("the iretq does not say it returns elsewhere than where the entry left off: %v", tr.Step(tr.Len()-1).Effects)
	}
	if !namedIP || !namedSP {
		t.Errorf("explained: the store of the handler's address %#x into pt_regs->ip %v, of the frame's %#x into pt_regs->sp %v; want both", handler, namedIP, sp, namedSP)
	}
}

// checkSigreturn checks a trace of rt_sigreturn from the restorer back to
// the instruction after the exception, on the stack it interrupted.
func checkSigreturn(t *testing.T, tr *trace.Trace, sigret, ret, userRSP uint64) {
	t.Helper()
	if tr.Header.Stop != string(trace.StopUser) {
		t.Fatalf("stopped: %s after %d steps", tr.Header.Stop, tr.Len())
	}
	st0 := tr.Step(0)
	if uint64(st0.RIP) != sigret || st0.CPL != 3 || st0.Regs.Val(x86.RAX) != 15 {
		t.Errorf("step 0 at %#x CPL %d with rax %d; want init_sigreturn_insn %#x at CPL 3 with rax 15", uint64(st0.RIP), st0.CPL, st0.Regs.Val(x86.RAX), sigret)
	}
	if c := tr.Header.Syscall; c == nil || c.Name != linuxinit.Sigreturn {
		t.Errorf("header names the call %+v, want %s", c, linuxinit.Sigreturn)
	}
	seen := false
	for _, st := range tr.All() {
		seen = seen || strings.Contains(st.Symbol, "sys_rt_sigreturn")
	}
	if !seen {
		t.Error("the trace never passes sys_rt_sigreturn")
	}
	ev := countEvents(tr)
	if ev.findings != 0 || ev.swapgs != 2 {
		for _, f := range trace.Summarize(tr).Findings {
			t.Log(f)
		}
		t.Errorf("events: %+v; want 2 swapgs and no finding", ev)
	}
	end := tr.Step(tr.Len() - 1)
	if end.CPL != 0 || (end.Op != x86asm.IRETQ && end.Op != x86asm.SYSRET) {
		t.Errorf("last step %s at CPL %d, want iretq or sysretq at CPL 0", end.ATT, end.CPL)
	}
	t.Logf("rt_sigreturn returns by %s", end.ATT)
	if f := tr.Final; f.CPL() != 3 || f.Val(x86.RIP) != ret || f.Val(x86.RSP) != userRSP {
		t.Errorf("ended at %#x (rsp %#x) CPL %d, want %#x (rsp %#x) CPL 3: after the instruction, on the stack it interrupted",
			f.Val(x86.RIP), f.Val(x86.RSP), f.CPL(), ret, userRSP)
	}
}

// boolInt is 1 for true, 0 for false: int3 is a trap, whose entry leaves
// off after the instruction, a #GP a fault, which leaves off at it.
func boolInt(b bool) uint64 {
	if b {
		return 1
	}
	return 0
}
