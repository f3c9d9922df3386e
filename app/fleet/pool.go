package fleet

import "time"

// DefaultMaxDesiredCount is the largest pool size accepted by scale unless
// configured otherwise.
const DefaultMaxDesiredCount = 1000

// Pool is one pool of workers: what the operator wants and what is live.
type Pool struct {
	Name string
	// DesiredCount is the size the operator wants; HasDesired is false when
	// the pool was never scaled.
	DesiredCount int
	HasDesired   bool
	// ByStatus counts live (not stale) workers by reported status.
	ByStatus map[State]int
	// Stale counts workers past the grace period.
	Stale int
	// Pending counts live workers whose desired state is not yet applied; it
	// is filled only by callers that read desired states.
	Pending int
}

// Live returns the number of workers that are not stale.
func (p *Pool) Live() int {
	n := 0
	for _, c := range p.ByStatus {
		n += c
	}
	return n
}

// Serving returns the live workers that count towards the desired size:
// running or paused, not draining or stopped.
func (p *Pool) Serving() int {
	return p.ByStatus[StateRunning] + p.ByStatus[StatePaused]
}

// Surplus returns how many serving workers exceed the desired count, or 0.
func (p *Pool) Surplus() int {
	if !p.HasDesired {
		return 0
	}
	if s := p.Serving() - p.DesiredCount; s > 0 {
		return s
	}
	return 0
}

// Shortfall returns how many serving workers the pool lacks, or 0.
func (p *Pool) Shortfall() int {
	if !p.HasDesired {
		return 0
	}
	if s := p.DesiredCount - p.Serving(); s > 0 {
		return s
	}
	return 0
}

// ValidateDesiredCount checks a requested pool size against 0..max.
func ValidateDesiredCount(n int64, max int) error {
	if n < 0 || n > int64(max) {
		return Errorf(EINVALID, "desired_count", "desired_count must be a whole number from 0 to %d; got %d", max, n)
	}
	return nil
}

// PoolEntry is the index entry of one worker: enough to list, filter and
// count without reading each worker's keys.
type PoolEntry struct {
	ID            string
	Pool          string
	Status        State
	Host          string
	LastHeartbeat time.Time
}

// CountPools aggregates index entries into pools. desired holds the desired
// counts of pools that were scaled; known lists pools that exist without
// workers.
func CountPools(entries []PoolEntry, desired map[string]int, known []string, now time.Time, grace time.Duration) map[string]*Pool {
	pools := make(map[string]*Pool, len(known))
	get := func(name string) *Pool {
		p, ok := pools[name]
		if !ok {
			p = &Pool{Name: name, ByStatus: make(map[State]int, len(States))}
			pools[name] = p
		}
		return p
	}
	for _, name := range known {
		get(name)
	}
	for _, e := range entries {
		if e.Pool == "" {
			continue // written by another tool without a pool: listed, but in no pool
		}
		p := get(e.Pool)
		if IsStale(e.LastHeartbeat, now, grace) {
			p.Stale++
			continue
		}
		p.ByStatus[e.Status]++
	}
	for name, n := range desired {
		p := get(name)
		p.DesiredCount, p.HasDesired = n, true
	}
	return pools
}
