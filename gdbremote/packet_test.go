package gdbremote

import (
	"bytes"
	"errors"
	"fmt"
	"os"
	"reflect"
	"strings"
	"testing"

	"github.com/sctrace/sctrace/gdbremote/gdbstubtest"
)

func TestAppendPacket(t *testing.T) {
	tests := []struct{ payload, want string }{
		{"", "$#00"},
		{"g", "$g#67"},
		{"s", "$s#73"},
		{"?", "$?#3f"},
		{"qSupported", "$qSupported#37"},
		{"a#b", "$a}\x03b#" + sum("a}\x03b")},
		{"$}*", "$}\x04}]}\x0a#" + sum("}\x04}]}\x0a")},
		{"{", "${#7b"}, // '{' needs no escape
	}
	for _, tt := range tests {
		if got := string(appendPacket(nil, []byte(tt.payload))); got != tt.want {
			t.Errorf("appendPacket(%q) = %q, want %q", tt.payload, got, tt.want)
		}
	}
}

func sum(s string) string {
	return fmt.Sprintf("%02x", checksum([]byte(s)))
}

func TestDecodePacket(t *testing.T) {
	tests := []struct {
		body, want string
		err        error
	}{
		{"", "", nil},
		{"OK", "OK", nil},
		{"}\x03", "#", nil},
		{"}\x04}]}\x0a", "$}*", nil},
		{"0* ", "0000", nil},                  // ' ' = 32: three more
		{"a*!b", "aaaaab", nil},               // '!' = 33: four more
		{"x*~", strings.Repeat("x", 98), nil}, // '~' = 126: 97 more
		{"}\x03*!", "#####", nil},             // repeat an escaped byte
		{"0*\x1d", "0", nil},                  // count 29: no more copies
		{"}", "", errTrailingEscape},          // escape at the end
		{"*!", "", errRepeatAtStart},          // nothing to repeat
		{"a*", "a", errRepeatAtEnd},           // no count
		{"a*\x10", "a", errRepeatCount},       // count below 29
		{"a*\xff", "a", errRepeatCount},       // count above 126
		{"ea5be000f030362f", "ea5be000f030362f", nil},
	}
	for _, tt := range tests {
		got, err := decodePacket(nil, []byte(tt.body))
		if !errors.Is(err, tt.err) || (err == nil && string(got) != tt.want) {
			t.Errorf("decodePacket(%q) = %q, %v; want %q, %v", tt.body, got, err, tt.want, tt.err)
		}
	}
}

func TestDecodeHex(t *testing.T) {
	tests := []struct {
		in      string
		want    []byte
		unknown bool
		ok      bool
	}{
		{"", []byte{}, false, true},
		{"f0ff", []byte{0xf0, 0xff}, false, true},
		{"F0FF", []byte{0xf0, 0xff}, false, true},
		{"01xx03", []byte{1, 0, 3}, true, true},
		{"0", nil, false, false},
		{"0g", nil, false, false},
		{"x0", nil, false, false},
	}
	for _, tt := range tests {
		dst := make([]byte, len(tt.in)/2)
		unknown, ok := decodeHex(dst, []byte(tt.in))
		if ok != tt.ok || unknown != tt.unknown || (ok && !bytes.Equal(dst, tt.want)) {
			t.Errorf("decodeHex(%q) = %x, %v, %v; want %x, %v, %v", tt.in, dst, unknown, ok, tt.want, tt.unknown, tt.ok)
		}
	}
}

func TestParseHexUint(t *testing.T) {
	tests := []struct {
		in   string
		want uint64
		ok   bool
	}{
		{"0", 0, true},
		{"1000", 0x1000, true},
		{"ffffffffffffffff", 1<<64 - 1, true},
		{"10000000000000000", 0, false},
		{"", 0, false},
		{"0x10", 0, false},
	}
	for _, tt := range tests {
		got, ok := parseHexUint(tt.in)
		if got != tt.want || ok != tt.ok {
			t.Errorf("parseHexUint(%q) = %#x, %v; want %#x, %v", tt.in, got, ok, tt.want, tt.ok)
		}
		if s := string(appendHexUint(nil, tt.want)); tt.ok && tt.in != "1000" && s != strings.TrimLeft(tt.in, "0") && tt.want != 0 {
			t.Errorf("appendHexUint(%#x) = %q", tt.want, s)
		}
	}
}

func TestParseStopReply(t *testing.T) {
	tests := []struct {
		in   string
		want StopReply
		bad  bool
	}{
		{in: "S05", want: StopReply{Kind: 'S', Signal: 5}},
		{in: "T05thread:p01.01;", want: StopReply{Kind: 'T', Signal: 5, Thread: "p01.01"}},
		{in: "T02thread:p01.02;", want: StopReply{Kind: 'T', Signal: 2, Thread: "p01.02"}},
		{in: "T05thread:p01.01;watch:ffff888000001000;", want: StopReply{Kind: 'T', Signal: 5, Thread: "p01.01", Reason: "watch", Addr: 0xffff888000001000}},
		{in: "T05rwatch:5008;thread:1;", want: StopReply{Kind: 'T', Signal: 5, Thread: "1", Reason: "rwatch", Addr: 0x5008}},
		{in: "T05swbreak:;thread:p1.1;", want: StopReply{Kind: 'T', Signal: 5, Thread: "p1.1", Reason: "swbreak"}},
		{in: "T05hwbreak:;", want: StopReply{Kind: 'T', Signal: 5, Reason: "hwbreak"}},
		{in: "T0506:0000000000000000;07:f0ff000000000000;10:f0ff000000000000;thread:p01.01;core:0;",
			want: StopReply{Kind: 'T', Signal: 5, Thread: "p01.01", Values: map[string]string{
				"06": "0000000000000000", "07": "f0ff000000000000", "10": "f0ff000000000000", "core": "0"}}},
		{in: "T05syscall_entry:27;", want: StopReply{Kind: 'T', Signal: 5, Reason: "syscall_entry", Values: map[string]string{"syscall_entry": "27"}}},
		{in: "T05create;", want: StopReply{Kind: 'T', Signal: 5, Reason: "create"}},
		{in: "W00", want: StopReply{Kind: 'W'}},
		{in: "W01;process:1", want: StopReply{Kind: 'W', ExitCode: 1, Values: map[string]string{"process": "1"}}},
		{in: "X09", want: StopReply{Kind: 'X', Signal: 9}},
		{in: "", bad: true},
		{in: "T5", bad: true},
		{in: "OK", bad: true},
		{in: "E14", bad: true},
		{in: "Tzz", bad: true},
		{in: "S05x", bad: true},
		{in: "W00x", bad: true},
		{in: "T05watch:nothex;", bad: true},
		{in: "T05:x;", bad: true},
		{in: "PacketSize=1000", bad: true},
	}
	for _, tt := range tests {
		got, err := ParseStopReply(tt.in)
		if tt.bad {
			var me *MalformedError
			if !errors.As(err, &me) || me.Reply != tt.in {
				t.Errorf("ParseStopReply(%q) = %+v, %v; want a *MalformedError", tt.in, got, err)
			}
			continue
		}
		if err != nil || !reflect.DeepEqual(got, tt.want) {
			t.Errorf("ParseStopReply(%q) = %+v, %v; want %+v", tt.in, got, err, tt.want)
		}
	}
}

func TestStopReplyString(t *testing.T) {
	tests := []struct {
		in   StopReply
		want string
	}{
		{StopReply{}, "no stop reply"},
		{StopReply{Kind: 'T', Signal: 5, Thread: "p01.01"}, "T05thread:p01.01;"},
		{StopReply{Kind: 'T', Signal: 5, Reason: "watch", Addr: 0x1000}, "T05watch:1000;"},
		{StopReply{Kind: 'W', ExitCode: 3}, "W03"},
	}
	for _, tt := range tests {
		if got := tt.in.String(); got != tt.want {
			t.Errorf("String() = %q, want %q", got, tt.want)
		}
	}
}

func TestParseFeatures(t *testing.T) {
	got := parseFeatures(gdbstubtest.QEMUFeatures + ";QStartNoAckMode-;qRelocInsn?;bare")
	want := map[string]string{"PacketSize": "1000", "qXfer:features:read": "+", "vContSupported": "+",
		"multiprocess": "+", "QStartNoAckMode": "-", "qRelocInsn": "?", "bare": ""}
	if !reflect.DeepEqual(got, want) {
		t.Errorf("parseFeatures = %v, want %v", got, want)
	}
}

// TestParseTargetXMLQEMU checks the layout built from QEMU 7.2's target
// description against testdata/qemu-7.2-layout.txt.
func TestParseTargetXMLQEMU(t *testing.T) {
	files := gdbstubtest.QEMUFiles()
	regs, err := ParseTargetXML("target.xml", func(annex string) ([]byte, error) {
		doc, ok := files[annex]
		if !ok {
			return nil, os.ErrNotExist
		}
		return []byte(doc), nil
	})
	if err != nil {
		t.Fatal(err)
	}
	var b strings.Builder
	for _, r := range regs {
		fmt.Fprintf(&b, "%-10s regnum=%-2d bits=%-3d offset=%-3d type=%s feature=%s\n", r.Name, r.Regnum, r.Bitsize, r.Offset, r.Type, r.Feature)
	}
	want, err := os.ReadFile("testdata/qemu-7.2-layout.txt")
	if err != nil {
		t.Fatal(err)
	}
	if b.String() != string(want) {
		t.Errorf("layout differs from testdata/qemu-7.2-layout.txt; got:\n%s", b.String())
	}
	last := regs[len(regs)-1]
	if size := last.Offset + last.Size(); size != 608 {
		t.Errorf("layout covers %d bytes, want 608", size)
	}
}

func TestParseTargetXML(t *testing.T) {
	tests := []struct {
		name    string
		files   map[string]string
		want    []Register
		wantErr string
	}{
		{
			name: "regnum and offsets",
			files: map[string]string{"target.xml": `<target><feature name="f">
				<reg name="a" bitsize="64"/><reg name="b" bitsize="32" type="int32" group="general"/>
				<reg name="c" bitsize="16" regnum="10"/><reg name="d" bitsize="8"/></feature></target>`},
			want: []Register{
				{Name: "a", Regnum: 0, Bitsize: 64, Offset: 0, Feature: "f"},
				{Name: "b", Regnum: 1, Bitsize: 32, Offset: 8, Feature: "f", Type: "int32", Group: "general"},
				{Name: "c", Regnum: 10, Bitsize: 16, Offset: 12, Feature: "f"},
				{Name: "d", Regnum: 11, Bitsize: 8, Offset: 14, Feature: "f"},
			},
		},
		{
			name: "includes in place, nested",
			files: map[string]string{
				"target.xml": `<?xml version="1.0"?><!DOCTYPE target SYSTEM "gdb-target.dtd"><target>
					<reg name="first" bitsize="8"/>
					<xi:include href="a.xml"/><reg name="last" bitsize="8"/></target>`,
				"a.xml": `<feature name="A"><reg name="a1" bitsize="16"/><xi:include href="b.xml"/></feature>`,
				"b.xml": `<feature name="B"><reg name="b1" bitsize="32"/></feature>`,
			},
			want: []Register{
				{Name: "first", Regnum: 0, Bitsize: 8, Offset: 0},
				{Name: "a1", Regnum: 1, Bitsize: 16, Offset: 1, Feature: "A"},
				{Name: "b1", Regnum: 2, Bitsize: 32, Offset: 3, Feature: "B"},
				{Name: "last", Regnum: 3, Bitsize: 8, Offset: 7},
			},
		},
		{
			name: "namespaced include",
			files: map[string]string{
				"target.xml": `<target xmlns:xi="http://www.w3.org/2001/XInclude"><xi:include href="a.xml"/></target>`,
				"a.xml":      `<feature name="A"><reg name="r" bitsize="64"/></feature>`,
			},
			want: []Register{{Name: "r", Bitsize: 64, Feature: "A"}},
		},
		{name: "missing annex", files: map[string]string{"target.xml": `<target><xi:include href="gone.xml"/></target>`}, wantErr: "gone.xml"},
		{name: "include loop", files: map[string]string{"target.xml": `<target><xi:include href="target.xml"/></target>`}, wantErr: "included twice"},
		{name: "no bitsize", files: map[string]string{"target.xml": `<target><reg name="r"/></target>`}, wantErr: "bad bitsize"},
		{name: "no name", files: map[string]string{"target.xml": `<target><reg bitsize="8"/></target>`}, wantErr: "without a name"},
		{name: "bad regnum", files: map[string]string{"target.xml": `<target><reg name="r" bitsize="8" regnum="-1"/></target>`}, wantErr: "bad regnum"},
		{name: "bad xml", files: map[string]string{"target.xml": `<target><reg name="r" bitsize="8"></target>`}, wantErr: "parse target description"},
		{name: "include without href", files: map[string]string{"target.xml": `<target><xi:include/></target>`}, wantErr: "without href"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := ParseTargetXML("target.xml", func(annex string) ([]byte, error) {
				doc, ok := tt.files[annex]
				if !ok {
					return nil, os.ErrNotExist
				}
				return []byte(doc), nil
			})
			if tt.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
					t.Errorf("error %v, want one saying %q", err, tt.wantErr)
				}
				return
			}
			if err != nil || !reflect.DeepEqual(got, tt.want) {
				t.Errorf("got %+v, %v\nwant %+v", got, err, tt.want)
			}
		})
	}
}

func TestDecodeValuesShortReply(t *testing.T) {
	l := newLayout([]Register{{Name: "a", Bitsize: 32}, {Name: "b", Bitsize: 32, Offset: 4, Regnum: 1}})
	v, ok := decodeValues(l, []byte("78563412"))
	if !ok {
		t.Fatal("decodeValues failed")
	}
	if a, ok := v.Uint64("a"); !ok || a != 0x12345678 {
		t.Errorf("a = %#x, %v", a, ok)
	}
	if _, ok := v.Uint64("b"); ok {
		t.Error("b is present in a reply too short for it")
	}
	if _, ok := decodeValues(l, []byte("7856341")); ok {
		t.Error("odd-length reply accepted")
	}
}
