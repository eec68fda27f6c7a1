package linux

import (
	"context"
	"encoding/binary"
	"strings"
	"testing"

	"github.com/sctrace/sctrace/symbols"
	"github.com/sctrace/sctrace/syscalls"
)

// TestSyscallTable reads a fake sys_call_table laid out as Linux's is: an
// array of pointers to __x64_sys_* functions and sys_ni_syscall, followed
// by other data.
func TestSyscallTable(t *testing.T) {
	const (
		table   = 0xffffffff82000360
		read    = 0xffffffff81300000
		write   = 0xffffffff81300100
		newstat = 0xffffffff81300200
		ni      = 0xffffffff81300300
		mine    = 0xffffffff81300400
		other   = 0xffffffff81300500
	)
	tab := symbols.New("test kallsyms", []symbols.Symbol{
		{Name: "sys_call_table", Addr: table, Type: 'D'},
		{Name: "__x64_sys_read", Addr: read, Type: 'T'},
		{Name: "__x64_sys_write", Addr: write, Type: 'T'},
		{Name: "__x64_sys_newstat", Addr: newstat, Type: 'T'},
		{Name: "sys_ni_syscall", Addr: ni, Type: 'T'},
		{Name: "__x64_sys_mine", Addr: mine, Type: 'T'},
		{Name: "some_function", Addr: other, Type: 'T'},
	})
	entries := []uint64{read, write, ni, ni, newstat, mine, other + 0x10}
	mem := make([]byte, maxSyscalls*8)
	for i, e := range entries {
		binary.LittleEndian.PutUint64(mem[i*8:], e)
	}
	abi := syscalls.ABI()
	got, err := SyscallTable(context.Background(), pages{table: mem}, tab, abi)
	if err != nil {
		t.Fatal(err)
	}
	if got.Size != 6 {
		t.Errorf("Size = %d, want 6 (the entry pointing into some_function ends the table)", got.Size)
	}
	want := []syscalls.Call{
		{Nr: 0, Name: "read", Entry: "__x64_sys_read"},
		{Nr: 1, Name: "write", Entry: "__x64_sys_write"},
		{Nr: 2, Entry: "sys_ni_syscall"},
		{Nr: 3, Entry: "sys_ni_syscall"},
		{Nr: 4, Name: "stat", Entry: "__x64_sys_newstat"}, // the ABI list's name for sys_newstat
		{Nr: 5, Name: "mine", Entry: "__x64_sys_mine"},    // the ABI list has fstat there: the function names it
	}
	for _, w := range want {
		if c, ok := got.ByNumber(w.Nr); !ok || c != w {
			t.Errorf("entry %d = %+v, want %+v", w.Nr, c, w)
		}
	}
	if c, err := got.Parse("newstat"); err != nil || c.Nr != 4 {
		t.Errorf("Parse(newstat) = %+v, %v: the function's name finds the call too", c, err)
	}
	if _, err := syscalls.Resolve("open", got); err == nil || !strings.Contains(err.Error(), "system call open (number 2 in the x86-64 ABI list") || !strings.Contains(err.Error(), "is not implemented by this kernel: entry 2 of the kernel's sys_call_table") {
		t.Errorf("Resolve(open) = %v", err)
	}
	if _, err := syscalls.Resolve("execve", got); err == nil || !strings.Contains(err.Error(), "is newer than this kernel") {
		t.Errorf("Resolve(execve) = %v", err)
	}
	if _, err := syscalls.Resolve("6", got); err == nil || !strings.Contains(err.Error(), "system call number 6 is out of range: the kernel's sys_call_table (6 entries") {
		t.Errorf("Resolve(6) = %v", err)
	}

	// No table, or one whose first entry is no system-call function.
	if _, err := SyscallTable(context.Background(), pages{}, symbols.New("none", nil), abi); err == nil || !strings.Contains(err.Error(), "no sys_call_table") {
		t.Errorf("without the symbol: %v", err)
	}
	bad := make([]byte, maxSyscalls*8)
	binary.LittleEndian.PutUint64(bad, other)
	if _, err := SyscallTable(context.Background(), pages{table: bad}, tab, abi); err == nil || !strings.Contains(err.Error(), "is not a system call function") {
		t.Errorf("a table of other pointers: %v", err)
	}
	if _, err := SyscallTable(context.Background(), pages{}, tab, abi); err == nil || !strings.Contains(err.Error(), "read sys_call_table at 0xffffffff82000360") {
		t.Errorf("unreadable table: %v", err)
	}
}
