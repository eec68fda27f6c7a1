// Package syscalls names Linux's x86-64 system calls: a table of numbers,
// names and kernel entry points, either the x86-64 ABI list generated from
// Linux's own arch/x86/entry/syscalls/syscall_64.tbl (see gen.go) or one
// read from a running kernel's sys_call_table; the parsing of a call given
// by name or number; and the registers its arguments travel in.
package syscalls

//go:generate go run gen.go -version 6.19 $LINUX/arch/x86/entry/syscalls/syscall_64.tbl

import (
	"cmp"
	"fmt"
	"sort"
	"strconv"
	"strings"

	"github.com/sctrace/sctrace/x86"
)

// Call is one system call of a table.
type Call struct {
	Nr   int    // the number a program puts in RAX
	Name string // the name without prefix, e.g. "read"
	// Entry is the kernel function the number leads to: sys_read in the
	// ABI list, __x64_sys_read in a kernel's table; "" for a number the
	// ABI list reserves without an implementation.
	Entry string
}

// Args are the registers that carry a system call's arguments, first to
// sixth, in the x86-64 Linux ABI (R10 takes the place of the C ABI's RCX,
// which syscall overwrites with the return address).
var Args = [6]x86.Reg{x86.RDI, x86.RSI, x86.RDX, x86.R10, x86.R8, x86.R9}

// Table is a system-call table: which number is which call.
type Table struct {
	// Source says where the names come from, e.g. "the x86-64 ABI list
	// (Linux 6.19's syscall_64.tbl)".
	Source string
	// Size is how many numbers the table has: 0 to Size-1 are in range.
	Size   int
	byNr   map[int]Call
	byName map[string]Call
}

// NewTable returns a table of calls, numbered 0 to size-1, from source.
// Calls with a number outside that range are left out.
func NewTable(source string, size int, calls []Call) *Table {
	t := &Table{Source: source, Size: size, byNr: map[int]Call{}, byName: map[string]Call{}}
	for _, c := range calls {
		if c.Nr < 0 || c.Nr >= size {
			continue
		}
		t.byNr[c.Nr] = c
		// A call is found by its name and by its function's name
		// without prefix (newstat for stat's sys_newstat).
		for _, name := range []string{c.Name, bareName(c.Entry)} {
			if _, dup := t.byName[name]; !dup && name != "" && name != "ni_syscall" {
				t.byName[name] = c
			}
		}
	}
	return t
}

// bareName strips a kernel function's name of its __x64_ and sys_
// prefixes: __x64_sys_read and sys_read are both read.
func bareName(fn string) string {
	return strings.TrimPrefix(strings.TrimPrefix(fn, "__x64_"), "sys_")
}

// Resolve parses s (see Parse) against tab, and explains a name tab does
// not have but the x86-64 ABI list does: the call exists, this kernel
// does not implement it.
func Resolve(s string, tab *Table) (Call, error) {
	c, err := tab.Parse(s)
	if err == nil {
		return c, nil
	}
	abi := ABI()
	if tab.Source == abi.Source || isNumber(strings.TrimSpace(s)) {
		return Call{}, err
	}
	if a, aerr := abi.Parse(s); aerr == nil && a.Name != "" {
		if a.Nr < tab.Size {
			return Call{}, fmt.Errorf("system call %s (number %d in %s) is not implemented by this kernel: entry %d of %s is %s", a.Name, a.Nr, abi.Source, a.Nr, tab.Source, cmp.Or(tab.byNr[a.Nr].Entry, "missing"))
		}
		return Call{}, fmt.Errorf("system call %s (number %d in %s) is newer than this kernel: %s has numbers 0 to %d", a.Name, a.Nr, abi.Source, tab.Source, tab.Size-1)
	}
	return Call{}, err
}

// ABI returns the x86-64 ABI list: the calls of Linux's syscall_64.tbl of
// ABI common and 64 (not x32), numbered up to the highest there.
func ABI() *Table {
	size := table64[len(table64)-1].Nr + 1
	return NewTable("the x86-64 ABI list (Linux "+abiVersion+"'s syscall_64.tbl)", size, table64)
}

// ByNumber returns the call numbered nr, if the table names one.
func (t *Table) ByNumber(nr int) (Call, bool) {
	c, ok := t.byNr[nr]
	return c, ok
}

// ByName returns the call called name, if the table has it.
func (t *Table) ByName(name string) (Call, bool) {
	c, ok := t.byName[name]
	return c, ok
}

// Calls returns the named calls in order of number.
func (t *Table) Calls() []Call {
	out := make([]Call, 0, len(t.byNr))
	for _, c := range t.byNr {
		out = append(out, c)
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Nr < out[j].Nr })
	return out
}

// Name returns the name of call nr, or "syscall N" when the table has
// none.
func (t *Table) Name(nr int) string {
	if c, ok := t.byNr[nr]; ok && c.Name != "" {
		return c.Name
	}
	return "syscall " + strconv.Itoa(nr)
}

// Parse reads a system call given as a name ("read", or "sys_read" and
// "__x64_sys_read" as the kernel spells it) or a number (decimal or 0x
// hex). A number must be in the table's range; it need not have a name
// (the kernel then answers -ENOSYS, which is worth tracing too).
func (t *Table) Parse(s string) (Call, error) {
	s = strings.TrimSpace(s)
	if s == "" {
		return Call{}, fmt.Errorf("no system call given (want a name such as read, or a number)")
	}
	if isNumber(s) {
		n, err := strconv.ParseInt(s, 0, 64)
		if err != nil {
			return Call{}, fmt.Errorf("system call %q: not a number nor a name", s)
		}
		if n < 0 || n >= int64(t.Size) {
			return Call{}, fmt.Errorf("system call number %d is out of range: %s has numbers 0 to %d", n, t.Source, t.Size-1)
		}
		if c, ok := t.byNr[int(n)]; ok {
			return c, nil
		}
		return Call{Nr: int(n)}, nil
	}
	name := bareName(s)
	if c, ok := t.byName[name]; ok {
		return c, nil
	}
	msg := fmt.Sprintf("unknown system call %q: %s has no such name", s, t.Source)
	if near := t.near(name); len(near) > 0 {
		msg += " (did you mean " + strings.Join(near, ", ") + "?)"
	}
	return Call{}, fmt.Errorf("%s", msg)
}

// isNumber reports whether s is meant as a number rather than a name.
func isNumber(s string) bool {
	return s != "" && (s[0] == '-' || s[0] == '+' || (s[0] >= '0' && s[0] <= '9'))
}

// near returns up to three names of the table that contain name or that
// name contains, in order of number.
func (t *Table) near(name string) []string {
	var out []string
	if len(name) < 3 {
		return nil
	}
	for _, c := range t.Calls() {
		if c.Name != "" && (strings.Contains(c.Name, name) || strings.Contains(name, c.Name)) && len(c.Name) > 2 {
			out = append(out, c.Name)
			if len(out) == 3 {
				break
			}
		}
	}
	return out
}
