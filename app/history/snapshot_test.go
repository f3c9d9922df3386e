package history_test

import (
	"context"
	"database/sql"
	"fmt"
	"math"
	"sync"
	"testing"
	"time"

	"github.com/verifier/controlplane/app/fleet"
	"github.com/verifier/controlplane/app/history"
	"github.com/verifier/controlplane/app/mysql"
)

const retention = 30 * 24 * time.Hour

// poolRow is one row of pool_snapshots.
type poolRow struct {
	Desired                                   sql.NullInt64
	Running, Paused, Draining, Stopped, Stale int
	Processed, Failed, ErrorRate              float64
}

// workerRow is one row of worker_snapshots.
type workerRow struct {
	Pool, Status, Desired     string
	Stale                     bool
	HeartbeatAgeMS            int64
	Processed, Failed, Memory float64
}

func (d *testDatabase) poolRows(t *testing.T, period time.Time) map[string]poolRow {
	t.Helper()
	rows, err := d.check.Query(`SELECT pool, desired_count, running, paused, draining, stopped, stale,
		processed, failed, error_rate FROM pool_snapshots WHERE period = ?`, period)
	if err != nil {
		t.Fatalf("read pool_snapshots: %v", err)
	}
	defer rows.Close()
	out := map[string]poolRow{}
	for rows.Next() {
		var pool string
		var r poolRow
		if err := rows.Scan(&pool, &r.Desired, &r.Running, &r.Paused, &r.Draining, &r.Stopped, &r.Stale,
			&r.Processed, &r.Failed, &r.ErrorRate); err != nil {
			t.Fatalf("scan pool_snapshots: %v", err)
		}
		out[pool] = r
	}
	return out
}

func (d *testDatabase) workerRows(t *testing.T, period time.Time) map[string]workerRow {
	t.Helper()
	rows, err := d.check.Query(`SELECT worker_id, pool, status, desired_state, stale, heartbeat_age_ms,
		processed, failed, memory_mb FROM worker_snapshots WHERE period = ?`, period)
	if err != nil {
		t.Fatalf("read worker_snapshots: %v", err)
	}
	defer rows.Close()
	out := map[string]workerRow{}
	for rows.Next() {
		var id string
		var r workerRow
		if err := rows.Scan(&id, &r.Pool, &r.Status, &r.Desired, &r.Stale, &r.HeartbeatAgeMS,
			&r.Processed, &r.Failed, &r.Memory); err != nil {
			t.Fatalf("scan worker_snapshots: %v", err)
		}
		out[id] = r
	}
	return out
}

// periodRow is one row of snapshot_periods.
type periodRow struct {
	TakenAt                                   time.Time
	ElapsedMS                                 sql.NullInt64
	Pools, Workers                            int
	Running, Paused, Draining, Stopped, Stale int
	Processed, Failed                         float64
}

func (d *testDatabase) periodRow(t *testing.T, period time.Time) periodRow {
	t.Helper()
	var r periodRow
	err := d.check.QueryRow(`SELECT taken_at, elapsed_ms, pools, workers, running, paused, draining, stopped,
		stale, processed, failed FROM snapshot_periods WHERE period = ?`, period).Scan(
		&r.TakenAt, &r.ElapsedMS, &r.Pools, &r.Workers, &r.Running, &r.Paused, &r.Draining, &r.Stopped,
		&r.Stale, &r.Processed, &r.Failed)
	if err != nil {
		t.Fatalf("read snapshot_periods at %v: %v", period, err)
	}
	return r
}

func checkPoolRow(t *testing.T, when, pool string, got map[string]poolRow, want poolRow) {
	t.Helper()
	g, ok := got[pool]
	if !ok {
		t.Errorf("%s: no pool_snapshots row for %s", when, pool)
		return
	}
	if math.Abs(g.ErrorRate-want.ErrorRate) < 1e-9 {
		g.ErrorRate = want.ErrorRate
	}
	if g != want {
		t.Errorf("%s: pool %s row = %+v, want %+v", when, pool, g, want)
	}
}

func checkWorkerRow(t *testing.T, when, id string, got map[string]workerRow, want workerRow) {
	t.Helper()
	g, ok := got[id]
	if !ok {
		t.Errorf("%s: no worker_snapshots row for %s", when, id)
		return
	}
	if g != want {
		t.Errorf("%s: worker %s row = %+v, want %+v", when, id, g, want)
	}
}

func TestSnapshotOfKnownFleet(t *testing.T) {
	f := newFixture(t, nil)
	ctx := context.Background()
	s := f.snapshotter(f.conn, f.metrics, retention, f.log)

	// w-04's last heartbeat is 70 s old at the first snapshot, so it is stale.
	f.clock.Set(t0.Add(-60 * time.Second))
	f.heartbeat("w-04", "billing", fleet.StateRunning, 40, 4, 64)

	f.clock.Set(t0.Add(5 * time.Second))
	f.heartbeat("w-01", "billing", fleet.StateRunning, 100, 5, 256)
	f.heartbeat("w-02", "billing", fleet.StatePaused, 50, 0, 128)
	f.heartbeat("w-03", "billing", fleet.StateDraining, 0, 0, 96)
	f.heartbeat("r-01", "reports", fleet.StateRunning, 10, 1, 32)
	f.heartbeat("r-02", "reports", fleet.StateStopped, 3, 0, 16)
	if _, err := f.svc.Command(ctx, "w-02", fleet.ActionPause, "alice", fleet.SourceUI, ""); err != nil {
		t.Fatalf("pause w-02: %v", err)
	}
	if _, err := f.svc.Command(ctx, "w-03", fleet.ActionDrain, "alice", fleet.SourceUI, ""); err != nil {
		t.Fatalf("drain w-03: %v", err)
	}
	if _, err := f.svc.Scale(ctx, "billing", 5, "api", fleet.SourceAPI); err != nil {
		t.Fatalf("scale billing: %v", err)
	}
	// A pool that exists only because it was scaled.
	if _, err := f.svc.Scale(ctx, "empty", 2, "api", fleet.SourceAPI); err != nil {
		t.Fatalf("scale empty: %v", err)
	}

	f.clock.Set(t0.Add(10 * time.Second))
	if err := s.Run(ctx); err != nil {
		t.Fatalf("first Run: %v", err)
	}

	// The first snapshot has no baseline, so no pool counts jobs.
	pools := f.db.poolRows(t, t0)
	if len(pools) != 3 {
		t.Errorf("first snapshot has %d pool rows, want 3 (billing, reports, empty): %+v", len(pools), pools)
	}
	checkPoolRow(t, "first snapshot", "billing", pools, poolRow{
		Desired: sql.NullInt64{Int64: 5, Valid: true}, Running: 1, Paused: 1, Draining: 1, Stale: 1})
	checkPoolRow(t, "first snapshot", "reports", pools, poolRow{Running: 1, Stopped: 1})
	checkPoolRow(t, "first snapshot", "empty", pools, poolRow{Desired: sql.NullInt64{Int64: 2, Valid: true}})

	workers := f.db.workerRows(t, t0)
	if len(workers) != 6 {
		t.Errorf("first snapshot has %d worker rows, want 6: %+v", len(workers), workers)
	}
	first := "first snapshot"
	checkWorkerRow(t, first, "w-01", workers, workerRow{"billing", "running", "running", false, 5000, 100, 5, 256})
	checkWorkerRow(t, first, "w-02", workers, workerRow{"billing", "paused", "paused", false, 5000, 50, 0, 128})
	checkWorkerRow(t, first, "w-03", workers, workerRow{"billing", "draining", "draining", false, 5000, 0, 0, 96})
	checkWorkerRow(t, first, "w-04", workers, workerRow{"billing", "running", "running", true, 70000, 40, 4, 64})
	checkWorkerRow(t, first, "r-01", workers, workerRow{"reports", "running", "running", false, 5000, 10, 1, 32})
	checkWorkerRow(t, first, "r-02", workers, workerRow{"reports", "stopped", "running", false, 5000, 3, 0, 16})

	p := f.db.periodRow(t, t0)
	if !p.TakenAt.Equal(t0.Add(10 * time.Second)) {
		t.Errorf("first snapshot taken_at = %v, want %v", p.TakenAt, t0.Add(10*time.Second))
	}
	if p.ElapsedMS.Valid {
		t.Errorf("first snapshot elapsed_ms = %d, want NULL", p.ElapsedMS.Int64)
	}

	// One minute later: w-01 did 60 jobs, w-02 restarted (its counter went
	// down to 20, so it did 20), w-03 did 30, new worker w-05 did 7 and
	// stale w-04 none. r-02 is now stale too.
	f.clock.Set(t0.Add(65 * time.Second))
	f.heartbeat("w-01", "billing", fleet.StateRunning, 160, 8, 260)
	f.heartbeat("w-02", "billing", fleet.StatePaused, 20, 0, 120)
	f.heartbeat("w-03", "billing", fleet.StateDraining, 30, 2, 90)
	f.heartbeat("w-05", "billing", fleet.StateRunning, 7, 1, 48)
	f.heartbeat("r-01", "reports", fleet.StateRunning, 10, 1, 33)

	second := t0.Add(time.Minute)
	f.clock.Set(second.Add(10 * time.Second))
	if err := s.Run(ctx); err != nil {
		t.Fatalf("second Run: %v", err)
	}

	pools = f.db.poolRows(t, second)
	checkPoolRow(t, "second snapshot", "billing", pools, poolRow{
		Desired: sql.NullInt64{Int64: 5, Valid: true}, Running: 2, Paused: 1, Draining: 1, Stale: 1,
		Processed: 60 + 20 + 30 + 7, Failed: 3 + 0 + 2 + 1, ErrorRate: 100 * 6.0 / 117})
	checkPoolRow(t, "second snapshot", "reports", pools, poolRow{Running: 1, Stale: 1})
	checkPoolRow(t, "second snapshot", "empty", pools, poolRow{Desired: sql.NullInt64{Int64: 2, Valid: true}})

	workers = f.db.workerRows(t, second)
	if len(workers) != 7 {
		t.Errorf("second snapshot has %d worker rows, want 7: %+v", len(workers), workers)
	}
	checkWorkerRow(t, "second snapshot", "w-02", workers, workerRow{"billing", "paused", "paused", false, 5000, 20, 0, 120})
	checkWorkerRow(t, "second snapshot", "w-05", workers, workerRow{"billing", "running", "running", false, 5000, 7, 1, 48})
	checkWorkerRow(t, "second snapshot", "r-02", workers, workerRow{"reports", "stopped", "running", true, 65000, 3, 0, 16})

	p = f.db.periodRow(t, second)
	want := periodRow{
		TakenAt: second.Add(10 * time.Second), ElapsedMS: sql.NullInt64{Int64: 60000, Valid: true},
		Pools: 3, Workers: 7, Running: 3, Paused: 1, Draining: 1, Stale: 2, Processed: 117, Failed: 6,
	}
	if !p.TakenAt.Equal(want.TakenAt) {
		t.Errorf("second snapshot taken_at = %v, want %v", p.TakenAt, want.TakenAt)
	}
	p.TakenAt = want.TakenAt
	if p != want {
		t.Errorf("second snapshot_periods row = %+v, want %+v", p, want)
	}
	if got := snapshots(f.metrics, "ok"); got != 2 {
		t.Errorf("snapshots ok = %v, want 2", got)
	}
}

// An empty fleet's snapshot is still the baseline of the next one, so
// workers that appear after it count their jobs from zero.
func TestSnapshotCountsJobsAfterEmptyFleet(t *testing.T) {
	f := newFixture(t, nil)
	ctx := context.Background()
	s := f.snapshotter(f.conn, f.metrics, retention, f.log)
	if _, err := f.svc.Scale(ctx, "billing", 2, "api", fleet.SourceAPI); err != nil {
		t.Fatalf("scale billing: %v", err)
	}

	f.clock.Set(t0.Add(10 * time.Second))
	if err := s.Run(ctx); err != nil {
		t.Fatalf("first Run: %v", err)
	}
	f.clock.Set(t0.Add(65 * time.Second))
	f.heartbeat("w-01", "billing", fleet.StateRunning, 12, 3, 64)
	f.clock.Set(t0.Add(70 * time.Second))
	if err := s.Run(ctx); err != nil {
		t.Fatalf("second Run: %v", err)
	}

	pools := f.db.poolRows(t, t0.Add(time.Minute))
	checkPoolRow(t, "snapshot after an empty one", "billing", pools, poolRow{
		Desired: sql.NullInt64{Int64: 2, Valid: true}, Running: 1, Processed: 12, Failed: 3, ErrorRate: 25})
}

func TestSnapshotOncePerPeriod(t *testing.T) {
	f := newFixture(t, nil)
	ctx := context.Background()
	f.clock.Set(t0.Add(5 * time.Second))
	f.heartbeat("w-01", "billing", fleet.StateRunning, 100, 1, 64)

	a := f.snapshotter(f.conn, f.metrics, retention, f.log)
	for i := range 5 {
		f.clock.Set(t0.Add(time.Duration(10+10*i) * time.Second))
		if err := a.Run(ctx); err != nil {
			t.Fatalf("Run %d: %v", i, err)
		}
	}
	if got := f.db.count(t, "snapshot_periods", ""); got != 1 {
		t.Errorf("after five Runs in one period: %d snapshot_periods rows, want 1", got)
	}
	if got := snapshots(f.metrics, "ok"); got != 1 {
		t.Errorf("snapshots ok = %v, want 1", got)
	}
	if got := f.db.periodRow(t, t0).TakenAt; !got.Equal(t0.Add(10 * time.Second)) {
		t.Errorf("taken_at = %v, want the first Run's %v", got, t0.Add(10*time.Second))
	}

	// A second replica, and a restarted first one, find the period taken.
	connB, mB := f.replica()
	b := f.snapshotter(connB, mB, retention, f.log)
	restarted := f.snapshotter(f.conn, f.metrics, retention, f.log)
	f.clock.Set(t0.Add(55 * time.Second))
	f.heartbeat("w-01", "billing", fleet.StateRunning, 500, 9, 64)
	if err := b.Run(ctx); err != nil {
		t.Fatalf("second replica's Run: %v", err)
	}
	if err := restarted.Run(ctx); err != nil {
		t.Fatalf("restarted replica's Run: %v", err)
	}
	if got := snapshots(mB, "exists"); got != 1 {
		t.Errorf("second replica: snapshots exists = %v, want 1", got)
	}
	if got := snapshots(mB, "ok"); got != 0 {
		t.Errorf("second replica: snapshots ok = %v, want 0", got)
	}
	if got := snapshots(f.metrics, "exists"); got != 1 {
		t.Errorf("restarted replica: snapshots exists = %v, want 1", got)
	}
	if got := f.db.count(t, "snapshot_periods", ""); got != 1 {
		t.Errorf("%d snapshot_periods rows, want 1", got)
	}
	if got := f.db.workerRows(t, t0)["w-01"].Processed; got != 100 {
		t.Errorf("w-01 processed in the period's snapshot = %v, want 100 from the first write", got)
	}

	// Both replicas race for the next period, and exactly one writes it.
	okBefore := snapshots(f.metrics, "ok") + snapshots(mB, "ok")
	existsBefore := snapshots(f.metrics, "exists") + snapshots(mB, "exists")
	f.clock.Set(t0.Add(70 * time.Second))
	var wg sync.WaitGroup
	errs := make([]error, 2)
	for i, s := range []*history.Snapshotter{a, b} {
		wg.Go(func() { errs[i] = s.Run(ctx) })
	}
	wg.Wait()
	for i, err := range errs {
		if err != nil {
			t.Errorf("racing Run %d: %v", i, err)
		}
	}
	ok := snapshots(f.metrics, "ok") + snapshots(mB, "ok") - okBefore
	exists := snapshots(f.metrics, "exists") + snapshots(mB, "exists") - existsBefore
	if ok != 1 || exists != 1 {
		t.Errorf("the race for one period counted ok %v and exists %v over both replicas, want 1 and 1", ok, exists)
	}
	if got := f.db.count(t, "snapshot_periods", ""); got != 2 {
		t.Errorf("%d snapshot_periods rows, want 2", got)
	}
	if got := f.db.count(t, "worker_snapshots", "period = ?", t0.Add(time.Minute)); got != 1 {
		t.Errorf("%d worker rows in the raced period, want 1", got)
	}
}

// A failed snapshot is counted, and the next Run in the same period writes
// it. The failures are a renamed table, a closed pool and a dropped
// database, each repaired before the retry.
func TestSnapshotFailureRetriedInPeriod(t *testing.T) {
	f := newFixture(t, nil)
	ctx := context.Background()
	s := f.snapshotter(f.conn, f.metrics, retention, f.log)
	f.clock.Set(t0.Add(5 * time.Second))
	f.heartbeat("w-01", "billing", fleet.StateRunning, 100, 1, 64)

	steps := []struct {
		name   string
		fail   func()
		repair func()
	}{
		{
			name: "table renamed",
			fail: func() {
				if _, err := f.db.check.Exec("RENAME TABLE worker_snapshots TO worker_snapshots_away"); err != nil {
					t.Fatalf("rename worker_snapshots: %v", err)
				}
			},
			repair: func() {
				if _, err := f.db.check.Exec("RENAME TABLE worker_snapshots_away TO worker_snapshots"); err != nil {
					t.Fatalf("rename worker_snapshots back: %v", err)
				}
			},
		},
		{
			name: "pool closed",
			fail: func() { f.conn.DB().Close() },
			repair: func() {
				if err := f.conn.Connect(ctx); err != nil {
					t.Fatalf("Connect: %v", err)
				}
			},
		},
		{
			name: "database dropped",
			fail: func() {
				if _, err := f.db.server.Exec("DROP DATABASE " + f.db.name); err != nil {
					t.Fatalf("drop database: %v", err)
				}
			},
			repair: func() {
				if _, err := f.db.server.Exec("CREATE DATABASE " + f.db.name + " CHARACTER SET utf8mb4"); err != nil {
					t.Fatalf("create database: %v", err)
				}
				if err := f.conn.Connect(ctx); err != nil {
					t.Fatalf("Connect: %v", err)
				}
			},
		},
	}
	for i, step := range steps {
		period := t0.Add(time.Duration(i) * time.Minute)
		f.clock.Set(period.Add(10 * time.Second))
		step.fail()
		if err := s.Run(ctx); err == nil {
			t.Errorf("%s: Run returned nil, want an error", step.name)
		}
		if got := snapshots(f.metrics, "failed"); got != float64(i+1) {
			t.Errorf("%s: snapshots failed = %v, want %d", step.name, got, i+1)
		}

		step.repair()
		if n := f.db.count(t, "snapshot_periods", "period = ?", period); n != 0 {
			t.Errorf("%s: the failed snapshot left %d snapshot_periods rows, want 0", step.name, n)
		}
		f.clock.Set(period.Add(40 * time.Second))
		if err := s.Run(ctx); err != nil {
			t.Errorf("%s: Run after recovery in the same period: %v", step.name, err)
		}
		if got := snapshots(f.metrics, "ok"); got != float64(i+1) {
			t.Errorf("%s: snapshots ok = %v, want %d", step.name, got, i+1)
		}
		if n := f.db.count(t, "worker_snapshots", "period = ?", period); n != 1 {
			t.Errorf("%s: %d worker rows for the retried period, want 1", step.name, n)
		}
	}
}

func TestSnapshotLogsMissedPeriods(t *testing.T) {
	f := newFixture(t, nil)
	ctx := context.Background()
	s := f.snapshotter(f.conn, f.metrics, retention, f.log)
	for _, at := range []time.Duration{10 * time.Second, 3*time.Minute + 10*time.Second, 4*time.Minute + 10*time.Second} {
		f.clock.Set(t0.Add(at))
		if err := s.Run(ctx); err != nil {
			t.Fatalf("Run at %v: %v", at, err)
		}
	}
	logs := f.logs.String()
	if n := countLines(logs, "level=WARN", "snapshot periods were missed", "missed=2"); n != 1 {
		t.Errorf("%d warnings of 2 missed periods, want 1; log:\n%s", n, logs)
	}
	if n := countLines(logs, "snapshot periods were missed"); n != 1 {
		t.Errorf("%d warnings of missed periods, want 1 (consecutive periods miss nothing); log:\n%s", n, logs)
	}
}

// Which periods were missed is a fact of the history in MySQL, not of one
// replica's memory. A restarted replica reports the periods lost while the
// service was down, and a replica that takes over the scheduler from
// another does not report the other's periods as missed.
func TestSnapshotMissedPeriodsAcrossReplicas(t *testing.T) {
	f := newFixture(t, nil)
	ctx := context.Background()
	run := func(s *history.Snapshotter, at time.Duration) {
		t.Helper()
		f.clock.Set(t0.Add(at))
		if err := s.Run(ctx); err != nil {
			t.Fatalf("Run at %v: %v", at, err)
		}
	}

	aLogs, bLogs := &logBuffer{}, &logBuffer{}
	a := f.snapshotter(f.conn, f.metrics, retention, newLogger(aLogs))
	run(a, 10*time.Second)

	// The service was down for four periods and restarts as replica b.
	connB, mB := f.replica()
	b := f.snapshotter(connB, mB, retention, newLogger(bLogs))
	run(b, 5*time.Minute+10*time.Second)
	if n := countLines(bLogs.String(), "snapshot periods were missed", "missed=4"); n != 1 {
		t.Errorf("restarted replica: %d warnings of 4 missed periods, want 1; log:\n%s", n, bLogs.String())
	}

	// b writes three more periods, then a leads again with nothing missed.
	for m := 6; m <= 8; m++ {
		run(b, time.Duration(m)*time.Minute+10*time.Second)
	}
	run(a, 9*time.Minute+10*time.Second)
	if got := len(f.db.periods(t)); got != 6 {
		t.Errorf("%d snapshot periods, want 6", got)
	}
	if n := countLines(aLogs.String(), "snapshot periods were missed"); n != 0 {
		t.Errorf("replica a warned of missed periods after b wrote every one of them; log:\n%s", aLogs.String())
	}
}

func TestSnapshotRetentionDeletesOldRows(t *testing.T) {
	f := newFixture(t, nil)
	ctx := context.Background()
	db := f.conn.DB()

	// 1,200 workers make worker_snapshots need two DELETE batches.
	old := fleet.Snapshot{At: t0.Add(-3 * time.Hour).Add(time.Second), Period: t0.Add(-3 * time.Hour),
		Pools: []fleet.PoolSnapshot{{Pool: "billing", Running: 1200}}}
	for i := range 1200 {
		old.Workers = append(old.Workers, fleet.WorkerSnapshot{ID: fmt.Sprintf("w-%04d", i), Pool: "billing", Status: fleet.StateRunning})
	}
	older := fleet.Snapshot{At: t0.Add(-121 * time.Minute), Period: t0.Add(-121 * time.Minute),
		Pools:   []fleet.PoolSnapshot{{Pool: "billing", Running: 1}},
		Workers: []fleet.WorkerSnapshot{{ID: "w-0000", Pool: "billing", Status: fleet.StateRunning}}}
	kept := fleet.Snapshot{At: t0.Add(-time.Hour), Period: t0.Add(-time.Hour),
		Pools:   []fleet.PoolSnapshot{{Pool: "billing", Running: 1}},
		Workers: []fleet.WorkerSnapshot{{ID: "w-0000", Pool: "billing", Status: fleet.StateRunning}}}
	for _, snap := range []fleet.Snapshot{old, older, kept} {
		if err := db.WriteSnapshot(ctx, snap); err != nil {
			t.Fatalf("WriteSnapshot at %v: %v", snap.Period, err)
		}
	}

	f.clock.Set(t0.Add(5 * time.Second))
	f.heartbeat("w-0000", "billing", fleet.StateRunning, 1, 0, 64)
	f.clock.Set(t0.Add(10 * time.Second))
	s := f.snapshotter(f.conn, f.metrics, 2*time.Hour, f.log)
	if err := s.Run(ctx); err != nil {
		t.Fatalf("Run: %v", err)
	}

	periods := f.db.periods(t)
	want := []time.Time{t0.Add(-time.Hour), t0}
	if len(periods) != 2 || !periods[0].Equal(want[0]) || !periods[1].Equal(want[1]) {
		t.Errorf("periods after retention = %v, want %v", periods, want)
	}
	cutoff := t0.Add(10*time.Second - 2*time.Hour)
	for _, table := range []string{"snapshot_periods", "pool_snapshots", "worker_snapshots"} {
		if n := f.db.count(t, table, "period < ?", cutoff); n != 0 {
			t.Errorf("%s keeps %d rows older than the retention period", table, n)
		}
	}
	if n := f.db.count(t, "worker_snapshots", "period = ?", t0.Add(-time.Hour)); n != 1 {
		t.Errorf("%d worker rows of the snapshot inside the retention period, want 1", n)
	}
	// 1 + 1 + 1200 rows of the oldest snapshot, 3 of the other.
	if n := countLines(f.logs.String(), "deleted snapshots past the retention period", "rows=1205"); n != 1 {
		t.Errorf("want one log line of 1205 deleted rows; log:\n%s", f.logs.String())
	}
}

// A MySQL that accepts connections but does not respond must not hold the
// snapshot job forever. The scheduler skips a job that is still running, so
// a hung write stops snapshots with nothing counted or logged.
func TestSnapshotBoundedWhenMySQLStalls(t *testing.T) {
	f := newFixture(t, nil)
	ctx := context.Background()
	const interval = 5 * time.Second
	s := history.NewSnapshotter(f.conn, f.svc, func() time.Duration { return interval }, retention, f.clock.Now, f.metrics, f.log)
	f.clock.Set(t0.Add(time.Second))
	f.heartbeat("w-01", "billing", fleet.StateRunning, 1, 0, 64)

	lock, err := f.db.check.Conn(ctx)
	if err != nil {
		t.Fatalf("open a connection: %v", err)
	}
	defer lock.Close()
	if _, err := lock.ExecContext(ctx, "LOCK TABLES snapshot_periods WRITE"); err != nil {
		t.Fatalf("lock snapshot_periods: %v", err)
	}
	unlocked := false
	unlock := func() {
		if !unlocked {
			unlocked = true
			if _, err := lock.ExecContext(ctx, "UNLOCK TABLES"); err != nil {
				t.Errorf("unlock tables: %v", err)
			}
		}
	}
	defer unlock()

	done := make(chan error, 1)
	go func() { done <- s.Run(ctx) }()
	limit := 2*interval + 2*time.Second
	select {
	case err := <-done:
		if err == nil {
			t.Errorf("Run with snapshot_periods locked returned nil, want an error")
		}
		if got := snapshots(f.metrics, "failed"); got != 1 {
			t.Errorf("snapshots failed = %v, want 1", got)
		}
	case <-time.After(limit):
		t.Errorf("Run with snapshot_periods locked has not returned after %v (snapshot interval %v); nothing counted: failed %v, ok %v",
			limit, interval, snapshots(f.metrics, "failed"), snapshots(f.metrics, "ok"))
		unlock()
		<-done
	}
}

// The server closes connections that idle past its wait_timeout, and the
// pool must never hand one of them to a snapshot. Snapshots succeed on the
// first try after a short session wait_timeout and after a server-side KILL
// of every pooled connection.
func TestSnapshotAfterIdleConnectionsClosed(t *testing.T) {
	f := newFixture(t, map[string]string{"wait_timeout": "2"})
	ctx := context.Background()
	s := f.snapshotter(f.conn, f.metrics, retention, f.log)
	f.clock.Set(t0.Add(5 * time.Second))
	f.heartbeat("w-01", "billing", fleet.StateRunning, 1, 0, 64)

	f.clock.Set(t0.Add(10 * time.Second))
	if err := s.Run(ctx); err != nil {
		t.Fatalf("first Run: %v", err)
	}

	time.Sleep(3 * time.Second)
	f.clock.Set(t0.Add(70 * time.Second))
	if err := s.Run(ctx); err != nil {
		t.Errorf("Run after idling past wait_timeout: %v", err)
	}

	rows, err := f.db.server.Query("SELECT id FROM information_schema.processlist WHERE db = ?", f.db.name)
	if err != nil {
		t.Fatalf("list connections: %v", err)
	}
	var ids []int64
	for rows.Next() {
		var id int64
		if err := rows.Scan(&id); err != nil {
			t.Fatalf("scan processlist: %v", err)
		}
		ids = append(ids, id)
	}
	rows.Close()
	if len(ids) == 0 {
		t.Fatalf("no server connection uses database %s, so none can be killed", f.db.name)
	}
	for _, id := range ids {
		if _, err := f.db.server.Exec(fmt.Sprintf("KILL CONNECTION %d", id)); err != nil {
			t.Logf("kill connection %d: %v", id, err)
		}
	}
	f.clock.Set(t0.Add(130 * time.Second))
	if err := s.Run(ctx); err != nil {
		t.Errorf("Run after the server killed %d connections: %v", len(ids), err)
	}

	if got := snapshots(f.metrics, "ok"); got != 3 {
		t.Errorf("snapshots ok = %v, want 3", got)
	}
	if got := snapshots(f.metrics, "failed"); got != 0 {
		t.Errorf("snapshots failed = %v, want 0", got)
	}
	if n := countLines(f.logs.String(), "invalid connection"); n != 0 {
		t.Errorf("log has %d lines with \"invalid connection\":\n%s", n, f.logs.String())
	}
}

// The clock's zone, the DSN's session zone and the EU daylight-saving change
// at 01:00Z on 2026-03-29 leave every stored instant as taken.
func TestSnapshotTimesAcrossZonesAndDST(t *testing.T) {
	berlin, err := time.LoadLocation("Europe/Berlin")
	if err != nil {
		t.Fatalf("load Europe/Berlin: %v", err)
	}
	f := newFixture(t, map[string]string{"time_zone": "'+08:00'"})
	ctx := context.Background()
	s := f.snapshotter(f.conn, f.metrics, retention, f.log)

	at1 := time.Date(2026, 3, 29, 0, 59, 30, 0, time.UTC)
	at2 := time.Date(2026, 3, 29, 1, 0, 30, 0, time.UTC)
	f.clock.Set(at1.Add(-5 * time.Second).In(berlin))
	f.heartbeat("w-01", "billing", fleet.StateRunning, 100, 0, 64)
	f.clock.Set(at1.In(berlin))
	if err := s.Run(ctx); err != nil {
		t.Fatalf("Run at %v: %v", at1, err)
	}
	f.clock.Set(at2.Add(-5 * time.Second).In(berlin))
	f.heartbeat("w-01", "billing", fleet.StateRunning, 160, 0, 64)
	f.clock.Set(at2.In(berlin))
	if err := s.Run(ctx); err != nil {
		t.Fatalf("Run at %v: %v", at2, err)
	}

	wantPeriods := []time.Time{at1.Truncate(time.Minute), at2.Truncate(time.Minute)}
	periods := f.db.periods(t)
	if len(periods) != 2 || !periods[0].Equal(wantPeriods[0]) || !periods[1].Equal(wantPeriods[1]) {
		t.Errorf("periods = %v, want %v", periods, wantPeriods)
	}
	for i, at := range []time.Time{at1, at2} {
		if got := f.db.periodRow(t, wantPeriods[i]).TakenAt; !got.Equal(at) {
			t.Errorf("taken_at of period %v = %v, want %v", wantPeriods[i], got, at)
		}
	}
	if got := f.db.periodRow(t, wantPeriods[1]).ElapsedMS.Int64; got != 60000 {
		t.Errorf("elapsed_ms across the change = %d, want 60000", got)
	}
	if got := f.conn.LastSnapshot(); !got.Equal(at2) {
		t.Errorf("Conn.LastSnapshot = %v, want %v", got, at2)
	}

	series, err := f.conn.DB().PoolSeries(ctx, mysql.SeriesQuery{
		Pool: "billing", Since: at1.Add(-10 * time.Minute), Until: at2.Add(10 * time.Minute), MaxPoints: 300})
	if err != nil {
		t.Fatalf("PoolSeries: %v", err)
	}
	if len(series.Labels) != 2 || !series.Labels[0].Equal(wantPeriods[0]) || !series.Labels[1].Equal(wantPeriods[1]) {
		t.Errorf("chart labels = %v, want %v: no shift, gap or overlap", series.Labels, wantPeriods)
	}
	if jobs := series.Dataset(mysql.LabelJobsPerMinute); jobs == nil || len(jobs.Data) != 2 || jobs.Data[1] != 60 {
		t.Errorf("jobs per minute = %+v, want 60 in the second bucket", jobs)
	}
}
