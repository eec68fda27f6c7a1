package command

import (
	"fmt"
	"io"
	"strings"
)

// verbs are the commands, in help order.
var verbs []verb

func init() {
	verbs = []verb{
		{name: "break", aliases: []string{"b", "br", "hbreak", "hb"}, live: true,
			usage:   "break SYM[+OFF] | ADDR | EXPR",
			summary: "set a hardware breakpoint",
			detail: `Sets a hardware breakpoint (the stub's Z1) at a symbol, symbol+offset,
address or any expression. The address must be mapped under the CR3 now in
force. A user address set while the kernel runs matches in whichever process
runs that address next. Breakpoints are numbered from 1, listed by info
breakpoints, removed by delete, and all removed when sctrace ends.`,
			parse: oneExpr("an address: break do_syscall_64, break entry_SYSCALL_64+0x10, break 0xffffffff81000000")},
		{name: "delete", aliases: []string{"d"}, live: true,
			usage:   "delete [N...]",
			summary: "remove breakpoints (all, without N)",
			parse:   parseDelete},
		{name: "continue", aliases: []string{"c", "cont"}, live: true,
			usage:   "continue",
			summary: "run until a breakpoint, ctrl-c or the deadline",
			detail: `Lets the guest run until it reaches a breakpoint. ctrl-c stops it where it
is; so does the deadline of the front end (sctrace attach --deadline).`,
			parse: noArgs},
		{name: "until", aliases: []string{"u", "advance"}, live: true,
			usage:   "until SYM | ADDR",
			summary: "run to a location (a breakpoint for this run only)",
			detail: `Lets the guest run until it reaches the location, through a hardware
breakpoint that is removed when the guest stops. A breakpoint of your own hit
first stops it there instead.`,
			parse: oneExpr("a location: until do_syscall_64"),
		},
		{name: "stepi", aliases: []string{"si", "s", "step"}, live: true,
			usage:   "stepi [N]",
			summary: "execute N instructions (default 1), recorded and annotated",
			parse:   parseStepi},
		{name: "x", live: true,
			usage:   "x[/NFU] [-phys] EXPR",
			summary: "examine memory: x/4xg $rsp, x/8i $rip, x/2xg -phys 0x1000",
			detail: `Reads N units (default 1) at the address, under the CR3 now in force, or at
a physical address with -phys or the p letter (x/4xgp 0x1000). F is x (hex,
the default), d (signed), u (unsigned) or i (instructions); U the unit size:
b, h, w or g (1, 2, 4, 8 bytes; g by default).`,
			parse: parseExamine},
		{name: "print", aliases: []string{"p", "output"}, live: true,
			usage:   "print EXPR",
			summary: "evaluate an expression: print pt_regs->ip",
			parse:   oneExpr("an expression")},
		{name: "info", aliases: []string{"i"}, live: true,
			usage:   "info registers [REG...] | msrs | breakpoints | regions | symbols PATTERN",
			summary: "registers, MSRs, breakpoints, memory regions, symbols",
			detail: `info registers shows what the stub gives (general, segment, base and
control registers, EFER); info msrs the model-specific registers known so
far and where each value came from; info regions the stacks, per-CPU area,
TSS, GDT and IDT annotations name; info symbols the symbols whose names
contain PATTERN (or match it, for a glob such as entry_*).`,
			parse: parseInfo},
		{name: "set", live: true,
			usage:   "set $REG | *(u64*)ADDR | pt_regs->FIELD = VALUE",
			summary: "write a register or memory (asks first; recorded as done by hand)",
			detail: `Writes a register or 1, 2, 4 or 8 bytes of memory in the guest, after
asking to confirm (sctrace attach --batch --yes confirms without asking). The
write is recorded in the trace at the step it precedes, so a replay says that
the state was changed by hand and not by the guest.`,
			parse: parseSet},
		{name: "trace", aliases: []string{"record"}, live: true,
			usage:   "trace",
			summary: "record to the next return to user mode",
			detail: `In the kernel, records every instruction from here until the CPU is back at
CPL 3. In user mode, first lets the guest run to its next system call (by
the mechanism attach's --mechanism names, syscall by default) and records
that round trip. Breakpoints are lifted while it records
and set again after. save writes the recording.`,
			parse: noArgs},
		{name: "save", live: false,
			usage:   "save FILE",
			summary: "write the recording: .json or .sctrace (sctrace view), .txt, .md; - prints it",
			parse:   parseSave},
		{name: "help", aliases: []string{"h", "?"},
			usage:   "help [COMMAND]",
			summary: "list the commands, or explain one",
			parse:   parseHelp},
	}
}

// Help writes the command list, or one command's help when topic names a
// command.
func Help(w io.Writer, topic string) error {
	if topic != "" {
		v, err := lookupVerb(topic)
		if err != nil {
			return err
		}
		fmt.Fprintf(w, "%s\n  %s\n", v.usage, v.summary)
		if len(v.aliases) > 0 {
			fmt.Fprintf(w, "  also: %s\n", strings.Join(v.aliases, ", "))
		}
		if v.detail != "" {
			fmt.Fprintf(w, "\n%s\n", v.detail)
		}
		return nil
	}
	fmt.Fprintln(w, "Commands (gdb's words; a unique prefix is enough):")
	const col = 30
	for _, v := range verbs {
		if len(v.usage) > col {
			fmt.Fprintf(w, "  %s\n  %-*s %s\n", v.usage, col, "", v.summary)
			continue
		}
		fmt.Fprintf(w, "  %-*s %s\n", col, v.usage, v.summary)
	}
	fmt.Fprintln(w, `Expressions: 0x1f, 42, $rax, $gs_base, $pc, SYM, SYM+0x10, *(u64*)EXPR,
  *(u32*)($rsp+8), pt_regs->ip (the frame at the top of the task stack).
help COMMAND says more.`)
	return nil
}
