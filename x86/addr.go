package x86

// KernelHalf reports whether addr lies in the upper half of the address
// space (bit 63 set), where x86-64 kernels map themselves.
func KernelHalf(addr uint64) bool { return addr>>63 != 0 }

// Canonical reports whether addr is canonical with 48-bit linear
// addresses (4-level paging): bits 63..47 all equal.
func Canonical(addr uint64) bool {
	top := addr >> 47
	return top == 0 || top == 1<<17-1
}

// CanonicalKernel reports whether addr is a canonical upper-half address
// with 48-bit linear addresses: bits 63..47 all set.
func CanonicalKernel(addr uint64) bool { return addr>>47 == 1<<17-1 }
