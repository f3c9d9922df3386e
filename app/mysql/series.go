package mysql

import (
	"context"
	"fmt"
	"time"

	"github.com/verifier/controlplane/app/fleet"
)

// DefaultMaxPoints is the maximum number of points in a chart series when the
// query sets no MaxPoints.
const DefaultMaxPoints = 300

// Dataset labels of the series that PoolSeries and WorkerSeries return.
const (
	LabelRunning       = "running"
	LabelPaused        = "paused"
	LabelDraining      = "draining"
	LabelStopped       = "stopped"
	LabelStale         = "stale"
	LabelJobsPerMinute = "jobs_per_minute"
	LabelErrorRate     = "error_rate"
	LabelProcessed     = "processed"
	LabelFailed        = "failed"
	LabelMemoryMB      = "memory_mb"
)

// SeriesQuery selects the history a pool chart shows.
type SeriesQuery struct {
	// Pool is the pool to chart; empty means all pools summed.
	Pool string
	// Since is inclusive, Until exclusive; a zero Until means now.
	Since time.Time
	Until time.Time
	// MaxPoints caps the number of buckets; DefaultMaxPoints when 0 or less.
	MaxPoints int
}

// Series is a chart's data: one label per bucket, and per dataset one value
// per label. Labels are the UTC start of each bucket, oldest first. A bucket
// without snapshots has no label, so gaps in history stay gaps.
type Series struct {
	Labels   []time.Time
	Datasets []Dataset
}

// Dataset is one line of a chart.
type Dataset struct {
	Label string
	Data  []float64
}

// Dataset returns the dataset with the given label, or nil.
func (s *Series) Dataset(label string) *Dataset {
	for i := range s.Datasets {
		if s.Datasets[i].Label == label {
			return &s.Datasets[i]
		}
	}
	return nil
}

// bucketExpr numbers the bucket of a period as seconds since the Unix epoch
// divided by the bucket size. TIMESTAMPDIFF is plain DATETIME arithmetic,
// unlike UNIX_TIMESTAMP(period), which reads period in the session time zone
// and so would shift or, across a DST change, fold buckets if the session
// were not UTC.
const bucketExpr = "TIMESTAMPDIFF(SECOND, '1970-01-01 00:00:00', c.period) DIV ?"

// PoolSeries returns, per bucket of q's range, the live workers by status
// (running, paused, draining, stopped and stale, averaged over the bucket's
// snapshots), the jobs processed per minute and the error rate in percent.
// A range without snapshots gives empty labels and datasets, not an error.
func (d *DB) PoolSeries(ctx context.Context, q SeriesQuery) (Series, error) {
	b, err := d.buckets(ctx, q.Since, q.Until, q.MaxPoints)
	if err != nil {
		return Series{}, err
	}

	// All pools read the fleet totals in snapshot_periods: one row per
	// period instead of one per pool and period.
	from, elapsed, poolFilter := "snapshot_periods c", "c.elapsed_ms", ""
	args := []any{b.size, b.since, b.until}
	if q.Pool != "" {
		from = "pool_snapshots c JOIN snapshot_periods s ON s.period = c.period"
		elapsed = "s.elapsed_ms"
		poolFilter = "c.pool = ? AND "
		args = []any{b.size, q.Pool, b.since, b.until}
	}
	// Jobs per minute divides the bucket's jobs by the time they took, the
	// sum of elapsed_ms. A snapshot after downtime thus spreads its jobs over
	// the downtime instead of showing a spike. The first snapshot, whose
	// elapsed time is unknown, is left out of the rate.
	query := `SELECT ` + bucketExpr + ` AS bucket,
		COUNT(*), SUM(c.running), SUM(c.paused), SUM(c.draining), SUM(c.stopped), SUM(c.stale),
		SUM(c.processed), SUM(c.failed),
		COALESCE(SUM(IF(` + elapsed + ` IS NULL, 0, c.processed)), 0),
		COALESCE(SUM(` + elapsed + `), 0)
		FROM ` + from + `
		WHERE ` + poolFilter + `c.period >= ? AND c.period < ?
		GROUP BY bucket ORDER BY bucket`

	rows, err := d.db.QueryContext(ctx, query, args...)
	if err != nil {
		return Series{}, fmt.Errorf("query pool series of %q: %w", q.Pool, err)
	}
	defer rows.Close()

	s := newSeries(LabelRunning, LabelPaused, LabelDraining, LabelStopped, LabelStale, LabelJobsPerMinute, LabelErrorRate)
	for rows.Next() {
		var bucket, snapshots int64
		var running, paused, draining, stopped, stale, processed, failed, timedProcessed, elapsedMS float64
		err := rows.Scan(&bucket, &snapshots, &running, &paused, &draining, &stopped, &stale,
			&processed, &failed, &timedProcessed, &elapsedMS)
		if err != nil {
			return Series{}, fmt.Errorf("query pool series of %q: scan: %w", q.Pool, err)
		}
		// Averaged here: MySQL's AVG of an integer column is a DECIMAL
		// with only four decimal places.
		n := float64(snapshots)
		var jobsPerMinute float64
		if elapsedMS > 0 {
			jobsPerMinute = timedProcessed / (elapsedMS / float64(time.Minute/time.Millisecond))
		}
		errorRate, _ := fleet.ErrorRate(processed, failed)
		s.add(b.label(bucket), running/n, paused/n, draining/n, stopped/n, stale/n, jobsPerMinute, errorRate)
	}
	if err := rows.Err(); err != nil {
		return Series{}, fmt.Errorf("query pool series of %q: %w", q.Pool, err)
	}
	return s, nil
}

// WorkerSeries returns, per bucket of [since, until), a worker's cumulative
// processed and failed counters (the maximum in the bucket) and its memory
// in MB (the average). A zero until means now; maxPoints is DefaultMaxPoints
// when 0 or less. A range without snapshots gives empty labels and
// datasets, not an error.
func (d *DB) WorkerSeries(ctx context.Context, workerID string, since, until time.Time, maxPoints int) (Series, error) {
	b, err := d.buckets(ctx, since, until, maxPoints)
	if err != nil {
		return Series{}, err
	}

	rows, err := d.db.QueryContext(ctx, `SELECT `+bucketExpr+` AS bucket,
		MAX(c.processed), MAX(c.failed), AVG(c.memory_mb)
		FROM worker_snapshots c
		WHERE c.worker_id = ? AND c.period >= ? AND c.period < ?
		GROUP BY bucket ORDER BY bucket`,
		b.size, workerID, b.since, b.until)
	if err != nil {
		return Series{}, fmt.Errorf("query worker series of %q: %w", workerID, err)
	}
	defer rows.Close()

	s := newSeries(LabelProcessed, LabelFailed, LabelMemoryMB)
	for rows.Next() {
		var bucket int64
		var processed, failed, memory float64
		if err := rows.Scan(&bucket, &processed, &failed, &memory); err != nil {
			return Series{}, fmt.Errorf("query worker series of %q: scan: %w", workerID, err)
		}
		s.add(b.label(bucket), processed, failed, memory)
	}
	if err := rows.Err(); err != nil {
		return Series{}, fmt.Errorf("query worker series of %q: %w", workerID, err)
	}
	return s, nil
}

func newSeries(labels ...string) Series {
	s := Series{Labels: []time.Time{}, Datasets: make([]Dataset, len(labels))}
	for i, l := range labels {
		s.Datasets[i] = Dataset{Label: l, Data: []float64{}}
	}
	return s
}

// add appends one bucket: its label and one value per dataset, in order.
func (s *Series) add(label time.Time, values ...float64) {
	s.Labels = append(s.Labels, label)
	for i, v := range values {
		s.Datasets[i].Data = append(s.Datasets[i].Data, v)
	}
}

// bucketing is the bucket layout of a chart's range.
type bucketing struct {
	since, until time.Time
	// size is the bucket size in seconds, a multiple of the snapshot interval.
	size int64
}

// label returns the start of bucket number n.
func (b bucketing) label(n int64) time.Time {
	return time.Unix(n*b.size, 0).UTC()
}

// buckets validates a chart's range and chooses the bucket size: the range
// divided by maxPoints-1, rounded up to a whole number of snapshot
// intervals. maxPoints-1 rather than maxPoints because buckets are aligned
// to the epoch, so a range can touch one more bucket than it spans.
func (d *DB) buckets(ctx context.Context, since, until time.Time, maxPoints int) (bucketing, error) {
	if until.IsZero() {
		until = d.now()
	}
	if since.IsZero() {
		return bucketing{}, fleet.Errorf(fleet.EINVALID, "since", "since is required")
	}
	if !since.Before(until) {
		return bucketing{}, fleet.Errorf(fleet.EINVALID, "since", "since must be before until; got since %s, until %s",
			since.UTC().Format(time.RFC3339), until.UTC().Format(time.RFC3339))
	}
	if maxPoints <= 0 {
		maxPoints = DefaultMaxPoints
	}
	maxPoints = max(maxPoints, 2)

	interval, err := d.snapshotInterval(ctx, until)
	if err != nil {
		return bucketing{}, err
	}
	step := max(int64((interval+time.Second-1)/time.Second), 1)

	rangeSeconds := int64((until.Sub(since) + time.Second - 1) / time.Second)
	size := ceilDiv(rangeSeconds, int64(maxPoints-1))
	size = ceilDiv(size, step) * step

	return bucketing{since: toUTC(since), until: toUTC(until), size: size}, nil
}

// snapshotInterval estimates the snapshot interval as the smallest gap
// between the 20 newest snapshots before until, or one second when there are
// fewer than two.
//
// NOTE: history does not store the interval, so it is inferred. It only sets
// the bucket step: a wrong guess makes buckets finer or coarser, never the
// values wrong.
func (d *DB) snapshotInterval(ctx context.Context, until time.Time) (time.Duration, error) {
	rows, err := d.db.QueryContext(ctx,
		"SELECT period FROM snapshot_periods WHERE period < ? ORDER BY period DESC LIMIT 20", toUTC(until))
	if err != nil {
		return 0, fmt.Errorf("read snapshot interval: %w", err)
	}
	defer rows.Close()

	var interval time.Duration
	var newer time.Time
	for rows.Next() {
		var period time.Time
		if err := rows.Scan(&period); err != nil {
			return 0, fmt.Errorf("read snapshot interval: scan: %w", err)
		}
		if gap := newer.Sub(period); !newer.IsZero() && gap > 0 && (interval == 0 || gap < interval) {
			interval = gap
		}
		newer = period
	}
	if err := rows.Err(); err != nil {
		return 0, fmt.Errorf("read snapshot interval: %w", err)
	}
	if interval == 0 {
		interval = time.Second
	}
	return interval, nil
}

func ceilDiv(a, b int64) int64 {
	return (a + b - 1) / b
}
