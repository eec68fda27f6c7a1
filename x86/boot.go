package x86

// IsBzImage reports whether hdr, the start of a file, is a Linux kernel
// image in the x86 boot protocol (a bzImage): it puts the signature "HdrS"
// at offset 0x202 (Documentation/arch/x86/boot.rst).
func IsBzImage(hdr []byte) bool {
	return len(hdr) >= 0x206 && string(hdr[0x202:0x206]) == "HdrS"
}
