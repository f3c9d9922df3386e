// Package load is an HTTP load generator for the control plane, used by the
// benchmark command. It sends heartbeats from many distinct worker ids (or
// health checks) and reports throughput, exact latency percentiles and
// status counts.
//
// With Config.Rate 0 it runs closed-loop: Concurrency goroutines each send
// the next request as soon as the previous one completes, which measures
// maximum throughput. With a Rate it runs open-loop: requests are scheduled
// at fixed times, and latency is measured from the scheduled time, so a
// server that falls behind shows its queueing delay instead of hiding it
// (the "coordinated omission" problem).
package load

import (
	"errors"
	"fmt"
	"math"
	"net/url"
	"time"
)

// Targets that Run can load.
const (
	// TargetHeartbeat sends POST /api/workers/heartbeat with bearer auth.
	TargetHeartbeat = "heartbeat"
	// TargetHealthz sends GET /healthz without auth.
	TargetHealthz = "healthz"
)

// Defaults applied by Run to zero Config fields.
const (
	DefaultConcurrency = 64
	DefaultWorkers     = 10_000
	DefaultPools       = 10
	DefaultTimeout     = 10 * time.Second
)

// Upper limits that catch typing slips before they open thousands of
// connections or allocate ids for millions of workers.
const (
	MaxConcurrency = 10_000
	MaxWorkers     = 1_000_000
)

// Config describes one load run.
type Config struct {
	// URL is the control plane's base URL, such as http://127.0.0.1:8080,
	// and Token its bearer token (required for TargetHeartbeat).
	URL   string
	Token string

	// Concurrency is the number of requests in flight at most, and also the
	// number of keep-alive connections (default 64).
	Concurrency int

	// Duration is how long new requests are sent. Requests in flight at the
	// end still complete and count.
	Duration time.Duration

	// Workers is the number of distinct worker ids that heartbeats rotate
	// through (default 10000), spread over Pools pools (default 10).
	Workers int
	Pools   int

	// Target is TargetHeartbeat (the default) or TargetHealthz.
	Target string

	// Rate is the request rate per second of an open-loop run, or 0 for a
	// closed-loop run as fast as Concurrency allows.
	Rate float64

	// Timeout limits each request (default 10s).
	Timeout time.Duration
}

// Validate reports every invalid field at once. Zero values that have a
// default are valid.
func (c Config) Validate() error {
	var errs []error
	add := func(format string, args ...any) {
		errs = append(errs, fmt.Errorf(format, args...))
	}

	if u, err := url.Parse(c.URL); err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
		add("url %q is invalid: want an absolute http or https URL such as http://127.0.0.1:8080", c.URL)
	}
	target := c.Target
	if target == "" {
		target = TargetHeartbeat
	}
	if target != TargetHeartbeat && target != TargetHealthz {
		add("target %q is invalid: want %q or %q", c.Target, TargetHeartbeat, TargetHealthz)
	}
	if target == TargetHeartbeat && c.Token == "" {
		add("token is missing: the heartbeat target needs the control plane's bearer token")
	}
	if c.Concurrency < 0 || c.Concurrency > MaxConcurrency {
		add("concurrency %d is invalid: want 1 to %d, or 0 for %d", c.Concurrency, MaxConcurrency, DefaultConcurrency)
	}
	if c.Duration <= 0 {
		add("duration %s is invalid: want a positive duration such as 10s", c.Duration)
	}
	if c.Workers < 0 || c.Workers > MaxWorkers {
		add("workers %d is invalid: want 1 to %d, or 0 for %d", c.Workers, MaxWorkers, DefaultWorkers)
	}
	workers := c.Workers
	if workers == 0 {
		workers = DefaultWorkers
	}
	if c.Pools < 0 || c.Pools > workers {
		add("pools %d is invalid: want 1 to the number of workers (%d), or 0 for %d", c.Pools, workers, DefaultPools)
	}
	if !(c.Rate >= 0) || math.IsInf(c.Rate, 0) {
		add("rate %v is invalid: want requests per second, or 0 for as fast as possible", c.Rate)
	}
	if c.Timeout < 0 {
		add("timeout %s is invalid: want a positive duration, or 0 for %s", c.Timeout, DefaultTimeout)
	}
	return errors.Join(errs...)
}

func (c Config) withDefaults() Config {
	if c.Target == "" {
		c.Target = TargetHeartbeat
	}
	if c.Concurrency == 0 {
		c.Concurrency = DefaultConcurrency
	}
	if c.Workers == 0 {
		c.Workers = DefaultWorkers
	}
	if c.Pools == 0 {
		c.Pools = min(DefaultPools, c.Workers)
	}
	if c.Timeout == 0 {
		c.Timeout = DefaultTimeout
	}
	return c
}
