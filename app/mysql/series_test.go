package mysql

import (
	"context"
	"database/sql"
	"fmt"
	"math"
	"reflect"
	"testing"
	"time"

	"github.com/verifier/controlplane/app/fleet"
)

// seedPoolHistory inserts periods snapshots, interval apart from start, of
// pools pools each, with multi-row INSERTs straight into snapshot_periods
// and pool_snapshots. poolRow gives pool p's row in snapshot i.
func seedPoolHistory(tb testing.TB, d *DB, start time.Time, periods int, interval time.Duration, pools int,
	poolRow func(i, p int) fleet.PoolSnapshot) {
	tb.Helper()
	ctx := context.Background()
	periodColumns := []string{"period", "taken_at", "elapsed_ms", "pools", "workers",
		"running", "paused", "draining", "stopped", "stale", "processed", "failed"}

	const periodsPerTx = 500
	for first := 0; first < periods; first += periodsPerTx {
		n := min(periodsPerTx, periods-first)
		tx, err := d.db.BeginTx(ctx, nil)
		if err != nil {
			tb.Fatalf("begin: %v", err)
		}
		err = insertBatches(ctx, tx, "snapshot_periods", periodColumns, n, func(args []any, j int) []any {
			i := first + j
			var t fleet.PoolSnapshot
			for p := range pools {
				r := poolRow(i, p)
				t.Running += r.Running
				t.Paused += r.Paused
				t.Draining += r.Draining
				t.Stopped += r.Stopped
				t.Stale += r.Stale
				t.Processed += r.Processed
				t.Failed += r.Failed
			}
			var elapsed sql.NullInt64
			if i > 0 {
				elapsed = sql.NullInt64{Int64: interval.Milliseconds(), Valid: true}
			}
			period := start.Add(time.Duration(i) * interval)
			return append(args, period, period, elapsed, pools, 0,
				t.Running, t.Paused, t.Draining, t.Stopped, t.Stale, t.Processed, t.Failed)
		})
		if err != nil {
			tb.Fatalf("seed snapshot_periods: %v", err)
		}
		err = insertBatches(ctx, tx, "pool_snapshots", poolSnapshotColumns, n*pools, func(args []any, k int) []any {
			i, p := first+k/pools, k%pools
			r := poolRow(i, p)
			period := start.Add(time.Duration(i) * interval)
			return append(args, period, period, fmt.Sprintf("pool-%02d", p), nil,
				r.Running, r.Paused, r.Draining, r.Stopped, r.Stale, r.Processed, r.Failed, r.ErrorRate)
		})
		if err != nil {
			tb.Fatalf("seed pool_snapshots: %v", err)
		}
		if err := tx.Commit(); err != nil {
			tb.Fatalf("commit seed: %v", err)
		}
	}
}

func dataOf(t *testing.T, s Series, label string) []float64 {
	t.Helper()
	ds := s.Dataset(label)
	if ds == nil {
		t.Fatalf("series has no dataset %q", label)
	}
	if len(ds.Data) != len(s.Labels) {
		t.Fatalf("dataset %q has %d values for %d labels", label, len(ds.Data), len(s.Labels))
	}
	return ds.Data
}

func almostEqual(a, b []float64) bool {
	if len(a) != len(b) {
		return false
	}
	for i := range a {
		if math.Abs(a[i]-b[i]) > 1e-9 {
			return false
		}
	}
	return true
}

// writeSeriesHistory writes four snapshots through WriteSnapshot at t0, t0+1m,
// t0+2m and, after ten minutes without snapshots, t0+12m.
func writeSeriesHistory(t *testing.T, d *DB, t0 time.Time) []time.Time {
	t.Helper()
	offsets := []time.Duration{0, time.Minute, 2 * time.Minute, 12 * time.Minute}
	billingProcessed := []float64{50, 120, 120, 1200}
	billingFailed := []float64{0, 6, 12, 60}
	billingPaused := []int{1, 3, 1, 1}
	reportsProcessed := []float64{0, 60, 60, 600}
	var periods []time.Time
	for i, off := range offsets {
		period := t0.Add(off)
		s := fleet.Snapshot{
			At:     period.Add(500 * time.Millisecond),
			Period: period,
			Pools: []fleet.PoolSnapshot{
				{Pool: "billing", Running: 2, Paused: billingPaused[i], Processed: billingProcessed[i], Failed: billingFailed[i]},
				{Pool: "reports", Running: 1, Stale: 1, Processed: reportsProcessed[i]},
			},
			Workers: []fleet.WorkerSnapshot{
				{ID: "w-01", Pool: "billing", Status: fleet.StateRunning,
					Processed: 1200 + 100*float64(i), Failed: float64(i), MemoryMB: 100 * float64(i+1)},
			},
		}
		if err := d.WriteSnapshot(context.Background(), s); err != nil {
			t.Fatalf("WriteSnapshot %d: %v", i, err)
		}
		periods = append(periods, period)
	}
	return periods
}

func TestPoolSeriesValues(t *testing.T) {
	d := openTestDB(t)
	ctx := context.Background()
	t0 := time.Date(2026, 5, 1, 12, 0, 0, 0, time.UTC)
	periods := writeSeriesHistory(t, d, t0)

	s, err := d.PoolSeries(ctx, SeriesQuery{Pool: "billing", Since: t0.Add(-5 * time.Minute), Until: t0.Add(20 * time.Minute)})
	if err != nil {
		t.Fatalf("PoolSeries: %v", err)
	}
	if !reflect.DeepEqual(s.Labels, periods) {
		t.Fatalf("labels = %v, want one per snapshot %v", s.Labels, periods)
	}
	for _, c := range []struct {
		label string
		want  []float64
	}{
		{LabelRunning, []float64{2, 2, 2, 2}},
		{LabelPaused, []float64{1, 3, 1, 1}},
		{LabelDraining, []float64{0, 0, 0, 0}},
		{LabelStale, []float64{0, 0, 0, 0}},
		// The first snapshot has no previous one to measure its jobs
		// against; the last covers the ten minutes of downtime.
		{LabelJobsPerMinute, []float64{0, 120, 120, 120}},
		{LabelErrorRate, []float64{0, 5, 10, 5}},
	} {
		if got := dataOf(t, s, c.label); !almostEqual(got, c.want) {
			t.Errorf("billing %s = %v, want %v", c.label, got, c.want)
		}
	}

	all, err := d.PoolSeries(ctx, SeriesQuery{Since: t0, Until: t0.Add(20 * time.Minute)})
	if err != nil {
		t.Fatalf("PoolSeries of all pools: %v", err)
	}
	if !reflect.DeepEqual(all.Labels, periods) {
		t.Fatalf("all-pools labels = %v, want %v", all.Labels, periods)
	}
	for _, c := range []struct {
		label string
		want  []float64
	}{
		{LabelRunning, []float64{3, 3, 3, 3}},
		{LabelPaused, []float64{1, 3, 1, 1}},
		{LabelStale, []float64{1, 1, 1, 1}},
		{LabelJobsPerMinute, []float64{0, 120 + 60, 120 + 60, 120 + 60}},
		{LabelErrorRate, []float64{0, 100 * 6.0 / 180, 100 * 12.0 / 180, 100 * 60.0 / 1800}},
	} {
		if got := dataOf(t, all, c.label); !almostEqual(got, c.want) {
			t.Errorf("all pools %s = %v, want %v", c.label, got, c.want)
		}
	}

	// Since is inclusive and Until exclusive.
	s, err = d.PoolSeries(ctx, SeriesQuery{Pool: "billing", Since: periods[1], Until: periods[3]})
	if err != nil {
		t.Fatalf("PoolSeries: %v", err)
	}
	if want := periods[1:3]; !reflect.DeepEqual(s.Labels, want) {
		t.Errorf("labels of [%v, %v) = %v, want %v", periods[1], periods[3], s.Labels, want)
	}

	// Three-minute buckets average the live counts and add up the jobs.
	s, err = d.PoolSeries(ctx, SeriesQuery{Pool: "billing", Since: t0, Until: t0.Add(15 * time.Minute), MaxPoints: 6})
	if err != nil {
		t.Fatalf("PoolSeries: %v", err)
	}
	if want := []time.Time{t0, t0.Add(12 * time.Minute)}; !reflect.DeepEqual(s.Labels, want) {
		t.Fatalf("labels with 3-minute buckets = %v, want %v", s.Labels, want)
	}
	if got, want := dataOf(t, s, LabelPaused), []float64{5.0 / 3, 1}; !almostEqual(got, want) {
		t.Errorf("paused with 3-minute buckets = %v, want %v", got, want)
	}
	if got, want := dataOf(t, s, LabelJobsPerMinute), []float64{120, 120}; !almostEqual(got, want) {
		t.Errorf("jobs per minute with 3-minute buckets = %v, want %v", got, want)
	}
	if got, want := dataOf(t, s, LabelErrorRate), []float64{100 * 18.0 / 290, 5}; !almostEqual(got, want) {
		t.Errorf("error rate with 3-minute buckets = %v, want %v", got, want)
	}
}

func TestWorkerSeriesValues(t *testing.T) {
	d := openTestDB(t)
	ctx := context.Background()
	t0 := time.Date(2026, 5, 1, 12, 0, 0, 0, time.UTC)
	periods := writeSeriesHistory(t, d, t0)

	s, err := d.WorkerSeries(ctx, "w-01", t0, t0.Add(time.Hour), 0)
	if err != nil {
		t.Fatalf("WorkerSeries: %v", err)
	}
	if !reflect.DeepEqual(s.Labels, periods) {
		t.Fatalf("labels = %v, want %v", s.Labels, periods)
	}
	if got, want := dataOf(t, s, LabelProcessed), []float64{1200, 1300, 1400, 1500}; !almostEqual(got, want) {
		t.Errorf("processed = %v, want %v", got, want)
	}
	if got, want := dataOf(t, s, LabelMemoryMB), []float64{100, 200, 300, 400}; !almostEqual(got, want) {
		t.Errorf("memory = %v, want %v", got, want)
	}

	// Two points over [t0, t0+4m): one 4-minute bucket holds three snapshots.
	s, err = d.WorkerSeries(ctx, "w-01", t0, t0.Add(4*time.Minute), 2)
	if err != nil {
		t.Fatalf("WorkerSeries: %v", err)
	}
	if want := []time.Time{t0}; !reflect.DeepEqual(s.Labels, want) {
		t.Fatalf("labels with 2 points = %v, want %v", s.Labels, want)
	}
	if got, want := dataOf(t, s, LabelProcessed), []float64{1400}; !almostEqual(got, want) {
		t.Errorf("processed with 2 points = %v, want the bucket's maximum %v", got, want)
	}
	if got, want := dataOf(t, s, LabelFailed), []float64{2}; !almostEqual(got, want) {
		t.Errorf("failed with 2 points = %v, want the bucket's maximum %v", got, want)
	}
	if got, want := dataOf(t, s, LabelMemoryMB), []float64{200}; !almostEqual(got, want) {
		t.Errorf("memory with 2 points = %v, want the bucket's average %v", got, want)
	}
}

func TestPoolSeriesDownsampling(t *testing.T) {
	d := openTestDB(t)
	ctx := context.Background()
	start := time.Date(2026, 5, 1, 0, 0, 0, 0, time.UTC)
	const periods = 24 * 60
	seedPoolHistory(t, d, start, periods, time.Minute, 2, func(i, p int) fleet.PoolSnapshot {
		if p == 0 {
			return fleet.PoolSnapshot{Running: 4, Paused: i % 2 * 2, Processed: 60, Failed: 3, ErrorRate: 5}
		}
		return fleet.PoolSnapshot{Running: 1, Processed: 30}
	})

	// Since is off the minute, so the first bucket is partial.
	since := start.Add(17 * time.Second)
	until := start.Add(periods * time.Minute)
	for _, maxPoints := range []int{2, 3, 10, 97, 300, 1000} {
		for _, pool := range []string{"pool-00", ""} {
			s, err := d.PoolSeries(ctx, SeriesQuery{Pool: pool, Since: since, Until: until, MaxPoints: maxPoints})
			if err != nil {
				t.Fatalf("PoolSeries(%q, %d points): %v", pool, maxPoints, err)
			}
			n := len(s.Labels)
			if n == 0 || n > maxPoints {
				t.Errorf("PoolSeries(%q, %d points) has %d points, want 1 to %d", pool, maxPoints, n, maxPoints)
			}
			if maxPoints == 300 && n < 250 {
				t.Errorf("PoolSeries(%q, 300 points) has only %d points, want at least 250", pool, n)
			}
			for i := 1; i < n; i++ {
				step := s.Labels[i].Sub(s.Labels[i-1])
				if step <= 0 || step%time.Minute != 0 {
					t.Errorf("PoolSeries(%q, %d points): label step %v is not a positive whole number of snapshot intervals", pool, maxPoints, step)
					break
				}
			}

			wantRunning, wantJobs, wantRate := 4.0, 60.0, 5.0
			if pool == "" {
				wantRunning, wantJobs, wantRate = 5, 90, 100*3.0/90
			}
			for i := range n {
				if got := dataOf(t, s, LabelRunning)[i]; math.Abs(got-wantRunning) > 1e-9 {
					t.Errorf("PoolSeries(%q, %d points): running[%d] = %v, want %v", pool, maxPoints, i, got, wantRunning)
					break
				}
				if got := dataOf(t, s, LabelJobsPerMinute)[i]; math.Abs(got-wantJobs) > 1e-9 {
					t.Errorf("PoolSeries(%q, %d points): jobs per minute[%d] = %v, want %v", pool, maxPoints, i, got, wantJobs)
					break
				}
				if got := dataOf(t, s, LabelErrorRate)[i]; math.Abs(got-wantRate) > 1e-9 {
					t.Errorf("PoolSeries(%q, %d points): error rate[%d] = %v, want %v", pool, maxPoints, i, got, wantRate)
					break
				}
			}
		}
	}
}

func TestSeriesEmptyHistory(t *testing.T) {
	d := openTestDB(t)
	ctx := context.Background()
	since := time.Date(2026, 5, 1, 0, 0, 0, 0, time.UTC)

	check := func(name string, s Series, err error, datasets int) {
		t.Helper()
		if err != nil {
			t.Fatalf("%s: %v", name, err)
		}
		if s.Labels == nil || len(s.Labels) != 0 {
			t.Errorf("%s labels = %#v, want an empty, non-nil slice", name, s.Labels)
		}
		if len(s.Datasets) != datasets {
			t.Errorf("%s has %d datasets, want %d", name, len(s.Datasets), datasets)
		}
		for _, ds := range s.Datasets {
			if ds.Data == nil || len(ds.Data) != 0 {
				t.Errorf("%s dataset %q = %#v, want an empty, non-nil slice", name, ds.Label, ds.Data)
			}
		}
	}

	s, err := d.PoolSeries(ctx, SeriesQuery{Since: since, Until: since.Add(7 * 24 * time.Hour)})
	check("PoolSeries of all pools", s, err, 7)
	s, err = d.PoolSeries(ctx, SeriesQuery{Pool: "billing", Since: since, Until: since.Add(time.Hour)})
	check("PoolSeries of billing", s, err, 7)
	s, err = d.WorkerSeries(ctx, "w-01", since, since.Add(time.Hour), 0)
	check("WorkerSeries", s, err, 3)

	// History outside the range is still an empty series.
	writeSeriesHistory(t, d, since.Add(48*time.Hour))
	s, err = d.PoolSeries(ctx, SeriesQuery{Pool: "billing", Since: since, Until: since.Add(time.Hour)})
	check("PoolSeries before any snapshot", s, err, 7)
}

func TestSeriesRejectsBadRange(t *testing.T) {
	d := openTestDB(t)
	ctx := context.Background()
	t0 := time.Date(2026, 5, 1, 0, 0, 0, 0, time.UTC)

	for _, c := range []struct {
		name         string
		since, until time.Time
	}{
		{"since after until", t0.Add(time.Hour), t0},
		{"empty range", t0, t0},
		{"zero since", time.Time{}, t0},
	} {
		_, err := d.PoolSeries(ctx, SeriesQuery{Since: c.since, Until: c.until})
		if code := fleet.ErrorCode(err); code != fleet.EINVALID {
			t.Errorf("PoolSeries with %s: error %v, want code %s", c.name, err, fleet.EINVALID)
		}
		_, err = d.WorkerSeries(ctx, "w-01", c.since, c.until, 0)
		if code := fleet.ErrorCode(err); code != fleet.EINVALID {
			t.Errorf("WorkerSeries with %s: error %v, want code %s", c.name, err, fleet.EINVALID)
		}
	}
}

func TestSeriesZeroUntilMeansNow(t *testing.T) {
	d := openTestDB(t)
	t0 := time.Date(2026, 5, 1, 12, 0, 0, 0, time.UTC)
	periods := writeSeriesHistory(t, d, t0)
	d.now = func() time.Time { return t0.Add(90 * time.Second) }

	s, err := d.PoolSeries(context.Background(), SeriesQuery{Pool: "billing", Since: t0})
	if err != nil {
		t.Fatalf("PoolSeries: %v", err)
	}
	if want := periods[:2]; !reflect.DeepEqual(s.Labels, want) {
		t.Errorf("labels up to now = %v, want %v", s.Labels, want)
	}
}

// Run with:
//
//	MYSQL_TEST_DSN=root@tcp(127.0.0.1:3306)/test go test ./app/mysql -run '^$' -bench . -benchtime 10x
func BenchmarkWriteSnapshot10k(b *testing.B) {
	d := openTestDB(b)
	ctx := context.Background()
	base := time.Date(2026, 5, 1, 0, 0, 0, 0, time.UTC)
	s := bigSnapshot(base, "w", 10000, 50)

	b.ResetTimer()
	for i := 0; b.Loop(); i++ {
		s.Period = base.Add(time.Duration(i) * time.Minute)
		s.At = s.Period.Add(time.Second)
		if err := d.WriteSnapshot(ctx, s); err != nil {
			b.Fatalf("WriteSnapshot: %v", err)
		}
	}
}

func BenchmarkPoolSeries7d(b *testing.B) {
	d := openTestDB(b)
	ctx := context.Background()
	start := time.Date(2026, 5, 1, 0, 0, 0, 0, time.UTC)
	const periods = 7 * 24 * 60
	seedStart := time.Now()
	seedPoolHistory(b, d, start, periods, time.Minute, 50, func(i, p int) fleet.PoolSnapshot {
		return fleet.PoolSnapshot{Running: 8 + p%3, Paused: i % 2, Draining: p % 2, Processed: float64(60 + i%30), Failed: float64(i % 3)}
	})
	b.Logf("seeded %d periods of 50 pools in %v", periods, time.Since(seedStart))

	for _, pool := range []string{"", "pool-07"} {
		name := "all pools"
		if pool != "" {
			name = "one pool"
		}
		b.Run(name, func(b *testing.B) {
			q := SeriesQuery{Pool: pool, Since: start, Until: start.Add(periods * time.Minute), MaxPoints: DefaultMaxPoints}
			for b.Loop() {
				s, err := d.PoolSeries(ctx, q)
				if err != nil {
					b.Fatalf("PoolSeries: %v", err)
				}
				if len(s.Labels) == 0 || len(s.Labels) > DefaultMaxPoints {
					b.Fatalf("PoolSeries returned %d points, want 1 to %d", len(s.Labels), DefaultMaxPoints)
				}
			}
		})
	}
}
