// Package qemulog reads QEMU's instruction log and switches it on and off.
//
// With `-d exec,cpu,nochain,int` and one guest instruction per translation
// block (`one-insn-per-tb on`, `singlestep on` before QEMU 8.1), QEMU's TCG
// writes, for every instruction it executes, a "Trace" line followed by the
// CPU state before the instruction (target/i386/cpu-dump.c, the 64-bit
// layout): RAX–R15, RIP, RFLAGS, CPL, the segment registers with their
// descriptor caches, LDT, TR, GDTR, IDTR, CR0/2/3/4, DR0–7, the lazy flags
// (CCS/CCD/CCO) and EFER. The int item adds a line for each interrupt and
// exception delivered, itself followed by a dump of the state it
// interrupted. Reader turns that text into Records, one per executed
// instruction, streaming: it holds one record at a time, never the log.
//
// Enable and Disable drive the log through the gdbstub's monitor.
package qemulog

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"io"
	"strconv"

	"github.com/sctrace/sctrace/x86"
)

// The segment registers of a dump, in the order it prints them.
const (
	ES = iota
	CS
	SS
	DS
	FS
	GS
	LDT
	TR
	NumSegs
)

// segNames are the names SysRegs.Segments uses.
var segNames = [NumSegs]string{"ES", "CS", "SS", "DS", "FS", "GS", "LDT", "TR"}

// Record is one executed instruction as the log shows it.
type Record struct {
	// Line is the log line of its "Trace" line, counting from 1.
	Line int64
	// State is the CPU state before the instruction: the sixteen GPRs,
	// RIP, RFLAGS, the six selectors, the FS and GS bases, CR0, CR2, CR3,
	// CR4 and EFER. The log has no KERNEL_GS_BASE and no CR8: they are
	// not Known.
	State x86.State
	CPL   int
	Segs  [NumSegs]x86.Segment // ES, CS, SS, DS, FS, GS, LDT, TR
	GDT   Table
	IDT   Table
	DR    [8]uint64 // DR0..DR3, DR6 and DR7 (DR4 and DR5 stay zero)
	// Before are the interrupts and exceptions the log shows between the
	// previous record and this one: delivered after the previous
	// instruction, or raised by it. Their handler's first instruction is
	// this record.
	Before []Interrupt
}

// Table is a descriptor-table register: GDTR or IDTR.
type Table struct {
	Base  uint64
	Limit uint32
}

// SysRegs returns the record's descriptor caches, CPL, GDTR, IDTR, EFER
// and debug registers as the x86.SysRegs that `monitor info registers`
// fills.
func (r *Record) SysRegs() *x86.SysRegs {
	s := &x86.SysRegs{
		CPL:      r.CPL,
		Segments: make(map[string]x86.Segment, NumSegs),
		GDTBase:  r.GDT.Base, GDTLimit: r.GDT.Limit,
		IDTBase: r.IDT.Base, IDTLimit: r.IDT.Limit,
		EFER: r.State.Val(x86.EFER),
		DR:   r.DR,
	}
	for i, seg := range r.Segs {
		s.Segments[segNames[i]] = seg
	}
	return s
}

// Interrupt is one interrupt or exception line of the log (the int item):
// "N: v=VV e=EEEE i=I cpl=C IP=CS:RIP pc=PC SP=SS:RSP" and CR2 for a page
// fault.
type Interrupt struct {
	Line      int64  // its line in the log
	Vector    int    // v=
	ErrorCode uint32 // e=
	// Soft is i=1: raised by an instruction (int n, int3, into), not
	// by an exception or an external interrupt.
	Soft   bool
	CPL    int    // the privilege level it interrupted
	CS     uint16 // the interrupted CS:RIP and SS:RSP
	RIP    uint64
	SS     uint16
	RSP    uint64
	CR2    uint64 // for a page fault (vector 14)
	HasCR2 bool
	// State is the CPU state the dump after the line gives: the state
	// the interrupt or exception came in, before the CPU delivered it.
	// For a fault on fetching an instruction (a page not present yet)
	// it is the only record of the state before that instruction.
	State    x86.State
	HasState bool
}

// External reports whether the interrupt came from outside the CPU: a
// vector of 32 or more not raised by an int instruction, or an NMI.
func (i Interrupt) External() bool { return !i.Soft && (i.Vector >= 32 || i.Vector == 2) }

// ErrUnknownLayout is wrapped by the error Reader returns for a state dump
// whose lines are not the 64-bit layout of target/i386/cpu-dump.c that
// this package knows.
var ErrUnknownLayout = errors.New("unknown QEMU CPU dump layout")

// TruncatedError is returned by Reader.Next, in place of io.EOF, when the
// log ends in the middle of a line or of a record's dump (QEMU killed, the
// disk full): the records before it were all returned.
type TruncatedError struct {
	Line int64 // the line the log ends in
	Kept int64 // records returned
}

func (e *TruncatedError) Error() string {
	return fmt.Sprintf("the instruction log ends mid-record at line %d; the %d complete records before it were kept", e.Line, e.Kept)
}

// maxLine bounds a log line; the longest QEMU writes here is under 200
// bytes.
const maxLine = 64 << 10

// dumpLines is how many lines of the 64-bit layout a state dump has, from
// RAX to EFER, with the lazy-flags line.
const dumpLines = 20

// Reader reads records from a log, one at a time.
//
// It scans by hand, at fixed column offsets checked against the names
// the layout prints, rather than with fmt.Sscanf or a regexp: a log is
// about 1 KB per instruction, so a million-instruction log is 1 GB, and
// the parse has to keep pace with the disk (over 150 MB/s) without
// allocating per line.
type Reader struct {
	br   *bufio.Reader
	line int64 // lines read
	// Bytes counts the bytes read so far.
	Bytes int64
	// Skipped counts lines that are neither records nor interrupts
	// ("check_exception", "Servicing hardware INT", SMM notes), which
	// are left out.
	Skipped int
	// Dropped counts records QEMU logged but did not run ("Stopped
	// execution of TB chain before": an interrupt was taken first).
	Dropped int
	kept    int64

	recs   [2]Record   // the record being filled and the pending one
	cur    int         // index in recs of the record being filled
	pend   bool        // recs[1-cur] is complete and not yet returned
	ints   []Interrupt // interrupts being collected for the next record
	dump   int         // lines of the current dump read; -1 outside one
	isRec  bool        // the current dump belongs to a record (else an interrupt)
	intRec Record      // an interrupt's dump being read
	err    error
}

// NewReader returns a Reader of the log r.
func NewReader(r io.Reader) *Reader {
	return &Reader{br: bufio.NewReaderSize(r, 1<<20), dump: -1}
}

// Next returns the next executed instruction's record. The record, and
// its Before, are valid until the next call. At the end of a log it
// returns io.EOF, or a *TruncatedError when the log is cut off; a line it
// cannot read gives an error naming the line (ErrUnknownLayout for a dump
// of another layout).
func (r *Reader) Next() (*Record, error) {
	if r.err != nil {
		if te, ok := r.err.(*TruncatedError); ok {
			te.Kept = r.kept
		}
		return nil, r.err
	}
	for {
		line, err := r.br.ReadSlice('\n')
		r.Bytes += int64(len(line))
		if err != nil {
			return r.end(line, err)
		}
		r.line++
		line = line[:len(line)-1]
		if rec, err := r.feed(line); rec != nil || err != nil {
			if err != nil {
				r.err = err
			}
			return rec, err
		}
	}
}

// end handles the end of the input: a last line without its newline, or
// the end in the middle of a dump, is a truncated log.
func (r *Reader) end(partial []byte, err error) (*Record, error) {
	switch {
	case errors.Is(err, bufio.ErrBufferFull):
		r.err = fmt.Errorf("qemu log line %d: longer than %d bytes: not an instruction log", r.line+1, r.br.Size())
	case err != io.EOF:
		r.err = fmt.Errorf("qemu log line %d: %w", r.line+1, err)
	case len(partial) > 0:
		r.err = &TruncatedError{Line: r.line + 1}
	case r.dump >= 0:
		r.err = &TruncatedError{Line: r.line}
	default:
		r.err = io.EOF
	}
	if r.pend && !errors.Is(err, bufio.ErrBufferFull) {
		r.pend = false
		r.kept++
		return r.pending(), nil
	}
	return r.Next()
}

func (r *Reader) pending() *Record { return &r.recs[1-r.cur] }

// feed takes one line (without its newline) and returns a record when the
// line confirms the pending one ran.
func (r *Reader) feed(line []byte) (*Record, error) {
	if r.dump >= 0 {
		if err := r.dumpLine(line); err != nil {
			return nil, err
		}
		return nil, nil
	}
	switch {
	case bytes.HasPrefix(line, []byte("Trace ")):
		var out *Record
		if r.pend {
			out = r.pending()
			r.kept++
			r.pend = false
		}
		// recs[r.cur] is not the record returned: that one stays valid
		// until the next call.
		rec := &r.recs[r.cur]
		b := rec.Before[:0]
		*rec = Record{Line: r.line, CPL: -1, Before: append(b, r.ints...)}
		r.ints = r.ints[:0]
		r.dump, r.isRec = 0, true
		return out, nil
	case bytes.HasPrefix(line, []byte("Stopped execution of TB chain before")):
		// The pending record's block was left before its instruction
		// ran: the CPU went to take an interrupt. Interrupts logged
		// before it carry over to the next record.
		if r.pend {
			p := r.pending()
			r.ints = append(append([]Interrupt(nil), p.Before...), r.ints...)
			r.pend = false
			r.Dropped++
		}
		return nil, nil
	}
	if in, ok, err := r.interruptLine(line); ok || err != nil {
		if err != nil {
			return nil, err
		}
		r.ints = append(r.ints, in)
		r.dump, r.isRec = 0, false
		r.intRec = Record{}
		return nil, nil
	}
	if bytes.HasPrefix(line, []byte("RAX=")) || bytes.HasPrefix(line, []byte("EAX=")) {
		return nil, r.layoutErr(line, "a state dump with no Trace or interrupt line before it")
	}
	r.Skipped++
	return nil, nil
}

func (r *Reader) layoutErr(line []byte, want string) error {
	if bytes.HasPrefix(line, []byte("EAX=")) {
		want += " (this is the 32-bit layout: the CPU was not in long mode)"
	}
	return fmt.Errorf("qemu log line %d: %w: want %s, have %q", r.line, ErrUnknownLayout, want, truncate(line))
}

func truncate(b []byte) string {
	if len(b) > 100 {
		return string(b[:100]) + "..."
	}
	return string(b)
}

// hexVal is the value of each hex digit, 0xff for other bytes.
var hexVal = func() (t [256]byte) {
	for i := range t {
		t[i] = 0xff
	}
	for c := '0'; c <= '9'; c++ {
		t[c] = byte(c - '0')
	}
	for c := 'a'; c <= 'f'; c++ {
		t[c] = byte(c - 'a' + 10)
	}
	for c := 'A'; c <= 'F'; c++ {
		t[c] = byte(c - 'A' + 10)
	}
	return t
}()

// hexAt parses the n hex digits at line[off:], which must be there.
func hexAt(line []byte, off, n int) (uint64, bool) {
	if off+n > len(line) {
		return 0, false
	}
	var v uint64
	for _, c := range line[off : off+n] {
		d := hexVal[c]
		if d == 0xff {
			return 0, false
		}
		v = v<<4 | uint64(d)
	}
	return v, true
}

// named checks that line holds name at off and parses the n hex digits
// after it.
func named(line []byte, off int, name string, n int) (uint64, bool) {
	if off+len(name) > len(line) || string(line[off:off+len(name)]) != name {
		return 0, false
	}
	return hexAt(line, off+len(name), n)
}

// The four lines of GPRs: "RAX=%016lx RBX=%016lx RCX=%016lx RDX=%016lx".
var gprLines = [4][4]struct {
	name string
	reg  x86.Reg
}{
	{{"RAX=", x86.RAX}, {"RBX=", x86.RBX}, {"RCX=", x86.RCX}, {"RDX=", x86.RDX}},
	{{"RSI=", x86.RSI}, {"RDI=", x86.RDI}, {"RBP=", x86.RBP}, {"RSP=", x86.RSP}},
	{{"R8 =", x86.R8}, {"R9 =", x86.R9}, {"R10=", x86.R10}, {"R11=", x86.R11}},
	{{"R12=", x86.R12}, {"R13=", x86.R13}, {"R14=", x86.R14}, {"R15=", x86.R15}},
}

// segRegs are the State registers of the first six segment lines.
var segRegs = [6]x86.Reg{x86.ES, x86.CS, x86.SS, x86.DS, x86.FS, x86.GS}

// segPrefixes are the segment lines' names as the dump pads them ("%-3s=").
var segPrefixes = [NumSegs]string{"ES =", "CS =", "SS =", "DS =", "FS =", "GS =", "LDT=", "TR ="}

// dumpLine reads line number r.dump of a state dump into the record being
// filled, or checks and skips it for an interrupt's dump.
func (r *Reader) dumpLine(line []byte) error {
	n := r.dump
	if n == 18 && !bytes.HasPrefix(line, []byte("CCS=")) {
		n = 19 // the lazy-flags line is there only with CPU_DUMP_CCOP
	}
	r.dump = n + 1
	rec := &r.recs[r.cur]
	if !r.isRec {
		rec = &r.intRec // an interrupt's dump: the state it interrupted
	}
	st := &rec.State
	switch {
	case n < 4:
		for i, f := range gprLines[n] {
			v, ok := named(line, 21*i, f.name, 16)
			if !ok {
				return r.layoutErr(line, fmt.Sprintf("%s%s", f.name, "%016lx at column "+strconv.Itoa(21*i+1)))
			}
			st.Set(f.reg, v)
		}
	case n == 4:
		// "RIP=%016lx RFL=%08x [%c%c%c%c%c%c%c] CPL=%d II=%d ..."
		rip, ok1 := named(line, 0, "RIP=", 16)
		rfl, ok2 := named(line, 21, "RFL=", 8)
		cpl, ok3 := named(line, 44, "CPL=", 1)
		if !ok1 || !ok2 || !ok3 || cpl > 3 {
			return r.layoutErr(line, `"RIP=%016lx RFL=%08x [flags] CPL=%d"`)
		}
		st.Set(x86.RIP, rip)
		st.Set(x86.RFLAGS, rfl)
		rec.CPL = int(cpl)
	case n < 13:
		// "%-3s=%04x %016lx %08x %08x" and, in long mode, DPL and type.
		i := n - 5
		sel, ok1 := named(line, 0, segPrefixes[i], 4)
		base, ok2 := hexAt(line, 9, 16)
		lim, ok3 := hexAt(line, 26, 8)
		attr, ok4 := hexAt(line, 35, 8)
		if !ok1 || !ok2 || !ok3 || !ok4 {
			return r.layoutErr(line, segPrefixes[i]+`"%04x %016lx %08x %08x"`)
		}
		rec.Segs[i] = x86.Segment{Selector: uint16(sel), Base: base, Limit: uint32(lim), Attr: uint32(attr)}
		if i < 6 {
			st.Set(segRegs[i], sel)
		}
		switch i {
		case FS:
			st.Set(x86.FSBase, base)
		case GS:
			st.Set(x86.GSBase, base)
		}
	case n == 13 || n == 14:
		// "GDT=     %016lx %08x"
		name := "GDT="
		if n == 14 {
			name = "IDT="
		}
		_, ok1 := named(line, 0, name+"     ", 0)
		base, ok2 := hexAt(line, 9, 16)
		lim, ok3 := hexAt(line, 26, 8)
		if !ok1 || !ok2 || !ok3 {
			return r.layoutErr(line, name+`"     %016lx %08x"`)
		}
		t := Table{Base: base, Limit: uint32(lim)}
		if n == 13 {
			rec.GDT = t
		} else {
			rec.IDT = t
		}
	case n == 15:
		// "CR0=%08x CR2=%016lx CR3=%016lx CR4=%08x"
		cr0, ok1 := named(line, 0, "CR0=", 8)
		cr2, ok2 := named(line, 13, "CR2=", 16)
		cr3, ok3 := named(line, 34, "CR3=", 16)
		cr4, ok4 := named(line, 55, "CR4=", 8)
		if !ok1 || !ok2 || !ok3 || !ok4 {
			return r.layoutErr(line, `"CR0=%08x CR2=%016lx CR3=%016lx CR4=%08x"`)
		}
		st.Set(x86.CR0, cr0)
		st.Set(x86.CR2, cr2)
		st.Set(x86.CR3, cr3)
		st.Set(x86.CR4, cr4)
	case n == 16:
		for i := range 4 {
			v, ok := named(line, 21*i, "DR"+strconv.Itoa(i)+"=", 16)
			if !ok {
				return r.layoutErr(line, `"DR0=%016lx DR1=%016lx DR2=%016lx DR3=%016lx"`)
			}
			rec.DR[i] = v
		}
	case n == 17:
		dr6, ok1 := named(line, 0, "DR6=", 16)
		dr7, ok2 := named(line, 21, "DR7=", 16)
		if !ok1 || !ok2 {
			return r.layoutErr(line, `"DR6=%016lx DR7=%016lx"`)
		}
		rec.DR[6], rec.DR[7] = dr6, dr7
	case n == 18:
		// Lazy flags: RFL above already has them computed.
	case n == 19:
		efer, ok := named(line, 0, "EFER=", 16)
		if !ok {
			return r.layoutErr(line, `"EFER=%016lx"`)
		}
		st.Set(x86.EFER, efer)
		r.dump = -1
		if !r.isRec {
			in := &r.ints[len(r.ints)-1]
			in.State, in.HasState = rec.State, true
			return nil
		}
		r.pend = true
		r.cur = 1 - r.cur
	}
	return nil
}

// dumpPrefix is how line n of a state dump starts.
func dumpPrefix(n int) string {
	switch {
	case n < 4:
		return gprLines[n][0].name
	case n == 4:
		return "RIP="
	case n < 13:
		return segPrefixes[n-5]
	case n == 13:
		return "GDT="
	case n == 14:
		return "IDT="
	case n == 15:
		return "CR0="
	case n == 16:
		return "DR0="
	case n == 17:
		return "DR6="
	case n == 18:
		return "CCS="
	}
	return "EFER="
}

// interruptLine parses "%6d: v=%02x e=%04x i=%d cpl=%d IP=%04x:%016lx
// pc=%016lx SP=%04x:%016lx" and what follows (" CR2=%016lx" for a page
// fault, " env->regs[R_EAX]=%016lx" otherwise). These lines are rare, so
// it splits them into words.
func (r *Reader) interruptLine(line []byte) (Interrupt, bool, error) {
	head, rest, ok := bytes.Cut(line, []byte(": v="))
	if !ok || len(bytes.TrimSpace(head)) == 0 {
		return Interrupt{}, false, nil
	}
	if _, err := strconv.Atoi(string(bytes.TrimSpace(head))); err != nil {
		return Interrupt{}, false, nil
	}
	in := Interrupt{Line: r.line}
	bad := func(what string) (Interrupt, bool, error) {
		return Interrupt{}, true, fmt.Errorf("qemu log line %d: interrupt line: bad %s in %q", r.line, what, truncate(line))
	}
	for i, w := range bytes.Fields(append([]byte("v="), rest...)) {
		k, v, ok := bytes.Cut(w, []byte("="))
		if !ok {
			return bad("word " + strconv.Quote(string(w)))
		}
		var err error
		switch string(k) {
		case "v":
			var x uint64
			x, err = strconv.ParseUint(string(v), 16, 8)
			in.Vector = int(x)
		case "e":
			var x uint64
			x, err = strconv.ParseUint(string(v), 16, 32)
			in.ErrorCode = uint32(x)
		case "i":
			in.Soft = string(v) == "1"
		case "cpl":
			in.CPL, err = strconv.Atoi(string(v))
		case "IP", "SP":
			sel, off, ok := bytes.Cut(v, []byte(":"))
			if !ok {
				return bad(string(k))
			}
			var s, o uint64
			if s, err = strconv.ParseUint(string(sel), 16, 16); err == nil {
				o, err = strconv.ParseUint(string(off), 16, 64)
			}
			if k[0] == 'I' {
				in.CS, in.RIP = uint16(s), o
			} else {
				in.SS, in.RSP = uint16(s), o
			}
		case "CR2":
			in.CR2, err = strconv.ParseUint(string(v), 16, 64)
			in.HasCR2 = true
		default:
			if i < 5 {
				return bad(string(k))
			}
		}
		if err != nil {
			return bad(string(k))
		}
	}
	return in, true, nil
}
