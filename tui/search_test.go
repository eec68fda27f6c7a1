package tui

import (
	"testing"

	"github.com/sctrace/sctrace/annotate"
	"github.com/sctrace/sctrace/trace"
	"github.com/sctrace/sctrace/x86"
)

// TestSearchSymbolSuffixes: /@SYM finds the steps of function SYM also
// when the compiler renamed it with its suffixes (.isra.N, .constprop.N,
// .part.N, .cold), as Debian kernels name do_execveat_common.isra.0; an
// offset must match exactly, and a longer name is another function.
func TestSearchSymbolSuffixes(t *testing.T) {
	syms := []string{
		"entry_syscall_64+0x4",
		"do_execveat_common.isra.0",
		"do_execveat_common.isra.0+0x10",
		"copy_strings.constprop.0.isra.0+0x3",
		"copy_strings_kernel+0x1",
		"bprm_execve.cold+0x2",
		"__x64_sys_execve.part.0",
	}
	var steps []trace.Step
	for i, s := range syms {
		rip := uint64(0xffffffff81000000) + uint64(0x100*i)
		st := &x86.State{}
		st.Set(x86.RIP, rip)
		st.Set(x86.CS, 0x10)
		b := []byte{0x90}
		in, _, err := annotate.Decode(b)
		if err != nil {
			t.Fatal(err)
		}
		steps = append(steps, trace.Step{Index: i, RIP: trace.Hex(rip), Symbol: s, CPL: 0, Bytes: b,
			Regs: st, Op: in.Op,
			Intel: trace.Disasm(in, b, rip, nil, trace.Intel), ATT: trace.Disasm(in, b, rip, nil, trace.ATT)})
	}
	tr := trace.New(steps...)
	tests := []struct {
		query string
		want  int // -1: not found
	}{
		{"@do_execveat_common", 1},
		{"@do_execveat_common+0x10", 2},
		{"@do_execveat_common.isra.0", 1},
		{"@copy_strings", 3},
		{"@copy_strings+0x3", 3},
		{"@copy_strings+0x4", -1},
		{"@copy_strings_kernel", 4},
		{"@bprm_execve", 5},
		{"@__x64_sys_execve", 6},
		{"@copy_string", -1},
		{"@do_execveat", -1},
	}
	for _, tt := range tests {
		t.Run(tt.query, func(t *testing.T) {
			m := New(Config{Driver: NewReplay(tr)})
			do(m, press("/"))
			typeLine(m, tt.query)
			do(m, press("enter"))
			if tt.want < 0 {
				if !m.warn || m.Pos() != 0 {
					t.Errorf("/%s: position %d, status %q; want not found", tt.query, m.Pos(), m.status)
				}
				return
			}
			if m.Pos() != tt.want || m.warn {
				t.Errorf("/%s: position %d (status %q), want step %d (%s)", tt.query, m.Pos(), m.status, tt.want, syms[tt.want])
			}
		})
	}
}
