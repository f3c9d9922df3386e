package cli

import (
	"context"
	"errors"
	"io"
)

// Simulate runs a simulated fleet; see simulate -h.
func Simulate(ctx context.Context, args []string, stdout io.Writer) error {
	return errors.New("simulate: not wired yet")
}

// Bench measures the server; see bench -h.
func Bench(ctx context.Context, args []string, stdout io.Writer) error {
	return errors.New("bench: not wired yet")
}
