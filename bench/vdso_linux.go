//go:build linux

package bench

import (
	"bytes"
	"debug/elf"
	"encoding/binary"
	"fmt"
	"os"
	"strconv"
	"strings"
)

// atSysinfoEHDR is the auxiliary vector entry holding the vDSO's address.
const atSysinfoEHDR = 33

// vdsoSymbol returns the run-time address of a function exported by this
// process's vDSO, found through the auxiliary vector (AT_SYSINFO_EHDR), the
// [vdso] mapping in /proc/self/maps and the vDSO's own dynamic symbol table,
// read from /proc/self/mem with debug/elf.
func vdsoSymbol(name string) (uintptr, error) {
	base, err := auxvValue(atSysinfoEHDR)
	if err != nil {
		return 0, err
	}
	lo, hi, err := vdsoMapping()
	if err != nil {
		return 0, err
	}
	if base != lo {
		return 0, fmt.Errorf("vdso: AT_SYSINFO_EHDR %#x is not the start of [vdso] %#x-%#x", base, lo, hi)
	}
	mem, err := os.Open("/proc/self/mem")
	if err != nil {
		return 0, fmt.Errorf("vdso: %w", err)
	}
	defer mem.Close()
	img := make([]byte, hi-lo)
	if _, err := mem.ReadAt(img, int64(lo)); err != nil {
		return 0, fmt.Errorf("vdso: read image: %w", err)
	}
	f, err := elf.NewFile(bytes.NewReader(img))
	if err != nil {
		return 0, fmt.Errorf("vdso: parse image: %w", err)
	}
	var loadVaddr uint64
	found := false
	for _, p := range f.Progs {
		if p.Type == elf.PT_LOAD {
			loadVaddr, found = p.Vaddr-p.Off, true
			break
		}
	}
	if !found {
		return 0, fmt.Errorf("vdso: no PT_LOAD segment")
	}
	syms, err := f.DynamicSymbols()
	if err != nil {
		return 0, fmt.Errorf("vdso: dynamic symbols: %w", err)
	}
	for _, s := range syms {
		if s.Name == name && elf.ST_TYPE(s.Info) == elf.STT_FUNC && s.Value != 0 {
			return base + uintptr(s.Value-loadVaddr), nil
		}
	}
	return 0, fmt.Errorf("vdso: no function %s", name)
}

func auxvValue(tag uint64) (uintptr, error) {
	b, err := os.ReadFile("/proc/self/auxv")
	if err != nil {
		return 0, fmt.Errorf("auxv: %w", err)
	}
	for i := 0; i+16 <= len(b); i += 16 {
		t := binary.LittleEndian.Uint64(b[i:])
		v := binary.LittleEndian.Uint64(b[i+8:])
		if t == tag {
			return uintptr(v), nil
		}
		if t == 0 {
			break
		}
	}
	return 0, fmt.Errorf("auxv: no entry %d (this process has no vDSO)", tag)
}

func vdsoMapping() (lo, hi uintptr, err error) {
	b, err := os.ReadFile("/proc/self/maps")
	if err != nil {
		return 0, 0, fmt.Errorf("vdso: %w", err)
	}
	for line := range strings.Lines(string(b)) {
		if !strings.HasSuffix(strings.TrimSpace(line), "[vdso]") {
			continue
		}
		r, _, _ := strings.Cut(line, " ")
		a, z, _ := strings.Cut(r, "-")
		l, err1 := strconv.ParseUint(a, 16, 64)
		h, err2 := strconv.ParseUint(z, 16, 64)
		if err1 != nil || err2 != nil || h <= l {
			return 0, 0, fmt.Errorf("vdso: bad maps line %q", strings.TrimSpace(line))
		}
		return uintptr(l), uintptr(h), nil
	}
	return 0, 0, fmt.Errorf("vdso: no [vdso] mapping in /proc/self/maps")
}
