// Package gdbstubtest provides a fake gdbstub for tests: an in-process
// server on a loopback port that answers the GDB remote serial protocol as
// QEMU 7.2's x86-64 system-mode stub does, from a scripted register file,
// memory and target description, and that can be told to misbehave.
//
// A Stub starts in the state of a freshly reset PC: rip 0xfff0, cs 0xf000,
// eflags 0x2, cr0 0x60000010, and a far jump at physical 0xffff0. It serves
// QEMU's own target.xml and i386-64bit.xml (captured from QEMU 7.2), so the
// 'g' reply is 1216 hex digits. Memory outside what Map set up answers E14,
// as QEMU does for unmapped addresses.
//
// Faults are injected with Inject; each applies to the next requests that
// start with its Match prefix.
//
// Where QEMU releases differ, SetRelease picks the one to play (QEMU 7.2 by
// default; see Release).
//
// The stub runs the target only in the sense the protocol can see: a step
// adds one to rip; a continue stops at the first breakpoint or watchpoint
// set, or, when there is none, runs until the client sends an interrupt.
// Script replaces that with a sequence of register states and memory the
// guest walks through, for tests of code that steps.
package gdbstubtest

import (
	"bufio"
	"bytes"
	"embed"
	"encoding/binary"
	"encoding/hex"
	"encoding/xml"
	"fmt"
	"io"
	"net"
	"sort"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"
)

//go:embed testdata/qemu-7.2/*.xml
var qemuFiles embed.FS

// QEMUFeatures is QEMU 7.2's answer to qSupported.
const QEMUFeatures = "PacketSize=1000;qXfer:features:read+;vContSupported+;multiprocess+"

// Thread is the thread id the stub reports, as QEMU does for vCPU 1.
const Thread = "p01.01"

// QEMUFiles returns the target description QEMU 7.2's x86-64 system
// emulator serves with qXfer:features:read: "target.xml", which includes
// "i386-64bit.xml".
func QEMUFiles() map[string]string {
	files := make(map[string]string)
	for _, name := range []string{"target.xml", "i386-64bit.xml"} {
		b, err := qemuFiles.ReadFile("testdata/qemu-7.2/" + name)
		if err != nil {
			panic(err) // embedded at build time
		}
		files[name] = string(b)
	}
	return files
}

// A FaultKind is a way for the stub to misbehave.
type FaultKind int

// Faults the stub can inject.
const (
	// BadChecksum sends the reply with a wrong checksum; when the client
	// nacks, the retransmission is good.
	BadChecksum FaultKind = iota + 1
	// BadChecksumAlways sends the reply and every retransmission with a
	// wrong checksum.
	BadChecksumAlways
	// SplitWrites writes the reply one byte per write.
	SplitWrites
	// MergedWrites writes a console 'O' packet (text MergedText) and the
	// reply in a single write.
	MergedWrites
	// Garbage writes bytes that belong to no packet (GarbageBytes) before
	// the reply.
	Garbage
	// Stall acknowledges the request and never answers it, as if the
	// target were running and never stopped; an interrupt (0x03) then gets
	// the stop reply "T02".
	Stall
	// Hang acknowledges the request and from then on ignores everything,
	// interrupts included.
	Hang
	// Drop closes the connection instead of answering.
	Drop
	// Nack answers the request with '-', asking for it again, and drops it.
	Nack
	// Reply answers with Fault.Reply instead of the normal reply: "E14"
	// for an error, "" for an unsupported request.
	Reply
	// Unsolicited sends Fault.Reply as a packet of its own before the
	// normal reply, as QEMU sends a stop reply when a debugger connects to
	// a running guest.
	Unsolicited
)

// Texts the faults send.
const (
	MergedText   = "merged console line\n"
	GarbageBytes = "\r\n\x00garbage\xff "
)

// A Fault is a misbehaviour to inject.
type Fault struct {
	Kind  FaultKind
	Match string // prefix of the requests it applies to; "" matches all
	Count int    // how many matching requests it applies to: 0 means one, <0 all
	Reply string // the packet sent by a Reply or Unsolicited fault
}

type stubReg struct {
	name   string
	offset int
	size   int
}

type breakpoint struct {
	kind int
	addr uint64
	size uint64
}

// A Stub is a fake gdbstub listening on a loopback port. Its methods may be
// called while a client is connected.
type Stub struct {
	ln net.Listener
	wg sync.WaitGroup

	mu        sync.Mutex
	conns     map[net.Conn]bool
	closed    bool
	features  string
	files     map[string]string
	regs      []stubReg
	regIndex  map[string]int
	regfile   []byte
	unknown   map[string]bool
	pages     map[uint64][]byte
	bps       []breakpoint
	faults    []*Fault
	requests  []string
	monitor   map[string]string
	sstep     int
	sstepBits int
	phys      bool
	rle       bool
	accepted  int

	script []Stop  // stops a step or continue walks through (see Script)
	tables *Tables // GDTR, IDTR and TR for `info registers`

	release      Release // see release.go
	guestRunning bool
	kvm          bool // the guest runs under KVM (see SetKVM)
}

const pageSize = 4096

// xferChunk is the most bytes one qXfer reply carries: a reply then fits
// in a 4096-byte packet even when every byte needs escaping.
const xferChunk = (4096 - 5) / 2

// New starts a stub on 127.0.0.1 with a free port. It is closed when the
// test ends.
func New(tb testing.TB) *Stub {
	tb.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		tb.Fatalf("gdbstubtest: listen: %v", err)
	}
	s := &Stub{
		ln:        ln,
		conns:     make(map[net.Conn]bool),
		features:  QEMUFeatures,
		unknown:   make(map[string]bool),
		pages:     make(map[uint64][]byte),
		monitor:   make(map[string]string),
		sstep:     0x7,
		sstepBits: 0x7,
	}
	if err := s.SetFiles(QEMUFiles()); err != nil {
		ln.Close()
		tb.Fatalf("gdbstubtest: %v", err)
	}
	s.reset()
	tb.Cleanup(func() { s.Close() })
	s.wg.Add(1)
	go s.accept()
	return s
}

// reset puts the registers and memory in the state of a reset PC.
func (s *Stub) reset() {
	s.setReg("rip", 0xfff0)
	s.setReg("eflags", 0x2)
	s.setReg("cs", 0xf000)
	s.setReg("rdx", 0x60fb1)
	s.setReg("cr0", 0x60000010)
	s.setReg("fctrl", 0x37f)
	s.setReg("mxcsr", 0x1f80)
	s.mapLocked(0, make([]byte, 0x10000))
	s.mapLocked(0xf0000, make([]byte, 0x10000))
	reset, _ := hex.DecodeString("ea5be000f030362f32332f393900fc00")
	s.mapLocked(0xffff0, reset)
}

// Addr returns the stub's address, "127.0.0.1:port".
func (s *Stub) Addr() string { return s.ln.Addr().String() }

// Close stops the stub and closes every connection to it.
func (s *Stub) Close() error {
	s.mu.Lock()
	if s.closed {
		s.mu.Unlock()
		return nil
	}
	s.closed = true
	err := s.ln.Close()
	for c := range s.conns {
		c.Close()
	}
	s.mu.Unlock()
	s.wg.Wait()
	return err
}

// Accepted returns how many connections the stub has accepted.
func (s *Stub) Accepted() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.accepted
}

// Inject queues a fault.
func (s *Stub) Inject(f Fault) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if f.Count == 0 {
		f.Count = 1
	}
	s.faults = append(s.faults, &f)
}

// SetFeatures sets the stub's qSupported reply (default QEMUFeatures). With
// "QStartNoAckMode+" in it the stub accepts QStartNoAckMode; otherwise it
// answers it with an empty reply, as QEMU 7.2 does.
func (s *Stub) SetFeatures(features string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.features = features
}

// SetRLE makes the stub run-length encode its replies.
func (s *Stub) SetRLE(on bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.rle = on
}

// SetFiles replaces the target description documents served with
// qXfer:features:read ("target.xml" first) and the register file, which is
// laid out from them and zeroed.
func (s *Stub) SetFiles(files map[string]string) error {
	var regs []stubReg
	offset := 0
	var walk func(name string, depth int) error
	walk = func(name string, depth int) error {
		doc, ok := files[name]
		if !ok || depth > 8 {
			return fmt.Errorf("target description %q missing", name)
		}
		d := xml.NewDecoder(strings.NewReader(doc))
		for {
			tok, err := d.Token()
			if err == io.EOF {
				return nil
			}
			if err != nil {
				return fmt.Errorf("%s: %w", name, err)
			}
			se, ok := tok.(xml.StartElement)
			if !ok {
				continue
			}
			attrs := map[string]string{}
			for _, a := range se.Attr {
				attrs[a.Name.Local] = a.Value
			}
			switch se.Name.Local {
			case "include":
				if err := walk(attrs["href"], depth+1); err != nil {
					return err
				}
			case "reg":
				bits, err := strconv.Atoi(attrs["bitsize"])
				if err != nil {
					return fmt.Errorf("%s: register %s: %w", name, attrs["name"], err)
				}
				regs = append(regs, stubReg{name: attrs["name"], offset: offset, size: bits / 8})
				offset += bits / 8
			}
		}
	}
	if err := walk("target.xml", 0); err != nil {
		return err
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	s.files = files
	s.regs = regs
	s.regIndex = make(map[string]int)
	for i, r := range regs {
		s.regIndex[r.name] = i
	}
	s.regfile = make([]byte, offset)
	return nil
}

func (s *Stub) setReg(name string, v uint64) {
	r := s.regs[s.regIndex[name]]
	var b [16]byte
	binary.LittleEndian.PutUint64(b[:], v)
	copy(s.regfile[r.offset:r.offset+r.size], b[:])
}

// SetRegister sets a register of the register file to v (its low bytes, for
// registers narrower than 64 bits).
func (s *Stub) SetRegister(name string, v uint64) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.setReg(name, v)
	delete(s.unknown, name)
}

// Register returns a copy of a register's bytes, or nil if there is no such
// register.
func (s *Stub) Register(name string) []byte {
	s.mu.Lock()
	defer s.mu.Unlock()
	i, ok := s.regIndex[name]
	if !ok {
		return nil
	}
	r := s.regs[i]
	return bytes.Clone(s.regfile[r.offset : r.offset+r.size])
}

// SetUnknown makes the stub send a register as "xx" bytes: a value it does
// not know.
func (s *Stub) SetUnknown(name string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.unknown[name] = true
}

// Map makes memory at addr readable and writable and fills it with data.
func (s *Stub) Map(addr uint64, data []byte) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.mapLocked(addr, data)
}

func (s *Stub) mapLocked(addr uint64, data []byte) {
	for i := range data {
		a := addr + uint64(i)
		p := s.pages[a/pageSize]
		if p == nil {
			p = make([]byte, pageSize)
			s.pages[a/pageSize] = p
		}
		p[a%pageSize] = data[i]
	}
}

// Memory returns n bytes at addr, and false if any of them is unmapped.
func (s *Stub) Memory(addr uint64, n int) ([]byte, bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.readMem(addr, n)
}

func (s *Stub) readMem(addr uint64, n int) ([]byte, bool) {
	out := make([]byte, n)
	for i := range out {
		a := addr + uint64(i)
		p := s.pages[a/pageSize]
		if p == nil {
			return nil, false
		}
		out[i] = p[a%pageSize]
	}
	return out, true
}

func (s *Stub) writeMem(addr uint64, data []byte) bool {
	for i := range data {
		if s.pages[(addr+uint64(i))/pageSize] == nil {
			return false
		}
	}
	for i, b := range data {
		a := addr + uint64(i)
		s.pages[a/pageSize][a%pageSize] = b
	}
	return true
}

// SetMonitor sets the output of a monitor command (qRcmd). "info registers"
// has a built-in answer made from the register file.
func (s *Stub) SetMonitor(cmd, output string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.monitor[cmd] = output
}

// Requests returns the payloads of the packets received so far, in order,
// retransmissions and nacked packets included.
func (s *Stub) Requests() []string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]string(nil), s.requests...)
}

// Breakpoints returns the breakpoints and watchpoints set, as the 'Z'
// requests that set them ("Z1,fff0,1").
func (s *Stub) Breakpoints() []string {
	s.mu.Lock()
	defer s.mu.Unlock()
	var out []string
	for _, b := range s.bps {
		out = append(out, fmt.Sprintf("Z%d,%x,%x", b.kind, b.addr, b.size))
	}
	sort.Strings(out)
	return out
}

// Single-step flag sets QEMU's gdbstub offers (qqemu.sstepbits), for
// SetStepBits. Observed on QEMU 7.2 and 10.0.2: TCG offers all three; under
// KVM the stub offers no NOTIMER, and NOIRQ only where the host kernel has
// KVM_GUESTDBG_BLOCKIRQ (Linux 5.15 and later), answering E22 to
// Qqemu.sstep with a flag it lacks.
const (
	StepBitsTCG        = 0x7 // ENABLE=1,NOIRQ=2,NOTIMER=4
	StepBitsKVM        = 0x3 // ENABLE=1,NOIRQ=2
	StepBitsKVMNoBlock = 0x1 // ENABLE=1
)

// SetStepBits sets the single-step flags the stub offers, and resets the
// flags in force to all of them, as QEMU does when it starts.
func (s *Stub) SetStepBits(bits int) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.sstepBits = bits
	s.sstep = bits
}

// StepFlags returns the single-step flags last set with Qqemu.sstep.
func (s *Stub) StepFlags() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.sstep
}

// PhysicalMemoryMode reports whether the client switched m/M to physical
// addresses with Qqemu.PhyMemMode.
func (s *Stub) PhysicalMemoryMode() bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.phys
}

func (s *Stub) accept() {
	defer s.wg.Done()
	for {
		c, err := s.ln.Accept()
		if err != nil {
			return
		}
		s.mu.Lock()
		if s.closed {
			s.mu.Unlock()
			c.Close()
			return
		}
		s.conns[c] = true
		s.accepted++
		s.mu.Unlock()
		s.wg.Add(1)
		go func() {
			defer s.wg.Done()
			s.serve(c)
			s.mu.Lock()
			delete(s.conns, c)
			s.mu.Unlock()
			c.Close()
		}()
	}
}

// session is the state of one connection.
type session struct {
	c        net.Conn
	noAck    bool
	xmlRead  bool
	running  bool   // the target runs: only an interrupt gets an answer
	hung     bool   // ignore everything
	last     []byte // last reply frame, for retransmission after '-'
	badAgain bool   // retransmissions of last are corrupted too
}

func (s *Stub) serve(c net.Conn) {
	r := bufio.NewReader(c)
	ss := &session{c: c}
	for _, p := range s.onConnect() {
		c.Write(Frame([]byte(p), false))
	}
	for {
		b, err := r.ReadByte()
		if err != nil {
			return
		}
		switch {
		case ss.hung:
			continue
		case b == 0x03:
			if ss.running {
				ss.running = false
				s.send(ss, []string{"T02thread:" + Thread + ";"}, nil)
			}
			continue
		case b == '-':
			if ss.last != nil {
				if ss.badAgain {
					c.Write(corrupt(ss.last))
				} else {
					c.Write(ss.last)
				}
			}
			continue
		case b != '$':
			continue
		}
		body, err := r.ReadBytes('#')
		if err != nil {
			return
		}
		var cs [2]byte
		if _, err := io.ReadFull(r, cs[:]); err != nil {
			return
		}
		payload, err := Unframe(append(append([]byte{'$'}, body...), cs[:]...))
		if err != nil {
			c.Write([]byte{'-'})
			continue
		}
		if ss.running {
			continue
		}
		s.mu.Lock()
		s.requests = append(s.requests, string(payload))
		f := s.takeFault(string(payload))
		s.mu.Unlock()
		if f != nil && f.Kind == Nack {
			c.Write([]byte{'-'})
			continue
		}
		if !ss.noAck {
			c.Write([]byte{'+'})
		}
		if f != nil {
			switch f.Kind {
			case Drop:
				return
			case Stall:
				ss.running = true
				continue
			case Hang:
				ss.hung = true
				continue
			case Reply:
				s.send(ss, []string{f.Reply}, f)
				continue
			}
		}
		replies, closeAfter := s.handle(ss, string(payload))
		if len(replies) > 0 {
			s.send(ss, replies, f)
		}
		if closeAfter {
			return
		}
	}
}

// takeFault returns the first queued fault matching req and uses it up.
func (s *Stub) takeFault(req string) *Fault {
	for i, f := range s.faults {
		if !strings.HasPrefix(req, f.Match) {
			continue
		}
		if f.Count > 0 {
			f.Count--
			if f.Count == 0 {
				s.faults = append(s.faults[:i], s.faults[i+1:]...)
			}
		}
		return f
	}
	return nil
}

// corrupt returns a frame with its checksum off by one.
func corrupt(frame []byte) []byte {
	bad := bytes.Clone(frame)
	sum, _ := strconv.ParseUint(string(frame[len(frame)-2:]), 16, 8)
	sum = (sum + 1) & 0xff
	bad[len(bad)-2], bad[len(bad)-1] = hexDigits[sum>>4], hexDigits[sum&0xf]
	return bad
}

// send writes the packets, the last of which is the reply, applying f.
func (s *Stub) send(ss *session, packets []string, f *Fault) {
	s.mu.Lock()
	rle := s.rle
	s.mu.Unlock()
	var out []byte
	if f != nil && f.Kind == Unsolicited {
		ss.c.Write(Frame([]byte(f.Reply), rle))
	}
	if f != nil && f.Kind == MergedWrites {
		out = append(out, Frame([]byte("O"+hex.EncodeToString([]byte(MergedText))), rle)...)
	}
	if f != nil && f.Kind == Garbage {
		out = append(out, GarbageBytes...)
	}
	for i, p := range packets {
		frame := Frame([]byte(p), rle)
		if i == len(packets)-1 {
			ss.last = frame
			ss.badAgain = f != nil && f.Kind == BadChecksumAlways
			if f != nil && (f.Kind == BadChecksum || f.Kind == BadChecksumAlways) {
				frame = corrupt(frame)
			}
		}
		out = append(out, frame...)
	}
	if f != nil && f.Kind == SplitWrites {
		for i := range out {
			if _, err := ss.c.Write(out[i : i+1]); err != nil {
				return
			}
			if i%64 == 0 {
				time.Sleep(100 * time.Microsecond)
			}
		}
		return
	}
	ss.c.Write(out)
}

// stopReply is the stop reply after a step or breakpoint.
const stopReply = "T05thread:" + Thread + ";"

// handle answers one request. It returns the packets to send (console
// output first, the reply last) and whether to close the connection.
func (s *Stub) handle(ss *session, req string) ([]string, bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	one := func(r string) ([]string, bool) { return []string{r}, false }
	switch {
	case strings.HasPrefix(req, "qSupported"):
		return one(s.features)
	case req == "QStartNoAckMode":
		if !strings.Contains(s.features, "QStartNoAckMode+") {
			return one("")
		}
		s.sendNoAckSwitch(ss)
		return nil, false
	case req == "?":
		s.bps = nil
		return one(stopReply)
	case strings.HasPrefix(req, "qXfer:features:read:"):
		return one(s.xfer(ss, strings.TrimPrefix(req, "qXfer:features:read:")))
	case req == "g":
		return one(s.gReply())
	case strings.HasPrefix(req, "p"):
		return one(s.readReg(ss, req[1:]))
	case strings.HasPrefix(req, "P"):
		return one(s.writeReg(ss, req[1:]))
	case strings.HasPrefix(req, "m"):
		return one(s.memRead(req[1:]))
	case strings.HasPrefix(req, "M"):
		return one(s.memWrite(req[1:]))
	case req == "s" || strings.HasPrefix(req, "vCont;s"):
		if !s.nextStop() {
			s.addReg("rip", 1)
		}
		return one(stopReply)
	case req == "c" || strings.HasPrefix(req, "vCont;c"):
		if len(s.bps) == 0 {
			ss.running = true
			return nil, false
		}
		if s.nextStop() {
			return one(stopReply)
		}
		b := s.bps[0]
		switch b.kind {
		case 0, 1:
			s.setReg("rip", b.addr)
			return one(stopReply)
		default:
			key := [...]string{2: "watch", 3: "rwatch", 4: "awatch"}[b.kind]
			return one(fmt.Sprintf("T05thread:%s;%s:%x;", Thread, key, b.addr))
		}
	case req == "vCont?":
		return one("vCont;c;C;s;S")
	case strings.HasPrefix(req, "Z") || strings.HasPrefix(req, "z"):
		return one(s.breakpoint(req))
	case strings.HasPrefix(req, "qRcmd,"):
		cmd, err := hex.DecodeString(req[len("qRcmd,"):])
		if err != nil {
			return one("E01")
		}
		return s.monitorCmd(string(cmd)), false
	case req == "qqemu.sstepbits":
		var items []string
		for i, name := range []string{"ENABLE", "NOIRQ", "NOTIMER"} {
			if s.sstepBits&(1<<i) != 0 {
				items = append(items, fmt.Sprintf("%s=%x", name, 1<<i))
			}
		}
		return one(strings.Join(items, ","))
	case req == "qqemu.sstep":
		return one(fmt.Sprintf("0x%x", s.sstep))
	case strings.HasPrefix(req, "Qqemu.sstep="):
		v, err := strconv.ParseUint(req[len("Qqemu.sstep="):], 16, 32)
		if err != nil || int(v)&^s.sstepBits != 0 {
			return one("E22")
		}
		s.sstep = int(v)
		return one("OK")
	case strings.HasPrefix(req, "Qqemu.PhyMemMode:"):
		switch req[len("Qqemu.PhyMemMode:"):] {
		case "0":
			s.phys = false
		case "1":
			s.phys = true
		default:
			return one("E22")
		}
		return one("OK")
	case strings.HasPrefix(req, "Hg") || strings.HasPrefix(req, "Hc"):
		return one("OK")
	case req == "qfThreadInfo":
		return one("m" + Thread)
	case req == "qsThreadInfo":
		return one("l")
	case req == "qC":
		return one("QC" + Thread)
	case req == "qAttached":
		return one("1")
	case req == "D" || strings.HasPrefix(req, "D;"):
		ss.running = true
		return one("OK")
	case req == "k":
		if s.release == QEMU72 {
			return []string{"W00"}, true
		}
		return nil, true
	}
	return one("")
}

// sendNoAckSwitch answers QStartNoAckMode: the OK is still acknowledged,
// later packets are not.
func (s *Stub) sendNoAckSwitch(ss *session) {
	frame := Frame([]byte("OK"), false)
	ss.last = frame
	ss.c.Write(frame)
	ss.noAck = true
}

func (s *Stub) xfer(ss *session, args string) string {
	annex, rng, ok := strings.Cut(args, ":")
	offs, lens, ok2 := strings.Cut(rng, ",")
	if !ok || !ok2 {
		return "E00"
	}
	doc, found := s.files[annex]
	if !found {
		return "E00"
	}
	if annex == "target.xml" {
		ss.xmlRead = true
	}
	off, err1 := strconv.ParseUint(offs, 16, 32)
	n, err2 := strconv.ParseUint(lens, 16, 32)
	if err1 != nil || err2 != nil {
		return "E01"
	}
	n = min(n, xferChunk)
	if off >= uint64(len(doc)) {
		return "l"
	}
	end := min(off+n, uint64(len(doc)))
	if end == uint64(len(doc)) {
		return "l" + doc[off:end]
	}
	return "m" + doc[off:end]
}

func (s *Stub) gReply() string {
	var b strings.Builder
	b.Grow(2 * len(s.regfile))
	for _, r := range s.regs {
		val := s.regfile[r.offset : r.offset+r.size]
		if s.unknown[r.name] {
			b.WriteString(strings.Repeat("xx", r.size))
			continue
		}
		b.WriteString(hex.EncodeToString(val))
	}
	return b.String()
}

func (s *Stub) readReg(ss *session, arg string) string {
	if !ss.xmlRead && s.release == QEMU72 {
		return "" // QEMU 7.2 answers 'p' only after target.xml was read
	}
	n, err := strconv.ParseUint(arg, 16, 32)
	if err != nil || n >= uint64(len(s.regs)) {
		return "E00"
	}
	r := s.regs[n]
	if s.unknown[r.name] {
		return strings.Repeat("xx", r.size)
	}
	return hex.EncodeToString(s.regfile[r.offset : r.offset+r.size])
}

func (s *Stub) writeReg(ss *session, arg string) string {
	if !ss.xmlRead {
		return ""
	}
	ns, vals, ok := strings.Cut(arg, "=")
	n, err := strconv.ParseUint(ns, 16, 32)
	if !ok || err != nil || n >= uint64(len(s.regs)) {
		return "E00"
	}
	r := s.regs[n]
	val, err := hex.DecodeString(vals)
	if err != nil || len(val) != r.size {
		return "E00"
	}
	copy(s.regfile[r.offset:], val)
	delete(s.unknown, r.name)
	return "OK"
}

func (s *Stub) addReg(name string, d uint64) {
	r := s.regs[s.regIndex[name]]
	v := binary.LittleEndian.Uint64(s.regfile[r.offset:])
	binary.LittleEndian.PutUint64(s.regfile[r.offset:], v+d)
}

// memRead answers "m addr,len" like QEMU: E22 for lengths over half the
// packet size, E14 for unmapped memory.
func (s *Stub) memRead(arg string) string {
	as, ls, ok := strings.Cut(strings.TrimSpace(arg), ",")
	addr, err1 := strconv.ParseUint(as, 16, 64)
	n, err2 := strconv.ParseUint(ls, 16, 32)
	if !ok || err1 != nil || err2 != nil {
		return "E22"
	}
	if n > 4096/2 {
		return "E22"
	}
	b, ok := s.readMem(addr, int(n))
	if !ok {
		return "E14"
	}
	return hex.EncodeToString(b)
}

func (s *Stub) memWrite(arg string) string {
	head, data, ok := strings.Cut(arg, ":")
	as, ls, ok2 := strings.Cut(head, ",")
	addr, err1 := strconv.ParseUint(as, 16, 64)
	n, err2 := strconv.ParseUint(ls, 16, 32)
	b, err3 := hex.DecodeString(data)
	if !ok || !ok2 || err1 != nil || err2 != nil || err3 != nil || uint64(len(b)) != n {
		return "E22"
	}
	if !s.writeMem(addr, b) {
		return "E14"
	}
	return "OK"
}

func (s *Stub) breakpoint(req string) string {
	parts := strings.Split(req[1:], ",")
	if len(parts) != 3 {
		return "E22"
	}
	kind, err1 := strconv.Atoi(parts[0])
	addr, err2 := strconv.ParseUint(parts[1], 16, 64)
	size, err3 := strconv.ParseUint(parts[2], 16, 64)
	if err1 != nil || err2 != nil || err3 != nil || kind < 0 || kind > 4 {
		return "E22"
	}
	b := breakpoint{kind, addr, size}
	if req[0] == 'Z' {
		s.bps = append(s.bps, b)
		return "OK"
	}
	for i, x := range s.bps {
		if x == b {
			s.bps = append(s.bps[:i], s.bps[i+1:]...)
			return "OK"
		}
	}
	return "E22"
}

// monitorCmd answers qRcmd as QEMU does: the output in 'O' packets, one per
// line, then OK.
func (s *Stub) monitorCmd(cmd string) []string {
	out, ok := s.monitor[cmd]
	if !ok {
		name, _, _ := cutSpace(cmd)
		known, differs := s.knownMonitor(cmd)
		switch {
		case cmd == "info registers":
			out = s.infoRegisters()
		case cmd == "info kvm" || name == "logfile" || name == "log":
			out = s.logMonitor(cmd)
		case differs && known && s.kvm && name == "one-insn-per-tb":
			out = "This accelerator does not support setting one-insn-per-tb\r\n"
		case differs && known:
			out = ""
		case differs:
			out = "unknown command: '" + name + "'\r\n"
		default:
			out = "unknown command: '" + cmd + "'\r\n"
		}
	}
	var packets []string
	for len(out) > 0 {
		line := out
		if i := strings.IndexByte(out, '\n'); i >= 0 {
			line = out[:i+1]
		}
		out = out[len(line):]
		packets = append(packets, "O"+hex.EncodeToString([]byte(line)))
	}
	return append(packets, "OK")
}

func (s *Stub) u64(name string) uint64 {
	r := s.regs[s.regIndex[name]]
	var b [8]byte
	copy(b[:], s.regfile[r.offset:r.offset+min(r.size, 8)])
	return binary.LittleEndian.Uint64(b[:])
}
