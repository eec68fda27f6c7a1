package trace

import (
	"fmt"
	"strings"
	"testing"

	"github.com/sctrace/sctrace/gdbremote/gdbstubtest"
	"github.com/sctrace/sctrace/mechanism"
	"github.com/sctrace/sctrace/symbols"
	"github.com/sctrace/sctrace/x86"
)

// TestToEntryPageFault waits for a labelled store that is to page-fault.
// The store (movb $1,(%rdi)) starts a round trip only when the stub cannot
// read the page it writes, as QEMU's stub answers E14 for a page not
// present. A store whose page is mapped is one reached again after its
// fault (on Linux, the guest stopped while the kernel handled it, or the
// last round trip's end): it is stepped over and the next one waited for,
// a few times at most.
func TestToEntryPageFault(t *testing.T) {
	const (
		store    = 0x402000
		unmapped = 0x500000
		mapped   = userRSP - 0x100
	)
	at := func(rdi uint64) gdbstubtest.Stop {
		return gdbstubtest.Stop{Regs: map[string]uint64{"rip": store, "rdi": rdi}}
	}
	ran := gdbstubtest.Stop{Regs: map[string]uint64{"rip": store + 3}}
	tests := []struct {
		name    string
		script  []gdbstubtest.Stop
		bps     int // hardware breakpoints set
		steps   int // single steps
		wantErr string
	}{
		{"fresh page", []gdbstubtest.Stop{at(unmapped)}, 1, 0, ""},
		{"store run again after its fault", []gdbstubtest.Stop{at(mapped), ran, at(unmapped)}, 2, 1, ""},
		{"never faults", []gdbstubtest.Stop{at(mapped), ran, at(mapped), ran, at(mapped)}, 3, 2, "which is mapped already, 3 times in a row: it will not page-fault"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			syms := symbols.New("test", []symbols.Symbol{{Name: mechanism.PageFault.UserLabel(), Addr: store, Type: 'T'}})
			stub, r, ctx := newGuest(t, syms)
			stub.Map(store, []byte{0xc6, 0x07, 0x01, 0x90}) // movb $1,(%rdi); nop
			stub.Script(tt.script...)
			before := len(stub.Requests())
			err := r.ToEntry(ctx, mechanism.PageFault)
			if tt.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
					t.Fatalf("err = %v, want %q", err, tt.wantErr)
				}
			} else if err != nil {
				t.Fatal(err)
			} else if got := r.Current(); got.Val(x86.RIP) != store || got.Val(x86.RDI) != unmapped {
				t.Errorf("stopped at %#x with rdi %#x, want the store %#x writing %#x", got.Val(x86.RIP), got.Val(x86.RDI), uint64(store), uint64(unmapped))
			}
			bps, steps := 0, 0
			for _, req := range stub.Requests()[before:] {
				var a uint64
				if _, err := fmt.Sscanf(req, "Z1,%x,1", &a); err == nil && a == store {
					bps++
				}
				if req == "s" || strings.HasPrefix(req, "vCont;s") {
					steps++
				}
			}
			if bps != tt.bps || steps != tt.steps {
				t.Errorf("%d breakpoints at the store and %d steps, want %d and %d", bps, steps, tt.bps, tt.steps)
			}
			if n := stub.Breakpoints(); len(n) != 0 {
				t.Errorf("breakpoints left: %v", n)
			}
		})
	}
}
