package history_test

import (
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/verifier/controlplane/app/fleet"
	"github.com/verifier/controlplane/app/history"
	"github.com/verifier/controlplane/app/mysql"
)

// runSink runs sink until the test ends.
func runSink(t *testing.T, sink *history.AuditSink) {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { defer close(done); sink.Run(ctx) }()
	t.Cleanup(func() { cancel(); <-done })
}

// waitForAudit polls MySQL until it contains want entries or timeout passes,
// and returns them newest first.
func waitForAudit(t *testing.T, conn *history.Conn, want int, timeout time.Duration) []mysql.AuditRecord {
	t.Helper()
	deadline := time.Now().Add(timeout)
	var recs []mysql.AuditRecord
	for {
		var err error
		if db := conn.DB(); db != nil {
			recs, err = db.ListAudit(context.Background(), mysql.AuditFilter{Limit: mysql.MaxAuditLimit})
		}
		if err == nil && len(recs) >= want {
			return recs
		}
		if time.Now().After(deadline) {
			t.Fatalf("MySQL holds %d audit entries after %v, want %d (last error: %v)", len(recs), timeout, want, err)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// waitForCounter polls c until it reaches want or timeout passes, and
// returns its last value. A sink counts a write just after MySQL has it.
func waitForCounter(c prometheus.Collector, want float64, timeout time.Duration) float64 {
	deadline := time.Now().Add(timeout)
	for {
		got := testutil.ToFloat64(c)
		if got >= want || time.Now().After(deadline) {
			return got
		}
		time.Sleep(10 * time.Millisecond)
	}
}

func TestAuditSinkWritesServiceEntries(t *testing.T) {
	f := newFixture(t, nil)
	ctx := context.Background()
	sink := history.NewAuditSink(f.conn, f.metrics, f.log)
	runSink(t, sink)
	f.svc.AddAuditSink(sink)

	f.clock.Set(t0.Add(1500 * time.Millisecond))
	f.heartbeat("w-01", "billing", fleet.StateRunning, 1, 0, 64)
	if _, err := f.svc.Command(ctx, "w-01", fleet.ActionPause, "alice", fleet.SourceUI, "deploy"); err != nil {
		t.Fatalf("pause w-01: %v", err)
	}
	f.clock.Set(t0.Add(2 * time.Second))
	if _, err := f.svc.Scale(ctx, "billing", 3, "api", fleet.SourceAPI); err != nil {
		t.Fatalf("scale billing: %v", err)
	}
	f.svc.Record(ctx, fleet.AuditEntry{Actor: "bob", Source: fleet.SourceUI, Kind: fleet.AuditSettings,
		Action: "update", Before: "alerts off", After: "alerts on"})

	recs := waitForAudit(t, f.conn, 3, 5*time.Second)
	want := []fleet.AuditEntry{
		{At: t0.Add(2 * time.Second), Actor: "bob", Source: fleet.SourceUI, Kind: fleet.AuditSettings,
			Action: "update", Before: "alerts off", After: "alerts on"},
		{At: t0.Add(2 * time.Second), Actor: "api", Source: fleet.SourceAPI, Kind: fleet.AuditScale,
			Action: "scale", Pool: "billing", After: "3"},
		{At: t0.Add(1500 * time.Millisecond), Actor: "alice", Source: fleet.SourceUI, Kind: fleet.AuditCommand,
			Action: "pause", WorkerID: "w-01", Pool: "billing", Before: "running", After: "paused", Reason: "deploy"},
	}
	if len(recs) != len(want) {
		t.Fatalf("MySQL holds %d audit entries, want %d: %+v", len(recs), len(want), recs)
	}
	for i, r := range recs {
		got := r.AuditEntry
		if !got.At.Equal(want[i].At) {
			t.Errorf("entry %d at %v, want %v", i, got.At, want[i].At)
		}
		got.At = want[i].At
		if got != want[i] {
			t.Errorf("entry %d = %+v, want %+v", i, got, want[i])
		}
	}
	if got := waitForCounter(f.metrics.AuditWritten, 3, time.Second); got != 3 {
		t.Errorf("audit written = %v, want 3", got)
	}
}

// Before the first connection AppendAudit queues without waiting, and the
// queue reaches MySQL once Conn connects.
func TestAuditSinkQueuesUntilConnected(t *testing.T) {
	db := newTestDatabase(t, nil)
	logs := &logBuffer{}
	m := history.NewMetrics(prometheus.NewRegistry())
	conn := history.NewConn(db.dsn, m, newLogger(logs))
	sink := history.NewAuditSink(conn, m, newLogger(logs))
	runSink(t, sink)

	for i := range 3 {
		start := time.Now()
		err := sink.AppendAudit(context.Background(), fleet.AuditEntry{
			At: t0.Add(time.Duration(i) * time.Second), Actor: "alice", Source: fleet.SourceUI,
			Kind: fleet.AuditCommand, Action: "pause", WorkerID: fmt.Sprintf("w-%02d", i), Pool: "billing"})
		if err != nil {
			t.Errorf("AppendAudit %d before connecting: %v", i, err)
		}
		if took := time.Since(start); took > 50*time.Millisecond {
			t.Errorf("AppendAudit %d before connecting took %v, want it to return at once", i, took)
		}
	}
	time.Sleep(200 * time.Millisecond)
	if conn.DB() != nil {
		t.Fatal("Conn connected before Connect was called")
	}

	if err := conn.Connect(context.Background()); err != nil {
		t.Fatalf("Connect: %v", err)
	}
	t.Cleanup(func() { conn.DB().Close() })
	recs := waitForAudit(t, conn, 3, 5*time.Second)
	for i, r := range recs {
		if want := fmt.Sprintf("w-%02d", 2-i); r.WorkerID != want {
			t.Errorf("entry %d (newest first) is of %s, want %s", i, r.WorkerID, want)
		}
	}
	if got := waitForCounter(m.AuditWritten, 3, time.Second); got != 3 {
		t.Errorf("audit written = %v, want 3", got)
	}
}

// A write that fails is counted and retried until MySQL takes it.
func TestAuditSinkRetriesFailedWrite(t *testing.T) {
	f := newFixture(t, nil)
	if _, err := f.db.check.Exec("RENAME TABLE audit_log TO audit_log_away"); err != nil {
		t.Fatalf("rename audit_log: %v", err)
	}
	sink := history.NewAuditSink(f.conn, f.metrics, f.log)
	runSink(t, sink)
	if err := sink.AppendAudit(context.Background(), fleet.AuditEntry{At: t0, Actor: "alice", Kind: fleet.AuditCommand, Action: "drain", WorkerID: "w-01"}); err != nil {
		t.Fatalf("AppendAudit: %v", err)
	}

	deadline := time.Now().Add(3 * time.Second)
	for testutil.ToFloat64(f.metrics.AuditFailed) == 0 {
		if time.Now().After(deadline) {
			t.Fatal("no failed audit write counted within 3 s while audit_log was missing")
		}
		time.Sleep(20 * time.Millisecond)
	}
	if _, err := f.db.check.Exec("RENAME TABLE audit_log_away TO audit_log"); err != nil {
		t.Fatalf("rename audit_log back: %v", err)
	}
	recs := waitForAudit(t, f.conn, 1, 6*time.Second)
	if recs[0].WorkerID != "w-01" || recs[0].Action != "drain" {
		t.Errorf("entry = %+v, want the drain of w-01", recs[0].AuditEntry)
	}
	if n := countLines(f.logs.String(), "level=WARN", "audit entry not written to MySQL; retrying"); n != 1 {
		t.Errorf("%d retry warnings, want 1 (one per change of error); log:\n%s", n, f.logs.String())
	}
	// The sink logs its recovery just after MySQL has the entry.
	recovered := func() int { return countLines(f.logs.String(), "audit entries reach MySQL again") }
	for deadline := time.Now().Add(time.Second); recovered() == 0 && time.Now().Before(deadline); {
		time.Sleep(10 * time.Millisecond)
	}
	if n := recovered(); n != 1 {
		t.Errorf("%d recovery lines, want 1; log:\n%s", n, f.logs.String())
	}
}

// A full queue drops the entry, counts it and still returns at once.
func TestAuditSinkFullQueueCountsDropped(t *testing.T) {
	m := history.NewMetrics(prometheus.NewRegistry())
	conn := history.NewConn("unused:unused@tcp(127.0.0.1:1)/unused", m, newLogger(&logBuffer{}))
	sink := history.NewAuditSink(conn, m, newLogger(&logBuffer{}))

	start := time.Now()
	const maxAppends = 100_000
	appended := 0
	for appended < maxAppends && testutil.ToFloat64(m.AuditDropped) == 0 {
		if err := sink.AppendAudit(context.Background(), fleet.AuditEntry{Actor: "alice", Kind: fleet.AuditCommand}); err != nil {
			t.Fatalf("AppendAudit %d: %v", appended, err)
		}
		appended++
	}
	if got := testutil.ToFloat64(m.AuditDropped); got != 1 {
		t.Fatalf("after %d appends without a running sink: dropped = %v, want 1", appended, got)
	}
	if took := time.Since(start); took > 2*time.Second {
		t.Errorf("%d appends took %v; a full queue must not make AppendAudit wait", appended, took)
	}
}
