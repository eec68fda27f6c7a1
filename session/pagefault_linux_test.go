package session

import (
	"context"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/sctrace/sctrace/annotate"
	"github.com/sctrace/sctrace/fixtures/linuxinit"
	"github.com/sctrace/sctrace/internal/testenv"
	"github.com/sctrace/sctrace/mechanism"
	"github.com/sctrace/sctrace/trace"
	"github.com/sctrace/sctrace/x86"
)

// TestLinuxPageFault records a page fault from user mode on Debian's
// kernels: /init, chosen by the mechanism to loop on mmap, writes to the
// page it has just mapped (init_touch_insn, from /init's ELF). The store
// delivers #PF through IDT[14] to asm_exc_page_fault (from kallsyms) at
// CPL 0 on the entry stack TSS.RSP0 gives (Linux's #PF gate has IST 0),
// minus the six-word frame with its error code: not present, write, user
// (the SDM's #PF error code), and CR2 the page's address, which mmap
// returned in RDI. The handler moves to the task stack, calls
// exc_page_fault and handle_mm_fault, and iretq returns at CPL 3 to the
// same store with the same RSP, with no finding on the way. gdb's stepi
// loop then counts the same path on the same guest (see below for what
// varies between faults).
func TestLinuxPageFault(t *testing.T) {
	for _, series := range []string{"6.1", "6.12"} {
		t.Run(series, func(t *testing.T) {
			testenv.NeedTools(t, "gdb") // it counts the path sctrace records
			kernel := testenv.LinuxKernel(t, series)
			ctx, cancel := context.WithTimeout(context.Background(), 400*time.Second)
			defer cancel()
			o := LinuxOptions{Options: Options{Accel: "tcg", Keep: true}, Kernel: kernel}
			m, err := o.ChooseMechanism(mechanism.PageFault, true)
			if err != nil {
				t.Fatal(err)
			}
			s, err := StartLinux(ctx, o)
			if err != nil {
				t.Fatal(err)
			}
			kept(t, s)
			tr, err := s.RoundTrip(ctx, m)
			if err != nil {
				t.Fatal(err)
			}
			t.Logf("%s: %d instructions from the store to iretq", s.Kernel, tr.Len())
			if tr.Header.Stop != string(trace.StopUser) || tr.Len() < 100 {
				t.Fatalf("stopped: %s after %d steps", tr.Header.Stop, tr.Len())
			}
			touch := initSymbols(t)[linuxinit.TouchInsn]
			handler, ok := s.Symbols.Addr("asm_exc_page_fault")
			if !ok {
				t.Fatal("no asm_exc_page_fault in kallsyms")
			}
			st0, st1 := tr.Step(0), tr.Step(1)
			if st0.CPL != 3 || uint64(st0.RIP) != touch || st1.CPL != 0 || uint64(st1.RIP) != handler {
				t.Errorf("step 0 %#x at CPL %d, step 1 %s %#x at CPL %d; want %s %#x at CPL 3, then asm_exc_page_fault %#x at CPL 0",
					uint64(st0.RIP), st0.CPL, st1.Symbol, uint64(st1.RIP), st1.CPL, linuxinit.TouchInsn, touch, handler)
			}

			// The frame on the entry stack, its error code and CR2.
			page := st0.Regs.Val(x86.RDI) // mmap's result, the store's address
			if got := st1.Regs.Val(x86.CR2); got != page {
				t.Errorf("cr2 at the handler = %#x, want %#x, the page mmap returned", got, page)
			}
			rsp := st1.Regs.Val(x86.RSP)
			ctx2 := &annotate.Context{Regions: tr.Header.Regions}
			if r, ok := ctx2.RegionOf(rsp); !ok || r.Kind != annotate.RegionEntryStack {
				t.Errorf("rsp at the handler %#x is not on the entry stack (%+v)", rsp, r)
			} else if want := r.End - 48; rsp != want {
				t.Errorf("rsp at the handler %#x, want %#x: the entry stack's top minus the 48-byte frame with its error code", rsp, want)
			}
			wantErr := x86.PFWrite | x86.PFUser
			// The annotator reads the word the CPU pushed below the frame
			// and spells its bits.
			var explained bool
			for _, e := range st0.Effects {
				explained = explained || strings.Contains(e.Text, fmt.Sprintf("error code %#x: %s", uint64(wantErr), wantErr))
			}
			if !explained {
				t.Errorf("step 0 does not explain the error code %#x (%s): %v", uint64(wantErr), wantErr, st0.Effects)
			}

			seen := map[string]bool{}
			for _, st := range tr.All() {
				name, _, _ := strings.Cut(st.Symbol, "+")
				seen[name] = true
				if st.Index > 0 && st.CPL != 0 {
					t.Errorf("step %d %s at CPL %d: between the fault and iretq the CPU stays at CPL 0", st.Index, st.Symbol, st.CPL)
					break
				}
			}
			for _, fn := range []string{"exc_page_fault", "handle_mm_fault"} {
				if !seen[fn] {
					t.Errorf("the trace never passes %s", fn)
				}
			}
			checkIretqPath(t, tr)
			if tr.Final.CPL() != 3 || tr.Final.Val(x86.RIP) != touch || tr.Final.Val(x86.RSP) != st0.Regs.Val(x86.RSP) {
				t.Errorf("ended at %#x (rsp %#x) CPL %d, want %#x (rsp %#x) CPL 3: the store, to run again",
					tr.Final.Val(x86.RIP), tr.Final.Val(x86.RSP), tr.Final.CPL(), touch, st0.Regs.Val(x86.RSP))
			}

			// The path is counted again by gdb alone on the same guest, on
			// later faults (a fault is spent once recorded). It does not
			// vary with the page: each turn of /init's loop maps one page
			// and unmaps it, so the allocator's per-CPU lists, the page
			// tables and the statistics come back as they were. What
			// varies is a per-CPU counter crossing its threshold now and
			// then: a fault then folds it into the node's or the memory
			// cgroup's total (__mod_node_page_state, __count_memcg_events
			// have been seen to), a few instructions more; and the first
			// fault after boot finds the counters as boot left them. (From
			// one boot to the next the length changes more: on 6.1, 6622
			// or 7900 instructions, the second when the page is alone in
			// its 512 GiB region, one top-level entry, and __pud_alloc
			// runs as well, which user address randomisation decides.) So
			// sctrace records faults until two in a row agree (the path
			// of a fault that folds nothing) and gdb counts three more,
			// which must agree with it but for one fold at most.
			steady := tr.Len()
			for try := 0; try < 5; try++ {
				next, err := s.RoundTrip(ctx, m)
				if err != nil {
					t.Fatal(err)
				}
				if next.Header.Stop != string(trace.StopUser) || uint64(next.Step(0).RIP) != touch {
					t.Fatalf("fault %d: stopped %s after %d steps, starting at %#x", try+2, next.Header.Stop, next.Len(), uint64(next.Step(0).RIP))
				}
				n := next.Len()
				t.Logf("fault %d: %d instructions", try+2, n)
				if n == steady {
					break
				}
				steady = n
			}
			// Stepped over at depth 1, every call the handler makes runs
			// to its return: error_entry's too, which returns with the
			// stack moved (the registers it saved left on the entry stack),
			// so its return is found by the return address gone from the
			// stack, not by RSP as it was.
			s.Recorder.Over = 1
			over, err := s.RoundTrip(ctx, m)
			s.Recorder.Over = 0
			if err != nil {
				t.Fatalf("stepping over calls: %v", err)
			}
			if over.Header.Stop != string(trace.StopUser) || over.Final.Val(x86.RIP) != touch || over.Len() >= steady {
				t.Errorf("stepping over calls: stopped %s after %d steps (%d stepping into them) at %#x, want back at the store %#x",
					over.Header.Stop, over.Len(), steady, over.Final.Val(x86.RIP), touch)
			}
			var overEntry bool
			for _, st := range over.All() {
				overEntry = overEntry || st.Over != nil && strings.Contains(st.Over.Target, "error_entry")
			}
			if ev := countEvents(over); !overEntry || ev.findings != 0 {
				t.Errorf("stepping over calls: error_entry stepped over %v, %d findings; want it stepped over and none", overEntry, ev.findings)
			}
			if err := s.Close(); err != nil {
				t.Fatal(err)
			}
			counts, ends := gdbStepiCount(ctx, t, s.QEMU.GDBAddr, touch, 3)
			t.Logf("gdb stepi counts of the next three faults: %v", counts)
			same := 0
			for i, n := range counts {
				if ends[i] != touch {
					t.Fatalf("gdb's stepi loop %d ended at %#x, not back at the store %#x", i, ends[i], touch)
				}
				if n == steady {
					same++
				}
			}
			if same < 2 {
				t.Errorf("sctrace recorded %d instructions on a fault that folded no counter, gdb's stepi counted %v on the next three", steady, counts)
			}
		})
	}
}
