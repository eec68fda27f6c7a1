package expr

import (
	"errors"
	"fmt"
	"strings"
	"testing"

	"github.com/sctrace/sctrace/annotate"
	"github.com/sctrace/sctrace/symbols"
	"github.com/sctrace/sctrace/x86"
)

func TestParse(t *testing.T) {
	for _, tc := range []struct {
		in, want string
	}{
		{"42", "0x2a"},
		{"7", "7"},
		{"0x1F", "0x1f"},
		{"$rax", "$rax"},
		{"$RSP", "$rsp"},
		{"$pc", "$rip"},
		{"$rflags", "$eflags"},
		{"$gs_base+0x6014", "$gs_base + 0x6014"},
		{"entry_SYSCALL_64", "entry_SYSCALL_64"},
		{"do_syscall_64+0x10", "do_syscall_64 + 0x10"},
		{"*(u64*)($gs_base+0x6014)", "*(u64*)($gs_base + 0x6014)"},
		{"*(u32 *) $rsp", "*(u32*)$rsp"},
		{"*(unsigned long*)$rsp", "*(u64*)$rsp"},
		{"*(uint16_t*)0x10", "*(u16*)0x10"},
		{"*$rsp", "*(u64*)$rsp"},
		{"*(u8*)$rsp - 1", "*(u8*)$rsp - 1"},
		{"**(u64*)$rsp", "*(u64*)*(u64*)$rsp"},
		{"pt_regs->ip", "pt_regs->ip"},
		{"pt_regs->orig_ax + 1", "pt_regs->orig_ax + 1"},
		{"-8", "-8"},
		{"$rsp - (8 + 8)", "$rsp - (8 + 8)"},
		{"foo.cold", "foo.cold"},
	} {
		e, err := Parse(tc.in)
		if err != nil {
			t.Errorf("Parse(%q): %v", tc.in, err)
			continue
		}
		if got := e.String(); got != tc.want {
			t.Errorf("Parse(%q) = %s, want %s", tc.in, got, tc.want)
		}
		// The canonical form parses to itself.
		again, err := Parse(e.String())
		if err != nil || again.String() != e.String() {
			t.Errorf("Parse(%q) does not round-trip: %v %v", e.String(), again, err)
		}
	}
}

func TestParseErrors(t *testing.T) {
	for _, tc := range []struct{ in, want string }{
		{"", "empty expression"},
		{"  ", "empty expression"},
		{"$", "register name expected"},
		{"$xyz", "unknown register $xyz"},
		{"0x", "malformed number"},
		{"12ab", "malformed number"},
		{"0xffffffffffffffffff", "malformed number"},
		{"(1", "missing )"},
		{"1 +", "missing operand"},
		{"1 2", "unexpected"},
		{"pt_regs->", "field name expected"},
		{"pt_regs->nope", `pt_regs has no field "nope"`},
		{"$rax = 1", "unexpected"},
		{"@", "unexpected"},
	} {
		_, err := Parse(tc.in)
		var se *SyntaxError
		if !errors.As(err, &se) || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("Parse(%q) = %v, want a SyntaxError with %q", tc.in, err, tc.want)
		}
		if err != nil && strings.Contains(err.Error(), "\n") {
			t.Errorf("Parse(%q): error spans lines: %q", tc.in, err)
		}
	}
}

// mapEnv is an Env from maps, for evaluation tests.
type mapEnv struct {
	regs map[x86.Reg]uint64
	syms *symbols.Table
	mem  map[uint64]byte
	top  uint64
}

func (m *mapEnv) Reg(r x86.Reg) (uint64, error) {
	v, ok := m.regs[r]
	if !ok {
		return 0, fmt.Errorf("$%s: %w", r, ErrUnknown)
	}
	return v, nil
}
func (m *mapEnv) Symbol(name string) (uint64, error) { return LookupSymbol(m.syms, name) }
func (m *mapEnv) Read(addr uint64, n int) ([]byte, error) {
	b := make([]byte, n)
	for i := range b {
		v, ok := m.mem[addr+uint64(i)]
		if !ok {
			return nil, fmt.Errorf("%#x: %w", addr+uint64(i), ErrUnknown)
		}
		b[i] = v
	}
	return b, nil
}
func (m *mapEnv) FrameTop() (uint64, error) {
	return FrameTop([]annotate.Region{{Kind: annotate.RegionKernelStack, FrameTop: m.top}})
}

func (m *mapEnv) put(addr, v uint64) {
	for i := range 8 {
		m.mem[addr+uint64(i)] = byte(v >> (8 * i))
	}
}

func TestEval(t *testing.T) {
	tab := symbols.New("test", []symbols.Symbol{
		{Name: "entry_SYSCALL_64", Addr: 0xffffffff81c00080, Type: 'T'},
		{Name: "do_syscall_64", Addr: 0xffffffff81a00000, Type: 'T'},
	})
	const gs, top = 0xffff888007a00000, 0xffffc90000010000
	env := &mapEnv{
		regs: map[x86.Reg]uint64{x86.RSP: 0x7ffc0000, x86.GSBase: gs, x86.RAX: 0x27},
		syms: tab, mem: map[uint64]byte{}, top: top,
	}
	env.put(0x7ffc0000, 0x1122334455667788)
	env.put(gs+0x6014, 0xabcdef)
	// pt_regs->ip is the fifth slot below the frame top (ss, sp, flags,
	// cs, ip): struct pt_regs in arch/x86/include/asm/ptrace.h.
	env.put(top-5*8, 0x401000)
	env.put(top-6*8, 39) // orig_ax
	for _, tc := range []struct {
		in   string
		want uint64
	}{
		{"42", 42},
		{"$rax", 0x27},
		{"$rsp+8", 0x7ffc0008},
		{"$rsp-0x10", 0x7ffbfff0},
		{"entry_SYSCALL_64", 0xffffffff81c00080},
		{"entry_SYSCALL_64+0x10", 0xffffffff81c00090},
		{"*(u64*)$rsp", 0x1122334455667788},
		{"*(u32*)$rsp", 0x55667788},
		{"*(u16*)($rsp+2)", 0x5566},
		{"*(u8*)($rsp+7)", 0x11},
		{"*(u64*)($gs_base+0x6014)", 0xabcdef},
		{"pt_regs->ip", 0x401000},
		{"pt_regs->orig_ax", 39},
		{"-1", ^uint64(0)},
		{"0 - 1", ^uint64(0)},
	} {
		e, err := Parse(tc.in)
		if err != nil {
			t.Fatalf("Parse(%q): %v", tc.in, err)
		}
		got, err := Eval(e, env)
		if err != nil || got != tc.want {
			t.Errorf("Eval(%q) = %#x, %v; want %#x", tc.in, got, err, tc.want)
		}
	}
	for _, tc := range []struct{ in, want string }{
		{"do_syscall", `no symbol "do_syscall"; did you mean do_syscall_64?`},
		{"entry_SYSCALL_46", `did you mean entry_SYSCALL_64?`},
		{"$rbx", "unknown in replay"},
		{"*(u64*)0x1000", "unknown in replay"},
	} {
		e, err := Parse(tc.in)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := Eval(e, env); err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("Eval(%q) error = %v, want %q", tc.in, err, tc.want)
		}
	}
	if _, err := LookupSymbol(nil, "x"); err == nil || !strings.Contains(err.Error(), "no symbols are loaded") {
		t.Errorf("LookupSymbol with no table: %v", err)
	}
}

func TestFrameTopUnknown(t *testing.T) {
	_, err := FrameTop([]annotate.Region{{Kind: annotate.RegionEntryStack, FrameTop: 0x1000}})
	if err == nil || !strings.Contains(err.Error(), "kernel stack is not known") {
		t.Errorf("FrameTop without a kernel stack: %v", err)
	}
}
