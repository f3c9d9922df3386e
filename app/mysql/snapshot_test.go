package mysql

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"reflect"
	"strings"
	"sync"
	"testing"
	"time"

	_ "time/tzdata"

	"github.com/verifier/controlplane/app/fleet"
)

// knownSnapshot returns a small fleet: pool billing with a desired count and
// three workers, pool reports without one and two workers.
func knownSnapshot(period, at time.Time) fleet.Snapshot {
	return fleet.Snapshot{
		At:     at,
		Period: period,
		Pools: []fleet.PoolSnapshot{
			{Pool: "billing", DesiredCount: 3, HasDesired: true, Running: 2, Draining: 1,
				Processed: 200, Failed: 10, ErrorRate: 5},
			{Pool: "reports", Paused: 1, Stale: 1},
		},
		Workers: []fleet.WorkerSnapshot{
			{ID: "w-01", Pool: "billing", Status: fleet.StateRunning, Desired: fleet.StateRunning,
				HeartbeatAge: 1500 * time.Millisecond, Processed: 1200, Failed: 12, MemoryMB: 256},
			{ID: "w-02", Pool: "billing", Status: fleet.StateRunning, Desired: fleet.StateDraining,
				HeartbeatAge: 2 * time.Second, Processed: 800, Failed: 0, MemoryMB: 300.5},
			{ID: "W-02", Pool: "billing", Status: fleet.StateDraining, Desired: fleet.StateDraining,
				HeartbeatAge: 3 * time.Second, Processed: 5, Failed: 1, MemoryMB: 128},
			{ID: "r-1", Pool: "reports", Status: fleet.StatePaused, Desired: fleet.StatePaused,
				HeartbeatAge: 4 * time.Second, MemoryMB: 64},
			{ID: "r-2", Pool: "reports", Status: fleet.StateRunning, Stale: true,
				HeartbeatAge: 2 * time.Hour, Processed: 1e15, MemoryMB: 0},
		},
	}
}

// bigSnapshot returns a fleet of workers spread over pools, with worker ids
// prefixed by prefix.
func bigSnapshot(period time.Time, prefix string, workers, pools int) fleet.Snapshot {
	s := fleet.Snapshot{At: period.Add(1500 * time.Millisecond), Period: period}
	for p := range pools {
		s.Pools = append(s.Pools, fleet.PoolSnapshot{
			Pool: fmt.Sprintf("pool-%02d", p), DesiredCount: workers / pools, HasDesired: true,
			Running: workers / pools, Processed: 600, Failed: 6, ErrorRate: 1,
		})
	}
	for i := range workers {
		s.Workers = append(s.Workers, fleet.WorkerSnapshot{
			ID: fmt.Sprintf("%s-%05d", prefix, i), Pool: fmt.Sprintf("pool-%02d", i%pools),
			Status: fleet.StateRunning, Desired: fleet.StateRunning,
			HeartbeatAge: time.Duration(i%5000) * time.Millisecond,
			Processed:    float64(i * 10), Failed: float64(i % 7), MemoryMB: float64(100 + i%400),
		})
	}
	return s
}

func readPoolRows(t *testing.T, d *DB, period time.Time) []fleet.PoolSnapshot {
	t.Helper()
	rows, err := d.db.Query(`SELECT pool, desired_count, running, paused, draining, stopped, stale,
		processed, failed, error_rate FROM pool_snapshots WHERE period = ? ORDER BY pool`, period)
	if err != nil {
		t.Fatalf("read pool_snapshots: %v", err)
	}
	defer rows.Close()
	var pools []fleet.PoolSnapshot
	for rows.Next() {
		var p fleet.PoolSnapshot
		var desired sql.NullInt64
		if err := rows.Scan(&p.Pool, &desired, &p.Running, &p.Paused, &p.Draining, &p.Stopped, &p.Stale,
			&p.Processed, &p.Failed, &p.ErrorRate); err != nil {
			t.Fatalf("scan pool_snapshots: %v", err)
		}
		p.DesiredCount, p.HasDesired = int(desired.Int64), desired.Valid
		pools = append(pools, p)
	}
	return pools
}

func readWorkerRows(t *testing.T, d *DB, period time.Time) []fleet.WorkerSnapshot {
	t.Helper()
	rows, err := d.db.Query(`SELECT worker_id, pool, status, desired_state, stale, heartbeat_age_ms,
		processed, failed, memory_mb FROM worker_snapshots WHERE period = ? ORDER BY worker_id`, period)
	if err != nil {
		t.Fatalf("read worker_snapshots: %v", err)
	}
	defer rows.Close()
	var workers []fleet.WorkerSnapshot
	for rows.Next() {
		var w fleet.WorkerSnapshot
		var ageMS int64
		if err := rows.Scan(&w.ID, &w.Pool, &w.Status, &w.Desired, &w.Stale, &ageMS,
			&w.Processed, &w.Failed, &w.MemoryMB); err != nil {
			t.Fatalf("scan worker_snapshots: %v", err)
		}
		w.HeartbeatAge = time.Duration(ageMS) * time.Millisecond
		workers = append(workers, w)
	}
	return workers
}

func countRows(t *testing.T, d *DB, table string) int {
	t.Helper()
	var n int
	if err := d.db.QueryRow("SELECT COUNT(*) FROM " + table).Scan(&n); err != nil {
		t.Fatalf("count %s: %v", table, err)
	}
	return n
}

func TestWriteSnapshotContents(t *testing.T) {
	d := openTestDB(t)
	ctx := context.Background()
	period := time.Date(2026, 5, 1, 12, 0, 0, 0, time.UTC)
	at := period.Add(1234 * time.Millisecond)
	s := knownSnapshot(period, at)

	if err := d.WriteSnapshot(ctx, s); err != nil {
		t.Fatalf("WriteSnapshot: %v", err)
	}

	if got := readPoolRows(t, d, period); !reflect.DeepEqual(got, s.Pools) {
		t.Errorf("pool rows:\n got %+v\nwant %+v", got, s.Pools)
	}

	// Rows come back ordered by id under the binary collation: "W-02"
	// sorts before "r-1" and "w-01", and the missing desired state of r-2
	// is stored as the default.
	want := []fleet.WorkerSnapshot{s.Workers[2], s.Workers[3], s.Workers[4], s.Workers[0], s.Workers[1]}
	want[2].Desired = fleet.DefaultDesiredState
	if got := readWorkerRows(t, d, period); !reflect.DeepEqual(got, want) {
		t.Errorf("worker rows:\n got %+v\nwant %+v", got, want)
	}

	var takenAt time.Time
	var elapsed sql.NullInt64
	var pools, workers, running, paused, draining, stale int
	var processed, failed float64
	err := d.db.QueryRow(`SELECT taken_at, elapsed_ms, pools, workers, running, paused, draining, stale,
		processed, failed FROM snapshot_periods WHERE period = ?`, period).
		Scan(&takenAt, &elapsed, &pools, &workers, &running, &paused, &draining, &stale, &processed, &failed)
	if err != nil {
		t.Fatalf("read snapshot_periods: %v", err)
	}
	if !takenAt.Equal(at) {
		t.Errorf("taken_at = %v, want %v", takenAt, at)
	}
	if elapsed.Valid {
		t.Errorf("elapsed_ms of the first snapshot = %d, want NULL", elapsed.Int64)
	}
	if pools != 2 || workers != 5 {
		t.Errorf("pools, workers = %d, %d; want 2, 5", pools, workers)
	}
	if running != 2 || paused != 1 || draining != 1 || stale != 1 {
		t.Errorf("totals running %d paused %d draining %d stale %d; want 2 1 1 1", running, paused, draining, stale)
	}
	if processed != 200 || failed != 10 {
		t.Errorf("totals processed %v failed %v; want 200 10", processed, failed)
	}

	next := knownSnapshot(period.Add(time.Minute), at.Add(61*time.Second))
	if err := d.WriteSnapshot(ctx, next); err != nil {
		t.Fatalf("WriteSnapshot of the next period: %v", err)
	}
	if err := d.db.QueryRow("SELECT elapsed_ms FROM snapshot_periods WHERE period = ?", next.Period).Scan(&elapsed); err != nil {
		t.Fatalf("read elapsed_ms: %v", err)
	}
	if !elapsed.Valid || elapsed.Int64 != 61000 {
		t.Errorf("elapsed_ms of the second snapshot = %+v, want 61000", elapsed)
	}
}

func TestWriteSnapshotRejectsZeroTimes(t *testing.T) {
	d := openTestDB(t)
	s := knownSnapshot(time.Time{}, time.Now())
	if err := d.WriteSnapshot(context.Background(), s); err == nil {
		t.Errorf("WriteSnapshot with a zero Period returned no error")
	}
	if n := countRows(t, d, "snapshot_periods"); n != 0 {
		t.Errorf("snapshot_periods has %d rows after a rejected write, want 0", n)
	}
}

func TestWriteSnapshotSecondWriteOfPeriod(t *testing.T) {
	d := openTestDB(t)
	ctx := context.Background()
	period := time.Date(2026, 5, 1, 12, 0, 0, 0, time.UTC)

	if err := d.WriteSnapshot(ctx, knownSnapshot(period, period.Add(time.Second))); err != nil {
		t.Fatalf("first WriteSnapshot: %v", err)
	}
	err := d.WriteSnapshot(ctx, bigSnapshot(period, "late", 50, 3))
	if !errors.Is(err, ErrSnapshotExists) {
		t.Fatalf("second WriteSnapshot of the period = %v, want ErrSnapshotExists", err)
	}

	if n := countRows(t, d, "worker_snapshots"); n != 5 {
		t.Errorf("worker_snapshots has %d rows, want the first snapshot's 5", n)
	}
	if n := countRows(t, d, "pool_snapshots"); n != 2 {
		t.Errorf("pool_snapshots has %d rows, want the first snapshot's 2", n)
	}
}

func TestWriteSnapshotFailureWritesNothing(t *testing.T) {
	d := openTestDB(t)
	period := time.Date(2026, 5, 1, 12, 0, 0, 0, time.UTC)
	s := bigSnapshot(period, "w", 700, 3)
	s.Workers[650].ID = s.Workers[10].ID // a duplicate key in the second batch

	err := d.WriteSnapshot(context.Background(), s)
	if err == nil {
		t.Fatalf("WriteSnapshot with a duplicate worker id returned no error")
	}
	if errors.Is(err, ErrSnapshotExists) {
		t.Errorf("a duplicate worker id was reported as ErrSnapshotExists: %v", err)
	}
	for _, table := range []string{"snapshot_periods", "pool_snapshots", "worker_snapshots"} {
		if n := countRows(t, d, table); n != 0 {
			t.Errorf("%s has %d rows after a failed write, want 0", table, n)
		}
	}
}

func TestWriteSnapshotOnePerPeriodUnderRace(t *testing.T) {
	dsn := newTestDatabase(t, nil)
	replicas := []*DB{openDSN(t, dsn, nil), openDSN(t, dsn, nil)}
	ctx := context.Background()
	base := time.Date(2026, 5, 1, 12, 0, 0, 0, time.UTC)

	for round := range 5 {
		period := base.Add(time.Duration(round) * time.Minute)
		errs := make([]error, len(replicas))
		start := make(chan struct{})
		var wg sync.WaitGroup
		for i, d := range replicas {
			s := bigSnapshot(period, fmt.Sprintf("r%d", i), 1000+i, 5)
			wg.Go(func() {
				<-start
				errs[i] = d.WriteSnapshot(ctx, s)
			})
		}
		close(start)
		wg.Wait()

		winner := -1
		for i, err := range errs {
			switch {
			case err == nil:
				if winner >= 0 {
					t.Errorf("round %d: both replicas wrote the period", round)
				}
				winner = i
			case !errors.Is(err, ErrSnapshotExists):
				t.Errorf("round %d: replica %d: %v, want nil or ErrSnapshotExists", round, i, err)
			}
		}
		if winner < 0 {
			t.Fatalf("round %d: no replica wrote the period: %v", round, errs)
		}

		var n int
		var wrongPrefix int
		err := replicas[0].db.QueryRow(`SELECT COUNT(*), COALESCE(SUM(worker_id NOT LIKE ?), 0)
			FROM worker_snapshots WHERE period = ?`, fmt.Sprintf("r%d-%%", winner), period).Scan(&n, &wrongPrefix)
		if err != nil {
			t.Fatalf("count worker rows: %v", err)
		}
		if n != 1000+winner || wrongPrefix != 0 {
			t.Errorf("round %d: period has %d worker rows, %d from the losing replica; want %d from replica %d only",
				round, n, wrongPrefix, 1000+winner, winner)
		}
	}
}

func TestWriteSnapshotTenThousandWorkers(t *testing.T) {
	d := openTestDB(t)
	period := time.Date(2026, 5, 1, 12, 0, 0, 0, time.UTC)

	start := time.Now()
	if err := d.WriteSnapshot(context.Background(), bigSnapshot(period, "w", 10000, 50)); err != nil {
		t.Fatalf("WriteSnapshot: %v", err)
	}
	t.Logf("10,000 workers and 50 pools written in %v", time.Since(start))

	if n := countRows(t, d, "worker_snapshots"); n != 10000 {
		t.Errorf("worker_snapshots has %d rows, want 10000", n)
	}
	if n := countRows(t, d, "pool_snapshots"); n != 50 {
		t.Errorf("pool_snapshots has %d rows, want 50", n)
	}
}

func TestLastSnapshotAndPreviousCounters(t *testing.T) {
	d := openTestDB(t)
	ctx := context.Background()

	last, err := d.LastSnapshot(ctx)
	if err != nil {
		t.Fatalf("LastSnapshot on empty history: %v", err)
	}
	if !last.IsZero() {
		t.Errorf("LastSnapshot on empty history = %v, want the zero time", last)
	}
	counters, at, err := d.PreviousWorkerCounters(ctx)
	if err != nil {
		t.Fatalf("PreviousWorkerCounters on empty history: %v", err)
	}
	if len(counters) != 0 || counters == nil || !at.IsZero() {
		t.Errorf("PreviousWorkerCounters on empty history = %v, %v; want an empty map and the zero time", counters, at)
	}

	older := time.Date(2026, 5, 1, 12, 0, 0, 0, time.UTC)
	newer := older.Add(time.Minute)
	newerAt := newer.Add(2500 * time.Millisecond)
	// Written out of order: the newest period wins, not the latest write.
	if err := d.WriteSnapshot(ctx, knownSnapshot(newer, newerAt)); err != nil {
		t.Fatalf("WriteSnapshot: %v", err)
	}
	oldSnapshot := knownSnapshot(older, older.Add(time.Second))
	oldSnapshot.Workers[0].Processed = 1
	if err := d.WriteSnapshot(ctx, oldSnapshot); err != nil {
		t.Fatalf("WriteSnapshot: %v", err)
	}

	last, err = d.LastSnapshot(ctx)
	if err != nil {
		t.Fatalf("LastSnapshot: %v", err)
	}
	if !last.Equal(newerAt) {
		t.Errorf("LastSnapshot = %v, want %v", last, newerAt)
	}

	counters, at, err = d.PreviousWorkerCounters(ctx)
	if err != nil {
		t.Fatalf("PreviousWorkerCounters: %v", err)
	}
	if !at.Equal(newerAt) {
		t.Errorf("PreviousWorkerCounters time = %v, want %v", at, newerAt)
	}
	want := map[string][2]float64{
		"w-01": {1200, 12}, "w-02": {800, 0}, "W-02": {5, 1}, "r-1": {0, 0}, "r-2": {1e15, 0},
	}
	if !reflect.DeepEqual(counters, want) {
		t.Errorf("PreviousWorkerCounters = %v, want %v", counters, want)
	}
}

func TestDeleteOlderThanInBatches(t *testing.T) {
	d := openTestDB(t)
	ctx := context.Background()
	base := time.Date(2026, 5, 1, 12, 0, 0, 0, time.UTC)
	for i := range 10 {
		period := base.Add(time.Duration(i) * time.Minute)
		if err := d.WriteSnapshot(ctx, bigSnapshot(period, "w", 25, 3)); err != nil {
			t.Fatalf("WriteSnapshot %d: %v", i, err)
		}
	}

	if _, err := d.DeleteOlderThan(ctx, base.Add(time.Hour), 0); err == nil {
		t.Errorf("DeleteOlderThan with batch 0 returned no error")
	}

	// The cutoff is exclusive and given in another zone: periods 0-5 go.
	cutoff := base.Add(6 * time.Minute).In(time.FixedZone("UTC-7", -7*3600))
	deleted, err := d.DeleteOlderThan(ctx, cutoff, 7)
	if err != nil {
		t.Fatalf("DeleteOlderThan: %v", err)
	}
	if want := int64(6 * (25 + 3 + 1)); deleted != want {
		t.Errorf("DeleteOlderThan deleted %d rows, want %d", deleted, want)
	}

	for table, want := range map[string]int{"snapshot_periods": 4, "pool_snapshots": 4 * 3, "worker_snapshots": 4 * 25} {
		if n := countRows(t, d, table); n != want {
			t.Errorf("%s has %d rows after the delete, want %d", table, n, want)
		}
	}
	var oldest time.Time
	if err := d.db.QueryRow("SELECT MIN(period) FROM worker_snapshots").Scan(&oldest); err != nil {
		t.Fatalf("read oldest period: %v", err)
	}
	if !oldest.Equal(base.Add(6 * time.Minute)) {
		t.Errorf("oldest kept period = %v, want %v", oldest, base.Add(6*time.Minute))
	}

	deleted, err = d.DeleteOlderThan(ctx, cutoff, 7)
	if err != nil {
		t.Fatalf("second DeleteOlderThan: %v", err)
	}
	if deleted != 0 {
		t.Errorf("second DeleteOlderThan deleted %d rows, want 0", deleted)
	}
}

// The service may run with TZ=Europe/Berlin and a DSN that sets another
// session time zone. Snapshots taken just before and after the EU
// daylight-saving change at 01:00Z on 2026-03-29 must read back as the same
// instants, stored as UTC, and chart one minute apart.
func TestSnapshotTimesAcrossZonesAndDST(t *testing.T) {
	berlin, err := time.LoadLocation("Europe/Berlin")
	if err != nil {
		t.Fatalf("load Europe/Berlin: %v", err)
	}
	oldLocal := time.Local
	time.Local = berlin
	t.Cleanup(func() { time.Local = oldLocal })

	dsn := newTestDatabase(t, map[string]string{"time_zone": "'+08:00'"})
	d := openDSN(t, dsn, nil)
	ctx := context.Background()

	// 01:59:30 CET and 03:00:30 CEST in Berlin.
	at1 := time.Date(2026, 3, 29, 0, 59, 30, 0, time.UTC).In(berlin)
	at2 := time.Date(2026, 3, 29, 1, 0, 30, 0, time.UTC).In(berlin)
	for _, at := range []time.Time{at1, at2} {
		s := knownSnapshot(at.Truncate(time.Minute), at)
		if err := d.WriteSnapshot(ctx, s); err != nil {
			t.Fatalf("WriteSnapshot at %v: %v", at, err)
		}
	}
	if err := d.AppendAudit(ctx, fleet.AuditEntry{At: at1, Actor: "alice", Kind: fleet.AuditCommand, Action: "pause"}); err != nil {
		t.Fatalf("AppendAudit: %v", err)
	}

	last, err := d.LastSnapshot(ctx)
	if err != nil {
		t.Fatalf("LastSnapshot: %v", err)
	}
	if !last.Equal(at2) {
		t.Errorf("LastSnapshot = %v, want %v", last, at2.UTC())
	}
	if last.Location() != time.UTC {
		t.Errorf("LastSnapshot is in %v, want UTC", last.Location())
	}
	_, previousAt, err := d.PreviousWorkerCounters(ctx)
	if err != nil {
		t.Fatalf("PreviousWorkerCounters: %v", err)
	}
	if !previousAt.Equal(at2) {
		t.Errorf("PreviousWorkerCounters time = %v, want %v", previousAt, at2.UTC())
	}

	rows, err := d.db.Query("SELECT period, taken_at, elapsed_ms FROM snapshot_periods ORDER BY period")
	if err != nil {
		t.Fatalf("read snapshot_periods: %v", err)
	}
	var periods, taken []time.Time
	var elapsed []sql.NullInt64
	for rows.Next() {
		var p, a time.Time
		var e sql.NullInt64
		if err := rows.Scan(&p, &a, &e); err != nil {
			t.Fatalf("scan snapshot_periods: %v", err)
		}
		periods, taken, elapsed = append(periods, p), append(taken, a), append(elapsed, e)
	}
	rows.Close()
	wantPeriods := []time.Time{time.Date(2026, 3, 29, 0, 59, 0, 0, time.UTC), time.Date(2026, 3, 29, 1, 0, 0, 0, time.UTC)}
	if len(periods) != 2 || !periods[0].Equal(wantPeriods[0]) || !periods[1].Equal(wantPeriods[1]) {
		t.Errorf("periods = %v, want %v", periods, wantPeriods)
	}
	if len(taken) != 2 || !taken[0].Equal(at1) || !taken[1].Equal(at2) {
		t.Errorf("taken_at = %v, want %v and %v", taken, at1.UTC(), at2.UTC())
	}
	if len(elapsed) != 2 || elapsed[1].Int64 != 60000 {
		t.Errorf("elapsed_ms of the second snapshot = %+v, want 60000 across the DST change", elapsed)
	}

	// A session that really runs at +08:00 still reads the UTC wall clock,
	// because DATETIME stores what was written.
	raw, err := openAdmin(t).Conn(ctx)
	if err != nil {
		t.Fatalf("open a raw session: %v", err)
	}
	defer raw.Close()
	if _, err := raw.ExecContext(ctx, "SET time_zone = '+08:00'"); err != nil {
		t.Fatalf("set time_zone on the raw session: %v", err)
	}
	var stored string
	err = raw.QueryRowContext(ctx, "SELECT GROUP_CONCAT(DATE_FORMAT(taken_at, '%Y-%m-%d %H:%i:%s') ORDER BY period SEPARATOR ', ') FROM "+
		dbName(t, dsn)+".snapshot_periods").Scan(&stored)
	if err != nil {
		t.Fatalf("read stored wall clock: %v", err)
	}
	if want := "2026-03-29 00:59:30, 2026-03-29 01:00:30"; stored != want {
		t.Errorf("stored taken_at = %q, want UTC wall clock %q", stored, want)
	}

	records, err := d.ListAudit(ctx, AuditFilter{})
	if err != nil {
		t.Fatalf("ListAudit: %v", err)
	}
	if len(records) != 1 || !records[0].At.Equal(at1) {
		t.Errorf("audit entry time = %v, want %v", records, at1.UTC())
	}

	series, err := d.PoolSeries(ctx, SeriesQuery{
		Since: time.Date(2026, 3, 29, 0, 50, 0, 0, time.UTC).In(berlin),
		Until: time.Date(2026, 3, 29, 1, 10, 0, 0, time.UTC).In(berlin),
	})
	if err != nil {
		t.Fatalf("PoolSeries: %v", err)
	}
	if !reflect.DeepEqual(series.Labels, wantPeriods) {
		t.Errorf("chart labels = %v, want %v: no shift, gap or overlap", series.Labels, wantPeriods)
	}
	workerSeries, err := d.WorkerSeries(ctx, "w-01", wantPeriods[0].Add(-time.Hour), wantPeriods[1].Add(time.Hour), 0)
	if err != nil {
		t.Fatalf("WorkerSeries: %v", err)
	}
	if !reflect.DeepEqual(workerSeries.Labels, wantPeriods) {
		t.Errorf("worker chart labels = %v, want %v", workerSeries.Labels, wantPeriods)
	}
}

// dbName returns the database a test DSN names, checked to be a test database.
func dbName(t *testing.T, dsn string) string {
	t.Helper()
	i := strings.LastIndex(dsn, "/")
	name, _, _ := strings.Cut(dsn[i+1:], "?")
	if !strings.HasPrefix(name, "cp_test_") {
		t.Fatalf("DSN names database %q, want cp_test_*", name)
	}
	return name
}
