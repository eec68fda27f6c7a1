package proxy

import (
	"context"
	"fmt"

	"github.com/sctrace/sctrace/linux"
	"github.com/sctrace/sctrace/session"
	"github.com/sctrace/sctrace/trace"
	"github.com/sctrace/sctrace/x86"
)

// maxNameTries bounds the attempts at reading a guest's kallsyms: each
// costs gdb a pause of a few hundred reads, and a guest that is not Linux
// never has them.
const maxNameTries = 3

// findLinux looks, while the guest is stopped at st, for a Linux kernel's
// symbols in its memory (kallsyms, read through the kernel's page tables
// even when the CPU is on a KPTI user half), and names the steps recorded
// from then on with them, with the stacks and per-CPU area it finds.
func (p *Proxy) findLinux(ctx context.Context, st *x86.State) {
	if p.rec.Symbols != nil || p.nameTries >= maxNameTries || !trace.KernelRunning(st) {
		return
	}
	p.nameTries++
	if err := p.readLinux(ctx, st); err != nil {
		if p.nameTries == maxNameTries {
			p.warn("no names: the guest has no kallsyms sctrace can read (%v); give --symbols", err)
		}
	}
}

func (p *Proxy) readLinux(ctx context.Context, st *x86.State) error {
	sys, err := p.tgt.SysRegs(ctx)
	if err != nil {
		return err
	}
	mem := session.KernelMemory(p.tgt)
	anchor, err := linux.Anchor(ctx, mem, sys.IDTBase)
	if err != nil {
		return err
	}
	tab, _, err := linux.Symbols(ctx, mem, anchor)
	if err != nil {
		return err
	}
	if _, ok := tab.Addr("entry_SYSCALL_64"); !ok {
		return fmt.Errorf("kallsyms without entry_SYSCALL_64")
	}
	gs, _ := linux.KernelGSBase(st)
	kernel, _ := linux.Banner(ctx, mem, tab)
	regions, _ := linux.Regions(ctx, mem, tab, sys, gs)
	if gs != 0 {
		tab = linux.WithPerCPU(tab, gs)
	}
	p.rec.UseSymbols(tab, append(session.Regions(tab), regions...), kernel)
	return nil
}
