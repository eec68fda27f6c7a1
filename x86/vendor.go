package x86

import "strings"

// The CPUID vendor strings of the two x86-64 vendors, which differ on the
// fast system call instructions outside 64-bit mode (SDM vol. 2 SYSCALL,
// SYSENTER; AMD APM vol. 3 SYSCALL, SYSENTER).
const (
	VendorIntel = "GenuineIntel"
	VendorAMD   = "AuthenticAMD"
)

// ModelVendor returns the CPUID vendor a QEMU -cpu model string runs with:
// the one its vendor= property names, AuthenticAMD for a qemu64 without
// one (that model's own vendor in QEMU's target/i386/cpu.c), and "" when
// model is empty or its vendor is not known here.
func ModelVendor(model string) string {
	fields := strings.Split(model, ",")
	for _, f := range fields[1:] {
		if v, ok := strings.CutPrefix(f, "vendor="); ok {
			return v
		}
	}
	if fields[0] == "qemu64" {
		return VendorAMD
	}
	return ""
}
