package gdbremote

import (
	"strconv"
	"strings"
)

// A StopReply is the stub's report that the target stopped or ended, sent in
// answer to '?', 's', 'c', vCont and to an interrupt.
type StopReply struct {
	// Kind is the reply's letter: 'S' or 'T' (stopped by a signal), 'W'
	// (exited) or 'X' (terminated by a signal).
	Kind byte
	// Signal is the signal number of an 'S', 'T' or 'X' reply. QEMU reports
	// 5 (SIGTRAP) for steps and breakpoints and 2 (SIGINT) after an
	// interrupt.
	Signal int
	// ExitCode is the exit status of a 'W' reply.
	ExitCode int
	// Thread is the thread of a 'T' reply, as sent ("p01.01" with the
	// multiprocess extensions), or "".
	Thread string
	// Values holds the other pairs of a 'T' reply, and the ";process:pid"
	// part of 'W' and 'X': register numbers (hex) to register values (hex,
	// target byte order), "core" to the CPU, and any key this package does
	// not interpret. It is nil when there are none.
	Values map[string]string
	// Reason is the stop reason key of a 'T' reply, if it has one: "watch",
	// "rwatch", "awatch", "swbreak", "hwbreak", "library", "replaylog",
	// "syscall_entry", "syscall_return", "fork", "vfork", "vforkdone",
	// "exec", "create" or "no_resumed". Its value, if any and not an
	// address, is in Values under the same key.
	Reason string
	// Addr is the data address of a "watch", "rwatch" or "awatch" stop.
	Addr uint64
}

// String returns the reply in its wire form, as far as it is known.
func (r StopReply) String() string {
	var b strings.Builder
	switch r.Kind {
	case 'W':
		b.WriteString("W" + hex2(r.ExitCode))
	case 0:
		return "no stop reply"
	default:
		b.WriteString(string(r.Kind) + hex2(r.Signal))
	}
	if r.Thread != "" {
		b.WriteString("thread:" + r.Thread + ";")
	}
	if r.Reason != "" {
		b.WriteString(r.Reason + ":")
		if isWatch(r.Reason) {
			b.WriteString(strconv.FormatUint(r.Addr, 16))
		} else {
			b.WriteString(r.Values[r.Reason])
		}
		b.WriteString(";")
	}
	return b.String()
}

func isWatch(key string) bool {
	return key == "watch" || key == "rwatch" || key == "awatch"
}

func isReason(key string) bool {
	switch key {
	case "watch", "rwatch", "awatch", "swbreak", "hwbreak", "library", "replaylog",
		"syscall_entry", "syscall_return", "fork", "vfork", "vforkdone", "exec",
		"create", "no_resumed":
		return true
	}
	return false
}

// ParseStopReply parses a stop reply packet ("S05", "T05thread:p01.01;",
// "W00", "X09;process:1", ...). Errors are *MalformedError.
func ParseStopReply(s string) (StopReply, error) {
	bad := func(reason string) (StopReply, error) {
		return StopReply{}, &MalformedError{Reply: s, Reason: reason}
	}
	if len(s) < 3 {
		return bad("stop reply too short")
	}
	r := StopReply{Kind: s[0]}
	v, ok := parseHexUint(s[1:3])
	if !ok {
		return bad("stop reply without a two-digit hex number")
	}
	switch r.Kind {
	case 'S':
		r.Signal = int(v)
		if len(s) != 3 {
			return bad("text after an 'S' stop reply")
		}
		return r, nil
	case 'W':
		r.ExitCode = int(v)
	case 'X':
		r.Signal = int(v)
	case 'T':
		r.Signal = int(v)
	default:
		return bad("not a stop reply")
	}
	rest := s[3:]
	if r.Kind != 'T' {
		// W and X may carry ";process:pid".
		if rest == "" {
			return r, nil
		}
		if rest[0] != ';' {
			return bad("unexpected text after the status")
		}
		rest = rest[1:]
	}
	for rest != "" {
		var pair string
		if i := strings.IndexByte(rest, ';'); i >= 0 {
			pair, rest = rest[:i], rest[i+1:]
		} else {
			pair, rest = rest, ""
		}
		if pair == "" {
			continue
		}
		key, val, _ := strings.Cut(pair, ":")
		if key == "" {
			return bad("empty key in a stop reply pair")
		}
		switch {
		case key == "thread" && r.Kind == 'T':
			r.Thread = val
			continue
		case isReason(key) && r.Kind == 'T':
			if r.Reason != "" {
				// Keep the first reason; later ones go to Values.
				break
			}
			r.Reason = key
			if isWatch(key) {
				a, ok := parseHexUint(val)
				if !ok {
					return bad("bad address in " + key)
				}
				r.Addr = a
				continue
			}
			if val == "" {
				continue
			}
		}
		if r.Values == nil {
			r.Values = make(map[string]string)
		}
		r.Values[key] = val
	}
	return r, nil
}
