package gdbremote

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"io"
)

// FrameKind says what a Frame is.
type FrameKind int

// Kinds of frame.
const (
	FramePacket       FrameKind = iota // "$payload#cc"
	FrameNotification                  // "%payload#cc", an asynchronous notification
	FrameAck                           // "+"
	FrameNack                          // "-"
	FrameInterrupt                     // 0x03, ctrl-c
	FrameOther                         // a byte outside any packet
)

// A Frame is one unit of the remote serial protocol as it crosses the wire:
// a packet, an ack, a nack, an interrupt, or a stray byte. A proxy reads
// frames to learn what passes and forwards Raw unchanged.
type Frame struct {
	Kind FrameKind
	// Raw is every byte of the frame as read, framing and checksum
	// included.
	Raw []byte
	// Payload is the decoded payload of a packet or notification:
	// escapes undone and run-length encoding expanded.
	Payload []byte
	// Bad, when set, says why the packet is not well formed (a bad
	// checksum, a broken escape); Raw is still what was read.
	Bad error
}

// IsPacket reports whether f is a well-formed packet whose payload
// starts with prefix.
func (f Frame) IsPacket(prefix string) bool {
	return f.Kind == FramePacket && f.Bad == nil && bytes.HasPrefix(f.Payload, []byte(prefix))
}

// FrameReader splits a byte stream of the remote serial protocol into
// frames. Unlike a Conn it neither acknowledges nor answers anything.
type FrameReader struct {
	rd *bufio.Reader
}

// NewFrameReader reads frames from r.
func NewFrameReader(r io.Reader) *FrameReader {
	return &FrameReader{rd: bufio.NewReaderSize(r, 16<<10)}
}

// errFrameTooLong is returned for a packet longer than maxPacketBytes.
var errFrameTooLong = errors.New("gdbremote: packet longer than 1 MiB")

// Next reads the next frame. Its Raw and Payload are the caller's. An
// error ends the stream (io.EOF when it ended between frames,
// io.ErrUnexpectedEOF inside a packet).
func (fr *FrameReader) Next() (Frame, error) {
	b, err := fr.rd.ReadByte()
	if err != nil {
		return Frame{}, err
	}
	switch b {
	case ack:
		return Frame{Kind: FrameAck, Raw: []byte{b}}, nil
	case nack:
		return Frame{Kind: FrameNack, Raw: []byte{b}}, nil
	case interrupt:
		return Frame{Kind: FrameInterrupt, Raw: []byte{b}}, nil
	case pktStart, '%':
	default:
		return Frame{Kind: FrameOther, Raw: []byte{b}}, nil
	}
	f := Frame{Kind: FramePacket, Raw: []byte{b}}
	if b == '%' {
		f.Kind = FrameNotification
	}
	for {
		chunk, err := fr.rd.ReadSlice(pktEnd)
		f.Raw = append(f.Raw, chunk...)
		if err == nil {
			break
		}
		if err == io.EOF {
			return f, io.ErrUnexpectedEOF
		}
		if err != bufio.ErrBufferFull {
			return f, err
		}
		if len(f.Raw) > maxPacketBytes {
			return f, errFrameTooLong
		}
	}
	var sum [2]byte
	if _, err := io.ReadFull(fr.rd, sum[:]); err != nil {
		f.Raw = append(f.Raw, sum[:]...)
		if err == io.EOF {
			err = io.ErrUnexpectedEOF
		}
		return f, err
	}
	f.Raw = append(f.Raw, sum[:]...)
	body := f.Raw[1 : len(f.Raw)-3]
	hi, lo := unhexTable[sum[0]], unhexTable[sum[1]]
	switch {
	case hi == 0xff || lo == 0xff:
		f.Bad = fmt.Errorf("checksum %q is not hex", sum[:])
	case hi<<4|lo != checksum(body):
		f.Bad = fmt.Errorf("bad checksum %q (the body sums to %02x)", sum[:], checksum(body))
	case bytes.IndexByte(body, pktStart) >= 0:
		f.Bad = errors.New("a '$' inside the packet: one packet was cut short by another")
	}
	f.Payload, err = decodePacket(nil, body)
	if err != nil && f.Bad == nil {
		f.Bad = err
	}
	return f, nil
}
