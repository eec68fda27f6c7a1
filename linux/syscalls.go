package linux

import (
	"context"
	"fmt"
	"strings"

	"github.com/sctrace/sctrace/symbols"
	"github.com/sctrace/sctrace/syscalls"
)

// maxSyscalls bounds how many entries of sys_call_table are read: well
// above the x86-64 ABI list's highest number (below 512, where the x32
// numbers would start).
const maxSyscalls = 512

// SyscallTable reads the kernel's own system-call table, sys_call_table:
// an array of pointers to the __x64_sys_* functions, indexed by number.
// Each entry is named by the symbol it points to (tab, the kernel's
// kallsyms); the table ends at the first entry that points to no such
// function. Numbers the kernel does not implement point to sys_ni_syscall
// and get no name. Where an entry's function is the one the ABI list
// names for that number (sys_newstat for stat, say), the call takes the
// ABI's name; otherwise the function's name without its prefix.
func SyscallTable(ctx context.Context, mem Memory, tab *symbols.Table, abi *syscalls.Table) (*syscalls.Table, error) {
	base, ok := tab.Addr("sys_call_table")
	if !ok {
		return nil, fmt.Errorf("the kernel's symbols have no sys_call_table")
	}
	raw, err := mem.ReadMemory(ctx, base, maxSyscalls*8)
	if err != nil {
		return nil, fmt.Errorf("read sys_call_table at %#x: %w", base, err)
	}
	var calls []syscalls.Call
	n := 0
	for ; n < maxSyscalls; n++ {
		fn, ok := sysFunction(tab, le64(raw[n*8:]))
		if !ok {
			break
		}
		if isNotImplemented(fn) {
			calls = append(calls, syscalls.Call{Nr: n, Entry: fn})
			continue
		}
		name := strings.TrimPrefix(strings.TrimPrefix(fn, "__x64_"), "sys_")
		if c, ok := abi.ByNumber(n); ok && "__x64_"+c.Entry == fn {
			name = c.Name
		}
		calls = append(calls, syscalls.Call{Nr: n, Name: name, Entry: fn})
	}
	if n == 0 {
		return nil, fmt.Errorf("sys_call_table at %#x: its first entry, %#x, is not a system call function", base, le64(raw))
	}
	return syscalls.NewTable(fmt.Sprintf("the kernel's sys_call_table (%d entries at %#x, named by kallsyms)", n, base), n, calls), nil
}

// sysFunction returns the name of the system-call function that starts at
// addr: a __x64_sys_* function or sys_ni_syscall.
func sysFunction(tab *symbols.Table, addr uint64) (string, bool) {
	s, off, ok := tab.Lookup(addr)
	if !ok || off != 0 {
		return "", false
	}
	for _, name := range append([]string{s.Name}, tab.Aliases(addr)...) {
		if strings.HasPrefix(name, "__x64_sys_") || isNotImplemented(name) {
			return name, true
		}
	}
	return "", false
}

// isNotImplemented reports whether name is the function the kernel's
// table gives numbers it does not implement.
func isNotImplemented(name string) bool {
	return name == "sys_ni_syscall" || name == "__x64_sys_ni_syscall"
}
