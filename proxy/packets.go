package proxy

import (
	"bytes"
	"strings"
)

// reqKind is what a client's request means to the recording.
type reqKind int

const (
	reqOther     reqKind = iota
	reqStep              // a single step: 's', 'S', vCont with an s or S action
	reqResume            // the guest runs: 'c', 'C', vCont with no step action
	reqWriteRegs         // 'G', 'P': the registers change
	reqWriteMem          // 'M', 'X': memory (maybe code) changes
	reqThread            // 'H': another thread (vCPU) selected
	reqPhysOn            // Qqemu.PhyMemMode:1
	reqPhysOff           // Qqemu.PhyMemMode:0
)

// classify says what a request payload means to the recording.
func classify(req []byte) reqKind {
	if len(req) == 0 {
		return reqOther
	}
	switch req[0] {
	case 's', 'S':
		return reqStep
	case 'c', 'C':
		return reqResume
	case 'G', 'P':
		return reqWriteRegs
	case 'M', 'X':
		return reqWriteMem
	case 'H':
		return reqThread
	}
	switch {
	case bytes.HasPrefix(req, []byte("vCont;")):
		return classifyVCont(string(req[len("vCont;"):]))
	case string(req) == "Qqemu.PhyMemMode:1":
		return reqPhysOn
	case string(req) == "Qqemu.PhyMemMode:0":
		return reqPhysOff
	}
	return reqOther
}

// classifyVCont classifies the actions of a vCont request
// ("s:p1.1;c:p1.-1"): a step if any action steps, a resume if any runs.
func classifyVCont(actions string) reqKind {
	kind := reqOther
	for _, a := range strings.Split(actions, ";") {
		if a == "" {
			continue
		}
		switch a[0] {
		case 's', 'S':
			return reqStep
		case 'c', 'C', 'r':
			kind = reqResume
		}
	}
	return kind
}

// isStop reports whether a reply is a stop reply: 'T' or 'S' (stopped by
// a signal), 'W' or 'X' (exited).
func isStop(reply []byte) bool {
	if len(reply) < 3 {
		return false
	}
	switch reply[0] {
	case 'T', 'S', 'W', 'X':
		return isHexByte(reply[1]) && isHexByte(reply[2])
	}
	return false
}

// exited reports whether a stop reply says the guest ended.
func exited(reply []byte) bool { return reply[0] == 'W' || reply[0] == 'X' }

// isConsole reports whether a reply is console output ('O' and hex).
func isConsole(reply []byte) bool {
	if len(reply) < 3 || reply[0] != 'O' {
		return false
	}
	for _, c := range reply[1:] {
		if !isHexByte(c) {
			return false
		}
	}
	return true
}

func isHexByte(c byte) bool {
	return '0' <= c && c <= '9' || 'a' <= c && c <= 'f' || 'A' <= c && c <= 'F'
}

// stopWhy says in words what a stop reply reports.
func stopWhy(reply []byte) string {
	s := string(reply)
	if len(s) > 3 && s[0] == 'T' {
		for _, kv := range strings.Split(s[3:], ";") {
			k, _, _ := strings.Cut(kv, ":")
			switch k {
			case "hwbreak", "swbreak":
				return "breakpoint, signal " + s[1:3]
			case "watch", "rwatch", "awatch":
				return "watchpoint, signal " + s[1:3]
			}
		}
	}
	if s[1:3] == "02" {
		return "interrupted, signal 02"
	}
	return "signal " + s[1:3]
}
