package trace

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/sctrace/sctrace/gdbremote/gdbstubtest"
	"github.com/sctrace/sctrace/internal/testenv"
	"github.com/sctrace/sctrace/mechanism"
	"github.com/sctrace/sctrace/symbols"
	"github.com/sctrace/sctrace/target"
	"github.com/sctrace/sctrace/x86"
)

// A small 64-bit guest for the fake stub: user code that makes a system
// call, and a kernel entry that swaps GS, calls a function and returns with
// sysretq. The stub does not execute code: each test scripts the states
// the instructions lead to, as QEMU's stub would report them.
const (
	userStart = 0x400ffd // three nops before the syscall
	userSys   = 0x401000 // syscall
	userNext  = 0x401002 // the instruction after it
	userRSP   = 0x7fff0000
	kEntry    = 0xffffffff81000000 // swapgs
	kCall     = kEntry + 3         // call kFunc
	kRet      = kEntry + 8         // sysretq, the call's return address
	kFunc     = kEntry + 0xd       // ret
)

// Scripted stops for each instruction of the round trip.
var (
	afterSyscall = gdbstubtest.Stop{Regs: map[string]uint64{"rip": kEntry, "cs": 0x10, "ss": 0x18, "rcx": userNext, "r11": 0x246, "eflags": 0x2}}
	afterSwapgs  = gdbstubtest.Stop{Regs: map[string]uint64{"rip": kCall, "gs_base": 0xffff888007c00000, "k_gs_base": 0}}
	afterCall    = gdbstubtest.Stop{Regs: map[string]uint64{"rip": kFunc, "rsp": userRSP - 8}, Mem: map[uint64][]byte{userRSP - 8: le(kRet)}}
	afterRet     = gdbstubtest.Stop{Regs: map[string]uint64{"rip": kRet, "rsp": userRSP}}
	afterSysret  = gdbstubtest.Stop{Regs: map[string]uint64{"rip": userNext, "cs": 0x33, "ss": 0x2b, "eflags": 0x246}}
)

func le(v uint64) []byte {
	b := make([]byte, 8)
	for i := range b {
		b[i] = byte(v >> (8 * i))
	}
	return b
}

// guestSymbols are the names the teaching kernel would give the guest.
func guestSymbols() *symbols.Table {
	return symbols.New("test", []symbols.Symbol{
		{Name: "user_syscall_insn", Addr: userSys, Type: 'T'},
		{Name: "entry_SYSCALL_64", Addr: kEntry, Type: 'T'},
		{Name: "helper", Addr: kFunc, Type: 'T'},
	})
}

// newGuest starts the fake stub stopped in user mode at userStart, in long
// mode with paging on, and an initialised recorder over it.
func newGuest(t *testing.T, syms *symbols.Table) (*gdbstubtest.Stub, *Recorder, context.Context) {
	t.Helper()
	stub := gdbstubtest.New(t)
	user := make([]byte, 0x20)
	for i := range user {
		user[i] = 0x90 // nop
	}
	copy(user[userSys-0x400ff0:], []byte{0x0f, 0x05}) // syscall
	stub.Map(0x400ff0, user)
	stub.Map(kEntry, []byte{
		0x0f, 0x01, 0xf8, // swapgs
		0xe8, 0x05, 0x00, 0x00, 0x00, // call kFunc
		0x48, 0x0f, 0x07, // sysretq
		0x90, 0x90,
		0xc3, // kFunc: ret
	})
	stub.Map(userRSP-0x1000, make([]byte, 0x1000))
	for name, v := range map[string]uint64{
		"rip": userStart, "cs": 0x33, "ss": 0x2b, "rsp": userRSP, "eflags": 0x246,
		"cr0": 0x80050033, "cr3": 0x1000, "cr4": 0x3506f0, "efer": 0xd01,
	} {
		stub.SetRegister(name, v)
	}
	stub.SetTables(gdbstubtest.Tables{GDTBase: 0xfffffe0000001000, GDTLimit: 0x7f, TRSel: 0x40, TRBase: 0xfffffe0000003000, TRLimit: 0x4087})
	ctx, conn := testenv.DialStub(t, stub)
	r := NewRecorder(target.New(conn), syms, nil, Header{})
	if err := r.Init(ctx); err != nil {
		t.Fatal(err)
	}
	return stub, r, ctx
}

func rips(tr *Trace) string {
	var out []string
	for _, s := range tr.All() {
		out = append(out, fmt.Sprintf("%#x", uint64(s.RIP)))
	}
	return strings.Join(out, " ")
}

// TestRun records the scripted round trip from the user syscall with
// Run(BackInUser), with a budget, and with ctrl-c.
func TestRun(t *testing.T) {
	all := []gdbstubtest.Stop{afterSyscall, afterSwapgs, afterCall, afterRet, afterSysret}
	cancelAfter := func(n int, cancel context.CancelFunc) Until {
		return func(s *Step, _ *x86.State) StopReason {
			if s.Index == n-1 {
				cancel()
			}
			return ""
		}
	}
	tests := []struct {
		name   string
		budget int
		cancel int // cancel after this many steps; -1 before the first
		why    StopReason
		steps  int
	}{
		{"back in user", 0, 0, StopUser, 5},
		{"budget", 2, 0, StopBudget, 2},
		{"ctrl-c before", 0, -1, StopCancel, 0},
		{"ctrl-c after 3", 0, 3, StopCancel, 3},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			stub, r, ctx := newGuest(t, guestSymbols())
			if err := r.ToEntry(ctx, mechanism.Syscall); err != nil {
				t.Fatal(err)
			}
			stub.Script(all...)
			r.Budget = tt.budget
			ctx, cancel := context.WithCancel(ctx)
			defer cancel()
			conds := []Until{BackInUser()}
			switch {
			case tt.cancel < 0:
				cancel()
			case tt.cancel > 0:
				conds = append(conds, cancelAfter(tt.cancel, cancel))
			}
			why, err := r.Run(ctx, conds...)
			if err != nil {
				t.Fatal(err)
			}
			tr := r.Trace()
			if why != tt.why || tr.Len() != tt.steps || tr.Header.Stop != string(tt.why) {
				t.Errorf("stopped for %q (header %q) after %d steps, want %q after %d", why, tr.Header.Stop, tr.Len(), tt.why, tt.steps)
			}
			if tt.why == StopUser {
				want := fmt.Sprintf("%#x %#x %#x %#x %#x", uint64(userSys), uint64(kEntry), uint64(kCall), uint64(kFunc), uint64(kRet))
				if got := rips(tr); got != want {
					t.Errorf("steps at %s, want %s", got, want)
				}
				if tr.Step(0).CPL != 3 || tr.Step(1).CPL != 0 || tr.Final.CPL() != 3 || tr.Final.Val(x86.RIP) != userNext {
					t.Errorf("CPL %d then %d, final CPL %d at %#x; want 3, 0, 3 at %#x", tr.Step(0).CPL, tr.Step(1).CPL, tr.Final.CPL(), tr.Final.Val(x86.RIP), uint64(userNext))
				}
				if tr.Step(0).Mnemonic != "syscall" || tr.Step(4).Mnemonic != "sysretq" {
					t.Errorf("mnemonics %q, %q; want syscall, sysretq", tr.Step(0).Mnemonic, tr.Step(4).Mnemonic)
				}
				if tr.Step(1).Regs.Sys == nil || tr.Step(1).Regs.Sys.TR().Base != 0xfffffe0000003000 {
					t.Errorf("the states after the first do not carry TR from info registers: %+v", tr.Step(1).Regs.Sys)
				}
			}
			if n := stub.Breakpoints(); len(n) != 0 {
				t.Errorf("breakpoints left: %v", n)
			}
		})
	}
}

// TestSpuriousStop plays QEMU's stub reporting a single-step stop with
// nothing executed (seen under TCG when a block is retranslated: every
// register, RIP included, as before): the recorder steps again, records
// the instruction once and counts the stop in the header. A stop that
// stays put more often than maxSpurious is taken as real (a jump to
// itself).
func TestSpuriousStop(t *testing.T) {
	tests := []struct {
		name     string
		empty    int // empty stops before the syscall's
		spurious int
		rip      uint64 // where the first step leaves the CPU
	}{
		{"none", 0, 0, kEntry},
		{"one", 1, 1, kEntry},
		{"two", 2, 2, kEntry},
		{"more than the limit", maxSpurious + 1, maxSpurious, userSys},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			stub, r, ctx := newGuest(t, guestSymbols())
			if err := r.ToEntry(ctx, mechanism.Syscall); err != nil {
				t.Fatal(err)
			}
			stub.Script(make([]gdbstubtest.Stop, tt.empty)...)
			stub.Script(afterSyscall)
			s, err := r.Step(ctx)
			if err != nil {
				t.Fatal(err)
			}
			h := r.Trace().Header
			if s.Index != 0 || r.Trace().Len() != 1 || h.SpuriousStops != tt.spurious || r.Current().Val(x86.RIP) != tt.rip {
				t.Errorf("step %d of %d, %d spurious stops, at %#x; want step 0 of 1, %d, at %#x",
					s.Index, r.Trace().Len(), h.SpuriousStops, r.Current().Val(x86.RIP), tt.spurious, tt.rip)
			}
		})
	}
}

// TestStepOver records the round trip with Over 1 (--over 1): the call is
// run to its return with a hardware breakpoint and a continue, as QEMU's
// stub stops there, and a stop at the return address with another stack
// pointer (the same code reached by a nested call) is continued past.
func TestStepOver(t *testing.T) {
	// The nested use finds the outer call's return address still on the
	// stack, where the call pushed it.
	nested := gdbstubtest.Stop{Regs: map[string]uint64{"rip": kRet, "rsp": userRSP - 0x100}, Mem: map[uint64][]byte{userRSP - 8: le(kRet)}}
	back := gdbstubtest.Stop{Regs: map[string]uint64{"rip": kRet, "rsp": userRSP}}
	elsewhere := gdbstubtest.Stop{Regs: map[string]uint64{"rip": kFunc, "rsp": userRSP - 8}}
	tests := []struct {
		name      string
		continues []gdbstubtest.Stop
		conts     int
		err       string
	}{
		{"returns", []gdbstubtest.Stop{back}, 1, ""},
		{"nested first", []gdbstubtest.Stop{nested, back}, 2, ""},
		{"stops elsewhere", []gdbstubtest.Stop{elsewhere}, 1, "stopped at"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			stub, r, ctx := newGuest(t, guestSymbols())
			if err := r.ToEntry(ctx, mechanism.Syscall); err != nil {
				t.Fatal(err)
			}
			r.Over = 1
			stub.Script(afterSyscall, afterSwapgs)
			stub.Script(tt.continues...)
			stub.Script(afterSysret)
			before := len(stub.Requests())
			why, err := r.Run(ctx, BackInUser())
			var conts, z1 int
			for _, req := range stub.Requests()[before:] {
				switch {
				case req == "c" || strings.HasPrefix(req, "vCont;c"):
					conts++
				case req == fmt.Sprintf("Z1,%x,1", uint64(kRet)):
					z1++
				}
			}
			if n := stub.Breakpoints(); len(n) != 0 {
				t.Errorf("breakpoints left: %v", n)
			}
			if conts != tt.conts || z1 != 1 {
				t.Errorf("%d continues and %d hardware breakpoints at the return, want %d and 1", conts, z1, tt.conts)
			}
			if tt.err != "" {
				if err == nil || !strings.Contains(err.Error(), tt.err) {
					t.Fatalf("error %v, want one saying %q", err, tt.err)
				}
				return
			}
			if err != nil || why != StopUser {
				t.Fatalf("Run: %q, %v", why, err)
			}
			tr := r.Trace()
			want := fmt.Sprintf("%#x %#x %#x %#x", uint64(userSys), uint64(kEntry), uint64(kCall), uint64(kRet))
			if got := rips(tr); got != want {
				t.Errorf("steps at %s, want %s", got, want)
			}
			if o := tr.Step(2).Over; o == nil || !strings.Contains(o.Target, "helper") || o.Depth != 1 {
				t.Errorf("the call step's Over is %+v, want helper at depth 1", o)
			}
		})
	}
}

// TestToEntry finds the user syscall by each of ToEntry's ways: the
// teaching kernel's label (a hardware breakpoint and a continue), the
// kernel entry's symbol (a breakpoint there, then one on the instruction
// before the return address in RCX), and single-stepping user code when
// there are no symbols.
func TestToEntry(t *testing.T) {
	atEntry := gdbstubtest.Stop{Regs: map[string]uint64{"rip": kEntry, "cs": 0x10, "ss": 0x18, "rcx": userNext, "r11": 0x246}}
	atUser := gdbstubtest.Stop{Regs: map[string]uint64{"rip": userSys, "cs": 0x33, "ss": 0x2b}}
	tests := []struct {
		name   string
		syms   *symbols.Table
		script []gdbstubtest.Stop
		bps    []uint64 // hardware breakpoints set, in order
		steps  int      // single steps
	}{
		{"label", guestSymbols(), nil, []uint64{userSys}, 0},
		{"entry symbol", symbols.New("test", []symbols.Symbol{{Name: "entry_SYSCALL_64", Addr: kEntry, Type: 'T'}}), []gdbstubtest.Stop{atEntry, atUser}, []uint64{kEntry, userSys}, 0},
		{"no symbols", nil, nil, nil, userSys - userStart},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			stub, r, ctx := newGuest(t, tt.syms)
			stub.Script(tt.script...)
			before := len(stub.Requests())
			if err := r.ToEntry(ctx, mechanism.Syscall); err != nil {
				t.Fatal(err)
			}
			if got := r.Current().Val(x86.RIP); got != userSys || r.Current().CPL() != 3 {
				t.Errorf("stopped at %#x CPL %d, want %#x CPL 3", got, r.Current().CPL(), uint64(userSys))
			}
			var bps []uint64
			steps := 0
			for _, req := range stub.Requests()[before:] {
				var a uint64
				if _, err := fmt.Sscanf(req, "Z1,%x,1", &a); err == nil {
					bps = append(bps, a)
				}
				if req == "s" || strings.HasPrefix(req, "vCont;s") {
					steps++
				}
			}
			if fmt.Sprint(bps) != fmt.Sprint(tt.bps) || steps != tt.steps {
				t.Errorf("breakpoints %x and %d steps, want %x and %d", bps, steps, tt.bps, tt.steps)
			}
			if n := stub.Breakpoints(); len(n) != 0 {
				t.Errorf("breakpoints left: %v", n)
			}
			if r.Trace().Len() != 0 || r.Trace().Header.Sys == nil {
				t.Errorf("after ToEntry: %d steps, header sys %v; want a fresh trace with info registers", r.Trace().Len(), r.Trace().Header.Sys)
			}
		})
	}
}

// TestToEntryFromKernel starts the stepping search inside the kernel with
// no symbols and a budget too small to get out: the error says so and
// what would help, rather than hanging.
func TestToEntryFromKernel(t *testing.T) {
	stub, r, ctx := newGuest(t, nil)
	stub.SetRegister("cs", 0x10)
	stub.SetRegister("rip", kEntry+11) // nops
	st, err := r.T.State(ctx)
	if err != nil {
		t.Fatal(err)
	}
	r.cur = st
	r.Budget = 2
	err = r.ToEntry(ctx, mechanism.Syscall)
	if err == nil || !strings.Contains(err.Error(), "still there after 2 steps") || !strings.Contains(err.Error(), "--symbols") {
		t.Errorf("error %v, want one saying the search stayed in the kernel and naming --symbols", err)
	}
	ctx, cancel := context.WithCancel(ctx)
	cancel()
	if err := r.ToEntry(ctx, mechanism.Syscall); !errors.Is(err, context.Canceled) {
		t.Errorf("cancelled search: %v, want context.Canceled", err)
	}
}

// TestToEntryNotBooted: a QEMU started with -S waits at the reset vector
// in real mode (RIP 0xfff0, CS base 0xf0000, CR0.PE clear: SDM vol. 3,
// 9.1.4), and a boot loader may be in protected mode without long mode
// (EFER.LMA clear). No system call can be found by stepping from there, so
// the search without symbols must say so at once rather than step through
// the firmware until its budget runs out.
func TestToEntryNotBooted(t *testing.T) {
	for _, tt := range []struct {
		name      string
		cr0, efer uint64
		want      string
	}{
		{"real mode", 0x60000010, 0, "the CPU is in real mode at 0xfff0"},
		{"protected mode", 0x60000011, 0, "protected mode without long mode at 0xfff0"},
	} {
		t.Run(tt.name, func(t *testing.T) {
			stub, r, ctx := newGuest(t, nil)
			for name, v := range map[string]uint64{"rip": 0xfff0, "cs": 0xf000, "cr0": tt.cr0, "efer": tt.efer} {
				stub.SetRegister(name, v)
			}
			st, err := r.T.State(ctx)
			if err != nil {
				t.Fatal(err)
			}
			r.cur = st
			steps := len(stub.Requests())
			err = r.ToEntry(ctx, mechanism.Syscall)
			if !errors.Is(err, ErrNotBooted) || !strings.Contains(err.Error(), tt.want) {
				t.Fatalf("ToEntry at the reset vector: %v, want ErrNotBooted saying %q", err, tt.want)
			}
			for _, req := range stub.Requests()[steps:] {
				if req == "s" || strings.HasPrefix(req, "vCont;s") {
					t.Errorf("stepped (%q) before refusing", req)
				}
			}
		})
	}
}

// TestHeaderToolAndTime: whoever drives the recorder (the CLI, the TUI's
// save, a lesson export), the header names the tool and when the round
// trip's first step was taken.
func TestHeaderToolAndTime(t *testing.T) {
	old := Tool
	Tool = "sctrace test-version"
	defer func() { Tool = old }()
	_, r, ctx := newGuest(t, nil)
	before := time.Now().UTC()
	if _, err := r.Run(ctx, BackInUser()); err != nil {
		t.Fatal(err)
	}
	h := r.Trace().Header
	if h.Tool != "sctrace test-version" || h.Recorded.Before(before) || h.Recorded.After(time.Now().UTC()) {
		t.Errorf("header tool %q, recorded %v; want the tool and a time during the run (from %v)", h.Tool, h.Recorded, before)
	}
}
