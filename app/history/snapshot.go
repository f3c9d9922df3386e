package history

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"time"

	"github.com/verifier/controlplane/app/fleet"
	"github.com/verifier/controlplane/app/mysql"
	"github.com/verifier/controlplane/app/service"
)

// retentionBatch is how many rows one DELETE removes, so retention never
// holds a long lock.
const retentionBatch = 1000

// Snapshotter writes one snapshot of the fleet per period. Its job runs
// often (every few seconds) and writes only when the current period has no
// snapshot yet, so a failed write is retried within the same period.
type Snapshotter struct {
	conn      *Conn
	svc       *service.Service
	interval  func() time.Duration
	retention time.Duration
	now       func() time.Time
	m         *Metrics
	log       *slog.Logger

	lastPeriod time.Time // the last period this replica wrote or saw written
}

// NewSnapshotter returns a snapshotter; interval returns the snapshot
// interval in force.
func NewSnapshotter(conn *Conn, svc *service.Service, interval func() time.Duration, retention time.Duration, now func() time.Time, m *Metrics, log *slog.Logger) *Snapshotter {
	return &Snapshotter{conn: conn, svc: svc, interval: interval, retention: retention, now: now, m: m, log: log}
}

// Run writes the current period's snapshot unless it exists, then deletes
// rows past the retention period.
func (s *Snapshotter) Run(ctx context.Context) error {
	db := s.conn.DB()
	if db == nil {
		return nil // not connected yet; Conn.Run logs that
	}
	now := s.now().UTC()
	interval := s.interval()
	period := now.Truncate(interval)
	if period.Equal(s.lastPeriod) {
		return nil
	}
	// A stalled MySQL must not hold the job forever: the scheduler skips a
	// job that is still running, so snapshots would stop without a word.
	ctx, cancel := context.WithTimeout(ctx, min(max(interval, 5*time.Second), time.Minute))
	defer cancel()

	prev, prevAt, err := db.PreviousWorkerCounters(ctx)
	if err != nil {
		s.m.Snapshots.WithLabelValues("failed").Inc()
		return fmt.Errorf("snapshot: read the previous snapshot: %w", err)
	}
	snap, err := s.build(ctx, now, period, prev, prevAt)
	if err != nil {
		s.m.Snapshots.WithLabelValues("failed").Inc()
		return fmt.Errorf("snapshot: %w", err)
	}
	err = db.WriteSnapshot(ctx, snap)
	switch {
	case errors.Is(err, mysql.ErrSnapshotExists):
		s.m.Snapshots.WithLabelValues("exists").Inc()
	case err != nil:
		s.m.Snapshots.WithLabelValues("failed").Inc()
		return fmt.Errorf("snapshot: write: %w", err)
	default:
		s.m.Snapshots.WithLabelValues("ok").Inc()
		s.m.LastSnapshot.Set(float64(now.Unix()))
		s.conn.setLastSnapshot(now)
		s.log.Debug("snapshot written", "period", period, "pools", len(snap.Pools), "workers", len(snap.Workers))
		// Judged from what MySQL holds, so a restart or a new leader
		// neither hides a gap nor reports a false one.
		if prevPeriod := prevAt.Truncate(interval); !prevAt.IsZero() && period.Sub(prevPeriod) > interval {
			missed := int(period.Sub(prevPeriod)/interval) - 1
			s.log.Warn("snapshot periods were missed", "missed", missed, "after", prevPeriod, "interval", interval)
		}
	}
	s.lastPeriod = period

	if n, err := db.DeleteOlderThan(ctx, now.Add(-s.retention), retentionBatch); err != nil {
		s.log.Warn("old snapshots not deleted; retried after the next snapshot", "err", err)
	} else if n > 0 {
		s.log.Info("deleted snapshots past the retention period", "rows", n, "retention", s.retention)
	}
	return nil
}

// build reads the fleet and computes each pool's jobs since the previous
// snapshot (taken at prevAt, zero when there is none) from its workers'
// cumulative counters.
func (s *Snapshotter) build(ctx context.Context, now, period time.Time, prev map[string][2]float64, prevAt time.Time) (fleet.Snapshot, error) {
	entries, err := s.svc.Index(ctx)
	if err != nil {
		return fleet.Snapshot{}, err
	}
	pools, err := s.svc.PoolsFrom(ctx, entries)
	if err != nil {
		return fleet.Snapshot{}, err
	}
	ids := make([]string, len(entries))
	for i, e := range entries {
		ids[i] = e.ID
	}
	workers, err := s.svc.WorkersByID(ctx, ids)
	if err != nil {
		return fleet.Snapshot{}, err
	}

	snap := fleet.Snapshot{At: now, Period: period}
	byPool := make(map[string]*fleet.PoolSnapshot, len(pools))
	for _, p := range pools {
		ps := fleet.PoolSnapshot{
			Pool: p.Name, DesiredCount: p.DesiredCount, HasDesired: p.HasDesired,
			Running: p.ByStatus[fleet.StateRunning], Paused: p.ByStatus[fleet.StatePaused],
			Draining: p.ByStatus[fleet.StateDraining], Stopped: p.ByStatus[fleet.StateStopped], Stale: p.Stale,
		}
		snap.Pools = append(snap.Pools, ps)
	}
	for i := range snap.Pools {
		byPool[snap.Pools[i].Pool] = &snap.Pools[i]
	}
	for _, w := range workers {
		snap.Workers = append(snap.Workers, fleet.WorkerSnapshot{
			ID: w.ID, Pool: w.Pool, Status: w.Status, Desired: w.Desired, Stale: w.Stale,
			HeartbeatAge: w.HeartbeatAge, Processed: w.Processed(), Failed: w.Failed(), MemoryMB: w.Metrics[fleet.MetricMemoryMB],
		})
		ps := byPool[w.Pool]
		if ps == nil || prevAt.IsZero() {
			continue // the first snapshot has no baseline to count from
		}
		before := prev[w.ID] // a worker new since the last snapshot counts from zero
		ps.Processed += fleet.CounterDelta(before[0], w.Processed())
		ps.Failed += fleet.CounterDelta(before[1], w.Failed())
	}
	for i := range snap.Pools {
		snap.Pools[i].ErrorRate, _ = fleet.ErrorRate(snap.Pools[i].Processed, snap.Pools[i].Failed)
	}
	return snap, nil
}
