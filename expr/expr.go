// Package expr parses and evaluates the expressions of sctrace's debugger
// commands and watches, in the notation gdb users know: numbers (0x1f,
// 42), registers ($rax, $gs_base, $pc), symbols (entry_SYSCALL_64,
// do_syscall_64+0x10), memory (*(u64*)EXPR, *(u32*)($rsp+8)), sums and
// differences, and the fields of the pt_regs frame at the top of the task
// stack (pt_regs->ip).
//
// An expression is parsed once and evaluated against an Env: a live guest
// (Live) or a recorded step of a trace (Replay), where a value the
// recording did not keep is unknown rather than guessed.
//
// The language is small on purpose, so it is parsed by hand: a
// general-purpose expression library would accept C that sctrace cannot
// evaluate (function calls, floating point) and knows nothing of
// registers or symbols.
package expr

import (
	"errors"
	"fmt"
	"strconv"
	"strings"

	"github.com/sctrace/sctrace/annotate"
	"github.com/sctrace/sctrace/x86"
)

// Expr is a parsed expression.
type Expr interface {
	// String renders the expression in canonical form, e.g.
	// "*(u64*)($gs_base + 0x6014)".
	String() string
	eval(env Env) (uint64, error)
}

// Env is what an expression is evaluated against.
type Env interface {
	// Reg returns a register's value.
	Reg(r x86.Reg) (uint64, error)
	// Symbol returns a symbol's address.
	Symbol(name string) (uint64, error)
	// Read returns size bytes of memory at addr.
	Read(addr uint64, size int) ([]byte, error)
	// FrameTop returns the address just above the pt_regs frame at the top
	// of the task stack.
	FrameTop() (uint64, error)
}

// ErrUnknown is matched (with errors.Is) by the error of an evaluation that
// needed a value the environment does not have: a register or memory a
// recording did not keep.
var ErrUnknown = errors.New("unknown in replay")

// Eval evaluates e in env.
func Eval(e Expr, env Env) (uint64, error) { return e.eval(env) }

// Num is a constant.
type Num uint64

func (n Num) String() string {
	if n < 10 {
		return strconv.FormatUint(uint64(n), 10)
	}
	return "0x" + strconv.FormatUint(uint64(n), 16)
}

func (n Num) eval(Env) (uint64, error) { return uint64(n), nil }

// Reg is a register, $name.
type Reg x86.Reg

func (r Reg) String() string { return "$" + x86.Reg(r).String() }

func (r Reg) eval(env Env) (uint64, error) { return env.Reg(x86.Reg(r)) }

// Sym is a symbol's address.
type Sym string

func (s Sym) String() string { return string(s) }

func (s Sym) eval(env Env) (uint64, error) { return env.Symbol(string(s)) }

// Deref is a read of Size bytes (1, 2, 4 or 8, little-endian) at the
// address X.
type Deref struct {
	Size int
	X    Expr
}

func (d Deref) String() string {
	x := d.X.String()
	if _, sum := d.X.(Binary); sum {
		x = "(" + x + ")"
	}
	return fmt.Sprintf("*(u%d*)%s", 8*d.Size, x)
}

func (d Deref) eval(env Env) (uint64, error) {
	a, err := d.X.eval(env)
	if err != nil {
		return 0, err
	}
	return ReadUint(env, a, d.Size)
}

// ReadUint reads a size-byte little-endian value at addr from env.
func ReadUint(env Env, addr uint64, size int) (uint64, error) {
	b, err := env.Read(addr, size)
	if err != nil {
		return 0, err
	}
	if len(b) < size {
		return 0, fmt.Errorf("read %#x: %d of %d bytes", addr, len(b), size)
	}
	var v uint64
	for i := size - 1; i >= 0; i-- {
		v = v<<8 | uint64(b[i])
	}
	return v, nil
}

// Field is a field of the pt_regs frame at the top of the task stack:
// pt_regs->ip, pt_regs->orig_ax. Its value is the word in that slot.
type Field string

func (f Field) String() string { return "pt_regs->" + string(f) }

// Addr returns the field's address: the slot it occupies below the frame
// top env names.
func (f Field) Addr(env Env) (uint64, error) {
	top, err := env.FrameTop()
	if err != nil {
		return 0, err
	}
	for i, name := range annotate.PtRegsFields {
		if name == string(f) {
			return top - 8*uint64(i+1), nil
		}
	}
	return 0, fmt.Errorf("pt_regs has no field %q (it has %s)", string(f), strings.Join(annotate.PtRegsFields, ", "))
}

func (f Field) eval(env Env) (uint64, error) {
	a, err := f.Addr(env)
	if err != nil {
		return 0, err
	}
	return ReadUint(env, a, 8)
}

// Binary is a sum or difference, modulo 2^64.
type Binary struct {
	Op   byte // '+' or '-'
	L, R Expr
}

func (b Binary) String() string {
	r := b.R.String()
	if _, sum := b.R.(Binary); sum {
		r = "(" + r + ")"
	}
	return b.L.String() + " " + string(b.Op) + " " + r
}

func (b Binary) eval(env Env) (uint64, error) {
	l, err := b.L.eval(env)
	if err != nil {
		return 0, err
	}
	r, err := b.R.eval(env)
	if err != nil {
		return 0, err
	}
	if b.Op == '-' {
		return l - r, nil
	}
	return l + r, nil
}

// Neg is a negation, modulo 2^64.
type Neg struct{ X Expr }

func (n Neg) String() string { return "-" + n.X.String() }

func (n Neg) eval(env Env) (uint64, error) {
	v, err := n.X.eval(env)
	return -v, err
}
