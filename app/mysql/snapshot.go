package mysql

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/verifier/controlplane/app/fleet"
)

// ErrSnapshotExists is returned by WriteSnapshot when history already holds a
// snapshot for the period, written by this or another replica.
var ErrSnapshotExists = errors.New("a snapshot for this period already exists")

// insertBatchRows is how many rows one multi-row INSERT carries. 500 rows of
// ten columns stay far below MySQL's 65,535 placeholders per statement and
// the default max_allowed_packet, and need 20 round trips for 10,000 workers.
const insertBatchRows = 500

var (
	poolSnapshotColumns = []string{
		"period", "taken_at", "pool", "desired_count",
		"running", "paused", "draining", "stopped", "stale",
		"processed", "failed", "error_rate",
	}
	workerSnapshotColumns = []string{
		"period", "worker_id", "pool", "status", "desired_state", "stale",
		"heartbeat_age_ms", "processed", "failed", "memory_mb",
	}
)

// WriteSnapshot stores s in one transaction. It first claims s.Period in
// snapshot_periods. When that period is already taken, it returns
// ErrSnapshotExists and writes nothing. Times are stored as UTC with
// millisecond precision.
func (d *DB) WriteSnapshot(ctx context.Context, s fleet.Snapshot) error {
	if s.Period.IsZero() || s.At.IsZero() {
		return fmt.Errorf("write snapshot: At and Period must be set; got At=%v Period=%v", s.At, s.Period)
	}
	period := toUTC(s.Period)
	takenAt := toUTC(s.At)

	tx, err := d.db.BeginTx(ctx, nil)
	if err != nil {
		return fmt.Errorf("write snapshot: begin: %w", err)
	}
	// Rollback after Commit is a no-op that returns sql.ErrTxDone.
	defer tx.Rollback()

	if err := insertPeriod(ctx, tx, period, takenAt, s); err != nil {
		return err
	}

	err = insertBatches(ctx, tx, "pool_snapshots", poolSnapshotColumns, len(s.Pools), func(args []any, i int) []any {
		p := &s.Pools[i]
		var desired sql.NullInt64
		if p.HasDesired {
			desired = sql.NullInt64{Int64: int64(p.DesiredCount), Valid: true}
		}
		return append(args, period, takenAt, p.Pool, desired,
			p.Running, p.Paused, p.Draining, p.Stopped, p.Stale,
			p.Processed, p.Failed, p.ErrorRate)
	})
	if err != nil {
		return err
	}

	err = insertBatches(ctx, tx, "worker_snapshots", workerSnapshotColumns, len(s.Workers), func(args []any, i int) []any {
		w := &s.Workers[i]
		desired := w.Desired
		if desired == "" {
			desired = fleet.DefaultDesiredState
		}
		return append(args, period, w.ID, w.Pool, string(w.Status), string(desired), w.Stale,
			max(w.HeartbeatAge.Milliseconds(), 0), w.Processed, w.Failed, w.MemoryMB)
	})
	if err != nil {
		return err
	}

	if err := tx.Commit(); err != nil {
		return fmt.Errorf("write snapshot: commit: %w", err)
	}
	return nil
}

// insertPeriod claims the period with the snapshot's fleet-wide totals. The
// row's primary key makes a second writer of the same period wait for the
// first transaction and then fail with a duplicate key.
func insertPeriod(ctx context.Context, tx *sql.Tx, period, takenAt time.Time, s fleet.Snapshot) error {
	var t fleet.PoolSnapshot
	for _, p := range s.Pools {
		t.Running += p.Running
		t.Paused += p.Paused
		t.Draining += p.Draining
		t.Stopped += p.Stopped
		t.Stale += p.Stale
		t.Processed += p.Processed
		t.Failed += p.Failed
	}

	// A plain SELECT is a consistent read that takes no row locks under
	// InnoDB's default REPEATABLE READ. An INSERT ... SELECT would lock the
	// gap, and two writers racing for a period could deadlock on it.
	var previous sql.NullTime
	err := tx.QueryRowContext(ctx,
		"SELECT MAX(taken_at) FROM snapshot_periods WHERE period < ?", period).Scan(&previous)
	if err != nil {
		return fmt.Errorf("read previous snapshot: %w", err)
	}
	var elapsedMS sql.NullInt64
	if previous.Valid && takenAt.After(previous.Time) {
		elapsedMS = sql.NullInt64{Int64: takenAt.Sub(previous.Time).Milliseconds(), Valid: true}
	}

	_, err = tx.ExecContext(ctx, `INSERT INTO snapshot_periods
		(period, taken_at, elapsed_ms, pools, workers, running, paused, draining, stopped, stale, processed, failed)
		VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)`,
		period, takenAt, elapsedMS, len(s.Pools), len(s.Workers),
		t.Running, t.Paused, t.Draining, t.Stopped, t.Stale, t.Processed, t.Failed)
	if isDuplicateKey(err) {
		return ErrSnapshotExists
	}
	if err != nil {
		return fmt.Errorf("insert snapshot_periods: %w", err)
	}
	return nil
}

// insertBatches inserts n rows into table with multi-row INSERTs of up to
// insertBatchRows rows. appendRow appends the values of row i, in the order
// of columns, to args and returns it.
func insertBatches(ctx context.Context, tx *sql.Tx, table string, columns []string, n int, appendRow func(args []any, i int) []any) error {
	args := make([]any, 0, min(n, insertBatchRows)*len(columns))
	for start := 0; start < n; start += insertBatchRows {
		end := min(start+insertBatchRows, n)
		args = args[:0]
		for i := start; i < end; i++ {
			args = appendRow(args, i)
		}
		query := insertQuery(table, columns, end-start)
		if _, err := tx.ExecContext(ctx, query, args...); err != nil {
			return fmt.Errorf("insert %s rows %d to %d: %w", table, start, end-1, err)
		}
	}
	return nil
}

// insertQuery returns "INSERT INTO table (columns) VALUES (?, ...), ..." for rows rows.
func insertQuery(table string, columns []string, rows int) string {
	row := "(?" + strings.Repeat(", ?", len(columns)-1) + ")"
	var b strings.Builder
	b.Grow(40 + len(table) + 12*len(columns) + rows*(len(row)+2))
	b.WriteString("INSERT INTO ")
	b.WriteString(table)
	b.WriteString(" (")
	b.WriteString(strings.Join(columns, ", "))
	b.WriteString(") VALUES ")
	for i := range rows {
		if i > 0 {
			b.WriteString(", ")
		}
		b.WriteString(row)
	}
	return b.String()
}

// LastSnapshot returns the instant the newest snapshot was taken, or the zero
// time when history is empty.
func (d *DB) LastSnapshot(ctx context.Context) (time.Time, error) {
	var takenAt time.Time
	err := d.db.QueryRowContext(ctx,
		"SELECT taken_at FROM snapshot_periods ORDER BY period DESC LIMIT 1").Scan(&takenAt)
	if errors.Is(err, sql.ErrNoRows) {
		return time.Time{}, nil
	}
	if err != nil {
		return time.Time{}, fmt.Errorf("read last snapshot: %w", err)
	}
	return takenAt, nil
}

// PreviousWorkerCounters returns the cumulative processed and failed counters
// ([0] and [1]) of every worker in the newest snapshot, keyed by worker id,
// and the instant that snapshot was taken. Empty history gives an empty map
// and the zero time.
func (d *DB) PreviousWorkerCounters(ctx context.Context) (map[string][2]float64, time.Time, error) {
	counters := map[string][2]float64{}

	// One read-only transaction, so that retention cannot delete the
	// snapshot between the two queries.
	tx, err := d.db.BeginTx(ctx, &sql.TxOptions{ReadOnly: true})
	if err != nil {
		return nil, time.Time{}, fmt.Errorf("read previous worker counters: begin: %w", err)
	}
	defer tx.Rollback()

	var period, takenAt time.Time
	err = tx.QueryRowContext(ctx,
		"SELECT period, taken_at FROM snapshot_periods ORDER BY period DESC LIMIT 1").Scan(&period, &takenAt)
	if errors.Is(err, sql.ErrNoRows) {
		return counters, time.Time{}, nil
	}
	if err != nil {
		return nil, time.Time{}, fmt.Errorf("read previous worker counters: newest period: %w", err)
	}

	rows, err := tx.QueryContext(ctx,
		"SELECT worker_id, processed, failed FROM worker_snapshots WHERE period = ?", period)
	if err != nil {
		return nil, time.Time{}, fmt.Errorf("read previous worker counters: %w", err)
	}
	defer rows.Close()
	for rows.Next() {
		var id string
		var processed, failed float64
		if err := rows.Scan(&id, &processed, &failed); err != nil {
			return nil, time.Time{}, fmt.Errorf("read previous worker counters: scan: %w", err)
		}
		counters[id] = [2]float64{processed, failed}
	}
	if err := rows.Err(); err != nil {
		return nil, time.Time{}, fmt.Errorf("read previous worker counters: %w", err)
	}
	return counters, takenAt, nil
}

// DeleteOlderThan deletes the snapshots whose period is before cutoff from
// all three snapshot tables and returns the number of rows deleted. Each
// DELETE removes at most batch rows and commits on its own, so no statement
// holds row locks for long. After a failure, the batches before it stay
// deleted and the returned count includes them.
func (d *DB) DeleteOlderThan(ctx context.Context, cutoff time.Time, batch int) (int64, error) {
	if batch < 1 {
		return 0, fmt.Errorf("delete old snapshots: batch must be at least 1; got %d", batch)
	}
	cutoff = toUTC(cutoff)

	// Periods go last, so a period row outlives the rows that belong to it.
	// Each ORDER BY follows the primary key, which keeps the DELETE a range
	// scan and makes it deterministic for statement-based replication.
	deletes := []struct{ table, query string }{
		{"worker_snapshots", "DELETE FROM worker_snapshots WHERE period < ? ORDER BY period, worker_id LIMIT ?"},
		{"pool_snapshots", "DELETE FROM pool_snapshots WHERE period < ? ORDER BY period, pool LIMIT ?"},
		{"snapshot_periods", "DELETE FROM snapshot_periods WHERE period < ? ORDER BY period LIMIT ?"},
	}

	var total int64
	for _, del := range deletes {
		for {
			res, err := d.db.ExecContext(ctx, del.query, cutoff, batch)
			if err != nil {
				return total, fmt.Errorf("delete old rows from %s: %w", del.table, err)
			}
			n, err := res.RowsAffected()
			if err != nil {
				return total, fmt.Errorf("delete old rows from %s: %w", del.table, err)
			}
			total += n
			if n < int64(batch) {
				break
			}
		}
	}
	return total, nil
}

// toUTC returns t in UTC, truncated to the millisecond precision of the
// DATETIME(3) columns, so that a value read back equals the value written.
func toUTC(t time.Time) time.Time {
	return t.UTC().Truncate(time.Millisecond)
}
