package cli

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"net/http"
	"runtime"
	"slices"
	"time"

	"github.com/verifier/controlplane/app/load"
)

// Bench measures a running control plane: /healthz throughput as the
// machine's baseline, heartbeat throughput with many distinct worker ids and
// its latency, latency at a fixed heartbeat rate, and list latency.
func Bench(ctx context.Context, args []string, getenv func(string) string, stdout io.Writer) error {
	fs := flag.NewFlagSet("bench", flag.ContinueOnError)
	fs.SetOutput(stdout)
	url := fs.String("url", "http://localhost:8080", "base URL of the control plane")
	token := fs.String("token", getenv("CONTROL_PLANE_TOKEN"), "bearer token (default $CONTROL_PLANE_TOKEN, also read from .env)")
	duration := fs.Duration("duration", 10*time.Second, "length of each throughput run")
	concurrency := fs.Int("concurrency", 64, "concurrent connections of the closed-loop runs")
	workers := fs.Int("workers", 10_000, "distinct worker ids")
	pools := fs.Int("pools", 10, "pools the worker ids are spread over")
	rate := fs.Float64("rate", 20_000, "heartbeats per second of the fixed-rate run; 0 skips it")
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return nil
		}
		return err
	}

	fmt.Fprintf(stdout, "machine: %d CPUs, %s/%s, %s\n", runtime.NumCPU(), runtime.GOOS, runtime.GOARCH, runtime.Version())
	base := load.Config{URL: *url, Token: *token, Concurrency: *concurrency, Duration: *duration, Workers: *workers, Pools: *pools}

	healthz := base
	healthz.Target = load.TargetHealthz
	hz, err := load.Run(ctx, healthz)
	if err != nil {
		return fmt.Errorf("healthz run: %w", err)
	}
	fmt.Fprintf(stdout, "healthz baseline:   %s", hz)

	hb := base
	hb.Target = load.TargetHeartbeat
	res, err := load.Run(ctx, hb)
	if err != nil {
		return fmt.Errorf("heartbeat run: %w", err)
	}
	fmt.Fprintf(stdout, "heartbeat:          %s", res)
	// Only successful requests count: a ratio of rejected heartbeats (a
	// wrong token, say) would look like a result.
	if res.Errors > 0 {
		return fmt.Errorf("heartbeat run: %d of %d requests failed (first: %s); fix that before reading the numbers", res.Errors, res.Requests, res.FirstError)
	}
	if hz.Throughput > 0 {
		fmt.Fprintf(stdout, "heartbeat/healthz:  %.0f%% (target >= 40%%)\n", 100*res.Throughput/hz.Throughput)
	}

	if *rate > 0 {
		fixed := hb
		fixed.Rate = *rate
		fixed.Concurrency = max(*concurrency, 256)
		fr, err := load.Run(ctx, fixed)
		if err != nil {
			return fmt.Errorf("fixed-rate run: %w", err)
		}
		fmt.Fprintf(stdout, "heartbeat @%.0f/s (target p99 <= 5ms): %s", *rate, fr)
	}

	for _, path := range []string{"/api/workers?limit=100", "/api/pools"} {
		p50, p99, err := timeGets(ctx, *url+path, *token, 200)
		if err != nil {
			return err
		}
		fmt.Fprintf(stdout, "GET %-24s p50 %v p99 %v over 200 requests (target < 10ms)\n", path, p50.Round(10*time.Microsecond), p99.Round(10*time.Microsecond))
	}
	return nil
}

// timeGets times n sequential GETs and returns the median and 99th
// percentile latency.
func timeGets(ctx context.Context, url, token string, n int) (p50, p99 time.Duration, err error) {
	lat := make([]time.Duration, 0, n)
	for range n {
		req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
		if err != nil {
			return 0, 0, err
		}
		req.Header.Set("Authorization", "Bearer "+token)
		start := time.Now()
		res, err := http.DefaultClient.Do(req)
		if err != nil {
			return 0, 0, fmt.Errorf("GET %s: %w", url, err)
		}
		_, _ = io.Copy(io.Discard, res.Body)
		res.Body.Close()
		if res.StatusCode != http.StatusOK {
			return 0, 0, fmt.Errorf("GET %s: status %d", url, res.StatusCode)
		}
		lat = append(lat, time.Since(start))
	}
	slices.Sort(lat)
	return lat[n/2], lat[n*99/100], nil
}
