package annotate

import (
	"strings"
	"testing"

	"github.com/sctrace/sctrace/x86"
)

func TestBranchesAndRegisters(t *testing.T) {
	k := with(kernel, regs{x86.RSP: kstackTop - 0x100})
	pc := k[x86.RIP]
	tests := []struct {
		name          string
		code          []byte
		before, after regs
		checks        []check
		clean         bool
	}{
		{"je taken", insJe10, k, with(k, regs{x86.RIP: pc + 2 + 0x10}),
			[]check{note(KindControl, "je taken → 0xffffffff81c000a2 <entry_SYSCALL_64+0x22>")}, true},
		{"je not taken", insJe10, k, with(k, regs{x86.RIP: pc + 2}),
			[]check{note(KindControl, "je not taken: falls through to 0xffffffff81c00092")}, true},
		{"je went nowhere sensible", insJe10, k, with(k, regs{x86.RIP: pc + 7}),
			[]check{finding(KindControl, "neither its target nor the next instruction")}, false},
		{"direct call", insCall100, k, with(k, regs{x86.RIP: pc + 5 + 0x100, x86.RSP: k[x86.RSP] - 8}),
			[]check{
				note(KindControl, "call 0xffffffff81c00195; returns to 0xffffffff81c00095"),
				note(KindStack, "call: pushes the return address 0xffffffff81c00095 at 0xffffc90000003ef8"),
			}, true},
		{"direct call went elsewhere", insCall100, k, with(k, regs{x86.RIP: pc + 0x40, x86.RSP: k[x86.RSP] - 8}),
			[]check{finding(KindControl, "not its target 0xffffffff81c00195")}, false},
		{"ret", insRet, k, with(k, regs{x86.RIP: int80 + 4, x86.RSP: k[x86.RSP] + 8}),
			[]check{
				note(KindControl, "ret → 0xffffffff81001004 <asm_int80_syscall+0x4>"),
				note(KindStack, "ret: pops the return address at 0xffffc90000003f00"),
			}, true},
		{"add changes rax and flags", insAddRAX, with(k, regs{x86.RFLAGS: 0x246}), with(k, regs{x86.RIP: pc + 4, x86.RAX: 40, x86.RFLAGS: 0x202}),
			[]check{
				note(KindRegister, "rax 0x27 → 0x28"),
				note(KindFlags, "rflags 0x246 → 0x202 (IF ZF PF → IF)"),
			}, true},
		{"endbr64 changes nothing", insEndbr64, k, with(k, regs{x86.RIP: pc + 4}), nil, true},
		{"a register becomes unknown", insAddRAX, k, without(with(k, regs{x86.RIP: pc + 4}), x86.RAX),
			[]check{note(KindCheck, "rax no longer known")}, true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			effects := Annotate(mkStep(t, 1, tt.code, pc, tt.before, tt.after), &Context{Symbols: testSyms})
			expectEffects(t, effects, tt.checks...)
			if tt.clean {
				expectNoFinding(t, effects)
			} else {
				expectFinding(t, effects)
			}
			if tt.checks == nil && len(effects) != 0 {
				t.Errorf("effects for a no-op:\n%s", dump(effects))
			}
		})
	}
}

func TestDecode(t *testing.T) {
	tests := []struct {
		code []byte
		len  int
		name string
	}{
		{insEndbr64, 4, "endbr64"},
		{insStac, 3, "stac"},
		{insClac, 3, "clac"},
		{insSwapgs, 3, "swapgs"},
		{insSysretq, 3, "rex.W sysretq"},
		{append(append([]byte{}, insSyscall...), 0x90), 2, "syscall"},
	}
	for _, tt := range tests {
		inst, n, err := Decode(tt.code)
		if err != nil || n != tt.len {
			t.Errorf("Decode(% x) = len %d, %v; want %d", tt.code, n, err, tt.len)
			continue
		}
		if got := Mnemonic(inst, tt.code, 0, nil); got != tt.name {
			t.Errorf("Mnemonic(% x) = %q, want %q", tt.code, got, tt.name)
		}
	}
	if _, _, err := Decode([]byte{0x0f}); err == nil {
		t.Error("Decode of a truncated instruction succeeded")
	}
}

func TestOverCall(t *testing.T) {
	// e8 rel32: call 0x...; stepped over, so After is at the next instruction.
	code := []byte{0xe8, 0xfb, 0x00, 0x00, 0x00}
	const pc = 0xffffffff81c00100
	mk := func(rip, rsp uint64) *x86.State {
		var s x86.State
		s.Set(x86.RIP, rip)
		s.Set(x86.RSP, rsp)
		s.Set(x86.CS, 0x10)
		return &s
	}
	tests := []struct {
		name      string
		after     *x86.State
		want      string
		wantFinds bool
	}{
		{"returned", mk(pc+5, 0xffffc90000003f58), "ran to its return (stepped over", false},
		{"stopped elsewhere", mk(pc+0x40, 0xffffc90000003f58), "not at the return address", true},
		{"stack moved", mk(pc+5, 0xffffc90000003f50), "left the stack moved by 8 bytes", false},
		// A callee that returns on another stack, as Linux's error_entry
		// does (from the entry stack to the task stack it copied the
		// frame to).
		{"another stack", mk(pc+5, 0xfffffe0000002f58), "returned on another stack", false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			inst, n, err := Decode(code)
			if err != nil || n != 5 {
				t.Fatal(err)
			}
			effs := Annotate(Step{Addr: pc, Bytes: code, Inst: inst, Before: mk(pc, 0xffffc90000003f58), After: tt.after, Over: true}, &Context{Knowledge: NewKnowledge()})
			found, text := false, ""
			for _, e := range effs {
				text += e.Text + "\n"
				if e.Verdict == Finding {
					found = true
				}
			}
			if !strings.Contains(text, tt.want) || found != tt.wantFinds {
				t.Errorf("effects:\n%s want %q, finding %v", text, tt.want, tt.wantFinds)
			}
		})
	}
}
