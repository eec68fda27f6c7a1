package gdbstubtest

import (
	"fmt"
	"strings"
)

// A Stop is a machine state a scripted guest reaches: the registers that
// change (by their target.xml names: "rip", "rsp", "cs", "cr3", ...) and
// the memory written. Registers and memory it does not name keep their
// values. The zero Stop changes nothing: as a step it plays QEMU's stub
// reporting a single-step stop before the instruction has run (TCG
// retranslating the block), with every register as it was.
type Stop struct {
	Regs map[string]uint64
	Mem  map[uint64][]byte
}

// Script queues stops for the guest to walk through, after any queued
// before. Each request that resumes the guest and would stop it again (a
// step, or a continue while a breakpoint is set) takes the next stop,
// applies it and reports a SIGTRAP stop, as QEMU does when a step or a
// breakpoint ends; a continue does not check that the stop is at one of
// its breakpoints, so a script can play a breakpoint hit with another stack
// pointer (a recursive call), or an interrupt the guest took. With nothing
// queued, a step adds one to rip and a continue stops at the first
// breakpoint.
func (s *Stub) Script(stops ...Stop) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.script = append(s.script, stops...)
}

// Scripted returns how many scripted stops are still queued.
func (s *Stub) Scripted() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return len(s.script)
}

// nextStop applies the next scripted stop, if there is one.
func (s *Stub) nextStop() bool {
	if len(s.script) == 0 {
		return false
	}
	st := s.script[0]
	s.script = s.script[1:]
	for name, v := range st.Regs {
		s.setReg(name, v)
		delete(s.unknown, name)
	}
	for addr, b := range st.Mem {
		s.mapLocked(addr, b)
	}
	return true
}

// Tables are the parts of the machine that `info registers` prints and the
// register file does not hold: GDTR, IDTR and the task register's cache.
type Tables struct {
	GDTBase  uint64
	GDTLimit uint32
	IDTBase  uint64
	IDTLimit uint32
	TRSel    uint16
	TRBase   uint64
	TRLimit  uint32
}

// SetTables sets GDTR, IDTR and TR for `info registers` (all zero, with
// QEMU's reset limits, until set).
func (s *Stub) SetTables(t Tables) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.tables = &t
}

// infoRegisters answers `info registers` in the layout of QEMU's
// x86_cpu_dump_state (target/i386/cpu-dump.c) for a CPU in long mode (EFER
// LMA) or, before that, at reset, as captured from QEMU 7.2 in
// x86/testdata. CPL is CS's RPL once CR0.PE is set, as it is for code
// that entered through the architecture's gates; the segment caches are
// those a 64-bit kernel's flat GDT gives (code 0x00a09b00 at DPL 0,
// 0x00a0fb00 at DPL 3, data 0x00c09300 and 0x00c0f300, a null selector
// 0x00c00000 in long mode).
func (s *Stub) infoRegisters() string {
	var b strings.Builder
	long := s.u64("efer")&(1<<10) != 0
	fmt.Fprintf(&b, "RAX=%016x RBX=%016x RCX=%016x RDX=%016x\r\n", s.u64("rax"), s.u64("rbx"), s.u64("rcx"), s.u64("rdx"))
	fmt.Fprintf(&b, "RSI=%016x RDI=%016x RBP=%016x RSP=%016x\r\n", s.u64("rsi"), s.u64("rdi"), s.u64("rbp"), s.u64("rsp"))
	fmt.Fprintf(&b, "R8 =%016x R9 =%016x R10=%016x R11=%016x\r\n", s.u64("r8"), s.u64("r9"), s.u64("r10"), s.u64("r11"))
	fmt.Fprintf(&b, "R12=%016x R13=%016x R14=%016x R15=%016x\r\n", s.u64("r12"), s.u64("r13"), s.u64("r14"), s.u64("r15"))
	cpl := 0
	if s.u64("cr0")&1 != 0 {
		cpl = int(s.u64("cs") & 3)
	}
	fl := s.u64("eflags")
	flags := []byte("-------")
	for i, bit := range []uint{10, 11, 7, 6, 4, 2, 0} { // DF OF SF ZF AF PF CF
		if fl&(1<<bit) != 0 {
			flags[i] = "DOSZAPC"[i]
		}
	}
	fmt.Fprintf(&b, "RIP=%016x RFL=%08x [%s] CPL=%d II=0 A20=1 SMM=0 HLT=0\r\n", s.u64("rip"), fl, flags, cpl)
	for _, seg := range []string{"es", "cs", "ss", "ds", "fs", "gs"} {
		sel := s.u64(seg)
		base, limit, attr := sel<<4, uint32(0xffff), uint32(0x9300)
		if seg == "cs" {
			attr = 0x9b00
		}
		if long {
			base, limit = 0, 0xffffffff
			switch {
			case seg == "cs":
				attr = 0x00a09b00 | uint32(sel&3)<<13
			case sel == 0:
				attr = 0x00c00000
			default:
				attr = 0x00c09300 | uint32(sel&3)<<13
			}
		}
		switch seg {
		case "fs":
			base = s.u64("fs_base")
		case "gs":
			base = s.u64("gs_base")
		}
		fmt.Fprintf(&b, "%-3s=%04x %016x %08x %08x", strings.ToUpper(seg), sel, base, limit, attr)
		if attr&0x8000 != 0 {
			kind := "DS  "
			if seg == "cs" {
				kind = "CS64"
				if !long {
					kind = "CS16"
				}
			}
			fmt.Fprintf(&b, " DPL=%d %s [-%sA]", attr>>13&3, kind, map[bool]string{true: "R", false: "W"}[seg == "cs"])
		}
		b.WriteString("\r\n")
	}
	t := Tables{GDTLimit: 0xffff, IDTLimit: 0xffff, TRLimit: 0xffff}
	if s.tables != nil {
		t = *s.tables
	}
	if long {
		b.WriteString("LDT=0000 0000000000000000 ffffffff 00c00000\r\n")
	} else {
		b.WriteString("LDT=0000 0000000000000000 0000ffff 00008200 DPL=0 LDT\r\n")
	}
	fmt.Fprintf(&b, "TR =%04x %016x %08x 00008b00 DPL=0 TSS64-busy\r\n", t.TRSel, t.TRBase, t.TRLimit)
	fmt.Fprintf(&b, "GDT=     %016x %08x\r\n", t.GDTBase, t.GDTLimit)
	fmt.Fprintf(&b, "IDT=     %016x %08x\r\n", t.IDTBase, t.IDTLimit)
	fmt.Fprintf(&b, "CR0=%08x CR2=%016x CR3=%016x CR4=%08x\r\n", s.u64("cr0"), s.u64("cr2"), s.u64("cr3"), s.u64("cr4"))
	b.WriteString("DR0=0000000000000000 DR1=0000000000000000 DR2=0000000000000000 DR3=0000000000000000 \r\n")
	b.WriteString("DR6=00000000ffff0ff0 DR7=0000000000000400\r\n")
	fmt.Fprintf(&b, "EFER=%016x\r\n", s.u64("efer"))
	fmt.Fprintf(&b, "FCW=%04x FSW=0000 [ST=0] FTW=00 MXCSR=%08x\r\n", s.u64("fctrl")&0xffff, s.u64("mxcsr"))
	return b.String()
}
