package command

import (
	"strings"
	"testing"

	"github.com/sctrace/sctrace/expr"
)

// FuzzParse feeds arbitrary lines to the command and expression parsers:
// they must never panic, and what they accept must print in a form that
// parses to the same command.
func FuzzParse(f *testing.F) {
	for _, s := range []string{"break do_syscall_64+0x10", "x/4xgp -phys *(u32*)($rsp+8)", "set pt_regs->ax = -1",
		"info symbols entry_*", "print **(u64*)$gs_base", "stepi 3", "delete 1 2", "help x", "p ((((1", "x/", "set = ="} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, line string) {
		if e, err := expr.Parse(line); err == nil {
			again, err := expr.Parse(e.String())
			if err != nil || again.String() != e.String() {
				t.Fatalf("expression %q prints as %q, which parses to %v, %v", line, e.String(), again, err)
			}
		}
		c, err := Parse(line)
		if err != nil {
			if strings.Contains(err.Error(), "\n") && !strings.Contains(line, "\n") {
				t.Fatalf("error for %q spans lines: %q", line, err)
			}
			return
		}
		if c.Verb == "" || c.Verb == "save" || c.Verb == "info" {
			return // a file name or pattern is kept as given
		}
		again, err := Parse(c.String())
		if err != nil || again.String() != c.String() {
			t.Fatalf("command %q prints as %q, which parses to %q, %v", line, c.String(), again.String(), err)
		}
	})
}
