// Package cli wires the control plane together: it reads the configuration,
// builds every dependency with its constructor, starts the loops and shuts
// them down in a stated order. main.go calls Run and nothing else.
package cli

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"os"

	"github.com/joho/godotenv"
)

// Run runs the subcommand in args: none (serve), simulate, bench or
// bench-dashboard.
func Run(ctx context.Context, args []string, getenv func(string) string, stdout io.Writer) error {
	getenv = withDotEnv(getenv, ".env")
	cmd := ""
	if len(args) > 0 {
		cmd = args[0]
	}
	switch cmd {
	case "", "serve":
		return Serve(ctx, getenv, stdout)
	case "simulate":
		return Simulate(ctx, args[1:], getenv, stdout)
	case "bench":
		return Bench(ctx, args[1:], getenv, stdout)
	case "bench-dashboard":
		return BenchDashboard(ctx, args[1:], getenv, stdout)
	case "-h", "-help", "--help", "help":
		fmt.Fprintln(stdout, usage)
		return nil
	}
	return fmt.Errorf("unknown command %q\n%s", cmd, usage)
}

const usage = `usage:
  controlplane                 serve the control plane (configured by the environment and .env)
  controlplane simulate ...    run a simulated fleet against a server (simulate -h for flags)
  controlplane bench ...       measure /healthz and heartbeat throughput (bench -h for flags)
  controlplane bench-dashboard ...  measure live dashboard updates under heartbeat load (bench-dashboard -h for flags)`

// withDotEnv returns a getenv that falls back to the values in the .env file
// at path, so the real environment wins. A missing file is not an error.
func withDotEnv(getenv func(string) string, path string) func(string) string {
	values, err := godotenv.Read(path)
	if err != nil {
		if !os.IsNotExist(err) {
			slog.Warn("ignoring unreadable .env file", "path", path, "err", err)
		}
		return getenv
	}
	return func(key string) string {
		if v := getenv(key); v != "" {
			return v
		}
		return values[key]
	}
}

// newLogger returns a slog logger in the configured format and level.
func newLogger(w io.Writer, format, level string) *slog.Logger {
	var lvl slog.Level
	_ = lvl.UnmarshalText([]byte(level))
	opts := &slog.HandlerOptions{Level: lvl}
	if format == "json" {
		return slog.New(slog.NewJSONHandler(w, opts))
	}
	return slog.New(slog.NewTextHandler(w, opts))
}
