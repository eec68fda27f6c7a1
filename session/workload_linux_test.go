package session

import (
	"bytes"
	"context"
	"debug/elf"
	"testing"
	"time"

	"github.com/sctrace/sctrace/fixtures/linuxinit"
	"github.com/sctrace/sctrace/internal/testenv"
	"github.com/sctrace/sctrace/mechanism"
	"github.com/sctrace/sctrace/syscalls"
	"github.com/sctrace/sctrace/x86"
)

// initSymbols returns the addresses of /init's ELF symbols.
func initSymbols(t *testing.T) map[string]uint64 {
	t.Helper()
	f, err := elf.NewFile(bytes.NewReader(linuxinit.ELF))
	if err != nil {
		t.Fatal(err)
	}
	syms, err := f.Symbols()
	if err != nil {
		t.Fatal(err)
	}
	out := map[string]uint64{}
	for _, s := range syms {
		out[s.Name] = s.Value
	}
	return out
}

// TestLinuxWorkloads boots Debian's kernels with /init in each mode that
// makes a long system call, runs to the marked instruction the way a trace
// starts, checks that RAX holds the call's number from the x86-64 ABI list
// there, and then that the call did what it is for: execve started the new
// image, fork made a child, read returned the file's 64 KiB, mmap's page
// faults on its first touch, nanosleep returned 0.
func TestLinuxWorkloads(t *testing.T) {
	abi := syscalls.ABI()
	addr := initSymbols(t)
	const syscallLen = 2 // 0f 05
	for _, series := range []string{"6.1", "6.12"} {
		for _, mode := range []string{linuxinit.Execve, linuxinit.Fork, linuxinit.Read, linuxinit.Mmap, linuxinit.Nanosleep} {
			t.Run(series+"/"+mode, func(t *testing.T) {
				kernel := testenv.LinuxKernel(t, series)
				w, ok := linuxinit.Lookup(mode)
				if !ok {
					t.Fatalf("no workload %s", mode)
				}
				call, ok := abi.ByName(w.Call)
				if !ok {
					t.Fatalf("%s is not in %s", w.Call, abi.Source)
				}
				ctx, cancel := context.WithTimeout(context.Background(), 240*time.Second)
				defer cancel()
				s, err := StartLinux(ctx, LinuxOptions{Options: Options{Accel: "tcg"}, Kernel: kernel, Mode: mode})
				if err != nil {
					t.Fatal(err)
				}
				defer s.Close()
				if err := s.ToEntry(ctx, mechanism.Syscall); err != nil {
					t.Fatal(err)
				}
				rec := s.Recorder
				st := rec.Current()
				if got, want := st.Val(x86.RIP), addr[w.Insn]; got != want {
					t.Fatalf("stopped at %#x, want %s at %#x", got, w.Insn, want)
				}
				if got := st.Val(x86.RAX); got != uint64(call.Nr) {
					t.Fatalf("RAX = %d at %s, want %d (%s in %s)", got, w.Insn, call.Nr, call.Name, abi.Source)
				}
				after := addr[w.Insn] + syscallLen
				switch mode {
				case linuxinit.Execve:
					// Only an image execve started with "execed" reaches
					// this getpid.
					if err := rec.RunTo(ctx, addr[linuxinit.ExecedInsn]); err != nil {
						t.Fatalf("the new image did not make its marked call: %v", err)
					}
					getpid, _ := abi.ByName("getpid")
					if got := rec.Current().Val(x86.RAX); got != uint64(getpid.Nr) {
						t.Errorf("RAX = %d at %s, want getpid's %d", got, linuxinit.ExecedInsn, getpid.Nr)
					}
				case linuxinit.Fork:
					// Parent and child both come back to the instruction
					// after the syscall, in either order: one with the
					// child's pid, one with 0. The child may come back
					// twice, since its first fetch there can fault (a fork
					// copies no page-table entries of file-backed text),
					// and the fault returns to the same instruction.
					var child, parent bool
					var got []uint64
					for i := 0; i < 6 && !(child && parent); i++ {
						if err := rec.RunTo(ctx, after); err != nil {
							t.Fatal(err)
						}
						rax := rec.Current().Val(x86.RAX)
						got = append(got, rax)
						child = child || rax == 0
						parent = parent || (rax > 1 && rax < 1<<22)
						// Off the breakpoint, stepping again when QEMU
						// reports a step with nothing run.
						for range 3 {
							st, err := rec.T.Step(ctx)
							if err != nil {
								t.Fatal(err)
							}
							if st.Val(x86.RIP) != after {
								break
							}
						}
					}
					if !child || !parent {
						t.Errorf("fork returned %d: want a child pid and 0", got)
					}
					t.Logf("fork returned %d", got)
				case linuxinit.Read:
					if err := rec.RunTo(ctx, after); err != nil {
						t.Fatal(err)
					}
					if got := rec.Current().Val(x86.RAX); got != linuxinit.ReadSize {
						t.Fatalf("read returned %#x, want %#x", got, linuxinit.ReadSize)
					}
					buf, err := rec.T.ReadMemory(ctx, rec.Current().Val(x86.RSI), linuxinit.ReadSize)
					if err != nil {
						t.Fatal(err)
					}
					if !bytes.Equal(buf, linuxinit.ReadData()) {
						t.Error("the buffer read does not hold the file's contents")
					}
				case linuxinit.Mmap:
					if err := rec.RunTo(ctx, addr[linuxinit.TouchInsn]); err != nil {
						t.Fatal(err)
					}
					page := rec.Current().Val(x86.RDI)
					if page&0xfff != 0 || page >= 1<<47 {
						t.Fatalf("mmap gave %#x, want a page-aligned user address", page)
					}
					// The first touch faults: one step lands on the
					// page-fault entry with CR2 naming the page.
					st, err := rec.T.Step(ctx)
					if err != nil {
						t.Fatal(err)
					}
					if name := s.Symbols.Symbolize(st.Val(x86.RIP)); name != "asm_exc_page_fault" {
						t.Errorf("the touch went to %#x <%s>, want asm_exc_page_fault", st.Val(x86.RIP), name)
					}
					if got := st.Val(x86.CR2); got != page {
						t.Errorf("CR2 = %#x after the touch, want the page %#x", got, page)
					}
				case linuxinit.Nanosleep:
					if err := rec.RunTo(ctx, after); err != nil {
						t.Fatal(err)
					}
					if got := rec.Current().Val(x86.RAX); got != 0 {
						t.Errorf("nanosleep returned %#x, want 0", got)
					}
				}
				if bytes.Contains([]byte(s.Serial.String()), []byte("failed")) {
					t.Errorf("/init reported a failure:\n%s", s.Serial.String())
				}
			})
		}
	}
}
