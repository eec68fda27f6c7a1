package trace

import (
	"strings"
	"testing"

	"github.com/sctrace/sctrace/gdbremote"
	"github.com/sctrace/sctrace/gdbremote/gdbstubtest"
	"github.com/sctrace/sctrace/internal/testenv"
	"github.com/sctrace/sctrace/target"
)

// TestInitStepping runs Recorder.Init against the fake stub playing the
// single-step flag sets QEMU offers (TCG: ENABLE|NOIRQ|NOTIMER; KVM with
// KVM_GUESTDBG_BLOCKIRQ: ENABLE|NOIRQ, E22 for 7, as measured on QEMU 7.2
// with -accel kvm; KVM without it: ENABLE) and checks the header says what
// is in force and what happens to interrupts.
func TestInitStepping(t *testing.T) {
	tests := []struct {
		name      string
		bits      int
		allowIRQ  bool
		flags     string
		irq       string
		label     string
		stepWords string
	}{
		{"tcg", gdbstubtest.StepBitsTCG, false, "ENABLE|NOIRQ|NOTIMER", IRQMasked, "irq+timers masked", "interrupts and timers masked"},
		{"kvm", gdbstubtest.StepBitsKVM, false, "ENABLE|NOIRQ", IRQMasked, "irq masked, timers run", "timers running"},
		{"kvm without BLOCKIRQ", gdbstubtest.StepBitsKVMNoBlock, false, "ENABLE", IRQSteppedOver, "irq stepped over", "run to their return"},
		{"tcg --irq", gdbstubtest.StepBitsTCG, true, "ENABLE", IRQRecorded, "irq recorded", "are recorded"},
		{"kvm --irq", gdbstubtest.StepBitsKVM, true, "ENABLE", IRQRecorded, "irq recorded", "are recorded"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			stub := gdbstubtest.New(t)
			stub.SetStepBits(tt.bits)
			ctx, conn := testenv.DialStub(t, stub)
			r := NewRecorder(target.New(conn), nil, nil, Header{})
			r.AllowIRQ = tt.allowIRQ
			if err := r.Init(ctx); err != nil {
				t.Fatal(err)
			}
			h := r.Trace().Header
			if h.StepFlags != tt.flags || h.Interrupts != tt.irq || h.SteppingLabel() != tt.label || !strings.Contains(h.Stepping, tt.stepWords) {
				t.Errorf("header: flags %q, interrupts %q, label %q, stepping %q; want %q, %q, %q, stepping saying %q",
					h.StepFlags, h.Interrupts, h.SteppingLabel(), h.Stepping, tt.flags, tt.irq, tt.label, tt.stepWords)
			}
			if got := gdbremote.StepFlagsString(stub.StepFlags()); got != tt.flags {
				t.Errorf("the stub's flags are %s, want %s", got, tt.flags)
			}
			for _, req := range stub.Requests() {
				if strings.HasPrefix(req, "Qqemu.sstep=") && req != "Qqemu.sstep="+strings.TrimPrefix(hexFlags(tt.flags), "0x") {
					t.Errorf("asked for %s, which the stub does not offer or was not wanted", req)
				}
			}
		})
	}
}

func hexFlags(s string) string {
	v := 0
	for _, f := range strings.Split(s, "|") {
		v |= map[string]int{"ENABLE": 1, "NOIRQ": 2, "NOTIMER": 4}[f]
	}
	return "0x" + string("0123456789abcdef"[v])
}
