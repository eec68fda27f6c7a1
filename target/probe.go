package target

import (
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"fmt"

	"github.com/sctrace/sctrace/x86"
)

// MSRReading is the result of reading one MSR with the probe.
type MSRReading struct {
	Index uint32
	Value uint64
	// Err is set when rdmsr faulted (#GP: the CPU has no such MSR) rather
	// than returned a value.
	Err error
}

// ErrNotKernel is returned by ProbeMSRs when the CPU is not at CPL 0.
var ErrNotKernel = errors.New("the CPU is not at CPL 0")

// rdmsr is the encoding of RDMSR: ECX selects the MSR, EDX:EAX get it.
var rdmsr = []byte{0x0f, 0x32}

// probeRegs are the registers the probe changes and puts back.
var probeRegs = []x86.Reg{x86.RAX, x86.RCX, x86.RDX, x86.RIP, x86.RFLAGS, x86.RSP, x86.CS, x86.SS}

// stackGuard is how many bytes below RSP the probe saves and puts back: a
// faulting rdmsr makes the CPU push an exception frame there.
const stackGuard = 64

// ProbeMSRs reads MSRs that QEMU's stub does not expose by running RDMSR in
// the guest. The CPU must be stopped at CPL 0. For each MSR the probe writes
// the two bytes of RDMSR over the instruction at RIP, sets ECX, steps once
// and reads EDX:EAX; afterwards it puts back every byte and register it
// touched (the instruction bytes, the stack below RSP, RAX, RCX, RDX, RIP,
// RFLAGS, RSP, CS, SS) and checks that the state reads as before. An MSR
// the CPU does not have raises #GP instead; that reading carries an error
// and the probe goes on with the next one. (QEMU's TCG does not fault: it
// reads an MSR it does not emulate as 0.)
func (t *Target) ProbeMSRs(ctx context.Context, msrs []uint32) (readings []MSRReading, err error) {
	before, err := t.State(ctx)
	if err != nil {
		return nil, err
	}
	if before.CPL() != 0 {
		return nil, fmt.Errorf("probe MSRs: %w (CPL %d): rdmsr is a kernel instruction, so stop the guest in the kernel first", ErrNotKernel, before.CPL())
	}
	for _, r := range probeRegs {
		if !before.Has(r) {
			return nil, fmt.Errorf("probe MSRs: register %s unknown, so it could not be put back", r)
		}
	}
	rip, rsp := before.Val(x86.RIP), before.Val(x86.RSP)
	code, err := t.ReadMemory(ctx, rip, len(rdmsr))
	if err != nil {
		return nil, fmt.Errorf("probe MSRs: %w", err)
	}
	stack, err := t.ReadMemory(ctx, rsp-stackGuard, stackGuard)
	if err != nil {
		return nil, fmt.Errorf("probe MSRs: %w", err)
	}
	if err := t.Conn.WriteMemory(ctx, rip, rdmsr); err != nil {
		return nil, fmt.Errorf("probe MSRs: write rdmsr at %#x: %w", rip, err)
	}
	t.InvalidateCode()
	defer func() {
		if rerr := t.restore(context.WithoutCancel(ctx), before, code, stack); rerr != nil {
			err = errors.Join(err, rerr)
		}
	}()
	for _, msr := range msrs {
		if err := t.setRegs(ctx, before, map[x86.Reg]uint64{x86.RCX: uint64(msr)}); err != nil {
			return readings, err
		}
		if _, err := t.step(ctx); err != nil {
			return readings, fmt.Errorf("probe MSRs: step rdmsr: %w", err)
		}
		st, err := t.State(ctx)
		if err != nil {
			return readings, err
		}
		if st.Val(x86.RIP) != rip+uint64(len(rdmsr)) {
			readings = append(readings, MSRReading{Index: msr, Err: fmt.Errorf("rdmsr %#x faulted: the CPU went to %#x", msr, st.Val(x86.RIP))})
			continue
		}
		readings = append(readings, MSRReading{Index: msr, Value: st.Val(x86.RDX)<<32 | st.Val(x86.RAX)&0xffffffff})
	}
	return readings, nil
}

// setRegs writes the probe's registers back to their values in st, with
// the overrides in set.
func (t *Target) setRegs(ctx context.Context, st *x86.State, set map[x86.Reg]uint64) error {
	for _, r := range probeRegs {
		v := st.Val(r)
		if o, ok := set[r]; ok {
			v = o
		}
		if err := t.WriteRegister(ctx, r, v); err != nil {
			return fmt.Errorf("probe MSRs: %w", err)
		}
	}
	return nil
}

// WriteRegister writes one register with the size the stub's layout gives
// it.
func (t *Target) WriteRegister(ctx context.Context, r x86.Reg, v uint64) error {
	for _, l := range t.Conn.Layout() {
		if l.Name != r.String() {
			continue
		}
		b := binary.LittleEndian.AppendUint64(nil, v)
		if l.Size() > len(b) {
			return fmt.Errorf("write %s: %d-byte register", r, l.Size())
		}
		if err := t.Conn.WriteRegister(ctx, l.Name, b[:l.Size()]); err != nil {
			return fmt.Errorf("write %s: %w", r, err)
		}
		return nil
	}
	return fmt.Errorf("write %s: not in the stub's register layout", r)
}

// restore puts back what the probe changed and checks it took.
func (t *Target) restore(ctx context.Context, before *x86.State, code, stack []byte) error {
	rip, rsp := before.Val(x86.RIP), before.Val(x86.RSP)
	var errs []error
	if err := t.Conn.WriteMemory(ctx, rip, code); err != nil {
		errs = append(errs, fmt.Errorf("put back the instruction at %#x: %w", rip, err))
	}
	if err := t.Conn.WriteMemory(ctx, rsp-stackGuard, stack); err != nil {
		errs = append(errs, fmt.Errorf("put back the stack below %#x: %w", rsp, err))
	}
	t.InvalidateCode()
	if err := t.setRegs(ctx, before, nil); err != nil {
		errs = append(errs, err)
	}
	if len(errs) > 0 {
		return fmt.Errorf("probe MSRs: the guest may be left changed: %w", errors.Join(errs...))
	}
	after, err := t.State(ctx)
	if err != nil {
		return err
	}
	if ch := before.Changed(after); len(ch) > 0 {
		return fmt.Errorf("probe MSRs: registers %v differ after putting them back", ch)
	}
	gotCode, err1 := t.ReadMemory(ctx, rip, len(code))
	gotStack, err2 := t.ReadMemory(ctx, rsp-stackGuard, len(stack))
	if err := errors.Join(err1, err2); err != nil {
		return err
	}
	if !bytes.Equal(gotCode, code) || !bytes.Equal(gotStack, stack) {
		return errors.New("probe MSRs: memory differs after putting it back")
	}
	return nil
}
