package target

import (
	"context"
	"errors"
	"fmt"

	"github.com/sctrace/sctrace/gdbremote"
)

// Target is a live x86-64 guest behind QEMU's gdbstub. It turns the stub's
// register blocks into States, steps the CPU, and reads guest memory,
// caching instruction bytes per page table so that decoding stays off the
// wire.
type Target struct {
	Conn *gdbremote.Conn
	code map[codeKey][]byte

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
var stateRegs = func() [NumRegs]string {
	var n [NumRegs]string
	for r := Reg(0); r < NumRegs; r++ {
		n[r] = r.String()
	}
	return n
}()

// StateFrom converts the stub's register values into a State. Registers the
// stub lacks or sent as unknown stay unknown.
func StateFrom(v gdbremote.Values) *State {
	s := &State{}
	for r := Reg(0); r < NumRegs; r++ {
		if x, ok := v.Uint64(stateRegs[r]); ok {
			s.Set(r, x)
		}
	}
	return s
}

// State reads all registers.
func (t *Target) State(ctx context.Context) (*State, error) {
	v, err := t.Conn.ReadRegisters(ctx)
	if err != nil {
		return nil, fmt.Errorf("read registers: %w", err)
	}
	return StateFrom(v), nil
}

// Step executes one instruction and returns the new state. A stop other
// than the single-step trap (the guest exited, say) is an error.
func (t *Target) Step(ctx context.Context) (*State, error) {
	sr, err := t.Conn.Step(ctx)
	if err != nil {
		return nil, fmt.Errorf("step: %w", err)
	}
	t.Steps++
	if sr.Kind == 'W' || sr.Kind == 'X' {
		return nil, fmt.Errorf("step: %w (%s)", ErrExited, sr)
	}
	return t.State(ctx)
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
func (t *Target) SysRegs(ctx context.Context) (*SysRegs, error) {
	text, err := t.Conn.Monitor(ctx, "info registers")
	if err != nil {
		return nil, fmt.Errorf("monitor info registers: %w", err)
	}
	return ParseInfoRegisters(text)
}
