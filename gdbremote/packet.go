package gdbremote

import "errors"

// Framing bytes of the remote serial protocol.
const (
	pktStart  = '$'
	pktEnd    = '#'
	pktEscape = '}'
	pktRepeat = '*'
	ack       = '+'
	nack      = '-'
	interrupt = 0x03
)

const hexDigits = "0123456789abcdef"

// unhexTable maps an ASCII byte to its hex value, or to 0xff if it is not a
// hex digit.
var unhexTable = func() (t [256]byte) {
	for i := range t {
		t[i] = 0xff
	}
	for i := byte(0); i < 10; i++ {
		t['0'+i] = i
	}
	for i := byte(0); i < 6; i++ {
		t['a'+i] = 10 + i
		t['A'+i] = 10 + i
	}
	return t
}()

// checksum returns the modulo-256 sum of b.
func checksum(b []byte) byte {
	var s byte
	for _, c := range b {
		s += c
	}
	return s
}

// needsEscape reports whether c must be escaped in a packet body.
func needsEscape(c byte) bool {
	return c == pktStart || c == pktEnd || c == pktEscape || c == pktRepeat
}

// appendPacket appends the framed form of payload, "$" escaped-payload "#"
// checksum, to dst. '#', '$', '}' and '*' are escaped as '}' followed by the
// byte XOR 0x20; nothing is run-length encoded.
func appendPacket(dst, payload []byte) []byte {
	dst = append(dst, pktStart)
	start := len(dst)
	for _, c := range payload {
		if needsEscape(c) {
			dst = append(dst, pktEscape, c^0x20)
			continue
		}
		dst = append(dst, c)
	}
	sum := checksum(dst[start:])
	return append(dst, pktEnd, hexDigits[sum>>4], hexDigits[sum&0xf])
}

var (
	errTrailingEscape = errors.New("packet ends inside a '}' escape")
	errRepeatAtStart  = errors.New("run-length '*' with no byte to repeat")
	errRepeatAtEnd    = errors.New("run-length '*' without a count")
	errRepeatCount    = errors.New("run-length count out of range")
)

// decodePacket appends the decoded form of body, the bytes between '$' and
// '#', to dst. It undoes '}' escapes and expands run-length encoding: "X*c"
// stands for X followed by c-29 more copies of X.
func decodePacket(dst, body []byte) ([]byte, error) {
	for i := 0; i < len(body); i++ {
		c := body[i]
		switch c {
		case pktEscape:
			i++
			if i == len(body) {
				return dst, errTrailingEscape
			}
			dst = append(dst, body[i]^0x20)
		case pktRepeat:
			i++
			if i == len(body) {
				return dst, errRepeatAtEnd
			}
			n := int(body[i]) - 29
			if n < 0 || body[i] > 126 {
				return dst, errRepeatCount
			}
			if len(dst) == 0 {
				return dst, errRepeatAtStart
			}
			prev := dst[len(dst)-1]
			for ; n > 0; n-- {
				dst = append(dst, prev)
			}
		default:
			dst = append(dst, c)
		}
	}
	return dst, nil
}

// appendHex appends the lower-case hex encoding of b to dst.
func appendHex(dst, b []byte) []byte {
	for _, c := range b {
		dst = append(dst, hexDigits[c>>4], hexDigits[c&0xf])
	}
	return dst
}

// appendHexUint appends v in lower-case hex without leading zeros.
func appendHexUint(dst []byte, v uint64) []byte {
	if v == 0 {
		return append(dst, '0')
	}
	var buf [16]byte
	i := len(buf)
	for v != 0 {
		i--
		buf[i] = hexDigits[v&0xf]
		v >>= 4
	}
	return append(dst, buf[i:]...)
}

// decodeHex decodes the hex text src into dst, which must be at least
// len(src)/2 bytes long. A pair "xx" (the stub's mark for an unknown byte)
// decodes to zero and is reported through unknown. ok is false if src has
// odd length or a byte that is not a hex digit.
func decodeHex(dst, src []byte) (unknown, ok bool) {
	if len(src)%2 != 0 {
		return false, false
	}
	for i := 0; i < len(src); i += 2 {
		hi, lo := unhexTable[src[i]], unhexTable[src[i+1]]
		if hi|lo == 0xff {
			if (src[i] == 'x' || src[i] == 'X') && (src[i+1] == 'x' || src[i+1] == 'X') {
				unknown = true
				dst[i/2] = 0
				continue
			}
			return unknown, false
		}
		dst[i/2] = hi<<4 | lo
	}
	return unknown, true
}

// parseHexUint parses s, hex digits with no prefix, as an unsigned integer.
func parseHexUint[T string | []byte](s T) (uint64, bool) {
	if len(s) == 0 || len(s) > 16 {
		return 0, false
	}
	var v uint64
	for i := 0; i < len(s); i++ {
		d := unhexTable[s[i]]
		if d == 0xff {
			return 0, false
		}
		v = v<<4 | uint64(d)
	}
	return v, true
}

// isHex reports whether s is non-empty, of even length and all hex digits.
func isHex(s []byte) bool {
	if len(s) == 0 || len(s)%2 != 0 {
		return false
	}
	for _, c := range s {
		if unhexTable[c] == 0xff {
			return false
		}
	}
	return true
}
