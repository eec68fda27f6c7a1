package annotate

import (
	"strings"
	"testing"
)

// TestMitigationOf names the mitigation each thunk implements, by the
// symbol's exact name. The facts, from arch/x86/lib/retpoline.S and the
// kallsyms tables of Debian's 6.1.0-57 and 6.12.118 kernels:
// its_return_thunk is the Indirect Target Selection return thunk (both
// kernels jump to it on every return when ITS is mitigated);
// __x86_indirect_thunk_<reg> are retpolines; srso_* belong to SRSO and
// retbleed_* to retbleed; call depth tracking (__x86_indirect_call_thunk_*,
// call_depth_return_thunk) is in 6.12 and not in 6.1.
func TestMitigationOf(t *testing.T) {
	tests := []struct {
		sym  string
		want string // a part of What; "" for no mitigation
		not  string // must not be in What
	}{
		{"its_return_thunk", "Indirect Target Selection", "retbleed/SRSO"},
		{"__x86_indirect_its_thunk_r15", "Indirect Target Selection", ""},
		{"__x86_indirect_thunk_rax", "retpoline", ""},
		{"__x86_indirect_thunk_rax+0xc", "retpoline", ""},
		{"__x86_indirect_thunk_array", "retpoline", ""},
		{"__x86_indirect_call_thunk_rax", "call depth tracking", ""},
		{"call_depth_return_thunk", "call depth tracking", ""},
		{"srso_alias_return_thunk", "SRSO", "retbleed"},
		{"srso_untrain_ret", "SRSO", "retbleed"},
		{"retbleed_return_thunk", "retbleed", "SRSO"},
		{"zen_untrain_ret", "retbleed", ""},
		{"__x86_return_thunk", "plain ret unless", ""},
		{"entry_ibpb", "IBPB", ""},
		{"clear_bhb_loop", "Branch History Injection", ""},
		// Names that hold a mitigation's word but are not one.
		{"__x86_indirect_thunk_", "", ""},
		{"preempt_schedule_thunk", "", ""},
		{"efi_thunk_get_time", "", ""},
		{"__ksymtab_its_return_thunk", "", ""},
		{"x86_return_thunk_alias", "", ""},
		{"entry_SYSCALL_64", "", ""},
	}
	for _, tt := range tests {
		got := thunk(tt.sym)
		switch {
		case tt.want == "" && got != "":
			t.Errorf("%s: %q, want no mitigation", tt.sym, got)
		case !strings.Contains(got, tt.want):
			t.Errorf("%s: %q, want it to say %q", tt.sym, got, tt.want)
		case tt.not != "" && strings.Contains(got, tt.not):
			t.Errorf("%s: %q must not say %q", tt.sym, got, tt.not)
		}
	}
}

// TestMitigationsTable checks that every entry says what it is for and in
// which kernels, and that no name is listed twice.
func TestMitigationsTable(t *testing.T) {
	seen := map[string]bool{}
	for _, m := range Mitigations {
		if m.Name == "" || m.What == "" || m.Kernels == "" {
			t.Errorf("incomplete entry %+v", m)
		}
		if seen[m.Name] {
			t.Errorf("%s listed twice", m.Name)
		}
		seen[m.Name] = true
	}
}
