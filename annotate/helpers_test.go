package annotate

import (
	"encoding/binary"
	"strings"
	"testing"

	"github.com/sctrace/sctrace/x86"
)

// regs is a register assignment for building states.
type regs map[x86.Reg]uint64

// with returns a copy of base with over applied.
func with(base regs, over regs) regs {
	out := regs{}
	for r, v := range base {
		out[r] = v
	}
	for r, v := range over {
		out[r] = v
	}
	return out
}

// without returns a copy of base without the named registers.
func without(base regs, drop ...x86.Reg) regs {
	out := with(base, nil)
	for _, r := range drop {
		delete(out, r)
	}
	return out
}

func mk(r regs) *x86.State {
	s := &x86.State{}
	for reg, v := range r {
		s.Set(reg, v)
	}
	return s
}

// mkStep decodes code and builds a step.
func mkStep(t testing.TB, index int, code []byte, addr uint64, before, after regs, mem ...Memory) Step {
	t.Helper()
	inst, n, err := Decode(code)
	if err != nil {
		t.Fatalf("decode % x: %v", code, err)
	}
	return Step{Index: index, Addr: addr, Bytes: code[:n], Inst: inst, Before: mk(before), After: mk(after), Mem: mem}
}

// check is one expected effect: its kind, a fragment of its text, and its
// verdict.
type check struct {
	kind    Kind
	text    string
	verdict Verdict
}

func ok(k Kind, text string) check      { return check{k, text, OK} }
func finding(k Kind, text string) check { return check{k, text, Finding} }
func note(k Kind, text string) check    { return check{k, text, NoVerdict} }

// expectEffects fails unless every check matches an effect.
func expectEffects(t *testing.T, effects []Effect, checks ...check) {
	t.Helper()
	for _, c := range checks {
		found := false
		for _, e := range effects {
			if e.Kind == c.kind && e.Verdict == c.verdict && strings.Contains(e.Text, c.text) {
				found = true
				break
			}
		}
		if !found {
			t.Errorf("no %s effect with verdict %q containing %q in:\n%s", c.kind, c.verdict, c.text, dump(effects))
		}
	}
}

// expectNoFinding fails if any effect is a finding.
func expectNoFinding(t *testing.T, effects []Effect) {
	t.Helper()
	for _, e := range effects {
		if e.Verdict == Finding {
			t.Errorf("unexpected finding %q in:\n%s", e.Text, dump(effects))
		}
	}
}

// expectFinding fails unless some effect is a finding.
func expectFinding(t *testing.T, effects []Effect) {
	t.Helper()
	for _, e := range effects {
		if e.Verdict == Finding {
			return
		}
	}
	t.Errorf("no finding in:\n%s", dump(effects))
}

func dump(effects []Effect) string {
	var b strings.Builder
	for _, e := range effects {
		b.WriteString("  [" + string(e.Kind) + "]")
		if e.Verdict != "" {
			b.WriteString("(" + string(e.Verdict) + ")")
		}
		b.WriteString(" " + e.Text + "\n")
	}
	return b.String()
}

// qwords encodes little-endian 64-bit words.
func qwords(ws ...uint64) []byte {
	b := make([]byte, 8*len(ws))
	for i, w := range ws {
		binary.LittleEndian.PutUint64(b[8*i:], w)
	}
	return b
}

// gateBytes encodes a 16-byte long-mode gate.
func gateBytes(off uint64, sel uint16, ist, typ, dpl int) []byte {
	b := make([]byte, 16)
	binary.LittleEndian.PutUint16(b[0:], uint16(off))
	binary.LittleEndian.PutUint16(b[2:], sel)
	b[4] = byte(ist)
	b[5] = 0x80 | byte(dpl)<<5 | byte(typ)
	binary.LittleEndian.PutUint16(b[6:], uint16(off>>16))
	binary.LittleEndian.PutUint32(b[8:], uint32(off>>32))
	return b
}

// tssBytes encodes a TSS with RSP0 and IST entries.
func tssBytes(rsp0 uint64, ist map[int]uint64) []byte {
	b := make([]byte, x86.TSSSize)
	binary.LittleEndian.PutUint64(b[x86.TSSRSP0:], rsp0)
	for i, v := range ist {
		binary.LittleEndian.PutUint64(b[x86.TSSIST1+8*(i-1):], v)
	}
	return b
}

// symbols is a test Symbolizer: exact ranges.
type symbols []struct {
	addr, size uint64
	name       string
}

func (s symbols) Symbolize(addr uint64) string {
	for _, e := range s {
		if addr >= e.addr && addr < e.addr+e.size {
			if addr == e.addr {
				return e.name
			}
			return e.name + "+" + hex(addr-e.addr)
		}
	}
	return ""
}

func hex(v uint64) string {
	const digits = "0123456789abcdef"
	if v == 0 {
		return "0x0"
	}
	var b []byte
	for ; v > 0; v >>= 4 {
		b = append([]byte{digits[v&0xf]}, b...)
	}
	return "0x" + string(b)
}

// Instruction bytes, assembled with GNU as.
var (
	insSyscall  = []byte{0x0f, 0x05}
	insSysretq  = []byte{0x48, 0x0f, 0x07}
	insSysretl  = []byte{0x0f, 0x07}
	insSysenter = []byte{0x0f, 0x34}
	insSysexitq = []byte{0x48, 0x0f, 0x35}
	insInt80    = []byte{0xcd, 0x80}
	insInt3     = []byte{0xcc}
	insUD2      = []byte{0x0f, 0x0b}
	insIretq    = []byte{0x48, 0xcf}
	insLretq    = []byte{0x48, 0xcb}
	insLcall    = []byte{0x48, 0xff, 0x18} // rex.W lcall *(%rax)
	insSwapgs   = []byte{0x0f, 0x01, 0xf8}
	insSaveRSP  = []byte{0x65, 0x48, 0x89, 0x24, 0x25, 0x14, 0x60, 0x00, 0x00} // mov %rsp,%gs:0x6014
	insLoadRSP  = []byte{0x65, 0x48, 0x8b, 0x24, 0x25, 0x14, 0x60, 0x00, 0x00} // mov %gs:0x6014,%rsp
	insTopRSP   = []byte{0x65, 0x48, 0x8b, 0x24, 0x25, 0x18, 0x60, 0x00, 0x00} // mov %gs:0x6018,%rsp
	insWrmsr    = []byte{0x0f, 0x30}
	insRdmsr    = []byte{0x0f, 0x32}
	insWrgsbase = []byte{0xf3, 0x48, 0x0f, 0xae, 0xd8}
	insRdgsbase = []byte{0xf3, 0x48, 0x0f, 0xae, 0xc8}
	insMovToCR3 = []byte{0x0f, 0x22, 0xd8}
	insMovCR3To = []byte{0x0f, 0x20, 0xd8}
	insMovToCR4 = []byte{0x0f, 0x22, 0xe0}
	insPushRAX  = []byte{0x50}
	insPush2b   = []byte{0x6a, 0x2b}
	insPushGS   = []byte{0x65, 0xff, 0x34, 0x25, 0x14, 0x60, 0x00, 0x00} // pushq %gs:0x6014
	insPopRBX   = []byte{0x5b}
	insSub50    = []byte{0x48, 0x83, 0xec, 0x50}
	insStoreRDI = []byte{0x48, 0x89, 0x7c, 0x24, 0x70} // mov %rdi,0x70(%rsp)
	insLoadRBX  = []byte{0x48, 0x8b, 0x18}             // mov (%rax),%rbx
	insSti      = []byte{0xfb}
	insCli      = []byte{0xfa}
	insVerw     = []byte{0x0f, 0x00, 0x2c, 0x24}
	insLfence   = []byte{0x0f, 0xae, 0xe8}
	insCallRAX  = []byte{0xff, 0xd0}
	insCall100  = []byte{0xe8, 0x00, 0x01, 0x00, 0x00}
	insRet      = []byte{0xc3}
	insJe10     = []byte{0x74, 0x10}
	insAddRAX   = []byte{0x48, 0x83, 0xc0, 0x01}
	insStac     = []byte{0x0f, 0x01, 0xcb}
	insClac     = []byte{0x0f, 0x01, 0xca}
	insEndbr64  = []byte{0xf3, 0x0f, 0x1e, 0xfa}
)

// A user-mode state about to make a system call, and the kernel's view.
const (
	userRIP   = 0x401000
	userRSP   = 0x7ffc_0000_1238
	lstar     = 0xffffffff81c00080
	percpu    = 0xffff888007c00000
	kstackTop = 0xffffc90000004000
)

var user = regs{
	x86.RIP: userRIP, x86.RSP: userRSP, x86.RFLAGS: 0x246,
	x86.CS: 0x33, x86.SS: 0x2b, x86.RAX: 39, x86.RCX: 0x1111, x86.R11: 0x2222,
	x86.RDX: 0, x86.RDI: 0, x86.GSBase: 0, x86.KernelGSBase: percpu,
	x86.EFER: 0xd01, x86.CR3: 0x10b000, x86.CR4: 0x3006b0,
}

// kernel is a state at CPL 0 inside the entry code, after swapgs.
var kernel = with(user, regs{
	x86.RIP: lstar + 0x10, x86.CS: 0x10, x86.SS: 0x18, x86.RFLAGS: 0x2,
	x86.GSBase: percpu, x86.KernelGSBase: 0, x86.CR3: 0x10a000,
})

var testSyms = symbols{
	{lstar, 0x100, "entry_SYSCALL_64"},
	{0xffffffff81001000, 0x80, "asm_int80_syscall"},
	{0xffffffff81002000, 0x80, "asm_exc_invalid_op"},
	{0xffffffff81003000, 0x80, "asm_exc_page_fault"},
	{0xffffffff81004000, 0x40, "__x86_indirect_thunk_rax"},
	{0x6000, 0x68, "cpu_tss_rw"},
}
