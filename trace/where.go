package trace

import "strings"

// FitWhere fits a "symbol+0xoffset" location into n columns without ever
// losing the offset: when it is too long, the middle of the symbol gives
// way to "…", keeping the symbol's start and end, so that
// entry_SYSCALL_64_after_hwframe+0x4a becomes entry_SYSC…after_hwframe+0x4a.
// A location with no offset is shortened in its middle the same way. The
// result is at most n columns wide unless the offset alone needs more.
func FitWhere(where string, n int) string {
	if len([]rune(where)) <= n {
		return where
	}
	name, off := where, ""
	if i := strings.LastIndexByte(where, '+'); i > 0 {
		name, off = where[:i], where[i:]
	}
	room := n - len([]rune(off)) - 1 // one column for "…"
	if room < 2 {
		// Not even two characters of the name fit: the offset is what
		// tells the instructions of one symbol apart, so it stays.
		r := []rune(name)
		return string(r[:min(len(r), 1)]) + "…" + off
	}
	r := []rune(name)
	head := (room + 1) / 2
	tail := room - head
	return string(r[:head]) + "…" + string(r[len(r)-tail:]) + off
}
