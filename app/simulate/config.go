// Package simulate runs a fleet of simulated workers that heartbeat to the
// control plane over HTTP and obey their desired state, for demos and for
// load with realistic traffic.
//
// Each simulated worker runs a [client.Worker] heartbeat loop and a job loop.
// Running workers process jobs, paused workers take no new job, draining
// workers finish their job and leave, and stopped workers leave at once.
// [Fleet] describes the behaviour in detail.
package simulate

import (
	"errors"
	"fmt"
	"net/url"
	"regexp"
	"time"
)

// Defaults applied by [NewFleet] to zero Config fields.
const (
	DefaultInterval    = 5 * time.Second
	DefaultJobDuration = 200 * time.Millisecond
	DefaultIDPrefix    = "sim"
)

// MaxWorkers limits Config.Workers. Each simulated worker costs two
// goroutines and a heartbeat every interval, so the limit stops a typing
// slip from exhausting the machine or the control plane.
const MaxWorkers = 100_000

// friendlyPoolNames name the pools of a fleet with at most this many pools,
// which makes a demo easier to read than "pool-3".
var friendlyPoolNames = []string{
	"billing", "emails", "reports", "imports", "exports", "thumbnails", "webhooks", "search-index",
}

// namePattern is the control plane's rule for worker ids and pool names.
var namePattern = regexp.MustCompile(`^[A-Za-z0-9._-]{1,128}$`)

// Config describes a simulated fleet.
type Config struct {
	// URL is the control plane's base URL, such as http://127.0.0.1:8080,
	// and Token its bearer token.
	URL   string
	Token string

	// Workers is the number of simulated workers, from 1 to MaxWorkers.
	// They are spread round-robin over Pools pools (default 1, at most
	// Workers).
	Workers int
	Pools   int

	// Interval is the first heartbeat interval (default 5s). Workers then
	// follow the server's heartbeat_interval_seconds, unless FixedInterval
	// is set, which keeps Interval for the whole run.
	Interval      time.Duration
	FixedInterval bool

	// FailureRate is the probability from 0 to 1 that a job fails.
	FailureRate float64

	// JobDuration is the mean duration of a job (default 200ms). Each job
	// takes a uniformly random time from half to one and a half times it.
	JobDuration time.Duration

	// IDPrefix starts every worker id (default "sim").
	IDPrefix string

	// Seed seeds the random job durations, failures and metrics of each
	// worker, so that two runs with the same seed draw the same numbers.
	// Timing still differs between runs. 0 picks a random seed.
	Seed int64
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
	if c.Token == "" {
		add("token is missing: pass the control plane's bearer token")
	}
	if c.Workers < 1 || c.Workers > MaxWorkers {
		add("workers %d is invalid: want 1 to %d", c.Workers, MaxWorkers)
	}
	if c.Pools < 0 || (c.Workers >= 1 && c.Pools > c.Workers) {
		add("pools %d is invalid: want 1 to the number of workers (%d), or 0 for 1", c.Pools, c.Workers)
	}
	if c.Interval < 0 {
		add("interval %s is invalid: want a positive duration, or 0 for %s", c.Interval, DefaultInterval)
	}
	if !(c.FailureRate >= 0 && c.FailureRate <= 1) {
		add("failure rate %v is invalid: want a number from 0 to 1", c.FailureRate)
	}
	if c.JobDuration < 0 {
		add("job duration %s is invalid: want a positive duration, or 0 for %s", c.JobDuration, DefaultJobDuration)
	}
	placementValid := c.Workers >= 1 && c.Workers <= MaxWorkers && c.Pools >= 0 && c.Pools <= c.Workers
	if c.IDPrefix != "" && !namePattern.MatchString(c.IDPrefix) {
		add("id prefix %q is invalid: want letters, digits, '.', '_' or '-'", c.IDPrefix)
	} else if placementValid {
		if longest := longestID(c.withDefaults()); len(longest) > 128 {
			add("id prefix %q is too long: worker id %q exceeds 128 characters", c.IDPrefix, longest)
		}
	}
	return errors.Join(errs...)
}

func (c Config) withDefaults() Config {
	if c.Pools == 0 {
		c.Pools = 1
	}
	if c.Interval == 0 {
		c.Interval = DefaultInterval
	}
	if c.JobDuration == 0 {
		c.JobDuration = DefaultJobDuration
	}
	if c.IDPrefix == "" {
		c.IDPrefix = DefaultIDPrefix
	}
	return c
}

// PoolNames returns the names of n pools: the first n of billing, emails,
// reports, imports, exports, thumbnails, webhooks and search-index when n is
// at most 8, else pool-1 to pool-n.
func PoolNames(n int) []string {
	if n <= len(friendlyPoolNames) {
		return append([]string(nil), friendlyPoolNames[:n]...)
	}
	names := make([]string, n)
	for i := range names {
		names[i] = fmt.Sprintf("pool-%d", i+1)
	}
	return names
}

// WorkerID returns the id of the nth worker (counting from 1) of a pool,
// {prefix}-{pool}-{n}. The same configuration yields the same ids, so a
// restarted simulator takes over its previous workers.
func WorkerID(prefix, pool string, n int) string {
	return fmt.Sprintf("%s-%s-%d", prefix, pool, n)
}

// placement returns the pool index and the number within that pool of
// worker i (counting from 0), spreading workers round-robin over pools.
func placement(i, pools int) (pool, n int) {
	return i % pools, i/pools + 1
}

// longestID returns the longest worker id of a configuration with defaults.
func longestID(c Config) string {
	names := PoolNames(c.Pools)
	var longest string
	for p, name := range names {
		// The last worker of pool p has the largest number in that pool.
		count := c.Workers / c.Pools
		if p < c.Workers%c.Pools {
			count++
		}
		if id := WorkerID(c.IDPrefix, name, count); len(id) > len(longest) {
			longest = id
		}
	}
	return longest
}
