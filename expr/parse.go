package expr

import (
	"fmt"
	"strconv"
	"strings"

	"github.com/sctrace/sctrace/x86"
)

// SyntaxError is an expression that does not parse: what is wrong, and at
// which byte of the input.
type SyntaxError struct {
	Input string
	Pos   int
	Msg   string
}

func (e *SyntaxError) Error() string {
	if e.Pos >= len(e.Input) {
		return fmt.Sprintf("%q: %s at the end", e.Input, e.Msg)
	}
	return fmt.Sprintf("%q: %s at %q", e.Input, e.Msg, e.Input[e.Pos:])
}

// Parse parses one expression:
//
//	expr    = term { ("+" | "-") term }
//	term    = "-" term | "*" [ "(" type "*" ")" ] term | primary
//	primary = number | "$" register | symbol | "pt_regs" "->" field | "(" expr ")"
//	type    = u8 | u16 | u32 | u64 | uint8_t ... uint64_t | char | short | int | long
//
// Numbers are decimal or 0x hex; a bare * reads a u64. Registers are those
// an x86.State holds, by their target-description names (rax, eflags,
// gs_base, k_gs_base, cr3, efer), with the aliases rflags, pc and sp.
func Parse(s string) (Expr, error) {
	p := &parser{in: s}
	p.skip()
	if p.pos == len(s) {
		return nil, &SyntaxError{Input: s, Pos: 0, Msg: "empty expression"}
	}
	e, err := p.expr()
	if err != nil {
		return nil, err
	}
	p.skip()
	if p.pos != len(s) {
		return nil, p.errorf("unexpected %q", s[p.pos:p.pos+1])
	}
	return e, nil
}

type parser struct {
	in  string
	pos int
}

func (p *parser) errorf(format string, args ...any) error {
	return &SyntaxError{Input: p.in, Pos: p.pos, Msg: fmt.Sprintf(format, args...)}
}

func (p *parser) skip() {
	for p.pos < len(p.in) && (p.in[p.pos] == ' ' || p.in[p.pos] == '\t') {
		p.pos++
	}
}

// peek returns the next byte after blanks, or 0 at the end.
func (p *parser) peek() byte {
	p.skip()
	if p.pos < len(p.in) {
		return p.in[p.pos]
	}
	return 0
}

func (p *parser) expr() (Expr, error) {
	l, err := p.term()
	if err != nil {
		return nil, err
	}
	for {
		op := p.peek()
		if op != '+' && op != '-' || strings.HasPrefix(p.in[p.pos:], "->") {
			return l, nil
		}
		p.pos++
		r, err := p.term()
		if err != nil {
			return nil, err
		}
		l = Binary{Op: op, L: l, R: r}
	}
}

func (p *parser) term() (Expr, error) {
	switch p.peek() {
	case '-':
		p.pos++
		x, err := p.term()
		if err != nil {
			return nil, err
		}
		return Neg{x}, nil
	case '*':
		p.pos++
		size := 8
		if p.peek() == '(' {
			save := p.pos
			p.pos++
			if n, ok := p.castType(); ok {
				size = n
			} else {
				p.pos = save
			}
		}
		x, err := p.term()
		if err != nil {
			return nil, err
		}
		return Deref{Size: size, X: x}, nil
	}
	return p.primary()
}

// castTypes are the pointer types a dereference may name, by size.
var castTypes = map[string]int{
	"u8": 1, "u16": 2, "u32": 4, "u64": 8,
	"uint8_t": 1, "uint16_t": 2, "uint32_t": 4, "uint64_t": 8,
	"char": 1, "short": 2, "int": 4, "long": 8,
	"unsigned char": 1, "unsigned short": 2, "unsigned int": 4, "unsigned long": 8,
	"unsigned long long": 8, "long long": 8,
}

// castType parses "type *)" after an opening parenthesis; ok is false,
// with nothing consumed that matters, when what follows is not a cast.
func (p *parser) castType() (int, bool) {
	end := strings.IndexByte(p.in[p.pos:], ')')
	if end < 0 {
		return 0, false
	}
	inner := strings.TrimSpace(p.in[p.pos : p.pos+end])
	name, ok := strings.CutSuffix(inner, "*")
	if !ok {
		return 0, false
	}
	size, ok := castTypes[strings.Join(strings.Fields(name), " ")]
	if !ok {
		return 0, false
	}
	p.pos += end + 1
	return size, true
}

func isIdentStart(c byte) bool {
	return c == '_' || c == '.' || c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z'
}

func isIdent(c byte) bool { return isIdentStart(c) || c >= '0' && c <= '9' }

func (p *parser) ident() string {
	start := p.pos
	for p.pos < len(p.in) && isIdent(p.in[p.pos]) {
		p.pos++
	}
	return p.in[start:p.pos]
}

// regAliases are register names gdb users type that State does not use.
var regAliases = map[string]x86.Reg{"pc": x86.RIP, "sp": x86.RSP, "fp": x86.RBP}

// ParseReg looks up a register by the name written after $ (without it).
func ParseReg(name string) (x86.Reg, bool) {
	if r, ok := regAliases[strings.ToLower(name)]; ok {
		return r, true
	}
	return x86.ParseReg(name)
}

func (p *parser) primary() (Expr, error) {
	c := p.peek()
	switch {
	case c == 0:
		return nil, p.errorf("missing operand")
	case c == '(':
		p.pos++
		e, err := p.expr()
		if err != nil {
			return nil, err
		}
		if p.peek() != ')' {
			return nil, p.errorf("missing )")
		}
		p.pos++
		return e, nil
	case c == '$':
		p.pos++
		start := p.pos
		name := p.ident()
		if name == "" {
			return nil, p.errorf("register name expected after $")
		}
		r, ok := ParseReg(name)
		if !ok {
			p.pos = start
			return nil, p.errorf("unknown register $%s (registers: %s)", name, RegisterNames())
		}
		return Reg(r), nil
	case c >= '0' && c <= '9':
		start := p.pos
		for p.pos < len(p.in) && isIdent(p.in[p.pos]) {
			p.pos++
		}
		text := p.in[start:p.pos]
		v, err := strconv.ParseUint(text, 0, 64)
		if err != nil {
			p.pos = start
			return nil, p.errorf("malformed number %q", text)
		}
		return Num(v), nil
	case isIdentStart(c):
		name := p.ident()
		if name == "pt_regs" && strings.HasPrefix(p.in[p.pos:], "->") {
			p.pos += 2
			start := p.pos
			f := p.ident()
			if f == "" {
				return nil, p.errorf("field name expected after pt_regs->")
			}
			p.pos = start
			if _, err := Field(f).Addr(fieldOnly{}); err != nil {
				return nil, p.errorf("%v", err)
			}
			p.pos += len(f)
			return Field(f), nil
		}
		return Sym(name), nil
	}
	return nil, p.errorf("unexpected %q", string(c))
}

// fieldOnly is an Env with a frame top and nothing else, to check a field
// name at parse time.
type fieldOnly struct{}

func (fieldOnly) Reg(x86.Reg) (uint64, error)      { return 0, ErrUnknown }
func (fieldOnly) Symbol(string) (uint64, error)    { return 0, ErrUnknown }
func (fieldOnly) Read(uint64, int) ([]byte, error) { return nil, ErrUnknown }
func (fieldOnly) FrameTop() (uint64, error)        { return 1 << 20, nil }

// RegisterNames lists the registers an expression can name, for messages
// and completion.
func RegisterNames() string {
	names := make([]string, 0, x86.NumRegs)
	for r := x86.Reg(0); r < x86.NumRegs; r++ {
		names = append(names, x86.Reg(r).String())
	}
	return strings.Join(names, " ")
}
