package diff

import (
	"fmt"
	"strconv"
	"strings"

	"golang.org/x/arch/x86/x86asm"

	"github.com/sctrace/sctrace/annotate"
	"github.com/sctrace/sctrace/trace"
)

// insnKey is what an instruction is, for comparing two traces: its
// operation and operands as x86asm decodes them, with the parts that are
// addresses taken out (they move with KASLR and from one kernel build to
// the next) and register values left out altogether (a step's key comes
// from its bytes, never from the state it ran in).
type insnKey struct {
	fn     string    // the function it is in; "" without symbols
	off    uint64    // its offset in fn, when both traces ran the same build
	op     x86asm.Op // 0 for what x86asm leaves undecoded
	mnem   string    // the canonical mnemonic, when op is 0
	prefix uint8     // lock, rep, repne
	mem    int       // memory operand size in bytes
	args   x86asm.Args
	// target is the function a call or jump went to when it left the
	// function it is in (a call, a tail call, a jump to a return thunk).
	target string
	// frame marks the item that stands for a whole call (see frame).
	frame bool
}

// Bits of insnKey.prefix.
const (
	prefixLock = 1 << iota
	prefixRep
	prefixRepn
)

// Kernel addresses lie in the upper half from the direct map up, below the
// top 16 MiB, where small negative numbers (-ENOSYS, masks such as
// ~0x1800) live: an immediate in between is an address, not a number.
const (
	kernelLow  = 0xffff800000000000
	kernelHigh = 0xffffffffff000000
)

// isAddress says whether an immediate operand holds a kernel address.
func isAddress(v x86asm.Imm) bool {
	u := uint64(v)
	return u >= kernelLow && u < kernelHigh
}

// normalize takes the addresses out of inst's operands: branch targets,
// absolute and RIP-relative displacements, which become one (a per-CPU
// variable's offset is one: it changes from one build to the next) and immediates that are
// kernel addresses. A displacement from a base or index register is a
// structure offset and stays. The operands of a NOP are padding, not
// meaning: every NOP is the same instruction.
func normalize(inst x86asm.Inst) x86asm.Args {
	var out x86asm.Args
	if inst.Op == x86asm.NOP {
		return out
	}
	for i, a := range inst.Args {
		switch v := a.(type) {
		case nil:
			return out
		case x86asm.Rel:
			out[i] = x86asm.Rel(0)
		case x86asm.Imm:
			if isAddress(v) {
				v = 0
			}
			out[i] = v
		case x86asm.Mem:
			if v.Base == x86asm.RIP || v.Base == 0 && v.Index == 0 {
				// An address, absolute or relative to RIP: the
				// same variable may be reached either way (6.12
				// made per-CPU accesses RIP-relative).
				v.Base, v.Disp = 0, 0
			}
			if v.Index == 0 {
				v.Scale = 0 // a SIB byte with no index says nothing
			}
			out[i] = v
		default:
			out[i] = a
		}
	}
	return out
}

func prefixes(inst x86asm.Inst) uint8 {
	var p uint8
	for _, x := range inst.Prefix {
		if x == 0 {
			break
		}
		if x&x86asm.PrefixIgnored != 0 {
			continue
		}
		switch x & 0xff {
		case x86asm.PrefixLOCK:
			p |= prefixLock
		case x86asm.PrefixREP:
			p |= prefixRep
		case x86asm.PrefixREPN:
			p |= prefixRepn
		}
	}
	return p
}

// splitSymbol splits "name+0x1a" into the function and the offset in it.
func splitSymbol(sym string) (string, uint64) {
	name, off, ok := strings.Cut(sym, "+")
	if !ok {
		return sym, 0
	}
	v, err := strconv.ParseUint(strings.TrimPrefix(off, "0x"), 16, 64)
	if err != nil {
		return sym, 0
	}
	return name, v
}

// decoded is an instruction decoded once per distinct byte string.
type decoded struct {
	inst x86asm.Inst
	ok   bool
}

// keyer builds the keys of a trace's steps, decoding each distinct
// instruction once.
type keyer struct {
	symbols bool // key by function too
	places  bool // and by offset in the function
	cache   map[string]decoded
}

func newKeyer(symbols, places bool) *keyer {
	return &keyer{symbols: symbols, places: symbols && places, cache: make(map[string]decoded)}
}

func (k *keyer) decode(b []byte) decoded {
	if d, ok := k.cache[string(b)]; ok {
		return d
	}
	inst, _, err := annotate.Decode(b)
	d := decoded{inst: inst, ok: err == nil}
	k.cache[string(b)] = d
	return d
}

// key returns the key of step s, whose successor in the trace is next
// (nil for the last step).
func (k *keyer) key(s, next *trace.Step) insnKey {
	var key insnKey
	fn, off := splitSymbol(s.Symbol)
	if k.symbols {
		key.fn = fn
	}
	if k.places {
		key.off = off
	}
	d := k.decode(s.Bytes)
	if !d.ok || d.inst.Op == 0 {
		key.mnem = s.Mnemonic
		if key.mnem == "" {
			key.mnem = fmt.Sprintf("(bytes % x)", []byte(s.Bytes))
		}
		return key
	}
	key.op = d.inst.Op
	key.prefix = prefixes(d.inst)
	key.mem = d.inst.MemBytes
	key.args = normalize(d.inst)
	if k.symbols {
		key.target = branchTarget(s, next, d.inst, fn)
	}
	return key
}

// branchTarget returns the function a direct call or jump of s went to,
// when it went to another function than fn, the one it is in: the next
// step's function, if the next step is at the branch's target. A call
// stepped over names its callee.
func branchTarget(s, next *trace.Step, inst x86asm.Inst, fn string) string {
	if s.Over != nil {
		to, _ := splitSymbol(s.Over.Target)
		return to
	}
	rel, ok := inst.Args[0].(x86asm.Rel)
	if !ok || next == nil {
		return ""
	}
	to := uint64(s.RIP) + uint64(inst.Len) + uint64(int64(rel))
	if uint64(next.RIP) != to {
		return ""
	}
	name, _ := splitSymbol(next.Symbol)
	if name == fn {
		return ""
	}
	return name
}
