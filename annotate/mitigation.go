package annotate

import "strings"

// Mitigation describes a Linux symbol that implements a
// speculative-execution mitigation.
type Mitigation struct {
	// Name is the symbol; with Family set, the prefix shared by a family
	// of per-register thunks (__x86_indirect_thunk_ + rax, rcx, ...).
	Name   string
	Family bool
	// What the code does and the vulnerability it is for.
	What string
	// Kernels says which kernel versions have the symbol with this
	// meaning, for a reader comparing traces of two kernels.
	Kernels string
}

// Mitigations lists the thunks and helpers Linux's x86-64 entry and return
// paths branch to for speculative-execution mitigations, after
// arch/x86/lib/retpoline.S, arch/x86/entry/entry.S and
// arch/x86/entry/entry_64.S. A symbol is looked up by its exact name (or
// family prefix), never by a part of it: its_return_thunk is the Indirect
// Target Selection thunk, not a retbleed or SRSO one.
var Mitigations = []Mitigation{
	{Name: "__x86_indirect_thunk_", Family: true,
		What:    "retpoline: an indirect branch made through a thunk that traps its speculation in a loop (Spectre v2, branch target injection)",
		Kernels: "4.15 and later"},
	{Name: "__x86_indirect_call_thunk_", Family: true,
		What:    "call thunk of call depth tracking: counts calls so that the return stack buffer is refilled before it runs dry (retbleed on Intel Skylake)",
		Kernels: "6.2 and later; not in 6.1"},
	{Name: "__x86_indirect_jump_thunk_", Family: true,
		What:    "jump thunk of call depth tracking (retbleed on Intel Skylake)",
		Kernels: "6.2 and later; not in 6.1"},
	{Name: "__x86_indirect_its_thunk_", Family: true,
		What:    "ITS thunk: an indirect branch moved to the upper half of a cache line, where Indirect Target Selection cannot predict it from a poisoned entry",
		Kernels: "6.15, backported to the 6.1 and 6.12 stable series"},
	{Name: "its_return_thunk",
		What:    "ITS return thunk: a return placed where Indirect Target Selection cannot mispredict it (Intel's ITS; neither retbleed nor SRSO)",
		Kernels: "6.15, backported to the 6.1 and 6.12 stable series"},
	{Name: "__x86_return_thunk",
		What:    "the return thunk every kernel return is built to jump to: a plain ret unless a return mitigation sent the jumps elsewhere",
		Kernels: "5.19 and later"},
	{Name: "retbleed_return_thunk",
		What:    "retbleed return thunk (AMD Zen 1 and 2): the return that retbleed_untrain_ret's training makes safe",
		Kernels: "6.5 and later, and 6.1 stable (zen_untrain_ret's pair before)"},
	{Name: "zen_untrain_ret",
		What:    "return-predictor untraining for retbleed on AMD Zen 1 and 2",
		Kernels: "5.19 until renamed retbleed_untrain_ret"},
	{Name: "retbleed_untrain_ret",
		What:    "return-predictor untraining for retbleed on AMD Zen 1 and 2",
		Kernels: "6.5 and later, and 6.1 stable (zen_untrain_ret before)"},
	{Name: "entry_untrain_ret",
		What:    "untrains the return predictor on kernel entry with the retbleed or SRSO sequence this CPU needs",
		Kernels: "6.5 and later, and 6.1 stable"},
	{Name: "srso_return_thunk",
		What:    "SRSO return thunk (AMD Zen 3 and 4, Speculative Return Stack Overflow)",
		Kernels: "6.5 and later, and 6.1 stable"},
	{Name: "srso_alias_return_thunk",
		What:    "SRSO return thunk for AMD Zen 1 and 2, through an aliased address (Speculative Return Stack Overflow)",
		Kernels: "6.5 and later, and 6.1 stable"},
	{Name: "srso_untrain_ret",
		What:    "SRSO untraining sequence (AMD Zen 3 and 4, Speculative Return Stack Overflow)",
		Kernels: "6.5 and later, and 6.1 stable"},
	{Name: "srso_alias_untrain_ret",
		What:    "SRSO untraining sequence for AMD Zen 1 and 2, through an aliased address",
		Kernels: "6.5 and later, and 6.1 stable"},
	{Name: "call_depth_return_thunk",
		What:    "return thunk of call depth tracking: refills the return stack buffer when the call count says it ran dry (retbleed on Intel Skylake)",
		Kernels: "6.2 and later (first named __x86_return_skl); not in 6.1"},
	{Name: "__x86_return_skl",
		What:    "return thunk of call depth tracking (retbleed on Intel Skylake)",
		Kernels: "6.2 until renamed call_depth_return_thunk"},
	{Name: "entry_ibpb",
		What:    "IBPB on kernel entry: discards the indirect branch predictions made in user mode (retbleed and SRSO in ibpb mode)",
		Kernels: "5.19 and later (later renamed write_ibpb)"},
	{Name: "write_ibpb",
		What:    "IBPB: discards indirect branch predictions (retbleed and SRSO in ibpb mode)",
		Kernels: "after entry_ibpb was renamed; not in 6.1 or 6.12"},
	{Name: "clear_bhb_loop",
		What:    "branch history clearing loop on kernel entry (Branch History Injection)",
		Kernels: "6.9 and later, and 6.1 stable"},
}

// MitigationOf returns the entry of Mitigations that names sym ("name" or
// "name+0x12"), and whether there is one. Compiler suffixes such as
// ".cold" are not stripped: those are other code.
func MitigationOf(sym string) (Mitigation, bool) {
	name, _, _ := strings.Cut(sym, "+")
	for _, m := range Mitigations {
		if !m.Family && name == m.Name || m.Family && strings.HasPrefix(name, m.Name) && len(name) > len(m.Name) {
			return m, true
		}
	}
	return Mitigation{}, false
}

// thunk returns what the mitigation at symbol sym is for, or "".
func thunk(sym string) string {
	if m, ok := MitigationOf(sym); ok {
		return m.What
	}
	return ""
}
