package gdbremote

import (
	"context"
	"fmt"
	"net"
)

// Joined is what a Conn joining a session needs to know of it: what the
// stub said to qSupported and whether acks were turned off
// (QStartNoAckMode answered "OK").
type Joined struct {
	Features string // the stub's reply to qSupported; "" when not seen
	NoAck    bool
}

// Join makes a Conn on a connection whose handshake another client made,
// for a proxy that sends requests of its own between the client's. It
// sends no '?' (QEMU would drop the client's breakpoints), no qSupported
// when the features are known, and no QStartNoAckMode: it takes the
// session as it is. It reads the target description (qXfer, which changes
// nothing in the stub) to learn the register layout. nc is the Conn's from
// then on, until Close, which closes it.
func Join(ctx context.Context, nc net.Conn, addr string, j Joined, opts ...Option) (*Conn, error) {
	cfg := config{timeout: DefaultTimeout}
	for _, o := range opts {
		o(&cfg)
	}
	c := newConn(nc, addr, cfg)
	c.noAck = j.NoAck
	reply := j.Features
	if reply == "" {
		var err error
		if reply, err = c.requestString(ctx, qSupportedRequest); err != nil {
			return nil, fmt.Errorf("gdbremote: join %s: %w", addr, err)
		}
	}
	c.features = parseFeatures(reply)
	if s, ok := c.features["PacketSize"]; ok {
		n, ok := parseHexUint(s)
		if !ok || n > maxPacketBytes {
			return nil, fmt.Errorf("gdbremote: join %s: %w", addr, &MalformedError{Request: "qSupported", Reply: reply, Reason: "bad PacketSize"})
		}
		c.packetSize = max(int(n), minPacketSize)
	}
	if c.features["qXfer:features:read"] == "+" {
		regs, err := ParseTargetXML("target.xml", func(annex string) ([]byte, error) {
			return c.readAnnex(ctx, annex)
		})
		if err != nil {
			return nil, fmt.Errorf("gdbremote: join %s: %w", addr, err)
		}
		c.layout = newLayout(regs)
	}
	return c, nil
}
