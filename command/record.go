package command

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"io"
	"path/filepath"
	"strings"

	"github.com/sctrace/sctrace/annotate"
	"github.com/sctrace/sctrace/expr"
	"github.com/sctrace/sctrace/internal/outfile"
	"github.com/sctrace/sctrace/mechanism"
	"github.com/sctrace/sctrace/trace"
	"github.com/sctrace/sctrace/x86"
)

// fresh starts a new recording at the current stop when the guest ran on
// outside the recorder since the last one; the last one is kept for save.
func (e *Engine) fresh(ctx context.Context) error {
	if !e.moved {
		return nil
	}
	old, err := e.S.Recorder.Restart(ctx)
	if old.Len() > 0 || len(old.UserWrites) > 0 {
		e.prev = old
	}
	if err != nil {
		return err
	}
	e.moved = false
	return nil
}

// stepi executes and records instructions one at a time.
func (e *Engine) stepi(ctx context.Context, c Command) error {
	if err := e.fresh(ctx); err != nil {
		return err
	}
	rec := e.S.Recorder
	for i := 0; i < c.Count; i++ {
		if ctx.Err() != nil {
			return fmt.Errorf("%w after %d of %d instructions", ErrInterrupted, i, c.Count)
		}
		s, err := rec.Step(ctx)
		if err != nil {
			return fmt.Errorf("after %d of %d instructions: %w", i, c.Count, err)
		}
		e.printStep(s)
	}
	return e.showInsn(ctx, rec.Current())
}

// printStep prints a recorded step as the text trace does: index, ring,
// where, instruction, and its effects below.
func (e *Engine) printStep(s *trace.Step) {
	ring := "U"
	if s.CPL == 0 {
		ring = "K"
	}
	e.printf("%5d %s %-34s %s\n", s.Index, ring, trace.FitWhere(s.Where(), 34), s.Asm(e.Syntax))
	for _, f := range s.Effects {
		mark := "   "
		switch f.Verdict {
		case annotate.OK:
			mark = " ok"
		case annotate.Finding:
			mark = " !!"
		}
		e.printf("    %s %-10s %s\n", mark, f.Kind, f.Text)
	}
}

// traceCmd records to the next return to user mode; from user mode, the
// next system call's round trip.
func (e *Engine) traceCmd(ctx context.Context, c Command) (err error) {
	st, err := e.state(ctx)
	if err != nil {
		return err
	}
	restore, err := e.lift(ctx)
	if err != nil {
		return err
	}
	defer func() { err = errors.Join(err, restore()) }()
	rec := e.S.Recorder
	var t *trace.Trace
	if st.CPL() == 3 {
		// The run to the entry starts a new trace: set the current one
		// aside, and carry over the writes made at this stop.
		e.moved = true
		if err := e.fresh(ctx); err != nil {
			return err
		}
		var carried []trace.UserWrite
		if e.prev != nil {
			carried = trace.UserWritesBefore(e.prev.UserWrites, e.prev.Len())
			if e.prev.Len() == 0 {
				e.prev = nil // it held nothing but those writes
			}
		}
		if err := e.S.ToEntry(ctx, cmp.Or(e.Mechanism, mechanism.Syscall)); err != nil {
			return err
		}
		for _, w := range carried {
			w.What += " (before the guest ran on to this entry)"
			if err := rec.AddUserWrite(ctx, w); err != nil {
				return err
			}
		}
		t, err = e.S.Record(ctx)
	} else {
		if err := e.fresh(ctx); err != nil {
			return err
		}
		t, err = e.S.Record(ctx)
	}
	if t != nil {
		sum := trace.Summarize(t)
		e.printf("Recorded %d instructions (%d in the kernel): %s\n", sum.Instructions, sum.Kernel, sum.Stop)
		if len(sum.Findings) > 0 {
			e.printf("  findings: %d (save FILE.txt to read them)\n", len(sum.Findings))
		}
	}
	if err != nil {
		if ctx.Err() != nil && t != nil {
			return fmt.Errorf("%w after %d instructions (save writes them)", ErrInterrupted, t.Len())
		}
		return err
	}
	return e.showInsn(ctx, rec.Current())
}

// save writes the recording: the current one, or the one set aside when
// the current one is empty.
func (e *Engine) save(ctx context.Context, c Command) error {
	var t *trace.Trace
	if e.S != nil && e.S.Recorder != nil {
		t = e.S.Recorder.Trace()
		if t.Len() == 0 && len(t.UserWrites) == 0 {
			t = e.prev
		}
	}
	if t == nil {
		return errors.New("nothing recorded yet (stepi and trace record)")
	}
	if c.Arg == "-" {
		return trace.WriteText(e.Out, t, e.Syntax)
	}
	write, ext := t.WriteJSON, ".json"
	switch strings.ToLower(filepath.Ext(c.Arg)) {
	case ".sctrace":
		write, ext = t.Write, ".sctrace"
	case ".txt":
		write, ext = func(w io.Writer) error { return trace.WriteText(w, t, e.Syntax) }, ".txt"
	case ".md":
		write, ext = func(w io.Writer) error { return trace.WriteMarkdown(w, t, e.Syntax) }, ".md"
	}
	if err := outfile.Save(c.Arg, "sctrace-trace-*"+ext, write); err != nil {
		return err
	}
	e.printf("Saved %d instructions to %s\n", t.Len(), c.Arg)
	return nil
}

// set writes a register or memory, after asking, and records the write.
func (e *Engine) set(ctx context.Context, c Command) error {
	val, env, err := e.eval(ctx, c.Expr)
	if err != nil {
		return err
	}
	var w trace.UserWrite
	var write func() error
	var readBack func() (uint64, error)
	switch d := c.Dest.(type) {
	case expr.Reg:
		reg := x86.Reg(d)
		size := 0
		for _, r := range e.S.Conn.Layout() {
			if r.Name == reg.String() {
				size = r.Size()
			}
		}
		if size == 0 || size > 8 {
			return fmt.Errorf("$%s: the stub has no such register to write", reg)
		}
		if val, err = fits(val, size, "$"+reg.String()); err != nil {
			return err
		}
		old, ok := env.State.Get(reg)
		w = trace.UserWrite{What: reg.String(), Size: size, Old: trace.Hex(old), OldKnown: ok, New: trace.Hex(val)}
		write = func() error { return e.S.Conn.WriteRegister(ctx, reg.String(), le(val, size)) }
		readBack = func() (uint64, error) {
			st, err := e.state(ctx)
			if err != nil {
				return 0, err
			}
			return st.Val(reg), nil
		}
	default:
		var addr uint64
		size := 8
		switch d := d.(type) {
		case expr.Deref:
			size = d.Size
			addr, err = expr.Eval(d.X, env)
		case expr.Field:
			addr, err = d.Addr(env)
		}
		if err != nil {
			return err
		}
		if val, err = fits(val, size, c.Dest.String()); err != nil {
			return err
		}
		old, err := expr.ReadUint(env, addr, size)
		if err != nil {
			return err
		}
		what := fmt.Sprintf("*(u%d*)%#x", 8*size, addr)
		if f, ok := d.(expr.Field); ok {
			what = fmt.Sprintf("%s (%s)", f, what)
		}
		w = trace.UserWrite{What: what, Addr: trace.Hex(addr), Size: size, Old: trace.Hex(old), OldKnown: true, New: trace.Hex(val)}
		write = func() error { return e.S.Conn.WriteMemory(ctx, addr, le(val, size)) }
		readBack = func() (uint64, error) { return expr.ReadUint(env, addr, size) }
	}
	q := fmt.Sprintf("Write %s = %#x in the guest (now %#x)?", c.Dest, val, uint64(w.Old))
	if !w.OldKnown {
		q = fmt.Sprintf("Write %s = %#x in the guest?", c.Dest, val)
	}
	if e.Confirm == nil || !e.Confirm(q) {
		return ErrNotConfirmed
	}
	if err := e.fresh(ctx); err != nil {
		return err
	}
	if err := write(); err != nil {
		return err
	}
	got, err := readBack()
	if err != nil {
		return fmt.Errorf("written, but reading it back failed: %w", err)
	}
	if err := e.S.Recorder.AddUserWrite(ctx, w); err != nil {
		return err
	}
	if got != val {
		return fmt.Errorf("the stub accepted the write, but %s now reads %#x, not %#x", c.Dest, got, val)
	}
	e.printf("%s = %#x (was %#x); recorded in the trace as a change made by hand\n", c.Dest, val, uint64(w.Old))
	return nil
}

// fits checks that v fits in size bytes, as an unsigned number or a
// negative one (set *(u32*)A = -1 writes 0xffffffff), and returns it cut
// to that size.
func fits(v uint64, size int, what string) (uint64, error) {
	if size == 8 {
		return v, nil
	}
	bits := 8 * uint(size)
	hi := v >> bits
	neg := int64(v) < 0 && int64(v) >= -(1<<(bits-1))
	if hi != 0 && !neg {
		return 0, fmt.Errorf("%#x does not fit in %s (%d bits)", v, what, bits)
	}
	return v & (1<<bits - 1), nil
}
