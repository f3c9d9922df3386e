package simulate

import (
	"context"
	"log/slog"
	"math"
	"math/rand/v2"
	"sync"
	"time"

	"github.com/verifier/controlplane/app/client"
)

// finalHeartbeatTimeout bounds the stopped heartbeat that each worker sends
// when the fleet shuts down, so that an unreachable server cannot hold up
// the exit.
const finalHeartbeatTimeout = 2 * time.Second

// Bounds of the simulated gauges.
const (
	minMemoryMB   = 64
	maxMemoryMB   = 1024
	maxQueueDepth = 50
)

// WorkerState is a snapshot of one simulated worker.
type WorkerState struct {
	ID   string
	Pool string

	// Status is the status for the worker's next heartbeat, and
	// DesiredState the last desired state it received, or "" before the
	// first response.
	Status       string
	DesiredState string

	// Busy is true while a job is in progress. Processed counts finished
	// jobs, including the Failed ones.
	Busy      bool
	Processed int64
	Failed    int64

	// Exited is true once the worker has left the fleet: it was drained or
	// stopped, or the fleet shut down.
	Exited bool
}

// simWorker is one simulated worker. Its heartbeat loop runs on the goroutine
// of run and its job loop on a second goroutine; mu guards the fields that
// both use.
type simWorker struct {
	id          string
	pool        string
	heartbeat   *client.Worker
	failureRate float64
	jobDuration time.Duration
	logger      *slog.Logger

	// jobRand is used only by the job loop, metricRand only by the
	// heartbeat goroutine, so neither needs a lock.
	jobRand    *rand.Rand
	metricRand *rand.Rand

	// changed wakes the job loop after the desired state changes.
	changed chan struct{}

	mu         sync.Mutex
	status     string
	desired    string
	busy       bool
	processed  int64
	failed     int64
	memoryMB   float64
	queueDepth int
	exited     bool
	cancelJob  context.CancelFunc
	reported   string // status in the last heartbeat sent

	// Used only by the heartbeat goroutine.
	lastError      string
	unknownDesired string
}

func (w *simWorker) snapshot() WorkerState {
	w.mu.Lock()
	defer w.mu.Unlock()
	return WorkerState{
		ID: w.id, Pool: w.pool,
		Status: w.status, DesiredState: w.desired,
		Busy: w.busy, Processed: w.processed, Failed: w.failed,
		Exited: w.exited,
	}
}

// exitKind is the way run ended.
type exitKind int

const (
	exitLeft               exitKind = iota // drained or stopped by the control plane
	exitShutdown                           // the fleet's context ended, and the stopped heartbeat was sent or not needed
	exitShutdownUnreported                 // the fleet's context ended and the stopped heartbeat failed
)

// run waits startDelay, then heartbeats and processes jobs until the worker
// leaves the fleet or ctx ends. When ctx ends first, it sends one stopped
// heartbeat so that the control plane does not count the worker as stale.
func (w *simWorker) run(ctx context.Context, startDelay time.Duration) exitKind {
	defer w.markExited()

	select {
	case <-ctx.Done():
		return exitShutdown
	case <-time.After(startDelay):
	}

	jobCtx, cancelJob := context.WithCancel(ctx)
	defer cancelJob()
	w.mu.Lock()
	w.cancelJob = cancelJob
	w.mu.Unlock()

	var jobs sync.WaitGroup
	jobs.Go(func() { w.processJobs(jobCtx) })
	err := w.heartbeat.Run(ctx, w.report, w.obey)
	cancelJob()
	jobs.Wait()

	if err == nil {
		state := w.snapshot()
		reason := "stopped"
		if state.DesiredState == client.StatusDraining {
			reason = "drained"
		}
		w.logger.Info("simulated worker exited", "worker_id", w.id, "pool", w.pool, "reason", reason,
			"jobs_processed", state.Processed, "jobs_failed", state.Failed)
		return exitLeft
	}
	if w.sendFinalHeartbeat(ctx) {
		return exitShutdown
	}
	return exitShutdownUnreported
}

func (w *simWorker) markExited() {
	w.mu.Lock()
	defer w.mu.Unlock()
	w.exited = true
	w.busy = false
}

// sendFinalHeartbeat reports stopped once after ctx has ended and returns
// whether the server accepted it. It skips the request when the last
// heartbeat failed, because the server is then most likely unreachable.
func (w *simWorker) sendFinalHeartbeat(ctx context.Context) bool {
	if w.lastError != "" {
		return false
	}

	w.mu.Lock()
	w.status = client.StatusStopped
	w.busy = false
	w.mu.Unlock()
	_, metrics := w.report()

	ctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), finalHeartbeatTimeout)
	defer cancel()
	_, err := w.heartbeat.Client.Heartbeat(ctx, client.Heartbeat{
		ID: w.id, Pool: w.pool, Status: client.StatusStopped,
		Host: w.heartbeat.Host, PID: w.heartbeat.PID, Version: w.heartbeat.Version,
		StartedAt: w.heartbeat.StartedAt, SentAt: time.Now(),
		Metrics: metrics,
	})
	if err != nil {
		w.logger.Debug("final heartbeat failed", "worker_id", w.id, "error", err)
		return false
	}
	w.logger.Debug("final heartbeat sent", "worker_id", w.id, "status", client.StatusStopped)
	return true
}

// processJobs runs jobs one after another while the worker is running. A
// job that ends because ctx ends (stop or shutdown) is not counted.
func (w *simWorker) processJobs(ctx context.Context) {
	timer := time.NewTimer(0)
	<-timer.C
	for {
		if !w.waitToStartJob(ctx) {
			return
		}
		timer.Reset(w.nextJobDuration())
		select {
		case <-ctx.Done():
			w.mu.Lock()
			w.busy = false
			w.mu.Unlock()
			return
		case <-timer.C:
		}
		w.finishJob(w.jobRand.Float64() < w.failureRate)
	}
}

// waitToStartJob blocks until the worker has received its first desired
// state and is running, then marks it busy and returns true. It returns
// false when ctx ends first. Because it waits for the first response, a
// worker restarted while paused processes nothing.
func (w *simWorker) waitToStartJob(ctx context.Context) bool {
	for {
		w.mu.Lock()
		if w.desired != "" && w.status == client.StatusRunning {
			w.busy = true
			w.mu.Unlock()
			return true
		}
		w.mu.Unlock()

		select {
		case <-ctx.Done():
			return false
		case <-w.changed:
		}
	}
}

// nextJobDuration returns a uniformly random duration from half to one and
// a half times the mean job duration.
func (w *simWorker) nextJobDuration() time.Duration {
	return time.Duration(float64(w.jobDuration) * (0.5 + w.jobRand.Float64()))
}

// finishJob counts the job that just ended. A draining worker then becomes
// stopped and reports that at once.
func (w *simWorker) finishJob(failed bool) {
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.status == client.StatusStopped {
		return // stopped while the job ran, so the job was abandoned
	}
	w.busy = false
	w.processed++
	if failed {
		w.failed++
	}
	if w.status == client.StatusDraining {
		w.status = client.StatusStopped
		w.heartbeat.HeartbeatNow()
	}
}

// report returns the status and metrics for the next heartbeat and moves the
// simulated gauges a little.
func (w *simWorker) report() (string, map[string]float64) {
	w.mu.Lock()
	defer w.mu.Unlock()

	// Memory drifts by up to ±2% per heartbeat.
	w.memoryMB *= 0.98 + 0.04*w.metricRand.Float64()
	w.memoryMB = min(max(w.memoryMB, minMemoryMB), maxMemoryMB)

	// The backlog moves by -2 to +2 jobs while running and grows by 0 to 2
	// while the worker takes no jobs.
	if w.status == client.StatusRunning {
		w.queueDepth += w.metricRand.IntN(5) - 2
	} else {
		w.queueDepth += w.metricRand.IntN(3)
	}
	w.queueDepth = min(max(w.queueDepth, 0), maxQueueDepth)

	w.reported = w.status
	busy := 0.0
	if w.busy {
		busy = 1
	}
	return w.status, map[string]float64{
		"jobs_processed": float64(w.processed),
		"jobs_failed":    float64(w.failed),
		"busy":           busy,
		"memory_mb":      math.Round(w.memoryMB*10) / 10,
		"queue_depth":    float64(w.queueDepth),
	}
}

// obey applies the desired state from an accepted heartbeat. It runs on the
// heartbeat goroutine.
func (w *simWorker) obey(desired string) {
	if w.lastError != "" {
		w.logger.Info("heartbeat recovered", "worker_id", w.id, "pool", w.pool)
		w.lastError = ""
	}

	w.mu.Lock()
	defer w.mu.Unlock()
	w.logger.Debug("heartbeat accepted", "worker_id", w.id, "status", w.reported, "desired_state", desired)

	first := w.desired == ""
	w.desired = desired
	switch desired {
	case client.StatusRunning:
		if w.status == client.StatusPaused || w.status == client.StatusDraining {
			w.status = client.StatusRunning
			w.heartbeat.HeartbeatNow()
		}

	case client.StatusPaused:
		// The job in progress, if any, still finishes and counts.
		if w.status == client.StatusRunning || w.status == client.StatusDraining {
			w.status = client.StatusPaused
			w.heartbeat.HeartbeatNow()
		}

	case client.StatusDraining:
		switch {
		case w.status == client.StatusStopped || w.status == client.StatusDraining:
		case w.busy:
			w.status = client.StatusDraining
			w.heartbeat.HeartbeatNow()
		default:
			w.status = client.StatusStopped
			w.heartbeat.HeartbeatNow()
		}

	case client.StatusStopped:
		if w.status != client.StatusStopped {
			w.status = client.StatusStopped
			w.busy = false
			w.cancelJob()
			w.heartbeat.HeartbeatNow()
		}

	default:
		if w.unknownDesired != desired {
			w.logger.Warn("unknown desired state ignored", "worker_id", w.id, "desired_state", desired)
			w.unknownDesired = desired
		}
	}

	if first || desired == client.StatusRunning {
		select {
		case w.changed <- struct{}{}:
		default:
		}
	}
}

// logError logs a failed heartbeat at Warn once per change of error text,
// so that a worker retrying against a down server logs once, not per try.
func (w *simWorker) logError(err error, retryIn time.Duration) {
	text := err.Error()
	if text == w.lastError {
		return
	}
	w.lastError = text
	w.logger.Warn("heartbeat failed", "worker_id", w.id, "pool", w.pool, "error", err,
		"retry_in", retryIn.Round(time.Millisecond))
}
