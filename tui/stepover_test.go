package tui

import (
	"bytes"
	"strings"
	"testing"

	"github.com/sctrace/sctrace/annotate"
	"github.com/sctrace/sctrace/trace"
	"github.com/sctrace/sctrace/x86"
)

// Addresses of the made-up code the step-over tests run: a caller at
// callSite, a callee at callee, and the stack pointer before the call.
const (
	callSite = 0x401000
	callee   = 0x402000
	stackTop = 0x7ff000
)

// overTests are instructions at callSite that `n` steps over, or not. The
// Intel text is what trace.Disasm renders (a bnd call starts with "bnd"),
// or, where intel is set, text that says otherwise than the bytes: `n`
// goes by the decoded operation, never by the text.
var overTests = []struct {
	name  string
	code  []byte
	intel string // when set, replaces the rendered Intel text
	over  bool
}{
	{"call rel32", []byte{0xe8, 0xfb, 0x0f, 0, 0}, "", true},
	{"call qword ptr [rip+...]", []byte{0xff, 0x15, 0x10, 0, 0, 0}, "", true},
	{"call qword ptr [r12]", []byte{0x41, 0xff, 0x14, 0x24}, "", true},
	{"bnd call rel32", []byte{0xf2, 0xe8, 0xfa, 0x0f, 0, 0}, "", true},
	{"bnd call rax", []byte{0xf2, 0xff, 0xd0}, "", true},
	{"notrack call rax", []byte{0x3e, 0xff, 0xd0}, "notrack call rax", true},
	{"call whose text says nop", []byte{0xff, 0xd0}, "nop", true},
	{"lcall through a gate", []byte{0xff, 0x1c, 0x25, 0, 0x10, 0x40, 0}, "", false},
	{"nop whose text says call", []byte{0x90}, "call 0x402000", false},
}

// callTrace is a trace of one instruction at callSite, two in the callee
// (a nop and the return) and one after the call, written and read back as
// a file is, so that each step's operation comes from its bytes.
func callTrace(t *testing.T, code []byte, intel string) *trace.Trace {
	t.Helper()
	ret := uint64(callSite + len(code))
	state := func(rip, rsp uint64, cpl int) *x86.State {
		st := &x86.State{}
		st.Set(x86.RIP, rip)
		st.Set(x86.RSP, rsp)
		st.Set(x86.CS, uint64(cpl|0x30))
		return st
	}
	step := func(i int, rip, rsp uint64, b []byte) trace.Step {
		in, _, err := annotate.Decode(b)
		if err != nil {
			t.Fatalf("decode % x: %v", b, err)
		}
		return trace.Step{Index: i, RIP: trace.Hex(rip), CPL: 3, Bytes: b, Regs: state(rip, rsp, 3),
			Intel: trace.Disasm(in, b, rip, nil, trace.Intel), ATT: trace.Disasm(in, b, rip, nil, trace.ATT)}
	}
	first := step(0, callSite, stackTop, code)
	if intel != "" {
		first.Intel = intel
	}
	tr := trace.New(
		first,
		step(1, callee, stackTop-8, []byte{0x90}),
		step(2, callee+1, stackTop-8, []byte{0xc3}),
		step(3, ret, stackTop, []byte{0x90}),
	)
	tr.Final = state(ret+1, stackTop, 3)
	if strings.HasPrefix(first.ATT, "bnd") && !strings.HasPrefix(first.Intel, "bnd call") {
		t.Fatalf("a bnd call renders as %q: the test no longer has a call whose text starts otherwise", first.Intel)
	}
	var buf bytes.Buffer
	if err := tr.Write(&buf); err != nil {
		t.Fatal(err)
	}
	back, err := trace.Read(&buf)
	if err != nil {
		t.Fatal(err)
	}
	return back
}

// TestStepOverRecorded: in a replay, `n` on a near call, whatever its
// prefixes and operand, moves to the step after its return; on anything
// else (a far call included) it moves one step.
func TestStepOverRecorded(t *testing.T) {
	for _, tt := range overTests {
		t.Run(tt.name, func(t *testing.T) {
			tr := callTrace(t, tt.code, tt.intel)
			m := New(Config{Driver: NewReplay(tr)})
			m.Update(press("o"))
			want := 1
			if tt.over {
				want = 3
			}
			if m.Pos() != want {
				t.Errorf("n on %q (% x): position %d, want %d", tr.Step(0).Intel, tt.code, m.Pos(), want)
			}
		})
	}
}

// upcomingLive is a live driver whose snapshot ends before an upcoming
// instruction.
type upcomingLive struct {
	fakeLive
	next Line
}

func (u *upcomingLive) Snapshot() Snapshot {
	s := u.fakeLive.Snapshot()
	s.Upcoming = []Line{u.next}
	return s
}

// TestStepOverUpcoming: live, at the end of the record, `n` asks the guest
// to step over the next instruction when it is a near call by its
// operation, and to step it otherwise.
func TestStepOverUpcoming(t *testing.T) {
	for _, tt := range overTests {
		t.Run(tt.name, func(t *testing.T) {
			inst, n, err := annotate.Decode(tt.code)
			if err != nil {
				t.Fatal(err)
			}
			line := Line{Addr: callSite, Bytes: tt.code[:n], Op: inst.Op,
				Intel: trace.Disasm(inst, tt.code, callSite, nil, trace.Intel),
				ATT:   trace.Disasm(inst, tt.code, callSite, nil, trace.ATT)}
			if tt.intel != "" {
				line.Intel = tt.intel
			}
			f := &upcomingLive{fakeLive: fakeLive{src: loadTrace(t), release: make(chan struct{}, 1)}, next: line}
			m := New(Config{Driver: f})
			_, cmd := m.Update(press("o"))
			if cmd == nil || m.busy == nil {
				t.Fatal("n at the end of the record started nothing")
			}
			want := opStep
			if tt.over {
				want = opOver
			}
			if m.busy.kind != want {
				t.Errorf("n before %q: operation %d, want %d", line.Intel, m.busy.kind, want)
			}
			f.release <- struct{}{}
			m.Update(cmd())
		})
	}
}
