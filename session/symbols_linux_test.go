package session

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/sctrace/sctrace/annotate"
	"github.com/sctrace/sctrace/internal/testenv"
	"github.com/sctrace/sctrace/linux"
	"github.com/sctrace/sctrace/mechanism"
	"github.com/sctrace/sctrace/symbols"
	"github.com/sctrace/sctrace/trace"
)

// TestLinuxSymbolNames records int $0x80 round trips on Debian's 6.1 and
// 6.12 kernels, named from kallsyms, and checks the names. The facts: the
// exit path runs swapgs_restore_regs_and_return_to_usermode, the first
// instruction of common_interrupt_return in arch/x86/entry/entry_64.S,
// where the linker script also puts __irqentry_text_end; both kernels'
// returns jump to its_return_thunk, the Indirect Target Selection thunk of
// arch/x86/lib/retpoline.S (Debian's 6.1.0-57 and 6.12.118 have it).
func TestLinuxSymbolNames(t *testing.T) {
	for _, series := range []string{"6.1", "6.12"} {
		t.Run(series, func(t *testing.T) {
			tr, _ := linuxTrace(t, series, mechanism.Int80, func(*Session) {})
			seen := map[string]bool{}
			for _, st := range tr.All() {
				name, _, _ := strings.Cut(st.Symbol, "+")
				seen[name] = true
				if symbols.IsMarker(name) {
					t.Errorf("step %d %s is named after the linker marker %s", st.Index, st.ATT, st.Symbol)
				}
				for _, e := range st.Effects {
					if e.Kind == annotate.KindMitigation && strings.Contains(e.Text, "its_return_thunk") &&
						(!strings.Contains(e.Text, "Indirect Target Selection") || strings.Contains(e.Text, "retbleed/SRSO")) {
						t.Errorf("step %d: %q: its_return_thunk is the Indirect Target Selection thunk", st.Index, e.Text)
					}
				}
			}
			for _, want := range []string{"swapgs_restore_regs_and_return_to_usermode", "its_return_thunk"} {
				if !seen[want] {
					t.Errorf("the int $0x80 round trip never names %s", want)
				}
			}
		})
	}
}

// TestLinuxAttachSymbolFiles attaches to a Debian kernel with a symbol
// file, as `sctrace trace --attach ... --symbols FILE` does, and compares
// the trace with the one named from kallsyms on the same guest. The facts:
// the System.map in Debian's linux-image packages is a one-line placeholder
// ("The real System.map is in the linux-image-<version>-dbg package");
// a real System.map (nm of vmlinux) lists the per-CPU variables as data at
// their link-time offsets from 0 (fixed_percpu_data and __per_cpu_start at
// 0); entry_SYSCALL_64 pushes __USER_DS, 0x2b, as pt_regs->ss; the stacks
// (entry stack, task stack) come from the machine (TR's base, the per-CPU
// top of stack), not from the symbol file.
func TestLinuxAttachSymbolFiles(t *testing.T) {
	for _, series := range []string{"6.1", "6.12"} {
		t.Run(series, func(t *testing.T) {
			var sysmap string
			ref, s := linuxTrace(t, series, mechanism.Syscall, func(s *Session) {
				sysmap = writeSystemMap(t, s.linux.tab)
			})
			addr := s.QEMU.GDBAddr
			placeholder, err := filepath.Abs("../symbols/testdata/System.map-debian-placeholder")
			if err != nil {
				t.Fatal(err)
			}

			// Debian's placeholder: refused, and kallsyms used instead.
			tr, notes := attachTrace(t, addr, placeholder)
			if !slices.ContainsFunc(notes, func(n string) bool {
				return strings.Contains(n, "refused") && strings.Contains(n, "-dbg package") && strings.Contains(n, "kallsyms")
			}) {
				t.Errorf("notes %q do not say the placeholder was refused for kallsyms", notes)
			}
			if !strings.Contains(tr.Header.Symbols, "kallsyms") || !strings.Contains(tr.Header.Symbols, "refused") {
				t.Errorf("header symbols %q: want kallsyms, and why the file was refused", tr.Header.Symbols)
			}
			sameKernelNames(t, "placeholder", ref, tr, func(st *trace.Step) string { return st.Symbol })

			// A real System.map: per-CPU symbols go to the GS base, constants
			// stay numbers, and the stacks are the machine's.
			tr, _ = attachTrace(t, addr, sysmap)
			if len(tr.Header.Regions) == 0 {
				t.Errorf("no regions in the header with --symbols System.map")
			}
			sameKernelNames(t, "System.map", ref, tr, func(st *trace.Step) string { return st.ATT })
			got, want := trace.Summarize(tr).Stacks, trace.Summarize(ref).Stacks
			if len(got) == 0 || !slices.Equal(got, want) {
				t.Errorf("stacks with System.map %q, with kallsyms %q", got, want)
			}
			pushed := false
			for _, st := range tr.All() {
				if st.CPL == 0 && string(st.Bytes) == "\x6a\x2b" {
					pushed = true
					if st.ATT != "pushq $0x2b" {
						t.Errorf("step %d: %q, want pushq $0x2b (__USER_DS)", st.Index, st.ATT)
					}
				}
			}
			if !pushed {
				t.Errorf("entry_SYSCALL_64 never pushed __USER_DS")
			}
		})
	}
}

// linuxTrace boots a Debian kernel of series looping on m, calls with(s)
// once it is ready, records one round trip named from kallsyms, and
// detaches, leaving the guest running for attachTrace; the test's clean-up
// ends QEMU.
func linuxTrace(t *testing.T, series string, m mechanism.Mechanism, with func(*Session)) (*trace.Trace, *Session) {
	t.Helper()
	kernel := testenv.LinuxKernel(t, series)
	ctx, cancel := context.WithTimeout(context.Background(), 150*time.Second)
	defer cancel()
	s, err := StartLinux(ctx, LinuxOptions{Options: Options{Accel: "tcg", Mechanism: m, Keep: true}, Kernel: kernel})
	if err != nil {
		t.Fatal(err)
	}
	kept(t, s)
	with(s)
	tr, err := s.RoundTrip(ctx, m)
	if err != nil {
		t.Fatal(err)
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	return tr, s
}

// attachTrace attaches to addr with the symbol file symfile and records
// a syscall round trip.
func attachTrace(t *testing.T, addr, symfile string) (*trace.Trace, []string) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 120*time.Second)
	defer cancel()
	s, err := Attach(ctx, addr, Options{Symbols: symfile, Mechanism: mechanism.Syscall})
	if err != nil {
		t.Fatalf("attach with %s: %v", symfile, err)
	}
	defer s.Close()
	tr, err := s.RoundTrip(ctx, mechanism.Syscall)
	if err != nil {
		t.Fatal(err)
	}
	return tr, s.Notes
}

// sameKernelNames checks that the kernel steps of got read as those of ref
// (the same path, named from kallsyms).
func sameKernelNames(t *testing.T, what string, ref, got *trace.Trace, field func(*trace.Step) string) {
	t.Helper()
	if got.Len() != ref.Len() {
		t.Fatalf("%s: %d steps, %d with kallsyms", what, got.Len(), ref.Len())
	}
	bad := 0
	for i := range ref.Len() {
		r, g := ref.Step(i), got.Step(i)
		if r.CPL == 0 && field(g) != field(r) {
			if bad++; bad <= 5 {
				t.Errorf("%s: step %d reads %q, with kallsyms %q", what, i, field(g), field(r))
			}
		}
	}
}

// writeSystemMap writes tab as a System.map as nm prints one for vmlinux:
// the per-CPU variables, which kallsyms marks absolute, are data symbols in
// the vmlinux's .data..percpu section.
func writeSystemMap(t *testing.T, tab *symbols.Table) string {
	t.Helper()
	var b strings.Builder
	for _, s := range tab.Symbols() {
		typ := s.Type
		if linux.IsPerCPU(s) {
			typ = 'D'
		}
		fmt.Fprintf(&b, "%016x %c %s\n", s.Addr, typ, s.Name)
	}
	p := filepath.Join(t.TempDir(), "System.map")
	if err := os.WriteFile(p, []byte(b.String()), 0o644); err != nil {
		t.Fatal(err)
	}
	return p
}
