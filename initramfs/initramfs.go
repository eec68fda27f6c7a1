// Package initramfs writes the archives Linux unpacks into its initial
// root file system: cpio in the "new ASCII" (newc) format, as
// Documentation/driver-api/early-userspace/buffer-format.rst describes.
//
// A Writer adds directories, regular files and device nodes, and Close
// ends the archive with the TRAILER!!! entry. Every entry has owner root,
// time zero and a fresh inode number, so the same calls give the same bytes.
package initramfs

import (
	"errors"
	"fmt"
	"io"
	"io/fs"
	"strings"
)

// Magic opens every newc header.
const Magic = "070701"

// headerLen is the size of a newc header: the magic and 13 eight-digit hex
// fields.
const headerLen = 6 + 13*8

// Trailer is the name of the entry that ends an archive.
const Trailer = "TRAILER!!!"

// File type bits of a cpio mode (the same as struct stat's).
const (
	typeDir  = 0o040000
	typeReg  = 0o100000
	typeChr  = 0o020000
	typeLink = 0o120000
)

// ErrClosed is returned when an entry is added after Close.
var ErrClosed = errors.New("initramfs: archive already closed")

// Writer writes a newc archive.
type Writer struct {
	w      io.Writer
	ino    uint32
	off    int64
	closed bool
}

// NewWriter returns a Writer appending to w.
func NewWriter(w io.Writer) *Writer { return &Writer{w: w} }

// Header describes one entry.
type Header struct {
	Name         string // path inside the archive, without a leading "/"
	Mode         uint32 // file type and permission bits, as in struct stat
	RDevMajor    uint32 // device numbers of a device node
	RDevMinor    uint32
	Size         int // bytes of data following the header
	UID, GID     uint32
	Links        uint32
	ModifiedUnix uint32
}

// Mkdir adds a directory.
func (w *Writer) Mkdir(name string, perm fs.FileMode) error {
	return w.add(Header{Name: name, Mode: typeDir | uint32(perm.Perm()), Links: 2}, nil)
}

// WriteFile adds a regular file holding data.
func (w *Writer) WriteFile(name string, perm fs.FileMode, data []byte) error {
	return w.add(Header{Name: name, Mode: typeReg | uint32(perm.Perm()), Links: 1, Size: len(data)}, data)
}

// Symlink adds a symbolic link at name pointing to target.
func (w *Writer) Symlink(name, target string) error {
	return w.add(Header{Name: name, Mode: typeLink | 0o777, Links: 1, Size: len(target)}, []byte(target))
}

// CharDevice adds a character device node, e.g. /dev/console (5, 1).
func (w *Writer) CharDevice(name string, perm fs.FileMode, major, minor uint32) error {
	return w.add(Header{Name: name, Mode: typeChr | uint32(perm.Perm()), Links: 1, RDevMajor: major, RDevMinor: minor}, nil)
}

// Close writes the trailer entry. It does not close the underlying writer.
func (w *Writer) Close() error {
	if w.closed {
		return nil
	}
	err := w.add(Header{Name: Trailer, Links: 1}, nil)
	w.closed = true
	return err
}

func (w *Writer) add(h Header, data []byte) error {
	if w.closed {
		return ErrClosed
	}
	name := strings.TrimPrefix(h.Name, "/")
	if name == "" {
		return fmt.Errorf("initramfs: empty entry name")
	}
	if strings.IndexByte(name, 0) >= 0 {
		return fmt.Errorf("initramfs: entry name %q holds a NUL byte", name)
	}
	ino := uint32(0)
	if name != Trailer {
		w.ino++
		ino = w.ino
	}
	fields := []uint32{
		ino, h.Mode, h.UID, h.GID, h.Links, h.ModifiedUnix, uint32(len(data)),
		0, 0, h.RDevMajor, h.RDevMinor, uint32(len(name) + 1), 0,
	}
	var b strings.Builder
	b.WriteString(Magic)
	for _, f := range fields {
		fmt.Fprintf(&b, "%08x", f)
	}
	b.WriteString(name)
	b.WriteByte(0)
	hdr := []byte(b.String())
	hdr = append(hdr, make([]byte, pad4(len(hdr)))...)
	if err := w.write(hdr); err != nil {
		return err
	}
	if len(data) > 0 {
		if err := w.write(data); err != nil {
			return err
		}
		if err := w.write(make([]byte, pad4(len(data)))); err != nil {
			return err
		}
	}
	return nil
}

func (w *Writer) write(p []byte) error {
	n, err := w.w.Write(p)
	w.off += int64(n)
	if err != nil {
		return fmt.Errorf("initramfs: write at offset %d: %w", w.off, err)
	}
	return nil
}

// pad4 returns the bytes needed to bring n to a multiple of four.
func pad4(n int) int { return (4 - n%4) % 4 }
