package command

import (
	"bytes"
	"slices"
	"strings"
	"testing"

	"github.com/sctrace/sctrace/symbols"
)

func TestParse(t *testing.T) {
	for _, tc := range []struct{ in, want string }{
		{"", ""},
		{"   # a comment", ""},
		{"break do_syscall_64", "break do_syscall_64"},
		{"b entry_SYSCALL_64+0x10", "break entry_SYSCALL_64 + 0x10"},
		{"hbreak 0xffffffff81000000", "break 0xffffffff81000000"},
		{"br *(u64*)$rsp", "break *(u64*)$rsp"},
		{"delete", "delete"},
		{"d 1 3", "delete 1 3"},
		{"delete breakpoints 2", "delete 2"},
		{"c", "continue"},
		{"cont", "continue"},
		{"continue", "continue"},
		{"until do_syscall_64", "until do_syscall_64"},
		{"advance 0x401000", "until 0x401000"},
		{"si", "stepi 1"},
		{"stepi 20", "stepi 20"},
		{"x $rsp", "x/1xg $rsp"},
		{"x/2xg $rsp", "x/2xg $rsp"},
		{"x/4xw $rsp+8", "x/4xw $rsp + 8"},
		{"x/8i $rip", "x/8i $rip"},
		{"x/3db 0x1000", "x/3db 0x1000"},
		{"x/2xgp 0x1000", "x/2xgp 0x1000"},
		{"x/2xg -phys 0x1000", "x/2xgp 0x1000"},
		{"x -p 0x1000", "x/1xgp 0x1000"},
		{"print $gs_base+0x6014", "print $gs_base + 0x6014"},
		{"p pt_regs->ip", "print pt_regs->ip"},
		{"info registers", "info registers"},
		{"i r rax $rip", "info registers rax $rip"},
		{"info reg", "info registers"},
		{"info msrs", "info msrs"},
		{"info b", "info breakpoints"},
		{"info breakpoints", "info breakpoints"},
		{"info regions", "info regions"},
		{"info sym entry_*", "info symbols entry_*"},
		{"set $rax = 5", "set $rax = 5"},
		{"set var $rax=0x10", "set $rax = 0x10"},
		{"set *(u64*)0xffff888000001000 = 0", "set *(u64*)0xffff888000001000 = 0"},
		{"set *(u32*)($rsp+8) = -1", "set *(u32*)($rsp + 8) = -1"},
		{"set pt_regs->ax = 39", "set pt_regs->ax = 0x27"},
		{"trace", "trace"},
		{"save out.json", "save out.json"},
		{"help", "help"},
		{"help x", "help x"},
		{"help b", "help break"},
		{"tr", "trace"},
		{"sa f.txt", "save f.txt"},
		{"BREAK do_syscall_64", "break do_syscall_64"},
	} {
		c, err := Parse(tc.in)
		if err != nil {
			t.Errorf("Parse(%q): %v", tc.in, err)
			continue
		}
		got := c.String()
		if c.Verb == "" {
			got = ""
		}
		if got != tc.want {
			t.Errorf("Parse(%q) = %q, want %q", tc.in, got, tc.want)
		}
	}
}

func TestParseErrors(t *testing.T) {
	for _, tc := range []struct{ in, want string }{
		{"brek do_syscall_64", `unknown command "brek"; did you mean break?`},
		{"frobnicate", `unknown command "frobnicate" (help lists the commands)`},
		{"de 1", ""}, // a prefix of delete alone
		{"s", ""},    // stepi's alias, though set and save start with s too
		{"break", "break: needs an address"},
		{"break 0x", "malformed number"},
		{"break $nope", "unknown register $nope"},
		{"stepi 0", "count must be a positive number"},
		{"stepi x", "count must be a positive number"},
		{"x/0xg $rsp", "want 1 to 4096"},
		{"x/99999xg $rsp", "want 1 to 4096"},
		{"x/2q $rsp", `unknown format letter 'q'`},
		{"x/2xg", "needs an address"},
		{"info", "info what?"},
		{"info frobs", `no info "frobs"`},
		{"info registers nope", `unknown register "nope"`},
		{"info symbols", "needs a PATTERN"},
		{"info msrs extra", "takes no arguments"},
		{"set $rax", "want set $REG = VALUE"},
		{"set $rax == 1", "want set $REG = VALUE"},
		{"set 5 = 1", "cannot assign to 5"},
		{"set $rax = ", "empty expression"},
		{"continue now", "takes no arguments"},
		{"delete one", "positive integers"},
		{"save", "needs a FILE"},
		{"help nosuch", `unknown command "nosuch"`},
		{"c/2 x", "takes no /FMT"},
	} {
		_, err := Parse(tc.in)
		if tc.want == "" {
			if err != nil {
				t.Errorf("Parse(%q): %v", tc.in, err)
			}
			continue
		}
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("Parse(%q) = %v, want %q", tc.in, err, tc.want)
		}
		if err != nil && strings.Contains(err.Error(), "\n") {
			t.Errorf("Parse(%q): error spans lines: %q", tc.in, err)
		}
	}
}

func TestHelp(t *testing.T) {
	var b bytes.Buffer
	if err := Help(&b, ""); err != nil {
		t.Fatal(err)
	}
	for _, v := range Verbs() {
		if !strings.Contains(b.String(), "\n  "+v) {
			t.Errorf("help does not list %s:\n%s", v, b.String())
		}
	}
	b.Reset()
	if err := Help(&b, "x"); err != nil || !strings.Contains(b.String(), "x/4xgp") {
		t.Errorf("help x = %v\n%s", err, b.String())
	}
}

func TestComplete(t *testing.T) {
	tab := symbols.New("test", []symbols.Symbol{
		{Name: "do_syscall_64", Addr: 0x1000, Type: 'T'},
		{Name: "do_sys_open", Addr: 0x2000, Type: 'T'},
		{Name: "entry_SYSCALL_64", Addr: 0x3000, Type: 'T'},
	})
	for _, tc := range []struct {
		line string
		want []string
	}{
		{"br", []string{"break "}},
		{"s", []string{"save ", "set ", "stepi "}},
		{"info re", []string{"info regions ", "info registers "}},
		{"help un", []string{"help until"}},
		{"break do_sys", []string{"break do_sys_open", "break do_syscall_64"}},
		{"x/2xg $rs", []string{"x/2xg $rsi", "x/2xg $rsp"}},
		{"print *(u64*)($gs_b", []string{"print *(u64*)($gs_base"}},
		{"print pt_regs->o", []string{"print pt_regs->orig_ax"}},
		{"until entry_S", []string{"until entry_SYSCALL_64"}},
		{"break zz", nil},
		{"save fi", nil},
	} {
		if got := Complete(tc.line, tab); !slices.Equal(got, tc.want) {
			t.Errorf("Complete(%q) = %q, want %q", tc.line, got, tc.want)
		}
	}
}
