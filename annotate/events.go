package annotate

import "github.com/sctrace/sctrace/x86"

// Event classifies a step for "run to the next event" and for lessons.
type Event string

// The events.
const (
	EventCPLChange   Event = "cpl-change"   // the privilege level changed
	EventSyscall     Event = "syscall"      // a syscall instruction
	EventSysret      Event = "sysret"       // a sysret instruction
	EventSysenter    Event = "sysenter"     // a sysenter instruction
	EventSysexit     Event = "sysexit"      // a sysexit instruction
	EventInterrupt   Event = "interrupt"    // int n, int3, int1
	EventException   Event = "exception"    // an exception or interrupt was delivered
	EventIret        Event = "iret"         // an iret instruction
	EventCallGate    Event = "call-gate"    // a far call
	EventFarRet      Event = "far-ret"      // a far return
	EventSwapgs      Event = "swapgs"       // swapgs
	EventCR3Write    Event = "cr3-write"    // a write to CR3
	EventMSRWrite    Event = "msr-write"    // wrmsr, wrfsbase, wrgsbase
	EventStackSwitch Event = "stack-switch" // RSP moved to another stack
	EventIFChange    Event = "if-change"    // interrupts enabled or disabled
	EventMitigation  Event = "mitigation"   // a speculative-execution mitigation
	EventPerCPU      Event = "percpu"       // a GS-relative access
	EventFinding     Event = "finding"      // an effect contradicts the architecture
	// EventIRQ marks a step during which an interrupt the traced code did
	// not cause (a device, a timer, an NMI) was taken while stepping: the
	// recorder says so, and by default runs the handler to its return
	// rather than recording it.
	EventIRQ Event = "irq"
)

// Events classifies a step, given the effects Annotate returned for it.
func Events(s Step, effects []Effect, c *Context) []Event {
	var out []Event
	add := func(e Event) {
		for _, x := range out {
			if x == e {
				return
			}
		}
		out = append(out, e)
	}
	o := classify(s.Inst, s.Bytes)
	switch o.kind {
	case opSyscall:
		add(EventSyscall)
	case opSysret:
		add(EventSysret)
	case opSysenter:
		add(EventSysenter)
	case opSysexit:
		add(EventSysexit)
	case opInt:
		add(EventInterrupt)
	case opIret:
		add(EventIret)
	case opFarCall:
		add(EventCallGate)
	case opFarRet:
		add(EventFarRet)
	case opSwapgs:
		add(EventSwapgs)
	case opWrmsr, opWrBase:
		add(EventMSRWrite)
	case opMovCR:
		if len(s.Inst.Args) > 0 && s.Inst.Args[0] != nil && s.Inst.Args[0].String() == "CR3" {
			add(EventCR3Write)
		}
	}
	before, after := s.Before, s.After
	if before != nil && after != nil {
		if b, a := cpl(before), cpl(after); b >= 0 && a >= 0 && b != a {
			add(EventCPLChange)
		}
		bf, ok1 := before.Get(x86.RFLAGS)
		af, ok2 := after.Get(x86.RFLAGS)
		if ok1 && ok2 && x86.Flags(bf^af)&x86.FlagIF != 0 {
			add(EventIFChange)
		}
	}
	for _, e := range effects {
		if e.Event != "" {
			add(e.Event)
		}
		switch {
		case e.Verdict == Finding:
			add(EventFinding)
		case e.Kind == KindMitigation:
			add(EventMitigation)
		}
	}
	return out
}
