package target

import (
	"context"
	"errors"
	"fmt"

	"github.com/sctrace/sctrace/gdbremote"
)

// ReadPhysical reads n bytes of guest physical memory: the stub is
// switched to physical addresses (Qqemu.PhyMemMode) for the read and back
// to virtual ones after it, whatever happens. An address with no memory
// behind it gives an error that says so.
func (t *Target) ReadPhysical(ctx context.Context, addr uint64, n int) (_ []byte, err error) {
	if err := t.Conn.SetPhysicalMemoryMode(ctx, true); err != nil {
		return nil, fmt.Errorf("read physical %#x: %w", addr, err)
	}
	defer func() {
		if perr := t.Conn.SetPhysicalMemoryMode(context.WithoutCancel(ctx), false); perr != nil && err == nil {
			err = fmt.Errorf("read physical %#x: back to virtual addresses: %w", addr, perr)
		}
	}()
	t.Reads++
	b, err := t.Conn.ReadMemory(ctx, addr, n)
	if err != nil {
		var se *gdbremote.StubError
		if errors.As(err, &se) && se.NotMapped() {
			return nil, fmt.Errorf("physical %#x: no memory there", addr)
		}
		return nil, fmt.Errorf("read physical %#x: %w", addr, err)
	}
	return b, nil
}
