package gdbstubtest

import (
	"errors"
	"strconv"
)

const hexDigits = "0123456789abcdef"

func needsEscape(c byte) bool {
	return c == '$' || c == '#' || c == '}' || c == '*'
}

// Frame returns payload as a packet: "$", the escaped payload, "#" and the
// two-digit checksum. '$', '#', '}' and '*' are escaped as '}' followed by the
// byte XOR 0x20. With rle, runs of four or more equal bytes are run-length
// encoded ("X*c" stands for X and c-29 more copies of X), never with '#' or
// '$' as the count.
func Frame(payload []byte, rle bool) []byte {
	body := make([]byte, 0, len(payload)+4)
	for i := 0; i < len(payload); {
		c := payload[i]
		if needsEscape(c) {
			body = append(body, '}', c^0x20)
			i++
			continue
		}
		run := 1
		for i+run < len(payload) && payload[i+run] == c && run < 98 {
			run++
		}
		if rle && run >= 4 {
			extra := run - 1
			if extra == 6 || extra == 7 { // '#' and '$' are not allowed as counts
				extra = 5
			}
			body = append(body, c, '*', byte(extra+29))
			i += extra + 1
			continue
		}
		body = append(body, c)
		i++
	}
	var sum byte
	for _, c := range body {
		sum += c
	}
	out := make([]byte, 0, len(body)+4)
	out = append(out, '$')
	out = append(out, body...)
	return append(out, '#', hexDigits[sum>>4], hexDigits[sum&0xf])
}

// Unframe checks a whole packet, "$body#cs", and returns its payload with
// escapes undone and run-length encoding expanded.
func Unframe(packet []byte) ([]byte, error) {
	if len(packet) < 4 || packet[0] != '$' || packet[len(packet)-3] != '#' {
		return nil, errors.New("not a framed packet")
	}
	body := packet[1 : len(packet)-3]
	want, err := strconv.ParseUint(string(packet[len(packet)-2:]), 16, 8)
	if err != nil {
		return nil, errors.New("checksum is not two hex digits")
	}
	var sum byte
	for _, c := range body {
		sum += c
	}
	if sum != byte(want) {
		return nil, errors.New("bad checksum")
	}
	return unescape(body)
}

// unescape undoes '}' escapes and expands run-length encoding.
func unescape(body []byte) ([]byte, error) {
	out := make([]byte, 0, len(body))
	for i := 0; i < len(body); i++ {
		switch c := body[i]; c {
		case '}':
			i++
			if i == len(body) {
				return nil, errors.New("escape at end of packet")
			}
			out = append(out, body[i]^0x20)
		case '*':
			i++
			if i == len(body) || len(out) == 0 || body[i] < 29 {
				return nil, errors.New("bad run-length encoding")
			}
			for n := int(body[i]) - 29; n > 0; n-- {
				out = append(out, out[len(out)-1])
			}
		default:
			out = append(out, c)
		}
	}
	return out, nil
}
