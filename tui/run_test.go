package tui

import (
	"context"
	"errors"
	"os"
	"testing"
)

func TestRunNeedsTerminal(t *testing.T) {
	if IsTerminal(os.Stdout) {
		t.Skip("standard output is a terminal here")
	}
	if err := Run(context.Background(), Config{}, nil, nil); !errors.Is(err, ErrNoTerminal) {
		t.Fatalf("Run without a terminal = %v, want ErrNoTerminal", err)
	}
}
