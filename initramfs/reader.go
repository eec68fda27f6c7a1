package initramfs

import (
	"errors"
	"fmt"
	"strconv"
)

// Entry is one entry of an archive read by Parse.
type Entry struct {
	Header
	Data []byte
}

// IsDir reports whether the entry is a directory.
func (e Entry) IsDir() bool { return e.Mode&0o170000 == typeDir }

// IsRegular reports whether the entry is a regular file.
func (e Entry) IsRegular() bool { return e.Mode&0o170000 == typeReg }

// IsCharDevice reports whether the entry is a character device node.
func (e Entry) IsCharDevice() bool { return e.Mode&0o170000 == typeChr }

// ErrFormat is returned (wrapped) for data that is not a newc archive.
var ErrFormat = errors.New("not a newc cpio archive")

// Parse reads a newc archive up to its trailer, for tests and for checking
// an archive before a kernel is booted with it.
func Parse(b []byte) ([]Entry, error) {
	var out []Entry
	off := 0
	for {
		if len(b)-off < headerLen {
			return nil, fmt.Errorf("offset %d: archive ends without %s: %w", off, Trailer, ErrFormat)
		}
		h := b[off : off+headerLen]
		if string(h[:6]) != Magic {
			return nil, fmt.Errorf("offset %d: magic %q: %w", off, h[:6], ErrFormat)
		}
		var f [13]uint32
		for i := range f {
			v, err := strconv.ParseUint(string(h[6+8*i:14+8*i]), 16, 32)
			if err != nil {
				return nil, fmt.Errorf("offset %d: field %d: %w", off, i, ErrFormat)
			}
			f[i] = uint32(v)
		}
		nameEnd := off + headerLen + int(f[11])
		if f[11] == 0 || nameEnd > len(b) || b[nameEnd-1] != 0 {
			return nil, fmt.Errorf("offset %d: bad name size %d: %w", off, f[11], ErrFormat)
		}
		name := string(b[off+headerLen : nameEnd-1])
		dataStart := nameEnd + pad4(nameEnd)
		dataEnd := dataStart + int(f[6])
		if dataEnd > len(b) {
			return nil, fmt.Errorf("entry %q: %d bytes of data past the end: %w", name, f[6], ErrFormat)
		}
		if name == Trailer {
			return out, nil
		}
		out = append(out, Entry{
			Header: Header{Name: name, Mode: f[1], UID: f[2], GID: f[3], Links: f[4], ModifiedUnix: f[5],
				Size: int(f[6]), RDevMajor: f[9], RDevMinor: f[10]},
			Data: b[dataStart:dataEnd],
		})
		off = dataEnd + pad4(dataEnd)
	}
}
