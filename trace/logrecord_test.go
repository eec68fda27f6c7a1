package trace

import (
	"context"
	"encoding/hex"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/sctrace/sctrace/annotate"
	"github.com/sctrace/sctrace/gdbremote/gdbstubtest"
	"github.com/sctrace/sctrace/x86"
)

// writeDump writes st as QEMU's -d cpu dump (target/i386/cpu-dump.c, the
// 64-bit layout, in the formats QEMU 7.2 and 10.0 print), after a Trace
// line, as the exec item logs a block.
func writeDump(b *strings.Builder, st *x86.State) {
	fmt.Fprintf(b, "Trace 0: 0x7f0000000000 [0000000000000000/%016x/0000c0b0/ff000201] \n", st.Val(x86.RIP))
	r := func(x x86.Reg) uint64 { return st.Val(x) }
	fmt.Fprintf(b, "RAX=%016x RBX=%016x RCX=%016x RDX=%016x\n", r(x86.RAX), r(x86.RBX), r(x86.RCX), r(x86.RDX))
	fmt.Fprintf(b, "RSI=%016x RDI=%016x RBP=%016x RSP=%016x\n", r(x86.RSI), r(x86.RDI), r(x86.RBP), r(x86.RSP))
	fmt.Fprintf(b, "R8 =%016x R9 =%016x R10=%016x R11=%016x\n", r(x86.R8), r(x86.R9), r(x86.R10), r(x86.R11))
	fmt.Fprintf(b, "R12=%016x R13=%016x R14=%016x R15=%016x\n", r(x86.R12), r(x86.R13), r(x86.R14), r(x86.R15))
	fmt.Fprintf(b, "RIP=%016x RFL=%08x [-------] CPL=%d II=0 A20=1 SMM=0 HLT=0\n", r(x86.RIP), r(x86.RFLAGS), st.CPL())
	for _, s := range []struct {
		name string
		reg  x86.Reg
		base uint64
	}{{"ES ", x86.ES, 0}, {"CS ", x86.CS, 0}, {"SS ", x86.SS, 0}, {"DS ", x86.DS, 0}, {"FS ", x86.FS, r(x86.FSBase)}, {"GS ", x86.GS, r(x86.GSBase)}} {
		fmt.Fprintf(b, "%-3s=%04x %016x %08x %08x\n", s.name, r(s.reg), s.base, 0xffffffff, 0x00a09b00)
	}
	fmt.Fprintf(b, "LDT=0000 0000000000000000 0000ffff 00008200 DPL=0 LDT\n")
	fmt.Fprintf(b, "TR =0040 fffffe0000003000 00004087 00008900 DPL=0 TSS64-avl\n")
	fmt.Fprintf(b, "GDT=     fffffe0000001000 0000007f\n")
	fmt.Fprintf(b, "IDT=     0000000000000000 00000000\n")
	fmt.Fprintf(b, "CR0=%08x CR2=%016x CR3=%016x CR4=%08x\n", r(x86.CR0), r(x86.CR2), r(x86.CR3), r(x86.CR4))
	fmt.Fprintf(b, "DR0=%016x DR1=%016x DR2=%016x DR3=%016x \n", 0, 0, 0, 0)
	fmt.Fprintf(b, "DR6=%016x DR7=%016x\n", 0xffff0ff0, 0x400)
	fmt.Fprintf(b, "CCS=0000000000000000 CCD=0000000000000000 CCO=EFLAGS\n")
	fmt.Fprintf(b, "EFER=%016x\n", r(x86.EFER))
}

// scriptedLog is the fake guest's round trip from its syscall (see
// newGuest) as QEMU's log would show its first n instructions, and the
// state after them.
func scriptedLog(t *testing.T, r *Recorder, n int) (string, *x86.State) {
	t.Helper()
	st := *r.cur
	var b strings.Builder
	for _, stop := range []gdbstubtest.Stop{afterSyscall, afterSwapgs, afterCall, afterRet, afterSysret}[:n] {
		writeDump(&b, &st)
		for name, v := range stop.Regs {
			reg, ok := x86.ParseReg(name)
			if !ok {
				t.Fatalf("register %s", name)
			}
			st.Set(reg, v)
		}
	}
	return b.String(), &st
}

// logPath returns the log file the recorder named to the stub, once it has.
func logPath(stub *gdbstubtest.Stub) (string, bool) {
	for _, req := range stub.Requests() {
		if h, ok := strings.CutPrefix(req, "qRcmd,"); ok {
			b, _ := hex.DecodeString(h)
			if p, ok := strings.CutPrefix(string(b), "logfile "); ok {
				return p, true
			}
		}
	}
	return "", false
}

// TestLogRecorderStops drives the log recorder on the fake stub, whose
// continue runs until interrupted (as a guest that has not reached the
// return breakpoint): QEMU's part is played by writing the log the
// scripted round trip would give into the file the recorder named. It is
// stopped by the budget (its watcher counts the log's records) or by
// ctrl-c; either way the steps logged are kept up to the budget, the
// breakpoint is removed, the log switched off and its file removed.
func TestLogRecorderStops(t *testing.T) {
	for _, tt := range []struct {
		name   string
		budget int
		cancel bool
		cut    bool // the log ends mid-line, as when QEMU is killed
		steps  int
		stop   StopReason
	}{
		{"budget", 3, false, false, 3, StopBudget},
		{"ctrl-c", 100, true, false, 4, StopCancel},
		// Four whole records (21 lines each) and part of a fifth, cut
		// in its RIP line: the fourth's after is unknown, so three steps.
		{"log cut off", 100, true, true, 3, "error: log recorder: the instruction log ends mid-record at line 90; the 4 complete records before it were kept"},
	} {
		t.Run(tt.name, func(t *testing.T) {
			stub, r, ctx := newGuest(t, guestSymbols())
			stub.SetRegister("rip", userSys)
			stub.SetRegister("k_gs_base", 0xffff888007c00000) // the per-CPU base swapgs brings in
			if err := r.Init(ctx); err != nil {
				t.Fatal(err)
			}
			logged := 5 // the budget stops the run partway
			if tt.cancel && !tt.cut {
				logged = tt.steps // ctrl-c comes before the guest is back
			}
			log, end := scriptedLog(t, r, logged)
			if tt.cut {
				log = log[:strings.Index(log, "RIP=ffffffff81000008")+10]
			}
			stub.Inject(gdbstubtest.Fault{Kind: gdbstubtest.Stall, Match: "c"})
			r.Budget = tt.budget
			l := NewLogRecorder(r)
			l.Poll = 5 * time.Millisecond
			rctx, cancel := context.WithTimeout(ctx, 5*time.Second)
			defer cancel()
			go func() {
				for {
					if p, ok := logPath(stub); ok && slices.ContainsFunc(stub.Requests(), func(s string) bool { return s == "c" }) {
						for reg := x86.Reg(0); reg < x86.NumRegs; reg++ {
							if v, ok := end.Get(reg); ok {
								stub.SetRegister(reg.String(), v)
							}
						}
						os.WriteFile(p, []byte(log), 0o600)
						if tt.cancel {
							time.Sleep(20 * time.Millisecond)
							cancel()
						}
						return
					}
					time.Sleep(time.Millisecond)
				}
			}()
			why, err := l.Run(rctx, BackInUser())
			if tt.cut {
				if err == nil || !strings.Contains(err.Error(), "ends mid-record") {
					t.Fatalf("a log cut off: error %v", err)
				}
				why = tt.stop
			} else if err != nil {
				t.Fatal(err)
			}
			tr := l.Trace()
			if why != tt.stop || tr.Header.Stop != string(tt.stop) || tr.Len() != tt.steps {
				t.Errorf("stopped %q (header %q) with %d steps, want %q with %d", why, tr.Header.Stop, tr.Len(), tt.stop, tt.steps)
			}
			want := []uint64{userSys, kEntry, kCall, kFunc, kRet}[:tt.steps]
			for i, rip := range want {
				if s := tr.Step(i); uint64(s.RIP) != rip {
					t.Errorf("step %d at %#x, want %#x", i, uint64(s.RIP), rip)
				}
			}
			if tr.Len() > 1 {
				if s := tr.Step(1); s.Mnemonic != "swapgs" || !slices.Contains(s.Events, annotate.EventSwapgs) {
					t.Errorf("step 1 %s, events %v: want swapgs", s.Mnemonic, s.Events)
				}
				// KERNEL_GS_BASE is not in the log: carried from the stop
				// through swapgs.
				if kgs, ok := tr.Step(1).Regs.Get(x86.KernelGSBase); !ok || kgs != 0xffff888007c00000 {
					t.Errorf("k_gs_base before swapgs %#x (known %v), want 0xffff888007c00000 from the stop", kgs, ok)
				}
				if kgs := tr.After(1).Val(x86.KernelGSBase); kgs != 0 || !tr.After(1).Has(x86.KernelGSBase) {
					t.Errorf("k_gs_base after swapgs %#x, want the user GS base it swapped out (0)", kgs)
				}
			}
			if tt.cancel && !tt.cut && tr.Final.Val(x86.RIP) != end.Val(x86.RIP) {
				t.Errorf("final rip %#x, want %#x", tr.Final.Val(x86.RIP), end.Val(x86.RIP))
			}
			if got := tr.Header.RecorderOf(0); got != RecorderLog {
				t.Errorf("step 0 by %q", got)
			}
			if bps := stub.Breakpoints(); len(bps) != 0 {
				t.Errorf("breakpoints left: %v", bps)
			}
			p, _ := logPath(stub)
			if _, err := os.Stat(filepath.Dir(p)); !os.IsNotExist(err) {
				t.Errorf("log directory left (%v)", err)
			}
			var cmds []string
			for _, req := range stub.Requests() {
				if h, ok := strings.CutPrefix(req, "qRcmd,"); ok {
					b, _ := hex.DecodeString(h)
					cmds = append(cmds, string(b))
				}
			}
			if n := len(cmds); n < 2 || cmds[n-2] != "log none" || cmds[n-1] != "singlestep off" {
				t.Errorf("last monitor commands %q, want log none, singlestep off", cmds)
			}
		})
	}
}

// TestLogScan follows logs in QEMU's format as they grow, in pieces cut
// anywhere: it counts records and sees the return to user mode, but not a
// return to the instruction the run began at (an interrupt taken before
// it ran).
func TestLogScan(t *testing.T) {
	user := &x86.State{}
	for r, v := range map[x86.Reg]uint64{x86.RIP: userSys, x86.CS: 0x33, x86.SS: 0x2b, x86.EFER: 0xd01} {
		user.Set(r, v)
	}
	kernel := *user
	kernel.Set(x86.RIP, kEntry)
	kernel.Set(x86.CS, 0x10)
	elsewhere := *user
	elsewhere.Set(x86.RIP, 0x401234)
	dumps := func(sts ...*x86.State) string {
		var b strings.Builder
		for _, st := range sts {
			writeDump(&b, st)
		}
		return b.String()
	}
	for _, tt := range []struct {
		name     string
		log      string
		records  int
		returned bool
	}{
		{"into the kernel", dumps(user, &kernel, &kernel), 3, false},
		{"back elsewhere", dumps(user, &kernel, &elsewhere), 3, true},
		{"interrupt before the start", dumps(&kernel, &kernel, user), 3, false},
		{"user only", dumps(user, &elsewhere), 2, false},
	} {
		for _, cut := range []int{1, 7, 100, 1 << 20} {
			sc := logScan{start: fmt.Appendf(nil, "%016x", uint64(userSys))}
			buf := "\n"
			for rest := tt.log; rest != ""; {
				k := min(cut, len(rest))
				buf += rest[:k]
				rest = rest[k:]
				last := strings.LastIndexByte(buf, '\n')
				sc.scan([]byte(buf[:last]))
				buf = buf[last:]
			}
			if sc.records != tt.records || sc.returned != tt.returned {
				t.Errorf("%s, in pieces of %d: %d records, returned %v; want %d, %v", tt.name, cut, sc.records, sc.returned, tt.records, tt.returned)
			}
		}
	}
}

// TestRecorderSpans saves and reads back a trace whose steps two
// recorders made: the header still says which made which, and steps no
// span names (a trace from before spans) are the stepping recorder's.
func TestRecorderSpans(t *testing.T) {
	tr := readTestTrace(t)
	if got := tr.Header.RecorderOf(0); got != RecorderStep {
		t.Errorf("a trace without spans: step 0 by %q, want %q", got, RecorderStep)
	}
	n := tr.Len()
	tr.Header.Recorders = []RecorderSpan{{From: 0, To: 5, Recorder: RecorderStep}, {From: 5, To: n, Recorder: RecorderLog, Detail: "QEMU's instruction log"}}
	var b strings.Builder
	if err := tr.Write(&b); err != nil {
		t.Fatal(err)
	}
	back, err := Read(strings.NewReader(b.String()))
	if err != nil {
		t.Fatal(err)
	}
	for i, want := range map[int]string{0: RecorderStep, 4: RecorderStep, 5: RecorderLog, n - 1: RecorderLog} {
		if got := back.Header.RecorderOf(i); got != want {
			t.Errorf("step %d by %q, want %q", i, got, want)
		}
	}
	if !slices.Equal(back.Header.Recorders, tr.Header.Recorders) {
		t.Errorf("spans read back as %+v", back.Header.Recorders)
	}
}

// TestLogRecorderFetchFault plays the log of a return to user mode whose
// first user instruction faults on fetch (its page not present yet, as
// after execve): QEMU logs no record for it, only the page fault's line
// and the state it came in, then the handler. That state is the one after
// the return, so the trace ends there, back in user mode, as stepping
// would end it; the watcher stops the guest, which is in the handler.
func TestLogRecorderFetchFault(t *testing.T) {
	stub, r, ctx := newGuest(t, guestSymbols())
	stub.SetRegister("rip", userSys)
	if err := r.Init(ctx); err != nil {
		t.Fatal(err)
	}
	log, user := scriptedLog(t, r, 5) // user: at userNext, after sysretq
	var b strings.Builder
	b.WriteString(log)
	fmt.Fprintf(&b, "check_exception old: 0xffffffff new 0xe\n")
	fmt.Fprintf(&b, "     0: v=0e e=0014 i=0 cpl=3 IP=0033:%016x pc=%016x SP=002b:%016x CR2=%016x\n", userNext, userNext, userRSP, userNext)
	var dump strings.Builder
	writeDump(&dump, user)
	b.WriteString(dump.String()[strings.Index(dump.String(), "\n")+1:]) // the dump without its Trace line
	handler := *user
	handler.Set(x86.RIP, kFunc)
	handler.Set(x86.CS, 0x10)
	writeDump(&b, &handler)
	stub.Inject(gdbstubtest.Fault{Kind: gdbstubtest.Stall, Match: "c"})
	go func() {
		for {
			if p, ok := logPath(stub); ok && slices.Contains(stub.Requests(), "c") {
				for name, v := range map[string]uint64{"rip": kFunc, "cs": 0x10} {
					stub.SetRegister(name, v)
				}
				os.WriteFile(p, []byte(b.String()), 0o600)
				return
			}
			time.Sleep(time.Millisecond)
		}
	}()
	l := NewLogRecorder(r)
	l.Poll = 5 * time.Millisecond
	why, err := l.Run(ctx, BackInUser())
	if err != nil {
		t.Fatal(err)
	}
	tr := l.Trace()
	if why != StopUser || tr.Len() != 5 || tr.Step(4).Mnemonic != "sysretq" {
		t.Fatalf("stopped %q after %d steps (last %s), want %q after 5, the last sysretq", why, tr.Len(), tr.Step(tr.Len()-1).Mnemonic, StopUser)
	}
	if f := tr.Final; f.Val(x86.RIP) != userNext || f.CPL() != 3 {
		t.Errorf("final state at %#x, CPL %d; want %#x in user mode", f.Val(x86.RIP), f.CPL(), uint64(userNext))
	}
	if d := tr.Header.Recorders[0].Detail; !strings.Contains(d, "1 more logged instructions after the stop condition") {
		t.Errorf("span does not count the handler's record the guest ran on to: %s", d)
	}
}
