package gdbstubtest

import (
	"os"
	"strings"
)

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

// SetKVM says whether the guest runs under KVM rather than TCG, for the
// monitor's `info kvm` and `one-insn-per-tb`.
func (s *Stub) SetKVM(on bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.kvm = on
}

// logItems are the -d items QEMU's `log` command knows, of those sctrace
// uses.
var logItems = map[string]bool{"none": true, "exec": true, "cpu": true, "nochain": true, "int": true, "in_asm": true}

// logMonitor answers `info kvm`, `logfile PATH` and `log ITEMS` as QEMU
// 7.2 and 10.0 were seen to: `info kvm` says "kvm support: enabled" or
// "disabled"; `logfile` names a file QEMU opens at once, and complains
// "Error opening logfile PATH: No such file or directory" when its
// directory does not exist; `log` with an item it does not know prints the
// list of items (here its first line). The fake writes no log.
func (s *Stub) logMonitor(cmd string) string {
	name, arg, _ := cutSpace(cmd)
	switch name {
	case "info":
		if s.kvm {
			return "kvm support: enabled\r\n"
		}
		return "kvm support: disabled\r\n"
	case "logfile":
		f, err := os.OpenFile(arg, os.O_WRONLY|os.O_CREATE, 0o644)
		if err != nil {
			return "Error opening logfile " + arg + ": No such file or directory\r\n"
		}
		f.Close()
		return ""
	}
	for _, item := range strings.Split(arg, ",") {
		if !logItems[item] {
			return "Log items (comma separated):\r\n"
		}
	}
	return ""
}
