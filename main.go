// Command controlplane serves the worker control plane: `go run .` starts
// the server, `go run . simulate` runs a simulated fleet against it, and
// `go run . bench` measures it. See README.md.
package main

import (
	"context"
	"fmt"
	"io"
	"os"
	"os/signal"
	"syscall"

	"github.com/verifier/controlplane/app/cli"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	if err := run(ctx, os.Args[1:], os.Getenv, os.Stdout); err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
}

// run is the whole program with its inputs passed in, so tests can start it.
func run(ctx context.Context, args []string, getenv func(string) string, stdout io.Writer) error {
	return cli.Run(ctx, args, getenv, stdout)
}
