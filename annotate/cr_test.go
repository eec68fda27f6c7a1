package annotate

import (
	"strings"
	"testing"

	"github.com/sctrace/sctrace/x86"
)

func TestMovCR3(t *testing.T) {
	userCR3 := uint64(0x10b000)
	kernCR3 := uint64(0x10a000)
	at := regs{x86.RIP: lstar + 0x13}
	tests := []struct {
		name          string
		code          []byte
		before, after regs
		checks        []check
		clean         bool
	}{
		{"KPTI: to the kernel page tables", insMovToCR3,
			with(kernel, regs{x86.CR3: userCR3, x86.RAX: kernCR3}), with(kernel, with(at, regs{x86.CR3: kernCR3, x86.RAX: kernCR3})),
			[]check{
				ok(KindCR3, "cr3 = 0x10a000: the value written from rax"),
				note(KindCR3, "cr3: pgd 0x10b000 (kpti user half) → pgd 0x10a000 (kernel half): switch to the kernel page tables"),
				note(KindCR3, "SWITCH_TO_KERNEL_CR3 clears bit 12"),
			}, true},
		{"KPTI: to the user page tables", insMovToCR3,
			with(kernel, regs{x86.CR3: kernCR3, x86.RAX: userCR3}), with(kernel, with(at, regs{x86.CR3: userCR3, x86.RAX: userCR3})),
			[]check{note(KindCR3, "switch to the user page tables"), note(KindCR3, "SWITCH_TO_USER_CR3 sets bit 12")}, true},
		{"another address space", insMovToCR3,
			with(kernel, regs{x86.CR3: kernCR3, x86.RAX: 0x200000}), with(kernel, with(at, regs{x86.CR3: 0x200000, x86.RAX: 0x200000})),
			[]check{note(KindCR3, "switch to another address space")}, true},
		{"PCID with no-flush", insMovToCR3,
			with(kernel, regs{x86.CR4: 0x3206b0, x86.CR3: kernCR3 | 1, x86.RAX: 1<<63 | userCR3 | 0x801}),
			with(kernel, with(at, regs{x86.CR4: 0x3206b0, x86.CR3: userCR3 | 0x801, x86.RAX: 1<<63 | userCR3 | 0x801})),
			[]check{note(KindCR3, "bit 63 set: PCID 2049 keeps its TLB entries")}, true},
		{"write not taken", insMovToCR3,
			with(kernel, regs{x86.CR3: userCR3, x86.RAX: kernCR3}), with(kernel, with(at, regs{x86.CR3: userCR3, x86.RAX: kernCR3})),
			[]check{finding(KindCR3, "cr3 = 0x10b000 after the write, but rax held 0x10a000")}, false},
		{"read", insMovCR3To,
			with(kernel, regs{x86.CR3: userCR3}), with(kernel, with(at, regs{x86.CR3: userCR3, x86.RAX: userCR3})),
			[]check{ok(KindCR3, "rax = 0x10b000: reads cr3 (pgd 0x10b000 (kpti user half))")}, true},
		{"read wrong", insMovCR3To,
			with(kernel, regs{x86.CR3: userCR3}), with(kernel, with(at, regs{x86.CR3: userCR3, x86.RAX: 5})),
			[]check{finding(KindCR3, "rax = 0x5, expected 0x10b000")}, false},
		{"CR4.PGE toggle", insMovToCR4,
			with(kernel, regs{x86.RAX: 0x300630}), with(kernel, with(at, regs{x86.CR4: 0x300630, x86.RAX: 0x300630})),
			[]check{note(KindCR3, "cr4 0x3006b0 → 0x300630: clears PGE"), note(KindCR3, "flushes the whole TLB")}, true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			s := mkStep(t, 1, tt.code, lstar+0x10, tt.before, tt.after)
			effects := Annotate(s, &Context{})
			expectEffects(t, effects, tt.checks...)
			if tt.clean {
				expectNoFinding(t, effects)
			} else {
				expectFinding(t, effects)
			}
			if ev := Events(s, effects, nil); hasEvent(ev, EventCR3Write) != (tt.code[2] == 0xd8 && tt.code[1] == 0x22) {
				t.Errorf("events %v: cr3-write wrong", ev)
			}
		})
	}
}

// TestCR3Edit: Linux's SWITCH_TO_KERNEL_CR3 does andq
// $(~PTI_USER_PGTABLE_AND_PCID_MASK) = $-0x1801 (arch/x86/entry/calling.h):
// it clears bit 12, the user half of the page-table pair, and bit 11, the
// user PCID. The teaching kernel's and $-0x1001 clears bit 12 only.
func TestCR3Edit(t *testing.T) {
	tests := []struct {
		name   string
		code   []byte
		want   string
		absent string
	}{
		{"and $-0x1801,%rdi", []byte{0x48, 0x81, 0xe7, 0xff, 0xe7, 0xff, 0xff},
			"clears bit 11 (the user PCID: KPTI gives the user page tables PCID | 0x800) and bit 12 (the user half of KPTI's page-table pair) of the CR3 value (mask 0x1800)", ""},
		{"and $-0x1001,%rdi", []byte{0x48, 0x81, 0xe7, 0xff, 0xef, 0xff, 0xff},
			"clears bit 12 (the user half of KPTI's page-table pair) of the CR3 value (mask 0x1000)", "bit 11"},
		{"or $0x1000,%rdi", []byte{0x48, 0x81, 0xcf, 0x00, 0x10, 0x00, 0x00},
			"sets bit 12 (the user half of KPTI's page-table pair)", ""},
		{"bts $0x3f,%rdi", []byte{0x48, 0x0f, 0xba, 0xef, 0x3f},
			"sets bit 63 (no TLB flush on the write)", ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			cr3 := uint64(0x10b000 | 0x1800)
			before := with(kernel, regs{x86.RDI: cr3, x86.CR3: cr3})
			s := mkStep(t, 1, tt.code, lstar, before, with(before, regs{x86.RIP: lstar + uint64(len(tt.code)), x86.RDI: 0}))
			effects := Annotate(s, &Context{})
			expectEffects(t, effects, note(KindCR3, tt.want))
			if tt.absent != "" && strings.Contains(dump(effects), tt.absent) {
				t.Errorf("effects mention %q:\n%s", tt.absent, dump(effects))
			}
		})
	}
}
