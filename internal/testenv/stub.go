package testenv

import (
	"context"
	"testing"
	"time"

	"github.com/sctrace/sctrace/gdbremote"
	"github.com/sctrace/sctrace/gdbremote/gdbstubtest"
)

// DialStub connects a gdbremote client to a fake stub. The context it
// returns ends after ten seconds or with the test, and the client is
// closed when the test ends.
func DialStub(tb testing.TB, stub *gdbstubtest.Stub) (context.Context, *gdbremote.Conn) {
	tb.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	tb.Cleanup(cancel)
	conn, err := gdbremote.Dial(ctx, stub.Addr())
	if err != nil {
		tb.Fatalf("dial the fake stub: %v", err)
	}
	tb.Cleanup(func() { conn.Close() })
	return ctx, conn
}
