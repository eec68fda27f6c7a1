package x86

import (
	"fmt"
	"strings"
)

// bitName names one bit of a register whose bits have the type T.
type bitName[T ~uint64] struct {
	bit  T
	name string
}

// names returns the names of the bits of v that tab lists, in its order.
func names[T ~uint64](v T, tab []bitName[T]) []string {
	var out []string
	for _, b := range tab {
		if v&b.bit != 0 {
			out = append(out, b.name)
		}
	}
	return out
}

// Flags is an RFLAGS value.
type Flags uint64

// The bits of RFLAGS. FlagIOPL is a two-bit field.
const (
	FlagCF   Flags = 1 << 0
	FlagPF   Flags = 1 << 2
	FlagAF   Flags = 1 << 4
	FlagZF   Flags = 1 << 6
	FlagSF   Flags = 1 << 7
	FlagTF   Flags = 1 << 8
	FlagIF   Flags = 1 << 9
	FlagDF   Flags = 1 << 10
	FlagOF   Flags = 1 << 11
	FlagIOPL Flags = 3 << 12
	FlagNT   Flags = 1 << 14
	FlagRF   Flags = 1 << 16
	FlagVM   Flags = 1 << 17
	FlagAC   Flags = 1 << 18
	FlagVIF  Flags = 1 << 19
	FlagVIP  Flags = 1 << 20
	FlagID   Flags = 1 << 21
)

var flagNames = []bitName[Flags]{
	{FlagCF, "CF"}, {FlagPF, "PF"}, {FlagAF, "AF"}, {FlagZF, "ZF"}, {FlagSF, "SF"},
	{FlagTF, "TF"}, {FlagIF, "IF"}, {FlagDF, "DF"}, {FlagOF, "OF"}, {FlagNT, "NT"},
	{FlagRF, "RF"}, {FlagVM, "VM"}, {FlagAC, "AC"}, {FlagVIF, "VIF"}, {FlagVIP, "VIP"},
	{FlagID, "ID"},
}

// Flags returns the names of the set flags, lowest bit first.
func (f Flags) Flags() []string { return names(f, flagNames) }

// IOPL returns the I/O privilege level.
func (f Flags) IOPL() int { return int(f>>12) & 3 }

// String renders the set flags and a non-zero IOPL, e.g. "IF ZF PF".
func (f Flags) String() string {
	fl := f.Flags()
	// Show the flags most significant first, as gdb does.
	for i, j := 0, len(fl)-1; i < j; i, j = i+1, j-1 {
		fl[i], fl[j] = fl[j], fl[i]
	}
	if iopl := f.IOPL(); iopl != 0 {
		fl = append(fl, fmt.Sprintf("IOPL=%d", iopl))
	}
	if len(fl) == 0 {
		return "-"
	}
	return strings.Join(fl, " ")
}

// CR0Flags is a value of control register 0.
type CR0Flags uint64

// The bits of CR0.
const (
	CR0PE CR0Flags = 1 << 0
	CR0MP CR0Flags = 1 << 1
	CR0EM CR0Flags = 1 << 2
	CR0TS CR0Flags = 1 << 3
	CR0ET CR0Flags = 1 << 4
	CR0NE CR0Flags = 1 << 5
	CR0WP CR0Flags = 1 << 16
	CR0AM CR0Flags = 1 << 18
	CR0NW CR0Flags = 1 << 29
	CR0CD CR0Flags = 1 << 30
	CR0PG CR0Flags = 1 << 31
)

var cr0Names = []bitName[CR0Flags]{
	{CR0PE, "PE"}, {CR0MP, "MP"}, {CR0EM, "EM"}, {CR0TS, "TS"}, {CR0ET, "ET"}, {CR0NE, "NE"},
	{CR0WP, "WP"}, {CR0AM, "AM"}, {CR0NW, "NW"}, {CR0CD, "CD"}, {CR0PG, "PG"},
}

// String names the set bits of CR0.
func (c CR0Flags) String() string { return strings.Join(names(c, cr0Names), " ") }

// CR4Flags is a value of control register 4.
type CR4Flags uint64

// The bits of CR4.
const (
	CR4VME        CR4Flags = 1 << 0
	CR4PVI        CR4Flags = 1 << 1
	CR4TSD        CR4Flags = 1 << 2
	CR4DE         CR4Flags = 1 << 3
	CR4PSE        CR4Flags = 1 << 4
	CR4PAE        CR4Flags = 1 << 5
	CR4MCE        CR4Flags = 1 << 6
	CR4PGE        CR4Flags = 1 << 7
	CR4PCE        CR4Flags = 1 << 8
	CR4OSFXSR     CR4Flags = 1 << 9
	CR4OSXMMEXCPT CR4Flags = 1 << 10
	CR4UMIP       CR4Flags = 1 << 11
	CR4LA57       CR4Flags = 1 << 12
	CR4VMXE       CR4Flags = 1 << 13
	CR4SMXE       CR4Flags = 1 << 14
	CR4FSGSBASE   CR4Flags = 1 << 16
	CR4PCIDE      CR4Flags = 1 << 17
	CR4OSXSAVE    CR4Flags = 1 << 18
	CR4SMEP       CR4Flags = 1 << 20
	CR4SMAP       CR4Flags = 1 << 21
	CR4PKE        CR4Flags = 1 << 22
	CR4CET        CR4Flags = 1 << 23
	CR4PKS        CR4Flags = 1 << 24
)

var cr4Names = []bitName[CR4Flags]{
	{CR4VME, "VME"}, {CR4PVI, "PVI"}, {CR4TSD, "TSD"}, {CR4DE, "DE"}, {CR4PSE, "PSE"},
	{CR4PAE, "PAE"}, {CR4MCE, "MCE"}, {CR4PGE, "PGE"}, {CR4PCE, "PCE"}, {CR4OSFXSR, "OSFXSR"},
	{CR4OSXMMEXCPT, "OSXMMEXCPT"}, {CR4UMIP, "UMIP"}, {CR4LA57, "LA57"}, {CR4VMXE, "VMXE"},
	{CR4SMXE, "SMXE"}, {CR4FSGSBASE, "FSGSBASE"}, {CR4PCIDE, "PCIDE"}, {CR4OSXSAVE, "OSXSAVE"},
	{CR4SMEP, "SMEP"}, {CR4SMAP, "SMAP"}, {CR4PKE, "PKE"}, {CR4CET, "CET"}, {CR4PKS, "PKS"},
}

// String names the set bits of CR4.
func (c CR4Flags) String() string { return strings.Join(names(c, cr4Names), " ") }

// EFERFlags is a value of the extended feature enable register
// (IA32_EFER).
type EFERFlags uint64

// The bits of EFER.
const (
	EFERSCE   EFERFlags = 1 << 0
	EFERLME   EFERFlags = 1 << 8
	EFERLMA   EFERFlags = 1 << 10
	EFERNXE   EFERFlags = 1 << 11
	EFERSVME  EFERFlags = 1 << 12
	EFERLMSLE EFERFlags = 1 << 13
	EFERFFXSR EFERFlags = 1 << 14
	EFERTCE   EFERFlags = 1 << 15
)

var eferNames = []bitName[EFERFlags]{
	{EFERSCE, "SCE"}, {EFERLME, "LME"}, {EFERLMA, "LMA"}, {EFERNXE, "NXE"},
	{EFERSVME, "SVME"}, {EFERLMSLE, "LMSLE"}, {EFERFFXSR, "FFXSR"}, {EFERTCE, "TCE"},
}

// String names the set bits of EFER.
func (e EFERFlags) String() string { return strings.Join(names(e, eferNames), " ") }

// CR3Fields decodes control register 3 in long mode. Whether its low twelve bits
// are a PCID depends on CR4.PCIDE, so decoding takes CR4 too.
type CR3Fields struct {
	Value uint64
	PCIDE bool // CR4.PCIDE was set
}

// KPTIUserBit is the bit Linux's page-table isolation sets in CR3 to select
// the user half of a PGD pair (PTI_USER_PGTABLE_BIT, 1<<12), which the
// teaching kernel follows too.
const KPTIUserBit = 1 << 12

// PGD returns the physical address of the top-level page table.
func (c CR3Fields) PGD() uint64 { return c.Value & 0x000f_ffff_ffff_f000 }

// PCID returns the process-context identifier, or 0 when PCIDs are off.
func (c CR3Fields) PCID() uint16 {
	if !c.PCIDE {
		return 0
	}
	return uint16(c.Value & 0xfff)
}

// NoFlush reports bit 63, which on a MOV to CR3 with PCIDs enabled asks the
// CPU to keep the TLB entries of the new PCID.
func (c CR3Fields) NoFlush() bool { return c.Value&(1<<63) != 0 }

// KPTIUser reports whether the PGD is the user half of a KPTI pair.
func (c CR3Fields) KPTIUser() bool { return c.Value&KPTIUserBit != 0 }

// String renders the fields, e.g. "pgd 0x104000 (kpti user) pcid 1 noflush".
func (c CR3Fields) String() string {
	var b strings.Builder
	fmt.Fprintf(&b, "pgd %#x", c.PGD())
	if c.KPTIUser() {
		b.WriteString(" (kpti user half)")
	} else {
		b.WriteString(" (kernel half)")
	}
	if c.PCIDE {
		fmt.Fprintf(&b, " pcid %d", c.PCID())
	}
	if c.NoFlush() {
		b.WriteString(" noflush")
	}
	return b.String()
}

// Selector decodes a segment selector.
type Selector uint16

// Index returns the descriptor-table index.
func (s Selector) Index() int { return int(s >> 3) }

// LDT reports whether the selector points into the LDT (TI bit).
func (s Selector) LDT() bool { return s&4 != 0 }

// RPL returns the requested privilege level.
func (s Selector) RPL() int { return int(s & 3) }

// String renders e.g. "0x33 (GDT[6] RPL3)".
func (s Selector) String() string {
	t := "GDT"
	if s.LDT() {
		t = "LDT"
	}
	if s&^3 == 0 {
		return fmt.Sprintf("%#x (null RPL%d)", uint16(s), s.RPL())
	}
	return fmt.Sprintf("%#x (%s[%d] RPL%d)", uint16(s), t, s.Index(), s.RPL())
}

// PFError is the error code a page fault (#PF, vector 14) pushes, as the
// Intel SDM, Vol. 3A, §4.7 "Page-Fault Exceptions", defines its bits. The
// faulting linear address is in CR2, not in the error code.
type PFError uint64

// The bits of a #PF error code.
const (
	PFProtection PFError = 1 << 0  // P: 0 the page was not present, 1 a protection violation
	PFWrite      PFError = 1 << 1  // W/R: 0 a read, 1 a write
	PFUser       PFError = 1 << 2  // U/S: 0 a supervisor-mode access, 1 a user-mode (CPL 3) access
	PFReserved   PFError = 1 << 3  // RSVD: a reserved bit was set in a paging-structure entry
	PFInstr      PFError = 1 << 4  // I/D: an instruction fetch
	PFPK         PFError = 1 << 5  // PK: a protection-key violation
	PFShadow     PFError = 1 << 6  // SS: a shadow-stack access
	PFHLAT       PFError = 1 << 7  // HLAT: during HLAT paging
	PFSGX        PFError = 1 << 15 // SGX: an SGX access-control violation
)

// pfNames spells each bit set as the SDM's meaning, and lists the clear
// meaning of the first three bits (not present, read, supervisor) too.
var pfNames = []struct {
	bit       PFError
	set, zero string
}{
	{PFProtection, "protection violation", "not present"},
	{PFWrite, "write", "read"},
	{PFUser, "user", "supervisor"},
	{PFReserved, "reserved bit set", ""},
	{PFInstr, "instruction fetch", ""},
	{PFPK, "protection key", ""},
	{PFShadow, "shadow stack", ""},
	{PFHLAT, "HLAT paging", ""},
	{PFSGX, "SGX", ""},
}

// Meanings says what the error code reports, the first three bits always
// (each has a meaning when clear), the rest when set: e.g. 0x6 is "not
// present", "write", "user".
func (e PFError) Meanings() []string {
	var out []string
	for _, b := range pfNames {
		switch {
		case e&b.bit != 0:
			out = append(out, b.set)
		case b.zero != "":
			out = append(out, b.zero)
		}
	}
	return out
}

// String renders the meanings separated by commas, e.g. "not present,
// write, user".
func (e PFError) String() string { return strings.Join(e.Meanings(), ", ") }
