package annotate

import (
	"golang.org/x/arch/x86/x86asm"

	"github.com/sctrace/sctrace/x86"
)

// The legacy PC's 8259 interrupt controllers and 8254 interval timer, the
// devices an interrupt path talks to through I/O ports.
const (
	portPIC1Cmd  = 0x20 // first (primary) 8259: command
	portPIC1Data = 0x21 // first 8259: interrupt mask register
	portPIC2Cmd  = 0xa0 // second 8259, cascaded on IRQ2
	portPIC2Data = 0xa1
	portPITCh0   = 0x40 // 8254 channel 0, wired to IRQ0
	portPITMode  = 0x43 // 8254 mode/command register
	picEOI       = 0x20 // OCW2: non-specific end of interrupt
)

// ioPort explains an `out` to the interrupt controller or the timer: an
// end of interrupt (EOI), a mask, a timer count. Other ports are left to
// the generic annotations.
func (a *annotator) ioPort() {
	if a.s.Inst.Op != x86asm.OUT || len(a.s.Inst.Args) < 2 {
		return
	}
	var port uint64
	switch p := a.s.Inst.Args[0].(type) {
	case x86asm.Imm:
		port = uint64(p)
	case x86asm.Reg:
		v, ok := a.b.Get(x86.RDX)
		if !ok {
			return
		}
		port = v & 0xffff
	default:
		return
	}
	rax, ok := a.b.Get(x86.RAX)
	if !ok {
		return
	}
	al := rax & 0xff
	switch port {
	case portPIC1Cmd, portPIC2Cmd:
		which := "primary"
		if port == portPIC2Cmd {
			which = "secondary"
		}
		switch {
		case al == picEOI:
			a.note(KindControl, "EOI: out %#x to port %#x tells the %s 8259 the interrupt it delivered last is handled (non-specific end of interrupt, OCW2); until then it holds back interrupts of the same and lower priority", al, port, which)
		case al&0x10 != 0:
			a.note(KindControl, "ICW1 to the %s 8259 (port %#x): start its initialisation; the vector base and wiring follow on port %#x", which, port, port+1)
		default:
			a.note(KindControl, "command %#x to the %s 8259 (port %#x)", al, which, port)
		}
	case portPIC1Data, portPIC2Data:
		a.note(KindControl, "8259 interrupt mask (port %#x) = %#08b: a set bit masks that IRQ line", port, al)
	case portPITMode:
		a.note(KindControl, "8254 timer mode register (port 0x43) = %#x: channel %d, mode %d", al, al>>6, (al>>1)&7)
	case portPITCh0, portPITCh0 + 1, portPITCh0 + 2:
		a.note(KindControl, "8254 timer channel %d count byte %#x (port %#x); channel 0 raises IRQ0", port-portPITCh0, al, port)
	}
}
