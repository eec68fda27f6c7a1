package termtext

import (
	"strings"
	"testing"
)

func TestLineAndText(t *testing.T) {
	tests := []struct {
		name, in, line, text string
	}{
		{"plain", "entry_SYSCALL_64+0x10", "entry_SYSCALL_64+0x10", "entry_SYSCALL_64+0x10"},
		{"empty", "", "", ""},
		{"utf-8 kept", "stacks: user → kernel, ✓ é", "stacks: user → kernel, ✓ é", "stacks: user → kernel, ✓ é"},
		{"OSC title", "\x1b]0;pwned\x07", `\x1b]0;pwned\x07`, `\x1b]0;pwned\x07`},
		{"CSI", "a\x1b[2Jb", `a\x1b[2Jb`, `a\x1b[2Jb`},
		{"newline and tab", "a\nb\tc", `a\x0ab\x09c`, "a\nb\tc"},
		{"carriage return", "ok\rFAKE", `ok\x0dFAKE`, `ok\x0dFAKE`},
		{"CR LF line ends", "a\r\nb\r", `a\x0d\x0ab\x0d`, "a\r\n" + `b\x0d`},
		{"NUL and DEL", "a\x00b\x7f", `a\x00b\x7f`, `a\x00b\x7f`},
		{"C1 CSI as a rune", "a\u009b2Jb", `a\u009b2Jb`, `a\u009b2Jb`},
		{"C1 NEL as a rune", "a\u0085b", `a\u0085b`, `a\u0085b`},
		{"lone 8-bit CSI byte", "a\x9b2J", `a\x9b2J`, `a\x9b2J`},
		{"invalid UTF-8", "a\xff\xfeb", `a\xff\xfeb`, `a\xff\xfeb`},
		{"U+00A0 is printable", "a\u00a0b", "a\u00a0b", "a\u00a0b"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := Line(tt.in); got != tt.line {
				t.Errorf("Line(%q) = %q, want %q", tt.in, got, tt.line)
			}
			if got := Text(tt.in); got != tt.text {
				t.Errorf("Text(%q) = %q, want %q", tt.in, got, tt.text)
			}
			if IsClean(tt.in) != (tt.in == tt.line) {
				t.Errorf("IsClean(%q) = %v", tt.in, IsClean(tt.in))
			}
			for _, out := range []string{Line(tt.in), Text(tt.in)} {
				if i := strings.IndexFunc(out, func(r rune) bool {
					return r < 0x20 && r != '\n' && r != '\t' && r != '\r' || r >= 0x7f && r <= 0x9f
				}); i >= 0 {
					t.Errorf("%q still holds a control character at %d", out, i)
				}
			}
		})
	}
}

func TestLineAllocatesNothingWhenClean(t *testing.T) {
	s := strings.Repeat("entry_SYSCALL_64 ", 10)
	if n := testing.AllocsPerRun(100, func() { _ = Line(s) }); n != 0 {
		t.Errorf("Line of clean text allocates %.0f times", n)
	}
}

type kind string

type inner struct {
	Name  string
	Kinds []kind
}

type outer struct {
	A     string
	P     *inner
	List  []inner
	Map   map[string]string
	Ptrs  map[string]*inner
	Bytes []byte
	N     int
	priv  string
}

func TestLineAll(t *testing.T) {
	const bad = "\x1b]0;pwned\x07"
	v := &outer{
		A:     bad,
		P:     &inner{Name: bad, Kinds: []kind{bad}},
		List:  []inner{{Name: "ok"}, {Name: bad}},
		Map:   map[string]string{bad: bad, "ok": "fine"},
		Ptrs:  map[string]*inner{"x": {Name: bad}},
		Bytes: []byte{0x1b},
		priv:  bad,
	}
	LineAll(v)
	want := Line(bad)
	if v.A != want || v.P.Name != want || v.P.Kinds[0] != kind(want) || v.List[1].Name != want || v.List[0].Name != "ok" {
		t.Errorf("fields not cleaned: %+v %+v %+v", v, v.P, v.List)
	}
	if v.Map[want] != want || v.Map["ok"] != "fine" || len(v.Map) != 2 {
		t.Errorf("map not cleaned: %q", v.Map)
	}
	if v.Ptrs["x"].Name != want {
		t.Errorf("map of pointers not cleaned: %q", v.Ptrs["x"].Name)
	}
	if v.Bytes[0] != 0x1b || v.priv != bad {
		t.Error("LineAll changed bytes or an unexported field")
	}
}
