// Package target is a live x86-64 guest behind QEMU's gdbstub: it reads
// the registers into x86.States, single-steps the CPU, reads guest memory
// (under the current page tables or another CR3), probes MSRs with rdmsr,
// and reports what a stub exposes.
package target

import (
	"cmp"
	"context"
	"encoding/binary"
	"errors"
	"fmt"

	"github.com/sctrace/sctrace/gdbremote"
	"github.com/sctrace/sctrace/x86"
)

// Target is a live x86-64 guest behind QEMU's gdbstub. It turns the stub's
// register blocks into States, steps the CPU, and reads guest memory,
// caching instruction bytes per page table so that decoding stays off the
// wire.
type Target struct {
	Conn *gdbremote.Conn
	code map[codeKey][]byte

	cpus   []CPU  // the vCPUs, from ListCPUs
	thread string // the vCPU followed (Follow), when there are several

	// Reads counts memory round trips, Steps single steps, for benchmarks
	// and the trace header.
	Reads, Steps int
}

type codeKey struct {
	cr3, line uint64
}

// codeLine is the size of the blocks instruction bytes are read and cached
// in: large enough that a straight run of entry code costs one read, small
// enough that a read never crosses into an unmapped page by accident.
const codeLine = 64

// New wraps an attached connection.
func New(conn *gdbremote.Conn) *Target {
	return &Target{Conn: conn, code: make(map[codeKey][]byte)}
}

// stateRegs maps each State register to its name in the stub's layout.
var stateRegs = func() [x86.NumRegs]string {
	var n [x86.NumRegs]string
	for r := x86.Reg(0); r < x86.NumRegs; r++ {
		n[r] = r.String()
	}
	return n
}()

// StateFrom converts the stub's register values into a State. Registers the
// stub lacks or sent as unknown stay unknown.
func StateFrom(v gdbremote.Values) *x86.State {
	s := &x86.State{}
	for r := x86.Reg(0); r < x86.NumRegs; r++ {
		if x, ok := v.Uint64(stateRegs[r]); ok {
			s.Set(r, x)
		}
	}
	return s
}

// State reads all registers.
func (t *Target) State(ctx context.Context) (*x86.State, error) {
	v, err := t.Conn.ReadRegisters(ctx)
	if err != nil {
		return nil, fmt.Errorf("read registers: %w", err)
	}
	return StateFrom(v), nil
}

// Step executes one instruction and returns the new state. A stop other
// than the single-step trap (the guest exited, say) is an error.
func (t *Target) Step(ctx context.Context) (*x86.State, error) {
	sr, err := t.step(ctx)
	if err != nil {
		return nil, fmt.Errorf("step: %w", err)
	}
	t.Steps++
	if sr.Kind == 'W' || sr.Kind == 'X' {
		return nil, fmt.Errorf("step: %w (%s)", ErrExited, sr)
	}
	return t.State(ctx)
}

// step single-steps the followed vCPU alone (vCont;s:thread), the others
// kept stopped; with one vCPU, or a stub without vCont steps, it sends 's'.
func (t *Target) step(ctx context.Context) (gdbremote.StopReply, error) {
	if _, ok := t.Followed(); !ok {
		return t.Conn.Step(ctx)
	}
	sr, err := t.Conn.StepVCont(ctx, t.thread)
	var ue *gdbremote.UnsupportedError
	if errors.As(err, &ue) {
		return t.Conn.Step(ctx)
	}
	if err == nil && sr.Thread != "" && sr.Thread != t.thread {
		return sr, fmt.Errorf("stepped %s but the stub reports a stop of %s", t.thread, sr.Thread)
	}
	return sr, err
}

// ErrExited is returned when the guest ended while sctrace was driving it.
var ErrExited = errors.New("the guest has exited")

// ReadMemory reads n bytes of guest memory at a virtual address, under the
// current CR3. An unmapped address gives an error that says so.
func (t *Target) ReadMemory(ctx context.Context, addr uint64, n int) ([]byte, error) {
	t.Reads++
	b, err := t.Conn.ReadMemory(ctx, addr, n)
	if err != nil {
		var se *gdbremote.StubError
		if errors.As(err, &se) && se.NotMapped() {
			return nil, fmt.Errorf("read %#x (%d bytes): not mapped under the current CR3: %w", addr, n, err)
		}
		return nil, fmt.Errorf("read %#x (%d bytes): %w", addr, n, err)
	}
	return b, nil
}

// ReadCode returns up to n instruction bytes at addr, as mapped under cr3,
// from the cache when it can. Fewer than n bytes come back when the end of
// the mapping is reached; none is an error.
func (t *Target) ReadCode(ctx context.Context, cr3, addr uint64, n int) ([]byte, error) {
	out := make([]byte, 0, n)
	for len(out) < n {
		a := addr + uint64(len(out))
		line := a &^ (codeLine - 1)
		k := codeKey{cr3 &^ 0xfff, line}
		b, ok := t.code[k]
		if !ok {
			var err error
			b, err = t.ReadMemory(ctx, line, codeLine)
			if err != nil {
				if len(out) > 0 {
					return out, nil
				}
				return nil, err
			}
			t.code[k] = b
		}
		out = append(out, b[a-line:]...)
	}
	return out[:n], nil
}

// InvalidateCode drops cached instruction bytes, for a guest whose code
// changed (a breakpoint written by hand, a module loaded).
func (t *Target) InvalidateCode() { clear(t.code) }

// SysRegs runs `monitor info registers` and parses what the stub does not
// expose as registers: CPL, TR, GDTR, IDTR and the segment caches.
func (t *Target) SysRegs(ctx context.Context) (*x86.SysRegs, error) {
	text, err := t.Conn.Monitor(ctx, "info registers")
	if err != nil {
		return nil, fmt.Errorf("monitor info registers: %w", err)
	}
	return x86.ParseInfoRegisters(text)
}

// ReadUnder reads n bytes at a virtual address as the page tables at cr3
// map it (4-level paging), whatever CR3 the CPU holds now: it walks the
// tables and reads physical memory (Qqemu.PhyMemMode), then puts the stub
// back to virtual addresses. It is for memory the current CR3 does not map,
// such as the kernel's per-CPU data while a KPTI kernel is stopped in user
// mode.
func (t *Target) ReadUnder(ctx context.Context, cr3, addr uint64, n int) (out []byte, err error) {
	if err := t.Conn.SetPhysicalMemoryMode(ctx, true); err != nil {
		return nil, fmt.Errorf("read %#x under CR3 %#x: %w", addr, cr3, err)
	}
	defer func() {
		if perr := t.Conn.SetPhysicalMemoryMode(context.WithoutCancel(ctx), false); perr != nil && err == nil {
			err = fmt.Errorf("read %#x under CR3 %#x: back to virtual addresses: %w", addr, cr3, perr)
		}
	}()
	out = make([]byte, 0, n)
	for len(out) < n {
		va := addr + uint64(len(out))
		pa, size, err := t.translate(ctx, cr3, va)
		if err != nil {
			return nil, err
		}
		chunk := min(uint64(n-len(out)), size-va%size)
		t.Reads++
		b, err := t.Conn.ReadMemory(ctx, pa, int(chunk))
		if err != nil {
			return nil, fmt.Errorf("read %#x under CR3 %#x (physical %#x): %w", va, cr3, pa, err)
		}
		out = append(out, b...)
	}
	return out, nil
}

// frameMask keeps the physical-address bits of a page-table entry.
const frameMask = 0x000f_ffff_ffff_f000

// translate walks the 4-level page tables at cr3 for va, with the stub in
// physical mode, and returns the physical address and the size of the page
// that maps it.
func (t *Target) translate(ctx context.Context, cr3, va uint64) (pa, size uint64, err error) {
	table := cr3 & frameMask
	for level := 4; level >= 1; level-- {
		shift := 12 + 9*uint(level-1)
		slot := table + (va>>shift&511)*8
		t.Reads++
		b, err := t.Conn.ReadMemory(ctx, slot, 8)
		if err != nil || len(b) < 8 {
			return 0, 0, fmt.Errorf("read %#x under CR3 %#x: page-table entry at physical %#x: %w", va, cr3, slot, cmp.Or(err, errors.New("short read")))
		}
		e := binary.LittleEndian.Uint64(b)
		if e&1 == 0 {
			return 0, 0, fmt.Errorf("read %#x: not mapped under CR3 %#x (level %d entry %#x not present)", va, cr3, level, e)
		}
		size = 1 << shift
		if level == 1 || (level <= 3 && e&0x80 != 0) {
			return e&frameMask&^(size-1) | va&(size-1), size, nil
		}
		table = e & frameMask
	}
	panic("unreachable")
}
