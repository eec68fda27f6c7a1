package target

import (
	"bytes"
	"strings"
	"testing"

	"github.com/sctrace/sctrace/gdbremote/gdbstubtest"
	"github.com/sctrace/sctrace/internal/testenv"
)

// TestReadPhysical reads through the fake stub (which plays QEMU's: E14
// where no memory is) with the stub switched to physical addresses, and
// checks that it is switched back on every path.
func TestReadPhysical(t *testing.T) {
	stub := gdbstubtest.New(t)
	stub.Map(0x5000, []byte{1, 2, 3, 4})
	ctx, conn := testenv.DialStub(t, stub)
	tg := New(conn)
	b, err := tg.ReadPhysical(ctx, 0x5000, 4)
	if err != nil || !bytes.Equal(b, []byte{1, 2, 3, 4}) {
		t.Errorf("ReadPhysical = % x, %v", b, err)
	}
	if stub.PhysicalMemoryMode() {
		t.Error("left in physical mode after a read")
	}
	if _, err := tg.ReadPhysical(ctx, 0x7000000000, 8); err == nil || !strings.Contains(err.Error(), "physical 0x7000000000: no memory there") {
		t.Errorf("ReadPhysical of nothing = %v", err)
	}
	if stub.PhysicalMemoryMode() {
		t.Error("left in physical mode after a failed read")
	}
	var phys []string
	for _, r := range stub.Requests() {
		if strings.HasPrefix(r, "Qqemu.PhyMemMode") {
			phys = append(phys, r)
		}
	}
	if strings.Join(phys, " ") != "Qqemu.PhyMemMode:1 Qqemu.PhyMemMode:0 Qqemu.PhyMemMode:1 Qqemu.PhyMemMode:0" {
		t.Errorf("mode switches: %q", phys)
	}
}
