package cli

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"os"
	"time"

	"github.com/verifier/controlplane/app/simulate"
)

// Simulate runs a fleet of simulated workers that heartbeat over HTTP and
// obey their desired state, until interrupted or every worker has exited.
func Simulate(ctx context.Context, args []string, getenv func(string) string, stdout io.Writer) error {
	fs := flag.NewFlagSet("simulate", flag.ContinueOnError)
	fs.SetOutput(stdout)
	url := fs.String("url", "http://localhost:8080", "base URL of the control plane")
	token := fs.String("token", getenv("CONTROL_PLANE_TOKEN"), "bearer token (default $CONTROL_PLANE_TOKEN, also read from .env)")
	workers := fs.Int("workers", 10, "number of simulated workers")
	pools := fs.Int("pools", 3, "number of pools the workers are spread over")
	interval := fs.Duration("interval", 0, "heartbeat interval; unset follows the server's heartbeat_interval_seconds")
	failureRate := fs.Float64("failure-rate", 0.02, "probability that a job fails, from 0 to 1")
	jobDuration := fs.Duration("job-duration", 200*time.Millisecond, "mean duration of one simulated job")
	prefix := fs.String("prefix", "sim", "worker id prefix; ids are <prefix>-<pool>-<n>")
	seed := fs.Int64("seed", 0, "random seed; 0 picks one")
	verbose := fs.Bool("v", false, "log every heartbeat")
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return nil
		}
		return err
	}

	cfg := simulate.Config{
		URL: *url, Token: *token, Workers: *workers, Pools: *pools,
		Interval: *interval, FixedInterval: *interval > 0,
		FailureRate: *failureRate, JobDuration: *jobDuration, IDPrefix: *prefix, Seed: *seed,
	}
	if err := cfg.Validate(); err != nil {
		return fmt.Errorf("simulate: %w", err)
	}
	level := slog.LevelInfo
	if *verbose {
		level = slog.LevelDebug
	}
	log := slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: level}))
	err := simulate.Run(ctx, cfg, log)
	if errors.Is(err, context.Canceled) {
		return nil
	}
	return err
}
