package simulate

import (
	"context"
	"errors"
	"log/slog"
	"math/rand/v2"
	"net/http"
	"os"
	"sync"
	"sync/atomic"
	"time"

	"github.com/verifier/controlplane/app/client"
)

// Version is the version that simulated workers report.
const Version = "simulator"

// Connection limits of the fleet's shared HTTP transport. Heartbeats are
// spread over the interval, so a few hundred keep-alive connections carry a
// large fleet. The limit on open connections also bounds the burst of final
// heartbeats at shutdown.
const (
	maxIdleConns = 256
	maxOpenConns = 512
)

// Fleet is a set of simulated workers. Each worker heartbeats through
// app/client, starting at a random moment within the first Config.Interval.
// It keeps that interval or follows the server's (see
// Config.FixedInterval), with ±10% jitter, and obeys the desired state from
// each response:
//
//   - running: processes jobs one after another. Each job takes a random
//     time around Config.JobDuration and fails with probability
//     Config.FailureRate. The worker reports the cumulative counters
//     jobs_processed (failed jobs included) and jobs_failed, and the gauges
//     busy (0 or 1), memory_mb (drifting by up to 2% per heartbeat) and
//     queue_depth.
//   - paused: finishes the job in progress, takes no new one and reports
//     paused.
//   - draining: reports draining until its job in progress finishes, then
//     reports stopped in one last heartbeat and leaves the fleet.
//   - stopped: abandons its job, reports stopped in one last heartbeat and
//     leaves the fleet.
//
// A worker takes no job before its first heartbeat response, which it sends
// with status running. When the fleet's context ends, each remaining
// worker sends one stopped heartbeat and leaves.
type Fleet struct {
	cfg       Config
	logger    *slog.Logger
	transport *http.Transport
	workers   []*simWorker
	seed      uint64
	started   atomic.Bool
}

// NewFleet validates cfg, applies its defaults and builds the workers
// without starting them. A nil logger discards the logs.
func NewFleet(cfg Config, logger *slog.Logger) (*Fleet, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	cfg = cfg.withDefaults()
	if logger == nil {
		logger = slog.New(slog.DiscardHandler)
	}
	seed := uint64(cfg.Seed)
	if seed == 0 {
		seed = rand.Uint64()
	}

	transport := http.DefaultTransport.(*http.Transport).Clone()
	transport.MaxIdleConns = maxIdleConns
	transport.MaxIdleConnsPerHost = maxIdleConns
	transport.MaxConnsPerHost = maxOpenConns
	heartbeatClient := client.New(cfg.URL, cfg.Token, client.WithHTTPClient(&http.Client{Transport: transport}))

	host, _ := os.Hostname()
	started := time.Now()
	pools := PoolNames(cfg.Pools)
	workers := make([]*simWorker, cfg.Workers)
	for i := range workers {
		poolIndex, n := placement(i, cfg.Pools)
		w := &simWorker{
			id:          WorkerID(cfg.IDPrefix, pools[poolIndex], n),
			pool:        pools[poolIndex],
			failureRate: cfg.FailureRate,
			jobDuration: cfg.JobDuration,
			logger:      logger,
			jobRand:     rand.New(rand.NewPCG(seed, uint64(2*i))),
			metricRand:  rand.New(rand.NewPCG(seed, uint64(2*i+1))),
			changed:     make(chan struct{}, 1),
			status:      client.StatusRunning,
		}
		w.memoryMB = 128 + 256*w.metricRand.Float64()
		w.heartbeat = &client.Worker{
			Client:        heartbeatClient,
			ID:            w.id,
			Pool:          w.pool,
			Host:          host,
			PID:           os.Getpid(),
			Version:       Version,
			StartedAt:     started,
			Interval:      cfg.Interval,
			FixedInterval: cfg.FixedInterval,
			OnError:       w.logError,
		}
		workers[i] = w
	}

	return &Fleet{cfg: cfg, logger: logger, transport: transport, workers: workers, seed: seed}, nil
}

// Run starts every worker and blocks until ctx ends or all workers have
// left the fleet. After ctx ends it waits for the final stopped heartbeats,
// up to 2s each. Run returns nil in both cases, and an error only when
// called a second time.
func (f *Fleet) Run(ctx context.Context) error {
	if !f.started.CompareAndSwap(false, true) {
		return errors.New("simulate: Fleet.Run called twice")
	}
	defer f.transport.CloseIdleConnections()

	cfg := f.cfg
	f.logger.Info("simulator started", "url", cfg.URL, "workers", cfg.Workers, "pools", cfg.Pools,
		"interval", cfg.Interval, "fixed_interval", cfg.FixedInterval, "failure_rate", cfg.FailureRate,
		"job_duration", cfg.JobDuration, "id_prefix", cfg.IDPrefix)

	var left, reported, unreported atomic.Int64
	var wg sync.WaitGroup
	startRand := rand.New(rand.NewPCG(f.seed, uint64(2*len(f.workers))))
	for _, w := range f.workers {
		startDelay := time.Duration(startRand.Float64() * float64(cfg.Interval))
		wg.Go(func() {
			switch w.run(ctx, startDelay) {
			case exitLeft:
				left.Add(1)
			case exitShutdown:
				reported.Add(1)
			case exitShutdownUnreported:
				unreported.Add(1)
			}
		})
	}
	wg.Wait()

	var processed, failed int64
	for _, state := range f.Snapshot() {
		processed += state.Processed
		failed += state.Failed
	}
	f.logger.Info("simulator stopped", "workers_left", left.Load(),
		"workers_shut_down", reported.Load()+unreported.Load(), "final_heartbeats_failed", unreported.Load(),
		"jobs_processed", processed, "jobs_failed", failed)
	return nil
}

// Snapshot returns the state of every worker, in the order they were
// created: the first worker of each pool, then the second, and so on. It is
// safe to call while Run runs.
func (f *Fleet) Snapshot() []WorkerState {
	states := make([]WorkerState, len(f.workers))
	for i, w := range f.workers {
		states[i] = w.snapshot()
	}
	return states
}

// Run builds a fleet from cfg and runs it until ctx ends or every worker has
// left. [Fleet] describes how the workers behave. Run returns the validation
// error of an invalid cfg, and otherwise nil.
func Run(ctx context.Context, cfg Config, logger *slog.Logger) error {
	fleet, err := NewFleet(cfg, logger)
	if err != nil {
		return err
	}
	return fleet.Run(ctx)
}
