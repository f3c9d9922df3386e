package fleet

import "time"

// Snapshot is the state of the fleet at one instant, written to history.
type Snapshot struct {
	// At is the instant the snapshot was taken (UTC).
	At time.Time
	// Period is At truncated to the snapshot interval; history holds at most
	// one snapshot per period.
	Period  time.Time
	Pools   []PoolSnapshot
	Workers []WorkerSnapshot
}

// PoolSnapshot is one pool's row in a snapshot.
type PoolSnapshot struct {
	Pool         string
	DesiredCount int
	HasDesired   bool
	Running      int
	Paused       int
	Draining     int
	Stopped      int
	Stale        int
	// Processed and Failed are the jobs done since the previous snapshot,
	// summed over the pool's workers; a counter that went down (a restarted
	// worker) counts from zero.
	Processed float64
	Failed    float64
	ErrorRate float64 // percent, 0 when nothing was processed
}

// WorkerSnapshot is one worker's row in a snapshot.
type WorkerSnapshot struct {
	ID           string
	Pool         string
	Status       State
	Desired      State
	Stale        bool
	HeartbeatAge time.Duration
	Processed    float64 // cumulative, as reported
	Failed       float64 // cumulative, as reported
	MemoryMB     float64
}

// CounterDelta returns how much a cumulative counter grew from prev to cur.
// A counter that went down means the worker restarted, so the growth is cur.
func CounterDelta(prev, cur float64) float64 {
	if cur < prev {
		return cur
	}
	return cur - prev
}

// FleetRates is the fleet's jobs over the sampler's last window: the sum of
// every worker's counter growth, so the error rate is over recent jobs, not
// over each worker's lifetime.
type FleetRates struct {
	Processed float64
	Failed    float64
	Window    time.Duration
	At        time.Time // when the window ended
}
