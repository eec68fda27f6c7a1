package x86

import (
	"fmt"
	"strings"
)

// bitName names one bit of a register.
type bitName struct {
	bit  uint
	name string
}

// Flag bits of RFLAGS.
const (
	FlagCF   = 1 << 0
	FlagPF   = 1 << 2
	FlagAF   = 1 << 4
	FlagZF   = 1 << 6
	FlagSF   = 1 << 7
	FlagTF   = 1 << 8
	FlagIF   = 1 << 9
	FlagDF   = 1 << 10
	FlagOF   = 1 << 11
	FlagIOPL = 3 << 12
	FlagNT   = 1 << 14
	FlagRF   = 1 << 16
	FlagVM   = 1 << 17
	FlagAC   = 1 << 18
	FlagVIF  = 1 << 19
	FlagVIP  = 1 << 20
	FlagID   = 1 << 21
)

var rflagsBits = []bitName{
	{0, "CF"}, {2, "PF"}, {4, "AF"}, {6, "ZF"}, {7, "SF"}, {8, "TF"}, {9, "IF"},
	{10, "DF"}, {11, "OF"}, {14, "NT"}, {16, "RF"}, {17, "VM"}, {18, "AC"},
	{19, "VIF"}, {20, "VIP"}, {21, "ID"},
}

var cr0Bits = []bitName{
	{0, "PE"}, {1, "MP"}, {2, "EM"}, {3, "TS"}, {4, "ET"}, {5, "NE"}, {16, "WP"},
	{18, "AM"}, {29, "NW"}, {30, "CD"}, {31, "PG"},
}

var cr4Bits = []bitName{
	{0, "VME"}, {1, "PVI"}, {2, "TSD"}, {3, "DE"}, {4, "PSE"}, {5, "PAE"}, {6, "MCE"},
	{7, "PGE"}, {8, "PCE"}, {9, "OSFXSR"}, {10, "OSXMMEXCPT"}, {11, "UMIP"}, {12, "LA57"},
	{13, "VMXE"}, {14, "SMXE"}, {16, "FSGSBASE"}, {17, "PCIDE"}, {18, "OSXSAVE"},
	{20, "SMEP"}, {21, "SMAP"}, {22, "PKE"}, {23, "CET"}, {24, "PKS"},
}

var eferBits = []bitName{
	{0, "SCE"}, {8, "LME"}, {10, "LMA"}, {11, "NXE"}, {12, "SVME"}, {13, "LMSLE"},
	{14, "FFXSR"}, {15, "TCE"},
}

// CR4 and EFER bits sctrace reasons about.
const (
	CR4PCIDE    = 1 << 17
	CR4FSGSBASE = 1 << 16
	CR4SMAP     = 1 << 21
	CR4SMEP     = 1 << 20
	EFERSCE     = 1 << 0
	EFERLMA     = 1 << 10
)

func bits(v uint64, names []bitName) []string {
	var out []string
	for _, b := range names {
		if v&(1<<b.bit) != 0 {
			out = append(out, b.name)
		}
	}
	return out
}

// Flags decodes an RFLAGS value.
type Flags uint64

// Flags returns the names of the set flags, lowest bit first.
func (f Flags) Flags() []string { return bits(uint64(f), rflagsBits) }

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

// CR0Flags decodes control register 0.
type CR0Flags uint64

// String names the set bits of CR0.
func (c CR0Flags) String() string { return strings.Join(bits(uint64(c), cr0Bits), " ") }

// CR4Flags decodes control register 4.
type CR4Flags uint64

// String names the set bits of CR4.
func (c CR4Flags) String() string { return strings.Join(bits(uint64(c), cr4Bits), " ") }

// EFERFlags decodes the extended feature enable register.
type EFERFlags uint64

// String names the set bits of EFER.
func (e EFERFlags) String() string { return strings.Join(bits(uint64(e), eferBits), " ") }

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
