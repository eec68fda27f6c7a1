package initramfs

import (
	"bytes"
	"errors"
	"strings"
	"testing"
)

func TestRoundTrip(t *testing.T) {
	var buf bytes.Buffer
	w := NewWriter(&buf)
	steps := []func() error{
		func() error { return w.Mkdir("dev", 0o755) },
		func() error { return w.CharDevice("/dev/console", 0o600, 5, 1) },
		func() error { return w.WriteFile("init", 0o755, []byte("\x7fELF abc")) },
		func() error { return w.Symlink("sbin/init", "/init") },
	}
	for _, s := range steps {
		if err := s(); err != nil {
			t.Fatal(err)
		}
	}
	if err := w.Close(); err != nil {
		t.Fatal(err)
	}
	if buf.Len()%4 != 0 {
		t.Errorf("archive is %d bytes, not a multiple of 4", buf.Len())
	}
	got, err := Parse(buf.Bytes())
	if err != nil {
		t.Fatal(err)
	}
	want := []struct {
		name  string
		check func(Entry) bool
	}{
		{"dev", func(e Entry) bool { return e.IsDir() && e.Mode&0o777 == 0o755 }},
		{"dev/console", func(e Entry) bool { return e.IsCharDevice() && e.RDevMajor == 5 && e.RDevMinor == 1 }},
		{"init", func(e Entry) bool { return e.IsRegular() && string(e.Data) == "\x7fELF abc" && e.Mode&0o777 == 0o755 }},
		{"sbin/init", func(e Entry) bool { return string(e.Data) == "/init" }},
	}
	if len(got) != len(want) {
		t.Fatalf("got %d entries, want %d", len(got), len(want))
	}
	for i, w := range want {
		if got[i].Name != w.name || !w.check(got[i]) {
			t.Errorf("entry %d = %+v, want %s with the right type and contents", i, got[i].Header, w.name)
		}
	}
}

// TestHeaderLayout checks one entry byte for byte against the format:
// magic, 13 hex fields, the name with its NUL, padding to 4.
func TestHeaderLayout(t *testing.T) {
	var buf bytes.Buffer
	w := NewWriter(&buf)
	if err := w.WriteFile("a", 0o644, []byte("xy")); err != nil {
		t.Fatal(err)
	}
	want := "070701" +
		"00000001" + "000081a4" + "00000000" + "00000000" + "00000001" + "00000000" +
		"00000002" + "00000000" + "00000000" + "00000000" + "00000000" + "00000002" + "00000000" +
		"a\x00" + "xy\x00\x00"
	if got := buf.String(); got != want {
		t.Errorf("entry bytes\n got %q\nwant %q", got, want)
	}
}

func TestErrors(t *testing.T) {
	tests := []struct {
		name string
		data string
	}{
		{"empty", ""},
		{"bad magic", "070707" + strings.Repeat("0", 104)},
		{"no trailer", "070701" + strings.Repeat("0", 80) + "00000002" + "00000000" + "a\x00\x00\x00"},
		{"bad hex", "070701" + strings.Repeat("z", 104)},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if _, err := Parse([]byte(tt.data)); !errors.Is(err, ErrFormat) {
				t.Errorf("Parse = %v, want ErrFormat", err)
			}
		})
	}
	w := NewWriter(&bytes.Buffer{})
	if err := w.WriteFile("", 0o644, nil); err == nil {
		t.Error("an empty name was accepted")
	}
	w.Close()
	if err := w.Mkdir("x", 0o755); !errors.Is(err, ErrClosed) {
		t.Errorf("Mkdir after Close = %v, want ErrClosed", err)
	}
}
