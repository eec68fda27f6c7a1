package gdbstubtest

import (
	"bytes"
	"strings"
	"testing"
)

func TestFrame(t *testing.T) {
	tests := []struct {
		payload string
		rle     bool
		want    string
	}{
		{"OK", false, "$OK#9a"},
		{"", false, "$#00"},
		{"a#", false, "$a}\x03#e1"},
		{"0000", true, "$0* #7a"},
		{"0000000", true, "$0*\"0#ac"}, // a run of 7 avoids the '#' count
		{strings.Repeat("x", 98), true, "$x*~#20"},
	}
	for _, tt := range tests {
		got := string(Frame([]byte(tt.payload), tt.rle))
		if got != tt.want {
			t.Errorf("Frame(%q, %v) = %q, want %q", tt.payload, tt.rle, got, tt.want)
			continue
		}
		back, err := Unframe([]byte(got))
		if err != nil || string(back) != tt.payload {
			t.Errorf("Unframe(%q) = %q, %v; want %q", got, back, err, tt.payload)
		}
	}
}

func TestUnframeErrors(t *testing.T) {
	for _, in := range []string{"", "OK", "$OK#00", "$OK#zz", "$}#7d", "$*!#4b"} {
		if _, err := Unframe([]byte(in)); err == nil {
			t.Errorf("Unframe(%q) succeeded", in)
		}
	}
}

func TestQEMUFiles(t *testing.T) {
	files := QEMUFiles()
	if !strings.Contains(files["target.xml"], `href="i386-64bit.xml"`) {
		t.Error("target.xml does not include i386-64bit.xml")
	}
	for _, reg := range []string{"gs_base", "k_gs_base", "cr3", "efer", "mxcsr"} {
		if !strings.Contains(files["i386-64bit.xml"], `name="`+reg+`"`) {
			t.Errorf("i386-64bit.xml lacks %s", reg)
		}
	}
}

func TestStubResetState(t *testing.T) {
	s := New(t)
	if got := s.Register("rip"); !bytes.Equal(got, []byte{0xf0, 0xff, 0, 0, 0, 0, 0, 0}) {
		t.Errorf("rip = % x", got)
	}
	if got, ok := s.Memory(0xffff0, 1); !ok || got[0] != 0xea {
		t.Errorf("reset vector = % x, %v", got, ok)
	}
	if _, ok := s.Memory(0xdead0000, 1); ok {
		t.Error("unmapped memory readable")
	}
	if s.Register("lstar") != nil {
		t.Error("the stub has an lstar register; QEMU's does not")
	}
}
