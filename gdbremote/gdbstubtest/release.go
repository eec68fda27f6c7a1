package gdbstubtest

// A Release is the QEMU release whose stub the fake plays where releases
// differ. Both were observed on this project's machines: Debian 12's QEMU
// 7.2.22 and QEMU 10.0.2 from Debian's bookworm-backports, each running the
// teaching kernel under TCG. They give the same qSupported reply
// (QEMUFeatures), the same target.xml and i386-64bit.xml, the same 1216-digit
// 'g' reply, the same qqemu.sstepbits, vCont? and stop replies, the same
// `info registers` text, and an empty reply to QStartNoAckMode; they differ
// only as the constants below say.
type Release int

const (
	// QEMU72 plays QEMU 7.2.22, the default: 'k' is answered "W00" before
	// the connection closes; 'p' answers nothing until target.xml has been
	// read; the monitor knows "singlestep on|off" and not
	// "one-insn-per-tb"; and a debugger connecting to a running guest
	// (SetGuestRunning) is sent the stop reply "T02thread:01;" before it
	// sends anything.
	QEMU72 Release = iota
	// QEMU10 plays QEMU 10.0.2: 'k' closes the connection with no reply;
	// 'p' answers before target.xml is read; the monitor knows
	// "one-insn-per-tb on|off" and answers "unknown command:
	// 'singlestep'"; and connecting to a running guest stops it silently.
	QEMU10
)

// String names the release as `--version` numbers it.
func (r Release) String() string {
	switch r {
	case QEMU72:
		return "QEMU 7.2.22"
	case QEMU10:
		return "QEMU 10.0.2"
	}
	return "Release(?)"
}

// connectStop is QEMU 7.2's stop reply to a debugger that connects to a
// running guest, sent before multiprocess has been negotiated.
const connectStop = "T02thread:01;"

// SetRelease makes the stub play release r (QEMU72 by default).
func (s *Stub) SetRelease(r Release) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.release = r
}

// SetGuestRunning says whether the guest runs when the next debugger
// connects; connecting stops it, as QEMU does, announcing the stop or not
// as the release does.
func (s *Stub) SetGuestRunning(on bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.guestRunning = on
}

// onConnect is what the stub sends when a debugger connects.
func (s *Stub) onConnect() []string {
	s.mu.Lock()
	defer s.mu.Unlock()
	running := s.guestRunning
	s.guestRunning = false
	if running && s.release == QEMU72 {
		return []string{connectStop}
	}
	return nil
}

// knownMonitor reports whether the release's monitor knows cmd, for the
// commands that differ between releases.
func (s *Stub) knownMonitor(cmd string) (known, differs bool) {
	name, _, _ := cutSpace(cmd)
	switch name {
	case "singlestep":
		return s.release == QEMU72, true
	case "one-insn-per-tb":
		return s.release != QEMU72, true
	}
	return false, false
}

func cutSpace(s string) (before, after string, found bool) {
	for i := 0; i < len(s); i++ {
		if s[i] == ' ' {
			return s[:i], s[i+1:], true
		}
	}
	return s, "", false
}
