package x86

import "testing"

// TestModelVendor reads the vendor from QEMU -cpu model strings: the
// vendor= property where given, qemu64's own (AMD, as QEMU's
// target/i386/cpu.c defines the model) otherwise.
func TestModelVendor(t *testing.T) {
	for _, tt := range []struct{ model, want string }{
		{"qemu64,vendor=GenuineIntel", VendorIntel},
		{"qemu64,+x2apic,vendor=AuthenticAMD", VendorAMD},
		{"qemu64", VendorAMD},
		{"qemu64,+smep", VendorAMD},
		{"max", ""},
		{"", ""},
	} {
		if got := ModelVendor(tt.model); got != tt.want {
			t.Errorf("ModelVendor(%q) = %q, want %q", tt.model, got, tt.want)
		}
	}
}
